"""CogView3's UNet as a diffusers ``UNet2DConditionModel`` (docs/reference.md §2.1).

SDXL's topology (320 channels, multipliers 1/2/4, transformer depths 1/2/10, 64-d heads, linear
projections, conv down/nearest-up), with
- cross-attention over T5-XXL states: ``cross_attention_dim`` 4096 (SDXL: 2048);
- a 1536-d size vector instead of SDXL's pooled text + time ids: sgm's ``label_emb`` is
  Linear(1536, 1280) -> SiLU -> Linear(1280, 1280) added to the time embedding, which is diffusers'
  ``class_embed_type="projection"`` (``addition_embed_type`` stays off);
- distilled models only: ``w_proj`` = Linear(D, 320, bias=False) added to the timestep sinusoid
  before ``time_embed``, which is diffusers' ``time_cond_proj_dim`` = D (512 base, 256 relay).
"""

from __future__ import annotations

from typing import Any

FULL_PARAMETERS = 2_906_612_484
BASE_GUIDANCE_EMBED_DIM = 512
RELAY_GUIDANCE_EMBED_DIM = 256


def unet_config(
    guidance_embed_dim: int | None = None,
    *,
    channels: tuple[int, int, int] = (320, 640, 1280),
    head_dim: int = 64,
    depths: tuple[int, int, int] = (1, 2, 10),
    cross_attention_dim: int = 4096,
    norm_num_groups: int = 32,
) -> dict[str, Any]:
    """The diffusers config; defaults are the full-size model, smaller arguments give test builds."""
    return dict(
        sample_size=64,
        in_channels=4,
        out_channels=4,  # no concat conditioning: the relay UNet does not see z^L as extra channels
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=channels,
        layers_per_block=2,
        transformer_layers_per_block=depths,  # the middle block takes the last depth, as sgm
        attention_head_dim=tuple(c // head_dim for c in channels),  # diffusers' name for the head count
        cross_attention_dim=cross_attention_dim,
        use_linear_projection=True,
        norm_num_groups=norm_num_groups,
        norm_eps=1e-5,  # ResBlock GroupNorm; Transformer2DModel uses 1e-6 itself, as sgm
        flip_sin_to_cos=True,  # [cos, sin] timestep sinusoid with frequencies /160 (freq_shift 0)
        freq_shift=0,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=1536,
        addition_embed_type=None,
        time_cond_proj_dim=guidance_embed_dim,
        upcast_attention=False,
    )


def tiny_unet_config(guidance_embed_dim: int | None = None, depths: tuple[int, int, int] = (1, 1, 1)) -> dict[str, Any]:
    """A small random-weight stand-in: same block structure, 32/64/128 channels, 32-d text states."""
    return unet_config(guidance_embed_dim, channels=(32, 64, 128), head_dim=32, depths=depths, cross_attention_dim=32)


def build_unet(config: dict[str, Any], seed: int | None = None):
    import torch
    from diffusers import UNet2DConditionModel

    if seed is not None:
        torch.manual_seed(seed)
    return UNet2DConditionModel(**config)
