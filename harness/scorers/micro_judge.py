"""The micro world's exact scorers (:mod:`harness.micro.judge`): no network, no weights, no randomness.

``micro_judge`` is the fraction of a caption's clauses the image satisfies (counts per object group, the
total, the relation); ``micro_exact`` is 1 when all of them hold, else 0; ``micro_colour`` is the share of the
drawn (palette-coloured) pixels that are in a colour the caption names, the graded reading of one attribute. Per-category accuracy is the
tables' usual per-category breakdown of these per-image scores. Both read only captions the micro world
writes, so they apply only to benchmarks whose prompts come from its grammar (``micro-drawbench``).
"""

from __future__ import annotations

from typing import Sequence

from PIL import Image

from harness.micro.judge import JUDGE_VERSION, SMALLEST_EXACT_SIZE, colour_fidelity, judge
from harness.scorers.base import Scorer


class MicroJudgeScorer(Scorer):
    name = "micro_judge"
    label = "Judge"
    NEEDS_WEIGHTS = False  # analytic: nothing to load

    @classmethod
    def applies_to(cls, benchmark: str) -> bool:
        from harness.prompts import benchmark as benchmark_facts

        return benchmark_facts(benchmark).caption_grammar == "micro"

    def _build(self) -> None:
        pass  # nothing to load

    def _value(self, image: Image.Image, caption: str) -> float:
        return judge(image, caption).score

    def _score_batch(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        return [self._value(im, p) for im, p in zip(images, prompts)]

    def checkpoint_fingerprint(self) -> dict[str, str]:
        return {"judge": JUDGE_VERSION}

    def preprocessing(self) -> str:
        return (f"RGB at the generated resolution, no resize (exact from {SMALLEST_EXACT_SIZE}x{SMALLEST_EXACT_SIZE} "
                "up); nearest palette colour, 4-connected components, shape from coverage fill and row skew")


class MicroExactScorer(MicroJudgeScorer):
    name = "micro_exact"
    label = "Exact"

    def _value(self, image: Image.Image, caption: str) -> float:
        return float(judge(image, caption).exact)


class MicroColourScorer(MicroJudgeScorer):
    name = "micro_colour"
    label = "Colour"

    def _value(self, image: Image.Image, caption: str) -> float:
        return colour_fidelity(image, caption)
