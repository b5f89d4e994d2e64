"""SDXL base 1.0 through diffusers' ``StableDiffusionXLPipeline``.

Real weights: a local diffusers-format folder (``stabilityai/stable-diffusion-xl-base-1.0``).
Tiny weights: the same pipeline classes built from small configs with random weights and the real
CLIP BPE tokenizers, so the smoke profile runs exactly the code path of the paper profile.
Defaults are the model card's: 50 steps, guidance 5.0, 1024x1024 (``../shared/reference/baselines.md`` §1.1).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from PIL import Image

from harness.errors import HarnessError
from models.base import System, generators
from models.tokenizers import CLIP_VOCAB_SIZE, check_tokenizer_size, clip_tokenizer

RESOLUTION_SCHEMA = {"type": "integer", "minimum": 64, "multipleOf": 8}


def tiny_clip_text_config(projection_dim: int = 32):
    """A 2-layer, 32-d CLIP text tower over the real 49,408-token vocabulary."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=CLIP_VOCAB_SIZE, projection_dim=projection_dim, hidden_act="gelu",
        max_position_embeddings=77,
        # Special ids taken from the tokenizer: the pooled-token lookup relies on eos (baselines.md §5.3).
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )


def tiny_vae(seed: int = 0):
    """AutoencoderKL with SDXL's 4 levels (so the x8 latent scale is real) at 8-16 channels."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4,
        sample_size=64, scaling_factor=0.13025, force_upcast=True,
    )


class SDXLSystem(System):
    PARAMS = {
        "steps": {"default": 50, "schema": {"type": "integer", "minimum": 1}, "doc": "denoising steps"},
        "guidance": {"default": 5.0, "schema": {"type": "number", "minimum": 0}, "doc": "CFG scale (model card: 5.0)"},
        "resolution": {"default": 1024, "schema": RESOLUTION_SCHEMA, "doc": "output height = width, pixels"},
    }

    # ---- build -------------------------------------------------------------------------------
    def _build(self) -> None:
        pipe = self._load_pipeline() if not self.weights.is_tiny else self._tiny_pipeline()
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(self.device)

    def _load_pipeline(self):
        from diffusers import StableDiffusionXLPipeline

        folder = self.weights.require_dir()
        self.weights.require_file("model_index.json")
        try:
            pipe = StableDiffusionXLPipeline.from_pretrained(
                folder, torch_dtype=self.dtype, local_files_only=True, add_watermarker=False
            )
        except (OSError, ValueError) as err:
            raise HarnessError(
                f"weights.{self.weights.key}: could not load an SDXL pipeline from {folder} ({err}); "
                "it must be a diffusers-format folder of stabilityai/stable-diffusion-xl-base-1.0"
            ) from err
        check_tokenizer_size(pipe.tokenizer, CLIP_VOCAB_SIZE, f"{folder}/tokenizer")
        check_tokenizer_size(pipe.tokenizer_2, CLIP_VOCAB_SIZE, f"{folder}/tokenizer_2")
        return pipe

    def _tiny_components(self) -> dict[str, Any]:
        from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection

        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
            transformer_layers_per_block=(1, 2), norm_num_groups=8, use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=8,
            # SDXL invariants: 6*time_dim + pooled dim, and te1 + te2 hidden sizes.
            projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=32 + 32,
            time_cond_proj_dim=self._time_cond_proj_dim(),
        )
        torch.manual_seed(1)
        text_encoder = CLIPTextModel(tiny_clip_text_config())
        torch.manual_seed(2)
        text_encoder_2 = CLIPTextModelWithProjection(tiny_clip_text_config())
        scheduler = EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
            prediction_type="epsilon", steps_offset=1, timestep_spacing="leading",
        )
        return dict(
            unet=unet, vae=tiny_vae(3), text_encoder=text_encoder, text_encoder_2=text_encoder_2,
            tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(pad_token="!"), scheduler=scheduler,
        )

    def _time_cond_proj_dim(self) -> int | None:
        return None

    def _tiny_pipeline(self):
        from diffusers import StableDiffusionXLPipeline

        pipe = StableDiffusionXLPipeline(**self._tiny_components(), add_watermarker=False)
        if self.dtype != torch.float32:
            pipe = pipe.to(dtype=self.dtype)
        return pipe

    # ---- generate ----------------------------------------------------------------------------
    def pipeline_kwargs(self) -> dict[str, Any]:
        r = self.params["resolution"]
        return dict(
            num_inference_steps=self.params["steps"], guidance_scale=self.params["guidance"], height=r, width=r
        )

    @torch.inference_mode()
    def _generate(self, prompts: Sequence[str], seeds: Sequence[int], inputs=None) -> list[Image.Image]:
        out = self.pipe(prompt=list(prompts), generator=generators(seeds), output_type="pil", **self.pipeline_kwargs())
        return list(out.images)

    def steps_label(self) -> str:
        return str(self.params["steps"])
