"""Make image-reward 1.5 import and run on transformers 5 (docs/reference.md §10.2 lists the breakages).

Call :func:`import_imagereward` instead of ``import ImageReward``. The patches are small and exact:
1. ``transformers.modeling_utils`` lost ``apply_chunking_to_forward`` / ``prune_linear_layer`` (moved
   to ``transformers.pytorch_utils``) and ``find_pruneable_heads_and_indices`` (gone; only used for
   head pruning): re-export them before BLIP's ``med.py`` imports them.
2. ``PreTrainedModel.invert_attention_mask`` and ``get_head_mask`` were removed: BLIP's BertModel
   still calls them; re-add them with transformers 4's semantics.
3. transformers 5 needs ``post_init()`` in ``__init__`` (BLIP calls ``init_weights()``): run
   ``post_init`` once, which itself calls the original ``init_weights``.
4. ``init_tokenizer`` used ``additional_special_tokens_ids`` (gone) and fetched bert-base-uncased from
   the hub: it now reads a local vocabulary folder and adds ``[DEC]``/``[ENC]`` the same way, giving
   ids 30522/30523 with the real vocabulary, as before.

Only the model modules are imported: ``ImageReward.ImageReward`` (the ``ImageReward`` model class,
``MLP``, ``_transform``) and ``ImageReward.models.BLIP`` (``blip``, ``blip_pretrain``, ``med``,
``vit``). The two package ``__init__`` files are not run: ``ImageReward/__init__.py`` imports
``ReFL.py`` (the fine-tuning script: ``datasets``, ``diffusers``, ``accelerate`` at module level)
and ``ImageReward/models/__init__.py`` imports the CLIP and Aesthetic scores (``clip``, which needs
``pkg_resources``). None of that runs when scoring, so ``datasets`` (+ pyarrow), ``clip-anytorch``
and the ``setuptools<81`` cap are not dependencies. The two packages are registered in
``sys.modules`` as the real packages (their own spec and ``__path__``) without their ``__init__``;
``ImageReward.ImageReward`` is the model class, as the real ``__init__`` makes it, and any other
package-level name (``ImageReward.load``, ``ReFL``, ...) raises an AttributeError that says why.
``fairscale`` stays a dependency: ``vit.py`` imports it at module level.

A missing package (image-reward itself, or one of its run-time imports such as ``fairscale``)
raises :class:`~harness.errors.HarnessError` naming the exact pip command (:mod:`harness.deps`).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from pathlib import Path

import torch

from harness import deps

_VOCAB_DIR: list[Path] = []
MIN_BERT_VOCAB = 30522


@contextlib.contextmanager
def bert_vocab(folder: Path, minimum: int = MIN_BERT_VOCAB):
    """While active, BLIP's tokenizer comes from ``folder`` (a bert-base-uncased ``vocab.txt`` folder)."""
    _VOCAB_DIR.append((Path(folder), minimum))
    try:
        yield
    finally:
        _VOCAB_DIR.pop()


def _find_pruneable_heads_and_indices(heads, n_heads, head_size, already_pruned_heads):
    mask = torch.ones(n_heads, head_size)
    heads = set(heads) - already_pruned_heads
    for head in heads:
        head -= sum(1 for h in already_pruned_heads if h < head)
        mask[head] = 0
    mask = mask.view(-1).contiguous().eq(1)
    index = torch.arange(len(mask))[mask].long()
    return heads, index


def _invert_attention_mask(self, mask: torch.Tensor) -> torch.Tensor:
    ext = mask[:, None, :, :] if mask.dim() == 3 else mask[:, None, None, :]
    ext = ext.to(dtype=self.dtype)
    return (1.0 - ext) * torch.finfo(self.dtype).min


def _get_head_mask(self, head_mask, num_hidden_layers, is_attention_chunked=False):
    if head_mask is not None:
        raise NotImplementedError("head masks are not used by the ImageReward scorer")
    return [None] * num_hidden_layers


def _init_tokenizer():
    from transformers import BertTokenizer

    from models.tokenizers import check_tokenizer_size

    if not _VOCAB_DIR:
        raise RuntimeError("ImageReward's tokenizer needs a local vocabulary: wrap the build in bert_vocab(folder)")
    folder, minimum = _VOCAB_DIR[-1]
    tok = BertTokenizer.from_pretrained(str(folder), local_files_only=True)
    check_tokenizer_size(tok, minimum, str(folder))
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_tokens(["[ENC]"], special_tokens=True)
    tok.enc_token_id = tok.convert_tokens_to_ids("[ENC]")
    return tok


#: the image-reward modules the scorer runs (the model, BLIP's ViT + BERT, the tokenizer set-up)
MODEL_MODULES = ("ImageReward.ImageReward", "ImageReward.models.BLIP.blip", "ImageReward.models.BLIP.blip_pretrain",
                 "ImageReward.models.BLIP.med", "ImageReward.models.BLIP.vit")
#: the packages whose ``__init__`` is skipped (it imports training and CLIP code the scorer never runs)
UNINITIALISED_PACKAGES = ("ImageReward", "ImageReward.models")
NEEDED_FOR = "metric 'imagereward'"


def _not_imported(package: str, name: str):
    if name.startswith("__"):  # protocol probes (__file__, __wrapped__, ...): plain AttributeError
        raise AttributeError(name)
    raise AttributeError(
        f"module {package!r} has no attribute {name!r}: the harness imports only image-reward's model modules "
        f"{MODEL_MODULES} and not {package}/__init__.py (see harness/scorers/imagereward_compat.py)"
    )


def _register_without_init(name: str):
    """Put package ``name`` (its parent already registered) into sys.modules without running its ``__init__``."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        raise deps.missing("ImageReward", NEEDED_FOR)
    module = importlib.util.module_from_spec(spec)
    module.__getattr__ = lambda attr: _not_imported(name, attr)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


def import_imagereward():
    """Apply the patches (once) and return the ``ImageReward`` package (its model modules imported)."""
    if "ImageReward" in sys.modules and getattr(sys.modules["ImageReward"], "_harness_patched", False):
        return sys.modules["ImageReward"]
    deps.require("ImageReward", NEEDED_FOR)
    import transformers
    import transformers.modeling_utils as mu
    import transformers.pytorch_utils as pu

    mu.apply_chunking_to_forward = pu.apply_chunking_to_forward
    mu.prune_linear_layer = pu.prune_linear_layer
    mu.find_pruneable_heads_and_indices = _find_pruneable_heads_and_indices

    registered = [n for n in UNINITIALISED_PACKAGES if n not in sys.modules]
    for name in registered:
        _register_without_init(name)
    try:
        for name in MODEL_MODULES:
            importlib.import_module(name)
    except ModuleNotFoundError as err:
        if registered:  # leave no half-imported image-reward behind
            for name in [n for n in sys.modules if n == "ImageReward" or n.startswith("ImageReward.")]:
                del sys.modules[name]
        if not err.name or err.name.split(".")[0] == "ImageReward":
            raise
        raise deps.missing(err.name, f"{NEEDED_FOR} (image-reward 1.5, installed with --no-deps)") from err
    ImageReward = sys.modules["ImageReward"]
    if "ImageReward" in registered:  # as the package's __init__ does (``from .utils import *``)
        ImageReward.ImageReward = sys.modules["ImageReward.ImageReward"].ImageReward
    from ImageReward.models.BLIP import blip, blip_pretrain, med

    med.BertPreTrainedModel.invert_attention_mask = _invert_attention_mask
    med.BertPreTrainedModel.get_head_mask = _get_head_mask
    original_init_weights = transformers.PreTrainedModel.init_weights

    def init_weights(self):
        if getattr(self, "_harness_in_init", False):
            return original_init_weights(self)
        self._harness_in_init = True
        try:
            self.post_init()
        finally:
            self._harness_in_init = False

    med.BertPreTrainedModel.init_weights = init_weights
    blip.init_tokenizer = _init_tokenizer
    blip_pretrain.init_tokenizer = _init_tokenizer
    ImageReward._harness_patched = True
    return ImageReward

