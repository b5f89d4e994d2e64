"""The interface every image generator ("system") shares, and the weights spec it is built from.

A *system* is a named, fully parameterised generator from the config, e.g.::

    systems:
      sdxl: {model: sdxl, weights: sdxl, steps: 50, guidance: 5.0, resolution: 1024}

``model`` picks the class from :mod:`models.registry`; the other keys are that class's parameters,
declared once in its ``PARAMS`` (defaults and JSON-schema types) so config validation, fingerprints
and the class itself read the same list.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import torch
from PIL import Image

from harness.errors import ConfigError, HarnessError
from harness.io import digest

if TYPE_CHECKING:
    from models.layouts import WeightFiles

TINY = "tiny"
RANDOM = "random"  # the full-size architecture with random weights: for timing, never for scores


@dataclass(frozen=True)
class WeightsSpec:
    """Where a model's weights come from: ``tiny`` (random, built in code) or a local path."""

    key: str  # the config key under ``weights:``, for error messages
    value: str

    @property
    def is_tiny(self) -> bool:
        return self.value == TINY

    @property
    def is_random(self) -> bool:
        return self.value == RANDOM

    @property
    def is_builtin(self) -> bool:
        return self.value in (TINY, RANDOM)

    @property
    def unset_variables(self) -> list[str]:
        """Environment variables the value names (``$VAR``, ``${VAR}``) that are not set."""
        import re

        return [v for v in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", self.value) if v not in os.environ]

    def stat_signature(self) -> str:
        """A cheap signature of the entry's files (name, size, mtime; no hashing): it changes when a
        file is replaced at the same path, so a Snakemake params trigger reruns the jobs that read
        it (their fingerprints then hash the contents, through models.weights' cache)."""
        if self.is_builtin or self.unset_variables:
            return self.value
        root = self.path
        base = root.parent if root.is_file() else root
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        h = hashlib.sha256()
        for p in files:
            rel = p.relative_to(base)
            if any(part.startswith(".") for part in rel.parts):
                continue  # .cache, .git: no loader reads them
            st = p.stat()
            h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]

    @property
    def path(self) -> Path:
        if self.is_builtin:
            raise ValueError(f"a {self.value!r} weights spec has no path")
        expanded = os.path.expanduser(os.path.expandvars(self.value))
        if self.unset_variables:
            raise HarnessError(
                f"weights.{self.key}: {self.value!r} uses an environment variable that is not set; "
                "export it or write the path out"
            )
        return Path(expanded)

    def require_dir(self) -> Path:
        path = self.path
        if path.is_file():
            raise HarnessError(f"weights.{self.key}: {path} is a file, but a folder is expected here (README 'Weights')")
        if not path.is_dir():
            raise HarnessError(
                f"weights.{self.key}: folder {path} does not exist; download the weights there "
                f"(see README 'Weights') or set weights.{self.key}: tiny for random weights"
            )
        return path


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HarnessError(f"config key 'device': {device!r} was asked for but CUDA is not available; use 'auto' or 'cpu'")
    return dev


#: the one message for half precision on a CPU (config validation and the jobs both raise it)
HALF_ON_CPU = ("config key 'dtype': float16 on a CPU (device resolves to cpu): half-precision kernels are missing or "
               "inexact there and diffusers refuses such pipelines; use dtype float32 (or bfloat16, or auto), or run "
               "on a CUDA device")


def resolve_dtype(dtype: str, device: torch.device, gpu_default: torch.dtype = torch.float16) -> torch.dtype:
    """``auto`` means fp32 on the CPU (half precision is slow and inexact there) and the model's GPU default."""
    if dtype == "auto":
        return gpu_default if device.type == "cuda" else torch.float32
    if dtype == "float16" and device.type == "cpu":
        raise HarnessError(HALF_ON_CPU)
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def library_versions(*names: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", *names):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


class System(ABC):
    """A text-to-image generator as the harness sees it.

    Subclasses set ``PARAMS`` (name -> {"default": ..., "schema": {...}, "doc": ...}) and implement
    :meth:`_build` and :meth:`generate`. ``generate`` must derive all randomness from ``seeds`` with one
    ``torch.Generator`` per sample, so an image never depends on the batch it was made in.
    """

    PARAMS: ClassVar[dict[str, dict[str, Any]]] = {}
    #: libraries whose version is part of the fingerprint (numbers can move between releases)
    LIBRARIES: ClassVar[tuple[str, ...]] = ("diffusers", "transformers")
    #: an intermediate stage (e.g. CogView3's 512 px base): its images feed another system and it
    #: is not a row of the paper's tables
    IS_STAGE: ClassVar[bool] = False
    #: models whose images this one can take as its ``input`` (an image-to-image stage names the base
    #: stages whose resolution and latent space it was built for); empty: it reads no images
    INPUT_MODELS: ClassVar[tuple[str, ...]] = ()
    #: parameters of the full-size networks one generation job of this model holds, per component
    #: (counted on the meta device from the model's random full-size build; tests/test_resources.py
    #: recounts them): the memory estimates of harness/resources.py start from them
    PARAMETERS: ClassVar[dict[str, int]] = {}
    #: parameters whose value names another entry under ``weights:`` (text encoder, VAE, ...)
    WEIGHT_PARAMS: ClassVar[tuple[str, ...]] = ()
    #: how many tokens the text encoder reads; longer prompts are truncated (counted in reports)
    TEXT_LIMIT: ClassVar[int] = 77
    #: parameters every system takes, whatever its model (they change the prompts, not the model)
    COMMON_PARAMS: ClassVar[dict[str, dict[str, Any]]] = {
        "expand": {"default": False, "schema": {"type": "boolean"},
                   "doc": "generate from the expanded prompts (config `expansion:`) instead of the originals"},
        "ablation": {"default": None, "schema": {"enum": ["tr_sweep", "expansion"]},
                     "doc": "set by the harness on systems it derives for an ablation; they are not table rows"},
        "input": {"default": None, "schema": {"type": ["string", "null"]},
                  "doc": "the system whose images this one reads (image-to-image stages such as a relay)"},
    }
    #: the cheapest parameters that still run every stage of the sampler (tests build each
    #: registered model with them; ``input`` names another registered model)
    QUICK_PARAMS: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        name: str,
        params: dict[str, Any],
        weights: WeightsSpec,
        device: str = "auto",
        dtype: str = "auto",
        batch_invariant: bool = False,
        all_weights: dict[str, str] | None = None,
    ):
        self.name = name
        self.batch_invariant = batch_invariant
        self.params = self.resolve_params(params, name)
        self.weights = weights
        self.all_weights = dict(all_weights or {weights.key: weights.value})
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device, self.gpu_dtype())
        self._built = False

    # ---- parameters -------------------------------------------------------------------------
    @classmethod
    def resolve_params(cls, params: dict[str, Any], system_name: str) -> dict[str, Any]:
        unknown = sorted(set(params) - set(cls.PARAMS) - set(cls.COMMON_PARAMS) - {"model", "weights"})
        if unknown:
            raise ConfigError(
                f"config key systems.{system_name}.{unknown[0]}: unknown parameter for model "
                f"{params.get('model')!r}; known: {', '.join(sorted(cls.PARAMS))}"
            )
        out = {k: spec["default"] for k, spec in {**cls.COMMON_PARAMS, **cls.PARAMS}.items()}
        out.update({k: v for k, v in params.items() if k in cls.PARAMS or k in cls.COMMON_PARAMS})
        return out

    @classmethod
    def params_schema(cls) -> dict[str, Any]:
        props = {k: spec["schema"] for k, spec in {**cls.COMMON_PARAMS, **cls.PARAMS}.items()}
        props["model"] = {"type": "string"}
        props["weights"] = {"type": "string"}
        return {"type": "object", "properties": props, "additionalProperties": False, "required": ["model"]}

    @classmethod
    def weight_keys(cls, params: dict[str, Any]) -> list[str]:
        """Every ``weights:`` entry a system with these (resolved) parameters reads."""
        return [params.get("weights", params["model"])] + [
            params.get(p, cls.PARAMS[p]["default"]) for p in cls.WEIGHT_PARAMS
        ]

    @classmethod
    def text_tokenizer(cls, params: dict[str, Any], weights: dict[str, str]):
        """The tokenizer of the text encoder that reads the prompt (to count truncated prompts).

        Loads only the tokenizer (from the weights folder, or the tiny build's), never the model.
        """
        from models.tokenizers import clip_tokenizer

        return clip_tokenizer()

    def component_weights(self, param: str) -> WeightsSpec:
        key = self.params[param]
        if key not in self.all_weights:
            raise ConfigError(f"config key 'systems.{self.name}.{param}': no entry {key!r} under weights:")
        return WeightsSpec(key, str(self.all_weights[key]))

    def gpu_dtype(self) -> torch.dtype:
        return torch.float16

    # ---- build / generate -------------------------------------------------------------------
    def build(self) -> "System":
        if not self._built:
            self._build()
            self._built = True
        return self

    @abstractmethod
    def _build(self) -> None:
        """Load real weights from ``self.weights.path`` or build the tiny random model."""

    def generate(
        self, prompts: Sequence[str], seeds: Sequence[int], inputs: Sequence[Image.Image] | None = None
    ) -> list[Image.Image]:
        """One RGB image per (prompt, seed); ``inputs`` are upstream images for image-to-image stages.

        The noise of every sample comes from its own seed, so batching never changes *which* image is
        drawn. Float kernels still pick different reduction orders for different batch shapes (a
        1-LSB pixel difference is typical), so with ``batch_invariant`` the model runs one sample per
        forward pass and the PNG bytes do not depend on batch size, sharding or resumption at all.
        """
        if len(prompts) != len(seeds) or (inputs is not None and len(inputs) != len(prompts)):
            raise ValueError("generate() needs one seed (and one input image, if any) per prompt")
        self.build()
        if not self.batch_invariant:
            return self._generate(prompts, seeds, inputs)
        out: list[Image.Image] = []
        for i in range(len(prompts)):
            out += self._generate(prompts[i : i + 1], seeds[i : i + 1], None if inputs is None else inputs[i : i + 1])
        return out

    @abstractmethod
    def _generate(
        self, prompts: Sequence[str], seeds: Sequence[int], inputs: Sequence[Image.Image] | None
    ) -> list[Image.Image]:
        """Generate one batch; all randomness from ``generators(seeds)``."""

    @classmethod
    def unet_calls(cls, params: dict[str, Any], input_resolution: int | None = None) -> list[tuple[int, int]]:
        """(denoiser-network evaluations per image, output resolution in px) of each denoising stage
        this system runs itself (not its ``input`` system's); a CFG step counts 2 evaluations."""
        raise NotImplementedError(f"{cls.__name__} does not count its UNet calls")

    @classmethod
    def steps_label(cls, params: dict[str, Any]) -> str:
        """What the paper's "Steps" column shows for a system with these (resolved) parameters,
        e.g. ``50`` or ``20+10``."""
        return str(params["steps"])

    @classmethod
    def describe_grid(cls, params: dict[str, Any]) -> str:
        """The timestep grid a report must state for this system ("" where nothing needs saying)."""
        return ""

    # ---- weight files -------------------------------------------------------------------------
    @classmethod
    def entry_files(cls, role: str | None, key: str, path: Path) -> "WeightFiles":
        """The files the weights entry ``key`` at ``path`` provides for ``role`` (None: the system's
        own weights; else the ``WEIGHT_PARAMS`` name that points at it), exactly as the loader reads
        them (:mod:`models.layouts`). Preflight checks them, fingerprints hash them."""
        raise NotImplementedError(f"{cls.__name__} declares no weights layout")

    def _entries(self) -> list[tuple[str | None, WeightsSpec]]:
        return [(None, self.weights)] + [(p, self.component_weights(p)) for p in self.WEIGHT_PARAMS]

    def files(self, role: str | None = None) -> "WeightFiles":
        """The files of this system's weights entry for ``role``; one error listing all that is missing."""
        spec = dict(self._entries())[role]
        return self.entry_files(role, spec.key, spec.path).require()

    # ---- provenance -------------------------------------------------------------------------
    def weights_fingerprint(self) -> dict[str, str]:
        """Per weights entry: ``tiny``/``random``, or a digest of exactly the files the loader reads."""
        from models.weights import files_digest

        out = {}
        for role, spec in self._entries():
            out[spec.key] = spec.value if spec.is_builtin else files_digest(self.files(role).files, spec.path)
        return out

    def fingerprint(self) -> dict[str, Any]:
        """Everything that can change the pixels: code-relevant parameters, weights, dtype, libraries."""
        # A system without an input reads no images: leaving the unset key out keeps the digests
        # of results made before ``input`` became a common parameter (no needless regeneration).
        params = {k: v for k, v in self.params.items() if not (k == "input" and v is None)}
        return {
            "model": type(self).__name__,
            "params": params,
            "weights": self.weights_fingerprint(),
            "dtype": str(self.dtype).removeprefix("torch."),
            "device_type": self.device.type,
            "libraries": library_versions(*self.LIBRARIES),
        }


def move(module, device: torch.device, dtype: torch.dtype):
    """``module.to(device, dtype)``, casting only when needed (diffusers warns on every dtype cast)."""
    module = module.to(device)
    if any(p.dtype != dtype for p in module.parameters()):
        module = module.to(dtype)
    return module


def stream_seed(seed: int, stream: str) -> int:
    """A seed for one named random stream of a sample (e.g. a relay stage's noise).

    Two stages of one pipeline must not reuse the sample seed directly: their Gaussian draws would
    start with the same numbers.
    """
    if not stream:
        return int(seed)
    return int.from_bytes(hashlib.sha256(f"{int(seed)}/{stream}".encode()).digest()[:8], "big") >> 1


def generators(seeds: Sequence[int], stream: str = "") -> list[torch.Generator]:
    """One generator per sample: the noise of image i depends on seeds[i] alone.

    Generators live on the CPU so the same seed gives the same noise on every device.
    """
    return [torch.Generator("cpu").manual_seed(stream_seed(s, stream)) for s in seeds]


def randn(shape: Sequence[int], gens: Sequence[torch.Generator]) -> torch.Tensor:
    """A batch of unit Gaussians, sample i drawn from gens[i] (so it does not depend on the batch)."""
    return torch.stack([torch.randn(tuple(shape), generator=g, dtype=torch.float32) for g in gens])
