"""Stable Cascade (Würstchen v3) through diffusers: prior (stage C) then decoder (stage B + VQGAN stage A).

Paper setting: prior 20 steps with guidance 4.0, decoder 10 steps with guidance 0.0 (no CFG); the
guidance values are the diffusers ``StableCascadeCombinedPipeline`` defaults and the model card's.
Both stages draw from the same per-sample generators, so the image of a sample depends only on
its seed (one existing harness ignores the seed for this model; see docs/reference.md §9.4).

Real weights: ``weights.<key>`` is a folder holding the two diffusers repos side by side,
``stable-cascade-prior/`` and ``stable-cascade/``. The decoder pipeline's ``from_pretrained`` cannot
load the deprecated ``PaellaVQModel`` in diffusers 0.42 (docs/reference.md §9.3), so every component is
loaded on its own and the pipelines are assembled here.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from PIL import Image

from harness.errors import HarnessError
from models.base import System, WeightsSpec, generators, move
from models.tokenizers import CLIP_VOCAB_SIZE, check_tokenizer_size, clip_tokenizer

PRIOR_CONFIG = dict(  # diffusers/stable-cascade-configs prior/config.json
    in_channels=16, out_channels=16, timestep_ratio_embedding_dim=64, patch_size=1, conditioning_dim=2048,
    block_out_channels=(2048, 2048), num_attention_heads=(32, 32), down_num_layers_per_block=(8, 24),
    up_num_layers_per_block=(24, 8), down_blocks_repeat_mappers=(1, 1), up_blocks_repeat_mappers=(1, 1),
    block_types_per_layer=(("SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock"),) * 2,
    clip_text_in_channels=1280, clip_text_pooled_in_channels=1280, clip_image_in_channels=768, clip_seq=4,
    effnet_in_channels=None, pixel_mapper_in_channels=None, kernel_size=3, dropout=(0.1, 0.1), self_attn=True,
    timestep_conditioning_type=("sca", "crp"), switch_level=(False,),
)
DECODER_CONFIG = dict(  # diffusers/stable-cascade-configs decoder/config.json
    in_channels=4, out_channels=4, timestep_ratio_embedding_dim=64, patch_size=2, conditioning_dim=1280,
    block_out_channels=(320, 640, 1280, 1280), num_attention_heads=(0, 0, 20, 20),
    down_num_layers_per_block=(2, 6, 28, 6), up_num_layers_per_block=(6, 28, 6, 2),
    down_blocks_repeat_mappers=(1, 1, 1, 1), up_blocks_repeat_mappers=(3, 3, 2, 2),
    block_types_per_layer=(("SDCascadeResBlock", "SDCascadeTimestepBlock"),) * 2
    + (("SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock"),) * 2,
    clip_text_in_channels=None, clip_text_pooled_in_channels=1280, clip_image_in_channels=None, clip_seq=4,
    effnet_in_channels=16, pixel_mapper_in_channels=3, kernel_size=3, dropout=(0, 0, 0.1, 0.1), self_attn=True,
    timestep_conditioning_type=("sca",), switch_level=None,
)
VQGAN_CONFIG = dict(bottleneck_blocks=12, embed_dim=384, in_channels=3, latent_channels=4, levels=2,
                    num_vq_embeddings=8192, out_channels=3, scale_factor=0.3764, up_down_scale_factor=2)

#: the two diffusers repos, side by side in the weights folder, and the components loaded from each
PRIOR_REPO, DECODER_REPO = "stable-cascade-prior", "stable-cascade"
PRIOR_COMPONENTS = ("prior", "text_encoder", "tokenizer", "scheduler")
DECODER_COMPONENTS = ("decoder", "vqgan", "scheduler")

TINY_PRIOR_CONFIG = dict(
    PRIOR_CONFIG, conditioning_dim=128, block_out_channels=(128, 128), num_attention_heads=(2, 2),
    down_num_layers_per_block=(1, 1), up_num_layers_per_block=(1, 1), clip_text_in_channels=32,
    clip_text_pooled_in_channels=32, dropout=(0.0, 0.0),
)
TINY_DECODER_CONFIG = dict(
    DECODER_CONFIG, conditioning_dim=32, block_out_channels=(16, 32, 64, 128), num_attention_heads=(0, 0, 1, 2),
    down_num_layers_per_block=(1, 1, 1, 1), up_num_layers_per_block=(1, 1, 1, 1),
    up_blocks_repeat_mappers=(1, 1, 1, 1), clip_text_pooled_in_channels=32, dropout=(0, 0, 0, 0),
)
TINY_VQGAN_CONFIG = dict(VQGAN_CONFIG, bottleneck_blocks=1, embed_dim=16, num_vq_embeddings=2)


def paella_vq_model():
    from diffusers.pipelines.deprecated.wuerstchen import PaellaVQModel

    return PaellaVQModel


class StableCascadeSystem(System):
    # stage C (prior), stage B (decoder), the bigG text tower and stage A (the Paella VQGAN)
    PARAMETERS = {"prior": 3_589_103_632, "decoder": 1_562_941_136, "text_encoder": 694_659_840, "vqgan": 18_406_894}
    QUICK_PARAMS = {"prior_steps": 2, "decoder_steps": 2, "resolution": 128}
    PARAMS = {
        "prior_steps": {"default": 20, "schema": {"type": "integer", "minimum": 1}, "doc": "stage C steps"},
        "prior_guidance": {"default": 4.0, "schema": {"type": "number", "minimum": 0}, "doc": "stage C CFG"},
        "decoder_steps": {"default": 10, "schema": {"type": "integer", "minimum": 1}, "doc": "stage B steps"},
        "decoder_guidance": {"default": 0.0, "schema": {"type": "number", "minimum": 0}, "doc": "stage B CFG (0: off)"},
        "resolution": {"default": 1024, "schema": {"type": "integer", "minimum": 128, "multipleOf": 128},
                       "doc": "pixels (the decoder needs a multiple of 128)"},
    }

    def gpu_dtype(self) -> torch.dtype:
        return torch.bfloat16  # the prior overflows in fp16

    @classmethod
    def text_tokenizer(cls, params, weights):
        key = params.get("weights", params["model"])
        entry = WeightsSpec(key, str(weights.get(key, "tiny")))
        if entry.is_builtin:
            return super().text_tokenizer(params, weights)
        from transformers import CLIPTokenizer

        folder = entry.path / PRIOR_REPO / "tokenizer"
        tok = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
        check_tokenizer_size(tok, CLIP_VOCAB_SIZE, str(folder))
        return tok

    @classmethod
    def entry_files(cls, role, key, path):
        from models.layouts import WeightFiles, pipeline_folder

        hint = ("Expected the diffusers repos stabilityai/stable-cascade-prior and stabilityai/stable-cascade as "
                f"subfolders {PRIOR_REPO}/ and {DECODER_REPO}/ (README 'Weights').")
        out = WeightFiles(key, path, hint=hint)
        if not path.is_dir():
            out.missing.append(f"{path} {'is a file' if path.is_file() else 'does not exist'}, expected a folder")
            return out
        out.merge(pipeline_folder(key, path / PRIOR_REPO, PRIOR_COMPONENTS))
        return out.merge(pipeline_folder(key, path / DECODER_REPO, DECODER_COMPONENTS))

    def _build(self) -> None:
        if self.weights.is_tiny:
            parts = self._tiny_components()
        elif self.weights.is_random:
            parts = self._random_components()
        else:
            parts = self._load_components()
        from diffusers import StableCascadeDecoderPipeline, StableCascadePriorPipeline

        self.prior = StableCascadePriorPipeline(
            tokenizer=parts["tokenizer"], text_encoder=parts["text_encoder"], prior=parts["prior"],
            scheduler=parts["prior_scheduler"],
        )
        self.decoder = StableCascadeDecoderPipeline(
            decoder=parts["decoder"], tokenizer=parts["tokenizer"], text_encoder=parts["text_encoder"],
            scheduler=parts["decoder_scheduler"], vqgan=parts["vqgan"],
        )
        for pipe in (self.prior, self.decoder):
            pipe.set_progress_bar_config(disable=True)
            for name, module in pipe.components.items():
                if isinstance(module, torch.nn.Module):
                    setattr(pipe, name, move(module, self.device, self.dtype))

    def _tiny_components(self) -> dict[str, Any]:
        from diffusers import DDPMWuerstchenScheduler, StableCascadeUNet
        from transformers import CLIPTextModelWithProjection

        from models.sdxl import tiny_clip_text_config

        torch.manual_seed(0)
        prior = StableCascadeUNet(**TINY_PRIOR_CONFIG)
        torch.manual_seed(1)
        decoder = StableCascadeUNet(**TINY_DECODER_CONFIG)
        torch.manual_seed(2)
        text_encoder = CLIPTextModelWithProjection(tiny_clip_text_config())
        torch.manual_seed(3)
        vqgan = paella_vq_model()(**TINY_VQGAN_CONFIG)
        return dict(
            prior=prior.eval(), decoder=decoder.eval(), text_encoder=text_encoder.eval(), vqgan=vqgan.eval(),
            tokenizer=clip_tokenizer(),
            prior_scheduler=DDPMWuerstchenScheduler(), decoder_scheduler=DDPMWuerstchenScheduler(),
        )

    def _random_components(self) -> dict[str, Any]:
        """Full-size stages B and C, VQGAN and bigG text encoder with random weights (time-cost benchmark)."""
        from diffusers import DDPMWuerstchenScheduler, StableCascadeUNet
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection

        bigg = CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                              projection_dim=1280, hidden_act="gelu", vocab_size=CLIP_VOCAB_SIZE,
                              bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
        with torch.device(self.device):
            parts = dict(
                prior=StableCascadeUNet(**PRIOR_CONFIG).to(self.dtype).eval(),
                decoder=StableCascadeUNet(**DECODER_CONFIG).to(self.dtype).eval(),
                text_encoder=CLIPTextModelWithProjection(bigg).to(self.dtype).eval(),
                vqgan=paella_vq_model()(**VQGAN_CONFIG).to(self.dtype).eval(),
            )
        return dict(parts, tokenizer=clip_tokenizer(), prior_scheduler=DDPMWuerstchenScheduler(),
                    decoder_scheduler=DDPMWuerstchenScheduler())

    def _load_components(self) -> dict[str, Any]:
        from diffusers import DDPMWuerstchenScheduler, StableCascadeUNet
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        from models.layouts import pipeline_folder

        root = self.files().root
        prior_dir, dec_dir = root / PRIOR_REPO, root / DECODER_REPO
        # Components one by one (the decoder pipeline's from_pretrained cannot build PaellaVQModel),
        # each repo in the variant its layout resolved (a bf16-only download loads as bf16).
        kw = dict(local_files_only=True, torch_dtype=self.dtype,
                  variant=pipeline_folder(self.weights.key, prior_dir, PRIOR_COMPONENTS).variant)
        dkw = dict(kw, variant=pipeline_folder(self.weights.key, dec_dir, DECODER_COMPONENTS).variant)
        tok = CLIPTokenizer.from_pretrained(prior_dir / "tokenizer", local_files_only=True)
        check_tokenizer_size(tok, CLIP_VOCAB_SIZE, f"{prior_dir}/tokenizer")
        return dict(
            prior=StableCascadeUNet.from_pretrained(prior_dir, subfolder="prior", **kw),
            decoder=StableCascadeUNet.from_pretrained(dec_dir, subfolder="decoder", **dkw),
            text_encoder=CLIPTextModelWithProjection.from_pretrained(prior_dir, subfolder="text_encoder", **kw),
            vqgan=paella_vq_model().from_pretrained(dec_dir, subfolder="vqgan", **dkw),
            tokenizer=tok,
            prior_scheduler=DDPMWuerstchenScheduler.from_pretrained(prior_dir, subfolder="scheduler"),
            decoder_scheduler=DDPMWuerstchenScheduler.from_pretrained(dec_dir, subfolder="scheduler"),
        )

    def _generate(self, prompts: Sequence[str], seeds: Sequence[int], inputs=None) -> list[Image.Image]:
        return stable_cascade_call(self.prior, self.decoder, prompts, generators(seeds), self.params)

    @classmethod
    def steps_label(cls, params: dict[str, Any]) -> str:
        return f"{params['prior_steps']}+{params['decoder_steps']}"

    @classmethod
    def unet_calls(cls, params, input_resolution=None):
        def cfg(scale):
            return 2 if scale > 1 else 1

        return [(params["prior_steps"] * cfg(params["prior_guidance"]), params["resolution"]),
                (params["decoder_steps"] * cfg(params["decoder_guidance"]), params["resolution"])]

    @classmethod
    def denoiser_stages(cls, params, input_resolution=None):
        """Per stage of :meth:`unet_calls`: (full-size network, latent (C, H, W) of one evaluation at
        batch 1, network forwards per evaluation). Latent sides as diffusers 0.42 computes them:
        ``StableCascadePriorPipeline.prepare_latents`` ceil(px / resolution_multiple 42.67) for stage C,
        ``StableCascadeDecoderPipeline.prepare_latents`` int(that * latent_dim_scale 10.67) for stage B
        (1024 px: 16x24x24 and 4x256x256)."""
        import math

        prior = math.ceil(params["resolution"] / 42.67)
        decoder = int(prior * 10.67)
        return [("stable-cascade-prior", (PRIOR_CONFIG["in_channels"], prior, prior), 1),
                ("stable-cascade-decoder", (DECODER_CONFIG["in_channels"], decoder, decoder), 1)]


@torch.inference_mode()
def stable_cascade_call(prior, decoder, prompts, gens, params) -> list[Image.Image]:
    """Prior then decoder, both seeded with the same per-sample generators (their streams continue)."""
    r = params["resolution"]
    emb = prior(
        prompt=list(prompts), height=r, width=r, num_inference_steps=params["prior_steps"],
        guidance_scale=params["prior_guidance"], generator=gens,
    ).image_embeddings
    out = decoder(
        image_embeddings=emb.to(decoder.decoder.dtype), prompt=list(prompts), num_inference_steps=params["decoder_steps"],
        guidance_scale=params["decoder_guidance"], generator=gens, output_type="pil",
    )
    return list(out.images)
