"""What every scorer shares: one model load, batched scoring, and a fingerprint of what produced a number."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from PIL import Image

from models.base import WeightsSpec, library_versions, resolve_device, resolve_dtype
from models.layouts import WeightFiles, named_files
from models.weights import file_sha256


class Scorer(ABC):
    """A metric: ``score(images, prompts) -> one float per image``, or for a set metric
    ``compute(features(images), reference features) -> one number``.

    The model is loaded once (:meth:`build`) and images go through it ``batch_size`` at a time.
    ``weights: tiny`` gives the tiny build: fixed random weights made in code, for the smoke profile
    and the golden tests (every registered scorer must have one).
    """

    #: the metric's name in the config's ``metrics:`` list and in file names
    name: ClassVar[str]
    #: the column heading the tables print
    label: ClassVar[str]
    #: the direction of "better" (tables print it; the regression gate names a move as worse/better)
    higher_is_better: ClassVar[bool] = True
    #: a set metric gives one number per image set against the benchmark's reference images
    #: (FID, KID): it runs only on benchmarks that have them; otherwise one score per image,
    #: aggregated as the mean over prompts (samples of a prompt averaged first)
    set_metric: ClassVar[bool] = False
    #: does the score depend on the prompt (alignment/preference) or on the image alone
    uses_prompt: ClassVar[bool] = True
    LIBRARIES: ClassVar[tuple[str, ...]] = ()
    #: the dtype ``auto`` means on a GPU (float32 on the CPU)
    GPU_DTYPE: ClassVar[torch.dtype] = torch.float16
    #: False for an analytic scorer built in code (the micro-world judge): config needs no ``weights:`` entry
    NEEDS_WEIGHTS: ClassVar[bool] = True
    #: parameters of the full-size scoring network (harness/resources.py sizes the job from it)
    PARAMETERS: ClassVar[int] = 0
    #: the files the scorer reads from its weights folder, as upstream names them; a tuple entry
    #: means any one of those names (the first present is read)
    FILES: ClassVar[tuple[str | tuple[str, ...], ...]] = ()

    @classmethod
    def applies_to(cls, benchmark: str) -> bool:
        """Whether this metric is computed on ``benchmark`` (set metrics need reference images)."""
        from harness.prompts import benchmark as benchmark_facts

        return not cls.set_metric or benchmark_facts(benchmark).has_references

    @classmethod
    def heading(cls) -> str:
        """The label with its direction, e.g. ``FID ↓``."""
        return f"{cls.label} {'↑' if cls.higher_is_better else '↓'}"

    def __init__(self, weights: WeightsSpec, device: str = "auto", dtype: str = "auto", batch_size: int = 16):
        self.weights = weights
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device, self.GPU_DTYPE)
        self.batch_size = batch_size
        self._built = False

    @classmethod
    def entry_files(cls, key: str, path: Path) -> WeightFiles:
        """The files of the weights folder ``path`` this scorer reads (preflight, fingerprints, loading)."""
        return named_files(key, path, cls.FILES, f"See README 'Weights' for the {cls.name} files.")

    def file(self, name: str | tuple[str, ...]) -> Path:
        """The path of the ``FILES`` entry ``name``; one error listing every missing file of the folder."""
        found = self.entry_files(self.weights.key, self.weights.path).require()
        return found.files[self.FILES.index(name)]

    def build(self) -> "Scorer":
        if not self._built:
            self._build()
            self._built = True
        return self

    @abstractmethod
    def _build(self) -> None: ...

    @abstractmethod
    def _score_batch(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]: ...

    @torch.inference_mode()
    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        if len(images) != len(prompts):
            raise ValueError("score() needs one prompt per image")
        self.build()
        out: list[float] = []
        for i in range(0, len(images), self.batch_size):
            out += self._score_batch(images[i : i + self.batch_size], prompts[i : i + self.batch_size])
        return out

    def checkpoint_fingerprint(self) -> dict[str, str]:
        """sha256 of each checkpoint file used (or ``tiny``). By default every file :meth:`entry_files` names, keyed by
        its path inside the weights folder; scorers older than this default key theirs by name and keep doing so,
        so that stored fingerprints stay valid."""
        if self.weights.is_tiny:
            return {self.name: "tiny"}
        found = self.entry_files(self.weights.key, self.weights.path).require()
        return {str(p.relative_to(Path(self.weights.path))): file_sha256(p) for p in found.files}

    @abstractmethod
    def preprocessing(self) -> str:
        """How images are turned into model input (resize filter, size, crop, normalisation)."""

    def fingerprint(self) -> dict[str, Any]:
        return {
            "metric": self.name,
            "checkpoints": self.checkpoint_fingerprint(),
            "preprocessing": self.preprocessing(),
            "dtype": str(self.dtype).removeprefix("torch."),
            "libraries": library_versions(*self.LIBRARIES),
        }
