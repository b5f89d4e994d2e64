"""FID and KID of a system's COCO-5k images against the COCO val2017 reference images.

Features: the standard FID Inception (``weights-inception-2015-12-05-6726825d.pth``, the TF-ported
weights torch-fidelity/torchmetrics use) from a local file, 2048-d pool features. The statistic is
computed by torchmetrics (``FrechetInceptionDistance``, ``KernelInceptionDistance``) from those
features, so the math is the reference library's.

Resizing recipe (recorded in the fingerprint), identical for generated and reference images:
center crop to a square on the shorter side, resize to 299x299 with PIL bicubic, uint8 RGB.
Reference features are computed once and cached by the content (sha256) of the reference files.

Reference images: ``<data_dir>/coco/val2017/<file_name>`` for the prompts evaluated (COCO-5k pairs
each caption with its val2017 image).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image

from harness.errors import HarnessError
from harness.scorers.base import Scorer
from models.weights import file_sha256

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
#: pytorch-fid's copy of the same TF-ported weights: the same state-dict keys and shapes (checked
#: against pytorch_fid 0.3.0's fid_inception_v3), and the same sha256 prefix in the name
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_FILES = (INCEPTION_FILE, PYTORCH_FID_FILE)
SIZE = 299
PREPROCESSING = "center crop to square (shorter side), resize to 299x299 with PIL bicubic, uint8 RGB"


def fid_preprocess(image: Image.Image) -> torch.Tensor:
    image = image.convert("RGB")
    w, h = image.size
    s = min(w, h)
    image = image.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    image = image.resize((SIZE, SIZE), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


class TinyFeatures(torch.nn.Module):
    """A fixed random conv net standing in for Inception in the smoke profile (64-d features)."""

    num_features = 64

    def __init__(self):
        super().__init__()
        torch.manual_seed(41)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 5, stride=4), torch.nn.ReLU(), torch.nn.Conv2d(16, 64, 5, stride=4),
            torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float() / 255.0)


class Passthrough(torch.nn.Module):
    """Hands precomputed features to torchmetrics as if they were its extractor's output."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _SetScorer(Scorer):
    """A metric of a whole image set against the benchmark's reference images."""

    set_metric = True
    higher_is_better = False
    uses_prompt = False
    FILES = (INCEPTION_FILES,)
    LIBRARIES = ("torchmetrics", "torch-fidelity")
    PARAMETERS = 24_000_000  # approximate: the FID InceptionV3 (its weights file is 95 MB in fp32)

    def _build(self) -> None:
        if self.weights.is_tiny:
            self.extractor = TinyFeatures()
        else:
            from torchmetrics.image.fid import NoTrainInceptionV3

            path = self.file(INCEPTION_FILES)
            self.extractor = NoTrainInceptionV3(
                name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path)
            )
        self.extractor = self.extractor.eval().to(self.device)

    @torch.inference_mode()
    def features(self, images: Iterable[Image.Image]) -> torch.Tensor:
        """Inception features of an image set, read ``batch_size`` images at a time: pass a generator
        and at most one batch of decoded images is in memory, whatever the set's size."""
        self.build()
        out, batch = [], []
        for image in images:
            batch.append(self._preprocess(image))
            if len(batch) == self.batch_size:
                out.append(self._extract(batch))
                batch = []
        if batch:
            out.append(self._extract(batch))
        return torch.cat(out)

    def _preprocess(self, image: Image.Image):
        """One image as the feature extractor takes it (a set metric's own preprocessing)."""
        return fid_preprocess(image)

    def _extract(self, batch: list[torch.Tensor]) -> torch.Tensor:
        x = torch.stack(batch).to(self.device)
        return self.extractor(x).reshape(x.shape[0], -1).float().cpu()

    def extractor_digest(self) -> str:
        """What the features depend on (checkpoint, preprocessing, libraries), not which metric reads
        them: FID and KID share one feature pass through the caches keyed by it."""
        from harness.io import digest

        fp = self.fingerprint()
        return digest({k: v for k, v in fp.items() if k != "metric"})

    def cached_features(self, key: str, images: Iterable[Image.Image], cache_dir: Path) -> torch.Tensor:
        """:meth:`features`, cached under ``cache_dir`` by extractor and ``key`` (a digest of the image
        bytes): the second set metric on the same images reads them instead of a second pass."""
        cache = Path(cache_dir) / f"features-{self.extractor_digest()}-{key}.pt"
        if cache.is_file():
            return torch.load(cache, weights_only=True)
        feats = self.features(images)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        torch.save(feats, tmp)
        tmp.replace(cache)
        return feats

    def _score_batch(self, images, prompts):
        raise TypeError(f"{self.name} is a set metric: use compute(), not per-image scores")

    def checkpoint_fingerprint(self) -> dict[str, str]:
        if self.weights.is_tiny:
            return {"inception": "tiny"}
        path = self.file(INCEPTION_FILES)
        return {path.name: file_sha256(path)}

    def preprocessing(self) -> str:
        return PREPROCESSING

    def reference_set(self, config, benchmark: str, prompts, cache_dir: Path) -> tuple[torch.Tensor, int]:
        """Features of the benchmark's reference images for ``prompts`` (COCO-5k: their val2017 images), and
        how many there are."""
        from harness.prompts import reference_images

        paths = reference_images(benchmark, config["data_dir"], prompts)
        return self.reference_features(paths, cache_dir), len(paths)

    def reference_features(self, paths: list[Path], cache_dir: Path) -> torch.Tensor:
        """Features of the reference images, cached under ``cache_dir`` by their content."""
        h = hashlib.sha256()
        for p in paths:
            if not p.is_file():
                raise HarnessError(
                    f"FID reference image {p} is missing; put the COCO val2017 images in {p.parent} "
                    "(http://images.cocodataset.org/zips/val2017.zip)"
                )
            h.update(f"{p.name}={file_sha256(p)}\n".encode())

        def opened():
            for p in paths:
                with Image.open(p) as im:
                    yield im.convert("RGB")

        return self.cached_features(f"ref-{h.hexdigest()[:20]}", opened(), cache_dir)


class FIDScorer(_SetScorer):
    name = "fid"
    label = "FID"

    def compute(self, fake: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
        from torchmetrics.image.fid import FrechetInceptionDistance

        metric = FrechetInceptionDistance(feature=Passthrough(fake.shape[1]))
        metric.update(real, real=True)
        metric.update(fake, real=False)
        return {"value": float(metric.compute())}


class KIDScorer(_SetScorer):
    name = "kid"
    label = "KID"

    def compute(self, fake: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
        from torchmetrics.image.kid import KernelInceptionDistance

        subset = min(1000, len(fake), len(real))
        torch.manual_seed(0)  # KID's subsets are random: fix them so a rerun gives the same number
        metric = KernelInceptionDistance(feature=Passthrough(fake.shape[1]), subset_size=subset)
        metric.update(real, real=True)
        metric.update(fake, real=False)
        mean, std = metric.compute()
        return {"value": float(mean), "std": float(std), "subset_size": subset}
