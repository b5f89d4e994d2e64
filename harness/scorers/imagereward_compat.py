"""Make image-reward 1.5 import and run on transformers 5 (deps.md §2 lists the breakages).

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
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch

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


def import_imagereward():
    """Apply the patches (once) and return the ``ImageReward`` package."""
    if "ImageReward" in sys.modules and getattr(sys.modules["ImageReward"], "_harness_patched", False):
        return sys.modules["ImageReward"]
    import transformers.modeling_utils as mu
    import transformers.pytorch_utils as pu

    mu.apply_chunking_to_forward = pu.apply_chunking_to_forward
    mu.prune_linear_layer = pu.prune_linear_layer
    mu.find_pruneable_heads_and_indices = _find_pruneable_heads_and_indices

    import ImageReward
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


import transformers  # noqa: E402  (after the helpers, used in import_imagereward)
