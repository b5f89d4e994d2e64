"""``micro_fd``: the Fréchet distance between a system's micro-world images and ground-truth renders of the
same captions, on analytic world features (no network, no weights).

Why not FID on a classifier trained on the world: a trained extractor would add its own training run and its
own seed-to-seed spread to every number the gate reads, and Inception features of flat-coloured 64 px
shapes mostly encode resampling artefacts. The world is defined by colour, shape, count and place, so the
features are those, measured exactly (:func:`world_features`, on the image box-filtered to 32x32 so every
resolution is compared alike):

- the fraction of pixels nearest each palette colour, white and black (the judge's references, within its
  colour distance), and of the rest (smears, muddy blends): colour balance and background;
- the mean RGB of each cell of a 4x4 grid: layout;
- the judge's parse (:func:`harness.micro.judge.detect`): the number of objects, of each shape, and of objects
  it cannot classify.

The statistic is torchmetrics' ``FrechetInceptionDistance`` on those features (the FID formula, through the
same code as ``fid``). References: ``REFERENCE_SAMPLES`` ground-truth scenes of every evaluated caption
(:func:`harness.micro.world.evaluation_scene`), rendered at 128 px. Lower is better; ground truth against
other ground-truth scenes of the same captions gives the floor (tests/test_micro_fd.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image

from harness.scorers.fid import FIDScorer

MICRO_FD_VERSION = "micro-fd/1"
FEATURE_SIZE = 32
GRID = 4
REFERENCE_SAMPLES = 4
REFERENCE_SIZE = 128


def world_features(image: Image.Image) -> np.ndarray:
    """The analytic feature vector of one image (float64)."""
    from harness.micro.judge import _REFERENCE_RGB, MAX_COLOUR_DISTANCE, detect
    from harness.micro.world import SHAPES

    small = np.asarray(image.convert("RGB").resize((FEATURE_SIZE, FEATURE_SIZE), Image.BOX), dtype=np.float64)
    distance = np.linalg.norm(small[:, :, None, :] - _REFERENCE_RGB[None, None], axis=-1)
    nearest = distance.argmin(axis=-1)
    close = distance.min(axis=-1) < MAX_COLOUR_DISTANCE
    k = len(_REFERENCE_RGB)
    labels = np.where(close, nearest, k)  # k: near no reference colour
    colours = np.bincount(labels.ravel(), minlength=k + 1) / labels.size
    cell = FEATURE_SIZE // GRID
    layout = small.reshape(GRID, cell, GRID, cell, 3).mean(axis=(1, 3)).ravel() / 255.0
    objects = detect(image)
    shapes = [sum(o.shape == s for o in objects) for s in SHAPES] + [sum(o.shape not in SHAPES for o in objects)]
    return np.concatenate([colours, layout, [len(objects)], shapes]).astype(np.float64)


class MicroFDScorer(FIDScorer):
    name = "micro_fd"
    label = "FD-world"
    NEEDS_WEIGHTS = False  # analytic: nothing to load
    FILES = ()
    LIBRARIES = ("torchmetrics",)
    PARAMETERS = 0

    @classmethod
    def applies_to(cls, benchmark: str) -> bool:
        from harness.prompts import benchmark as benchmark_facts

        return benchmark_facts(benchmark).caption_grammar == "micro"

    def _build(self) -> None:
        pass  # nothing to load

    def features(self, images: Iterable[Image.Image]) -> torch.Tensor:
        rows = [world_features(im) for im in images]
        return torch.from_numpy(np.stack(rows))

    def checkpoint_fingerprint(self) -> dict[str, str]:
        return {"features": MICRO_FD_VERSION}

    def preprocessing(self) -> str:
        return (f"RGB box-filtered to {FEATURE_SIZE}x{FEATURE_SIZE}: palette/white/black/other pixel fractions, "
                f"{GRID}x{GRID} grid mean RGB; judge parse (objects per shape) on the full image")

    def reference_set(self, config, benchmark: str, prompts, cache_dir: Path) -> tuple[torch.Tensor, int]:
        """Features of ``REFERENCE_SAMPLES`` ground-truth renders of each prompt's caption (cached by the
        captions and the world's version), and how many there are."""
        import hashlib

        from harness.micro.world import WORLD_VERSION, evaluation_scene, render

        key = hashlib.sha256("\n".join([WORLD_VERSION, str(REFERENCE_SAMPLES), str(REFERENCE_SIZE),
                                        *(p.text for p in prompts)]).encode()).hexdigest()[:20]

        def rendered():
            for p in prompts:
                for sample in range(REFERENCE_SAMPLES):
                    yield render(evaluation_scene(p.text, sample), REFERENCE_SIZE)

        feats = self.cached_features(f"ref-micro-{key}", rendered(), cache_dir)
        return feats, len(feats)
