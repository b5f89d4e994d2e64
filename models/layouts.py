"""The upstream on-disk layouts: which files a loader reads from a ``weights:`` entry.

One function per layout (a diffusers model folder, a diffusers pipeline folder, a transformers
model, a tokenizer folder, a SAT checkpoint, a fixed set of named files) returns a
:class:`WeightFiles`: the files the loader will read, or everything that is missing. Three users
read the same answer, so they cannot disagree:

- the loaders, to pick the file (and the ``variant``: a folder holding only
  ``*.fp16.safetensors`` is loaded with ``variant="fp16"``);
- ``python -m harness preflight``, to report every missing file at once without loading a model;
- fingerprints, which hash exactly these files (a full SDXL snapshot holds tens of GB the harness
  never reads: the single-file checkpoints at its root, the refiner VAE, ONNX exports).

Nothing here imports torch, diffusers or transformers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from harness.errors import HarnessError

#: weight-file variants in the order a loader prefers them (None = the full-precision file)
VARIANTS: tuple[str | None, ...] = (None, "fp16", "bf16")


@dataclass
class WeightFiles:
    """What one weights entry provides: the files a loader reads, or what is missing there."""

    key: str  # the ``weights:`` entry, for messages
    root: Path
    files: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # one human-readable line per missing item
    variant: str | None = None
    hint: str = ""  # what the README says to put there

    @property
    def ok(self) -> bool:
        return not self.missing

    def merge(self, other: "WeightFiles") -> "WeightFiles":
        self.files += [f for f in other.files if f not in self.files]
        self.missing += other.missing
        self.variant = self.variant or other.variant
        return self

    def require(self) -> "WeightFiles":
        """Raise one error listing everything missing (the loaders call this before loading)."""
        if self.missing:
            lines = "; ".join(self.missing)
            where = f"weights.{self.key} ({self.root})" if self.key else str(self.root)
            raise HarnessError(f"{where}: {lines}. {self.hint}".strip())
        return self


def _add_variant(name: str, variant: str | None) -> str:
    """``model.safetensors`` + fp16 -> ``model.fp16.safetensors`` (the hub's naming, as diffusers and transformers use it)."""
    if variant is None:
        return name
    head, ext = name.rsplit(".", 1)
    return f"{head}.{variant}.{ext}"


def _weights_in(folder: Path, stem: str, variants=VARIANTS) -> tuple[list[Path], str | None] | None:
    """The weight files of one model folder: single file or shards + index, first variant that exists."""
    for variant in variants:
        for ext in ("safetensors", "bin"):
            # transformers names its pickled weights pytorch_model*.bin, its safetensors model*.safetensors
            name = "pytorch_model" if stem == "model" and ext == "bin" else stem
            single = folder / _add_variant(f"{name}.{ext}", variant)
            if single.is_file():
                return [single], variant
            index = folder / _add_variant(f"{name}.{ext}.index.json", variant)
            if index.is_file():
                try:
                    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
                except (OSError, ValueError, KeyError) as err:
                    raise HarnessError(f"{index} is not a weights index ({err}); download it again") from err
                return [index, *(folder / s for s in shards)], variant
    return None


def not_a_folder(folder: Path, what: str) -> str:
    """Why ``folder`` is not the folder ``what`` needs: a file given where a folder is expected is
    named as such (usually the path of one file inside the folder was given)."""
    if folder.is_file():
        return (f"{what}: {folder} is a file, but a folder is expected here: give the folder that holds it "
                f"({folder.parent}), not one of its files")
    return f"{what}: folder {folder} does not exist"


def model_folder(key: str, folder: Path, stem: str, what: str, hint: str = "") -> WeightFiles:
    """A diffusers (``stem`` = diffusion_pytorch_model) or transformers (``model``) model folder."""
    out = WeightFiles(key, folder, hint=hint)
    if not folder.is_dir():
        out.missing.append(not_a_folder(folder, what))
        return out
    config = folder / "config.json"
    if config.is_file():
        out.files.append(config)
    else:
        out.missing.append(f"{what}: {config} is missing")
    found = _weights_in(folder, stem)
    if found is None:
        out.missing.append(f"{what}: no {stem}.safetensors (or .fp16/.bf16 variant, or sharded index) in {folder}")
        return out
    files, out.variant = found
    out.missing += [f"{what}: shard {f} named by {files[0].name} is missing" for f in files[1:] if not f.is_file()]
    out.files += [f for f in files if f.is_file()]
    return out


#: files a tokenizer folder may hold; it needs one of the vocabularies (TOKENIZER_VOCABS)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "spiece.model", "vocab.txt")
TOKENIZER_VOCABS = (("tokenizer.json",), ("vocab.json", "merges.txt"), ("spiece.model",), ("vocab.txt",))


def tokenizer_folder(key: str, folder: Path, what: str, hint: str = "") -> WeightFiles:
    out = WeightFiles(key, folder, hint=hint)
    if not folder.is_dir():
        out.missing.append(not_a_folder(folder, what))
        return out
    out.files = [folder / f for f in TOKENIZER_FILES if (folder / f).is_file()]
    if not any(all((folder / f).is_file() for f in vocab) for vocab in TOKENIZER_VOCABS):
        out.missing.append(f"{what}: {folder} holds no vocabulary (tokenizer.json, vocab.json + merges.txt, "
                           "spiece.model or vocab.txt)")
    return out


def pipeline_folder(key: str, folder: Path, components: Iterable[str], hint: str = "",
                    model_index: bool = True) -> WeightFiles:
    """A diffusers pipeline folder: ``model_index.json`` and the listed component subfolders.

    A component is a scheduler (``scheduler_config.json``), a tokenizer (``tokenizer*``), or a model
    (``config.json`` + weights). ``from_pretrained(variant=...)`` takes one variant for the whole
    pipeline, so the one chosen is the first of :data:`VARIANTS` that every model component has.
    """
    out = WeightFiles(key, folder, hint=hint)
    if not folder.is_dir():
        out.missing.append(not_a_folder(folder, "diffusers folder") if folder.is_file()
                           else f"{folder} does not exist, expected a diffusers folder")
        return out
    if model_index:
        index = folder / "model_index.json"
        (out.files.append(index) if index.is_file() else out.missing.append(f"{index} is missing"))
    models: list[Path] = []
    for name in components:
        sub = folder / name
        if name.startswith("scheduler"):
            config = sub / "scheduler_config.json"
            (out.files.append(config) if config.is_file() else out.missing.append(f"{config} is missing"))
        elif name.startswith("tokenizer"):
            out.merge(tokenizer_folder(key, sub, f"{name}/"))
        else:
            models.append(sub)
    common = [v for v in VARIANTS if all(_variant_files(m, v) for m in models)]
    variant = common[0] if common else None  # None is also the full-precision variant: `common` tells them apart
    for m in models:
        if not common:  # nothing common: report each folder as it is
            out.merge(model_folder(key, m, _stem(m), f"{m.name}/"))
            continue
        files = [m / "config.json", *_variant_files(m, variant)]
        out.files += [f for f in files if f.is_file()]
        out.missing += [f"{m.name}/: {f} is missing" for f in files if not f.is_file()]
    if models and not common and all(model_folder(key, m, _stem(m), "").ok for m in models):
        have = {m.name: [v or "full" for v in VARIANTS if _variant_files(m, v)] for m in models}
        out.missing.append(f"the model folders share no weights variant ({have}); download one precision for all")
    out.variant = variant
    return out


def _is_transformers(folder: Path) -> bool:
    """transformers models store ``model*.safetensors``; diffusers models ``diffusion_pytorch_model*``."""
    return folder.is_dir() and any(p.name.startswith(("model.", "model-", "pytorch_model")) for p in folder.iterdir())


def _stem(folder: Path) -> str:
    return "model" if _is_transformers(folder) else "diffusion_pytorch_model"


def _variant_files(folder: Path, variant: str | None) -> list[Path]:
    """The weight files of ``variant`` in a model folder ([] if it has none)."""
    if not folder.is_dir():
        return []
    found = _weights_in(folder, _stem(folder), (variant,))
    return found[0] if found else []


def named_files(key: str, folder: Path, names: Iterable[str | tuple[str, ...]], hint: str = "") -> WeightFiles:
    """A folder of fixed file names; a tuple entry means any one of those names (the first present is read)."""
    out = WeightFiles(key, folder, hint=hint)
    if not folder.is_dir():
        what = "is a file" if folder.is_file() else "does not exist"
        out.missing.append(f"{folder} {what}, expected a folder holding {', '.join(_name(n) for n in names)}")
        return out
    for name in names:
        options = (name,) if isinstance(name, str) else name
        present = [folder / n for n in options if (folder / n).is_file()]
        if present:
            out.files.append(present[0])
        else:
            out.missing.append(f"{_name(name)} is missing in {folder}")
    return out


def _name(name: str | tuple[str, ...]) -> str:
    return name if isinstance(name, str) else " or ".join(name)


def single_file(key: str, path: Path, what: str, hint: str = "") -> WeightFiles:
    out = WeightFiles(key, path, hint=hint)
    if path.is_file():
        out.files.append(path)
    elif path.is_dir():
        out.missing.append(f"{path} is a folder, but the file {what} is expected here: give the path of the file "
                           "inside it")
    else:
        out.missing.append(f"{what} {path} does not exist")
    return out


SAT_STATE_FILE = "mp_rank_00_model_states.pt"


def sat_folder(key: str, folder: Path, hint: str = "") -> WeightFiles:
    """An official SAT checkpoint: ``latest`` (the iteration) + ``<iteration>/mp_rank_00_model_states.pt``."""
    out = WeightFiles(key, folder, hint=hint)
    if not folder.is_dir():
        what = f"SAT checkpoint folder (latest + <iteration>/{SAT_STATE_FILE})"
        out.missing.append(not_a_folder(folder, what) if folder.is_file() else f"{folder} does not exist, expected a {what}")
        return out
    latest = folder / "latest"
    if not latest.is_file():
        out.missing.append(f"{latest} is missing (a SAT folder holds latest + <iteration>/{SAT_STATE_FILE}, "
                           "as the official CogView3 downloads unpack)")
        return out
    iteration = latest.read_text().strip()
    state = folder / iteration / SAT_STATE_FILE
    out.files.append(latest)
    (out.files.append(state) if state.is_file() else
     out.missing.append(f"{latest} names iteration {iteration!r}, but {state} does not exist"))
    return out
