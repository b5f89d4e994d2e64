"""CogView3 conditioning (docs/reference.md §2.2, §5): T5-XXL text, the 1536-d size vector, the guidance embedding."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from harness.errors import HarnessError

T5_MAX_LENGTH = 225
SIZE_EMBED_DIM = 256  # per scalar; 6 scalars -> 1536


def sinusoid(values: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[cos, sin] sinusoid with frequencies exp(-ln(max_period) * i / (dim/2)), as sgm's timestep_embedding."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = values.float().reshape(-1, 1) * freqs.reshape(1, -1)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def size_vector(
    original_size: tuple[int, int], crop_top_left: tuple[int, int], target_size: tuple[int, int], batch: int = 1
) -> torch.Tensor:
    """The ADM vector [B, 1536]: (orig_h, orig_w, crop_top, crop_left, tgt_h, tgt_w), each a 256-d sinusoid.

    Inference uses orig = target = (S, S) and crop (0, 0), S = 512 for the base and 1024 for the relay.
    """
    scalars = torch.tensor([*original_size, *crop_top_left, *target_size], dtype=torch.float32)
    vec = sinusoid(scalars, SIZE_EMBED_DIM).reshape(1, -1)
    return vec.expand(batch, -1).clone()


def guidance_embedding(w: float, dim: int, batch: int = 1) -> torch.Tensor:
    """Distilled models' guidance-strength input (docs/reference.md §5): w * 1000 -> [sin, cos] sinusoid of ``dim``.

    Unlike the timestep sinusoid it puts sin first and uses frequencies exp(-ln(10000) * i / (dim/2 - 1)).
    It is projected by ``w_proj`` (diffusers: ``time_embedding.cond_proj``) and added to the timestep
    sinusoid before ``time_embed``.

    The frequencies are rounded exactly as the official ``guidance_scale_embedding`` (THUDM/CogView3
    sat/sgm/modules/diffusionmodules/sampling.py L24-50) rounds them, so a distilled checkpoint sees the
    input it was trained on bit for bit (see :func:`guidance_frequencies`).
    """
    half = dim // 2
    freqs = guidance_frequencies(half)
    # w is a float32 tensor before the x1000, as in the official sampler (torch.ones(B) * cfg_cond_scale,
    # then w * 1000.0 in sampling.py L40); identical for w = 7.5, 1 ulp apart for some other w.
    args = (torch.tensor(w, dtype=torch.float32) * 1000.0) * freqs
    emb = torch.cat([torch.sin(args), torch.cos(args)]).reshape(1, -1)
    return emb.expand(batch, -1).clone()


def guidance_frequencies(half: int) -> torch.Tensor:
    """exp(-ln(10000) * i / (half - 1)), i < half, in float32 as the official sampling.py L43-44 computes it.

    The official code forms the step ln(10000) / (half - 1) once as a float32 scalar and multiplies the
    float32 ``arange`` by its negative: exp(arange(half) * -step). Scaling the arange by -ln(10000) first and
    dividing by (half - 1) afterwards rounds twice per element: its exponents are up to 2 ulp off, so 126
    of the 256 base-distill frequencies differ (by up to 16 ulp after exp), which moves sin/cos of
    w*1000 = 7500 by up to 4.8e-4. (Forming the step in float64, -(math.log(10000) / (half - 1)), gives
    the same float32 frequencies at half = 128 and 256: the scalar is rounded to float32 identically.)
    """
    step = torch.log(torch.tensor(10000.0, dtype=torch.float32)) / (half - 1)
    return torch.exp(torch.arange(half, dtype=torch.float32) * -step)


class T5TextEncoder:
    """T5 v1.1 XXL encoder: ``max_length`` tokens (the official 225), padded to it, no attention mask (pads are
    attended)."""

    def __init__(self, tokenizer, encoder, device: torch.device, dtype: torch.dtype, max_length: int = T5_MAX_LENGTH):
        self.tokenizer, self.max_length = tokenizer, max_length
        from models.base import move

        self.encoder = move(encoder, device, dtype).eval()
        self.device, self.dtype = device, dtype

    @classmethod
    def from_folder(cls, folder, device, dtype) -> "T5TextEncoder":
        """A folder with ``tokenizer/`` and ``text_encoder/`` (THUDM/CogVideoX-2b's), loaded as shipped.

        The encoder's weights go straight to ``device`` in ``dtype`` (no fp32 copy in host RAM).
        """
        from pathlib import Path

        from transformers import T5EncoderModel

        folder = Path(folder)
        t5_folder("t5", folder).require()
        tok = load_t5_tokenizer(folder / "tokenizer")
        enc = T5EncoderModel.from_pretrained(folder / "text_encoder", local_files_only=True, dtype=dtype,
                                             device_map={"": str(device)})
        return cls(tok, enc, device, dtype)

    @torch.inference_mode()
    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        ids = self.tokenizer(
            list(prompts), padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(self.device)
        return self.encoder(input_ids=ids).last_hidden_state


def t5_folder(key: str, folder, hint: str = ""):
    """The T5 v1.1 XXL folder as THUDM/CogVideoX-2b ships it: ``tokenizer/`` (spiece.model) + ``text_encoder/``."""
    from pathlib import Path

    from models.layouts import WeightFiles, model_folder, tokenizer_folder

    folder = Path(folder)
    out = WeightFiles(key, folder, hint=hint)
    if not folder.is_dir():
        out.missing.append(f"{folder} {'is a file' if folder.is_file() else 'does not exist'}, expected a folder "
                           "holding tokenizer/ and text_encoder/ (THUDM/CogVideoX-2b's T5 v1.1 XXL)")
        return out
    out.merge(tokenizer_folder(key, folder / "tokenizer", "tokenizer/"))
    return out.merge(model_folder(key, folder / "text_encoder", "model", "text_encoder/"))


def load_t5_tokenizer(folder):
    """T5's tokenizer from a folder as shipped (``spiece.model``, maybe no ``tokenizer.json``).

    transformers 5 converts ``spiece.model`` to a fast tokenizer, which needs ``protobuf``; without it
    transformers raises an error about tiktoken that says nothing of the cause, so it is caught here.
    """
    from transformers import T5Tokenizer

    from models.tokenizers import check_tokenizer_size

    try:
        tok = T5Tokenizer.from_pretrained(folder, local_files_only=True)
    except (ImportError, ValueError, OSError) as err:
        try:  # sentencepiece's generated protobuf code: fails on a missing or too old protobuf
            import sentencepiece.sentencepiece_model_pb2  # noqa: F401
        except Exception as cause:
            raise HarnessError(
                f"cannot read the T5 tokenizer in {folder}: converting its spiece.model needs the protobuf "
                f"package at the locked version ({type(cause).__name__}: {cause}); run "
                "`pip install -c requirements/lock.txt protobuf` (make setup installs it)"
            ) from err
        raise HarnessError(f"cannot read the T5 tokenizer in {folder} ({type(err).__name__}: {err}); it must hold "
                           "spiece.model (or tokenizer.json) as THUDM/CogVideoX-2b's tokenizer/ does") from err
    check_tokenizer_size(tok, T5_MIN_VOCAB, str(folder))
    return tok


#: an offline load of an incomplete folder yields a handful of tokens; the 100 sentinels, 3 specials and at
#: least 20 pieces make a T5 vocabulary (real ones hold 32,100; the micro world's word-level one about 170)
T5_MIN_VOCAB = 100 + 3 + 20
