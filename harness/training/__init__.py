"""Training and progressive distillation of CogView3 (README "Training and distillation").

- :mod:`harness.training.loop`: one training loop for every objective (AdamW, EMA, bf16 autocast on
  CUDA, gradient accumulation, a fixed seed per step, atomic checkpoints, resume after a kill);
- :mod:`harness.training.data`: latents of images the harness made (a system's manifest), encoded
  with the system's VAE and T5, cached;
- :mod:`harness.training.schedule`: the step schedules and the grids their rounds train on;
- :mod:`harness.training.rounds`: the jobs: ``train`` (the relay loss of eq. 6 or the base loss) and
  one ``distill`` round (teacher -> student with half the steps), each exporting a SAT checkpoint
  folder that the CogView3 systems load as ``weights:``; the students as systems;
- :mod:`harness.training.report`: ``reports/distill.md``; :mod:`harness.training.resources`: the
  Snakemake resources of a round.

The objectives themselves (the equations) live with the model: :mod:`models.cogview3.training`.
"""
