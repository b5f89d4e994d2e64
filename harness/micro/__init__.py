"""The micro world: a synthetic text-to-image world small enough to train on a CPU and judged exactly.

:mod:`harness.micro.world` holds the scenes, their renderer, the caption grammar, the training stream and
the held-out evaluation set (benchmark ``micro-drawbench``); :mod:`harness.micro.judge` reads an image back
into objects and checks a caption's clauses against them (scorers ``micro_judge`` and ``micro_exact``).
"""
