"""SDXL base 1.0 through diffusers' ``StableDiffusionXLPipeline``.

Real weights: a local diffusers-format folder (``stabilityai/stable-diffusion-xl-base-1.0``).
Tiny weights: the same pipeline classes built from small configs with random weights and the real
CLIP BPE tokenizers, so the smoke profile runs exactly the code path of the paper profile.
Defaults are the model card's: 50 steps, guidance 5.0, 1024x1024 (docs/reference.md §9.1).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from PIL import Image

from harness.errors import HarnessError
from models.base import System, WeightsSpec, generators
from models.tokenizers import CLIP_VOCAB_SIZE, check_tokenizer_size, clip_tokenizer

#: the components of stabilityai/stable-diffusion-xl-base-1.0 the pipeline loads (README 'Weights')
SDXL_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")

RESOLUTION_SCHEMA = {"type": "integer", "minimum": 64, "multipleOf": 8}

#: stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (docs/reference.md §9.1), for full-size checks
SDXL_UNET_CONFIG = dict(
    act_fn="silu", addition_embed_type="text_time", addition_embed_type_num_heads=64, addition_time_embed_dim=256,
    attention_head_dim=(5, 10, 20), block_out_channels=(320, 640, 1280), center_input_sample=False,
    class_embed_type=None, class_embeddings_concat=False, conv_in_kernel=3, conv_out_kernel=3,
    cross_attention_dim=2048, cross_attention_norm=None,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"), downsample_padding=1,
    dual_cross_attention=False, encoder_hid_dim=None, encoder_hid_dim_type=None, flip_sin_to_cos=True, freq_shift=0,
    in_channels=4, layers_per_block=2, mid_block_only_cross_attention=None, mid_block_scale_factor=1,
    mid_block_type="UNetMidBlock2DCrossAttn", norm_eps=1e-05, norm_num_groups=32, num_attention_heads=None,
    num_class_embeds=None, only_cross_attention=False, out_channels=4, projection_class_embeddings_input_dim=2816,
    resnet_out_scale_factor=1.0, resnet_skip_time_act=False, resnet_time_scale_shift="default", sample_size=128,
    time_cond_proj_dim=None, time_embedding_act_fn=None, time_embedding_dim=None, time_embedding_type="positional",
    timestep_post_act=None, transformer_layers_per_block=(1, 2, 10),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), upcast_attention=None,
    use_linear_projection=True,
)


def tiny_clip_text_config(projection_dim: int = 32):
    """A 2-layer, 32-d CLIP text tower over the real 49,408-token vocabulary."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=CLIP_VOCAB_SIZE, projection_dim=projection_dim, hidden_act="gelu",
        max_position_embeddings=77,
        # Special ids taken from the tokenizer: the pooled-token lookup relies on eos (docs/reference.md §9.2).
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
    GUIDANCE_EMBEDDED = False  # LCM feeds w through the UNet instead of a CFG batch
    # the two CLIP text towers: ViT-L/14 (123.1 M) and OpenCLIP bigG/14 with its projection (694.7 M)
    PARAMETERS = {"unet": 2_567_463_684, "text_encoders": 817_720_320, "vae": 83_653_863}
    QUICK_PARAMS = {"steps": 2, "resolution": 64}
    PARAMS = {
        "steps": {"default": 50, "schema": {"type": "integer", "minimum": 1}, "doc": "denoising steps"},
        "guidance": {"default": 5.0, "schema": {"type": "number", "minimum": 0}, "doc": "CFG scale (model card: 5.0)"},
        "resolution": {"default": 1024, "schema": RESOLUTION_SCHEMA, "doc": "output height = width, pixels"},
    }

    @classmethod
    def _tokenizer_entry(cls, params, weights) -> WeightsSpec:
        key = params.get("weights", params["model"])
        return WeightsSpec(key, str(weights.get(key, "tiny")))

    @classmethod
    def text_tokenizer(cls, params, weights):
        entry = cls._tokenizer_entry(params, weights)
        if entry.is_builtin:
            return super().text_tokenizer(params, weights)
        from transformers import CLIPTokenizer

        folder = entry.path / "tokenizer"
        tok = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
        check_tokenizer_size(tok, CLIP_VOCAB_SIZE, str(folder))
        return tok

    @classmethod
    def entry_files(cls, role, key, path):
        from models.layouts import pipeline_folder

        return pipeline_folder(key, path, SDXL_COMPONENTS,
                               "It must be a diffusers folder of stabilityai/stable-diffusion-xl-base-1.0 (README 'Weights').")

    # ---- build -------------------------------------------------------------------------------
    def _build(self) -> None:
        if self.weights.is_tiny:
            pipe = self._tiny_pipeline()
        elif self.weights.is_random:
            pipe = self._random_pipeline()
        else:
            pipe = self._load_pipeline()
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(self.device)

    def _load_pipeline(self):
        from diffusers import StableDiffusionXLPipeline

        files = self.files()
        folder = files.root
        try:
            pipe = StableDiffusionXLPipeline.from_pretrained(
                folder, torch_dtype=self.dtype, variant=files.variant, local_files_only=True, add_watermarker=False
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

    def _random_pipeline(self):
        """Full-size SDXL with random weights, built on the target device (time-cost benchmark)."""
        from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

        from models.cogview3.checkpoint import SDXL_VAE_CONFIG

        te1 = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                             projection_dim=768, hidden_act="quick_gelu", vocab_size=CLIP_VOCAB_SIZE,
                             bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
        te2 = CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                             projection_dim=1280, hidden_act="gelu", vocab_size=CLIP_VOCAB_SIZE,
                             bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
        with torch.device(self.device):
            unet = UNet2DConditionModel(**dict(SDXL_UNET_CONFIG, time_cond_proj_dim=self._time_cond_proj_dim()))
            vae = AutoencoderKL(**SDXL_VAE_CONFIG)
            text_encoder, text_encoder_2 = CLIPTextModel(te1), CLIPTextModelWithProjection(te2)
        scheduler = EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
            prediction_type="epsilon", steps_offset=1, timestep_spacing="leading",
        )
        pipe = StableDiffusionXLPipeline(
            unet=unet, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, scheduler=scheduler,
            tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(pad_token="!"), add_watermarker=False,
        )
        return pipe.to(dtype=self.dtype)

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

    @classmethod
    def unet_calls(cls, params, input_resolution=None):
        cfg = 2 if params["guidance"] > 1 and not cls.GUIDANCE_EMBEDDED else 1  # diffusers runs CFG when scale > 1
        return [(params["steps"] * cfg, params["resolution"])]

    @classmethod
    def denoiser_stages(cls, params, input_resolution=None):
        """Per stage of :meth:`unet_calls`: (full-size network, latent (C, H, W) of one evaluation at
        batch 1, network forwards per evaluation); :mod:`harness.flops` counts their FLOPs. The VAE
        downsamples 8x (the pipeline's ``vae_scale_factor``, 2 ** (4 levels - 1))."""
        side = params["resolution"] // 8
        return [("lcm-sdxl-unet" if cls.GUIDANCE_EMBEDDED else "sdxl-unet", (4, side, side), 1)]


class LCMSDXLSystem(SDXLSystem):
    """LCM-SDXL (latent-consistency/lcm-sdxl): the distilled SDXL UNet with an LCM scheduler.

    The UNet has a 256-d guidance embedding (``time_cond_proj_dim``), so the pipeline feeds w through
    it and runs no CFG batch. Defaults are diffusers' documented call: 4 steps, guidance 8.0.
    Weights: ``weights.<key>`` is the lcm-sdxl UNet folder; ``base`` names the weights entry of the
    SDXL base folder whose text encoders, tokenizers and VAE it uses.
    """

    PARAMS = {
        **SDXLSystem.PARAMS,
        "steps": {"default": 4, "schema": {"type": "integer", "minimum": 1}, "doc": "LCM steps"},
        "guidance": {"default": 8.0, "schema": {"type": "number", "minimum": 0}, "doc": "embedded guidance w"},
        "base": {"default": "sdxl", "schema": {"type": "string"}, "doc": "weights entry of the SDXL base folder"},
    }
    WEIGHT_PARAMS = ("base",)
    GUIDANCE_EMBED_DIM = 256
    GUIDANCE_EMBEDDED = True

    @classmethod
    def _tokenizer_entry(cls, params, weights) -> WeightsSpec:
        key = params.get("base", cls.PARAMS["base"]["default"])
        return WeightsSpec(key, str(weights.get(key, "tiny")))

    @classmethod
    def entry_files(cls, role, key, path):
        from models.layouts import model_folder, pipeline_folder

        if role == "base":  # the SDXL folder: everything but its UNet, which LCM's replaces
            return pipeline_folder(key, path, [c for c in SDXL_COMPONENTS if c != "unet"],
                                   "It must be a diffusers folder of stabilityai/stable-diffusion-xl-base-1.0.")
        unet_dir = path / "unet" if (path / "unet").is_dir() else path
        return model_folder(key, unet_dir, "diffusion_pytorch_model", "LCM-SDXL UNet",
                            "Give the latent-consistency/lcm-sdxl folder (README 'Weights').")

    def _time_cond_proj_dim(self) -> int | None:
        return self.GUIDANCE_EMBED_DIM

    def _tiny_pipeline(self):
        return self._with_lcm_scheduler(super()._tiny_pipeline())

    def _random_pipeline(self):
        return self._with_lcm_scheduler(super()._random_pipeline())

    @staticmethod
    def _with_lcm_scheduler(pipe):
        from diffusers import LCMScheduler

        pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
        return pipe

    def _load_pipeline(self):
        from diffusers import LCMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

        base = self.component_weights("base")
        if base.is_builtin:
            raise HarnessError(f"systems.{self.name}: real LCM weights need a real SDXL base folder, not `{base.value}`")
        files = self.files()
        unet = UNet2DConditionModel.from_pretrained(files.root, local_files_only=True, torch_dtype=self.dtype,
                                                    variant=files.variant)
        if unet.config.time_cond_proj_dim != self.GUIDANCE_EMBED_DIM:
            raise HarnessError(
                f"weights.{self.weights.key}: the UNet in {files.root} has time_cond_proj_dim="
                f"{unet.config.time_cond_proj_dim}, expected {self.GUIDANCE_EMBED_DIM} (latent-consistency/lcm-sdxl)"
            )
        base_files = self.files("base")
        base_dir = base_files.root
        pipe = StableDiffusionXLPipeline.from_pretrained(
            base_dir, unet=unet, torch_dtype=self.dtype, variant=base_files.variant, local_files_only=True,
            add_watermarker=False,
        )
        pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
        check_tokenizer_size(pipe.tokenizer, CLIP_VOCAB_SIZE, f"{base_dir}/tokenizer")
        check_tokenizer_size(pipe.tokenizer_2, CLIP_VOCAB_SIZE, f"{base_dir}/tokenizer_2")
        return pipe
