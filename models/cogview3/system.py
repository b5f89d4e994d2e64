"""CogView3 systems: the base stage and the relay super-resolution stage (full and distilled).

A CogView3 run is two systems in the config, the relay one naming the base one as its ``input``:

    cogview3-base: {model: cogview3-base, weights: cogview3-base, steps: 50, guidance: 7.5}
    cogview3:      {model: cogview3-relay, input: cogview3-base, weights: cogview3-relay, t_r: 500, steps: 10}

so the relay stage is its own Snakemake job reading the base stage's saved 8-bit PNGs, and every T_r
of a sweep reuses one base pass. Pipeline (docs/reference.md §4.2, §4.3):

    base:  T5(prompt) -> DDIM 512 px (CFG 7.5, zero negative) -> VAE decode -> uint8 (truncation) -> PNG
    relay: PNG -> [-1, 1] -> bilinear x2 in pixel space -> VAE encode (posterior *sample*) x 0.13025 = z^L
           -> relay sampler from T_r -> VAE decode -> uint8 (truncation)

Weights (``weights:`` entries): the UNet as an official SAT checkpoint folder, ``text_encoder`` a
folder with T5 v1.1 XXL ``tokenizer/`` + ``text_encoder/`` (e.g. THUDM/CogVideoX-2b), ``vae`` the SDXL
VAE (diffusers folder or ``sdxl_vae.safetensors``). Each may be ``tiny``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from harness.errors import ConfigError
from models.base import System, generators, move, randn
from models.cogview3.conditioning import T5TextEncoder, guidance_embedding, size_vector, T5_MAX_LENGTH
from models.cogview3.denoiser import CogView3Denoiser
from models.cogview3.sampling import ddim_sample, relay_sample
from models.cogview3.schedule import relay_timesteps, timesteps
from models.cogview3.unet import (
    BASE_GUIDANCE_EMBED_DIM,
    RELAY_GUIDANCE_EMBED_DIM,
    build_unet,
    tiny_unet_config,
    unet_config,
)

VAE_SCALE = 0.13025
VAE_FACTOR = 8

_COMMON = {
    "guidance": {"default": 7.5, "schema": {"type": "number", "minimum": 0}, "doc": "CFG scale, or the embedded w when distilled"},
    "distilled": {"default": False, "schema": {"type": "boolean"}, "doc": "distilled checkpoint: no CFG, guidance embedded"},
    "text_encoder": {"default": "t5", "schema": {"type": "string"}, "doc": "weights entry of the T5 folder"},
    "vae": {"default": "sdxl-vae", "schema": {"type": "string"}, "doc": "weights entry of the SDXL VAE"},
    "text_tokens": {"default": T5_MAX_LENGTH, "schema": {"type": "integer", "minimum": 2, "maximum": 512},
                    "doc": "T5 tokens a prompt is padded or truncated to (the official 225; fewer only for a "
                           "scaled-down model trained with them, e.g. the micro world's)"},
}


def _passes(params: dict[str, Any]) -> int:
    """Network evaluations per sampler step: 2 under CFG; 1 for a distilled model (guidance embedded) or at
    guidance 1, where :class:`CogView3Denoiser` runs the conditional batch alone."""
    return 1 if params["distilled"] or params["guidance"] == 1.0 else 2


def _tiny_seed(key: str) -> int:
    return int.from_bytes(key.encode()[:8].ljust(8, b"\0"), "little") % (2**31)


class _CogView3(System):
    WEIGHT_PARAMS = ("text_encoder", "vae")
    # each stage's job loads its own UNet, the T5 v1.1 XXL encoder and the SDXL VAE
    PARAMETERS = {"unet": 2_906_612_484, "text_encoder": 4_762_310_656, "vae": 83_653_863}
    LIBRARIES = ("diffusers", "transformers")
    GUIDANCE_EMBED_DIM: int

    TEXT_LIMIT = T5_MAX_LENGTH

    def fingerprint(self) -> dict[str, Any]:
        fp = super().fingerprint()
        # The official length leaves the key out, so results made before `text_tokens` existed keep their digests.
        if fp["params"].get("text_tokens") == T5_MAX_LENGTH:
            fp["params"] = {k: v for k, v in fp["params"].items() if k != "text_tokens"}
        return fp

    def gpu_dtype(self) -> torch.dtype:
        return torch.bfloat16  # the reference runs fp16; bf16 avoids the fp16 overflow of T5-XXL

    @classmethod
    def text_tokenizer(cls, params, weights):
        from models.tokenizers import t5_tokenizer_tiny

        key = params.get("text_encoder", cls.PARAMS["text_encoder"]["default"])
        folder = str(weights.get(key, "tiny"))
        if folder in ("tiny", "random"):
            return t5_tokenizer_tiny(T5_MAX_LENGTH)
        from models.base import WeightsSpec
        from models.cogview3.conditioning import load_t5_tokenizer

        return load_t5_tokenizer(WeightsSpec(key, folder).path / "tokenizer")

    @classmethod
    def entry_files(cls, role, key, path):
        from models.cogview3.conditioning import t5_folder
        from models.layouts import model_folder, sat_folder, single_file

        hint = "See README 'Weights' for the layout."
        if role is None:
            return sat_folder(key, path, hint)
        if role == "text_encoder":
            return t5_folder(key, path, hint)
        if path.is_dir():
            return model_folder(key, path, "diffusion_pytorch_model", "SDXL VAE folder", hint)
        return single_file(key, path, "SDXL VAE file (sdxl_vae.safetensors)", hint)

    def _build(self) -> None:
        dim = self.GUIDANCE_EMBED_DIM if self.params["distilled"] else None
        if self.weights.is_tiny:
            self.unet = build_unet(tiny_unet_config(dim), seed=_tiny_seed(self.weights.key))
        elif self.weights.is_random:
            with torch.device(self.device):
                self.unet = build_unet(unet_config(dim)).to(self.dtype)
        else:
            from models.cogview3.checkpoint import load_sat_unet

            # Straight from the memory-mapped file to the device and dtype (one copy at most in host RAM).
            self.unet = load_sat_unet(self.files().root, dim, self.device, self.dtype)
        self.unet = move(self.unet, self.device, self.dtype).eval()

        t5 = self.component_weights("text_encoder")
        if t5.is_tiny:
            self.text_encoder = tiny_t5_encoder(self.device)
        elif t5.is_random:
            self.text_encoder = random_t5_xxl_encoder(self.device, self.dtype)
        else:
            self.files("text_encoder")
            self.text_encoder = T5TextEncoder.from_folder(t5.path, self.device, self.dtype)

        self.text_encoder.max_length = self.params["text_tokens"]

        vae = self.component_weights("vae")
        if vae.is_tiny:
            from models.sdxl import tiny_vae

            self.vae = tiny_vae(seed=3)
        elif vae.is_random:
            from diffusers import AutoencoderKL

            from models.cogview3.checkpoint import SDXL_VAE_CONFIG

            with torch.device(self.device):
                self.vae = AutoencoderKL(**SDXL_VAE_CONFIG)
        else:
            from models.cogview3.checkpoint import load_sdxl_vae

            self.files("vae")
            self.vae = load_sdxl_vae(vae.path, torch.float32)
        # The SDXL VAE overflows in fp16 (docs/reference.md §2.3): encode and decode in fp32.
        self.vae = move(self.vae, self.device, torch.float32).eval()

    @classmethod
    def denoiser_network(cls, params: dict[str, Any]) -> str:
        """The full-size UNet this stage runs, as :mod:`harness.flops` names it (distilled: + w_proj)."""
        return f"cogview3-unet-w{cls.GUIDANCE_EMBED_DIM}" if params["distilled"] else "cogview3-unet"

    def denoiser(self, prompts: Sequence[str], size: int, crop=(0, 0), target: int | None = None, context=None):
        """D(x, t) for these prompts; size conditioning (size, size), ``crop``, (target, target) in pixels."""
        context = self.text_encoder(prompts) if context is None else context
        target = size if target is None else target
        vec = size_vector((size, size), crop, (target, target), batch=len(prompts)).to(self.device)
        if self.params["distilled"]:
            emb = guidance_embedding(self.params["guidance"], self.GUIDANCE_EMBED_DIM, len(prompts)).to(self.device)
            return CogView3Denoiser(self.unet, context, vec, guidance_embedding=emb)
        return CogView3Denoiser(self.unet, context, vec, guidance=self.params["guidance"])

    @torch.inference_mode()
    def decode(self, z: torch.Tensor) -> list[Image.Image]:
        x = self.vae.decode(z.to(self.device, torch.float32) / VAE_SCALE).sample.float()
        # clamp((x+1)/2) * 255 then astype(uint8): truncation, not rounding, as sample_unet.py.
        # In place: at 4096 px every float copy of the image is 200 MB.
        x = x.add_(1.0).div_(2.0).clamp_(0.0, 1.0).mul_(255.0).to(torch.uint8)
        return [Image.fromarray(a) for a in x.permute(0, 2, 3, 1).cpu().numpy()]


def tiny_t5_encoder(device: torch.device) -> T5TextEncoder:
    from transformers import T5Config, T5EncoderModel

    from models.cogview3.conditioning import T5_MAX_LENGTH
    from models.tokenizers import t5_tokenizer_tiny

    tok = t5_tokenizer_tiny(T5_MAX_LENGTH)
    torch.manual_seed(4)
    enc = T5EncoderModel(
        T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                 relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", is_encoder_decoder=False)
    )
    # Tiny builds always run in fp32 (they only exist to exercise the code path on a CPU).
    return T5TextEncoder(tok, enc, device, torch.float32)


def random_t5_xxl_encoder(device: torch.device, dtype: torch.dtype) -> T5TextEncoder:
    """Full-size T5 v1.1 XXL encoder with random weights (time-cost benchmark).

    The tokenizer is the tiny one: the encoder always sees 225 padded positions, so its cost does not
    depend on the vocabulary the ids come from.
    """
    from transformers import T5Config, T5EncoderModel

    from models.cogview3.conditioning import T5_MAX_LENGTH
    from models.tokenizers import t5_tokenizer_tiny

    cfg = T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                   feed_forward_proj="gated-gelu", is_encoder_decoder=False)
    with torch.device(device):
        enc = T5EncoderModel(cfg).to(dtype)
    return T5TextEncoder(t5_tokenizer_tiny(T5_MAX_LENGTH), enc, device, dtype)


class CogView3BaseSystem(_CogView3):
    """Stage 1: 512 px text-to-image (50 DDIM steps, CFG 7.5; distilled: 4 or 8 steps, no CFG)."""

    GUIDANCE_EMBED_DIM = BASE_GUIDANCE_EMBED_DIM
    IS_STAGE = True
    QUICK_PARAMS = {"steps": 2, "resolution": 64}
    PARAMS = {
        "steps": {"default": 50, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}, "doc": "DDIM steps"},
        "resolution": {"default": 512, "schema": {"type": "integer", "minimum": 64, "multipleOf": 32}, "doc": "pixels"},
        **_COMMON,
    }

    def grid(self) -> list[int]:
        return timesteps(self.params["steps"])

    @classmethod
    def unet_calls(cls, params, input_resolution=None):
        return [(params["steps"] * _passes(params), params["resolution"])]

    @classmethod
    def denoiser_stages(cls, params, input_resolution=None):
        """Per stage of :meth:`unet_calls`: (full-size network, latent (C, H, W) of one evaluation at
        batch 1, network forwards per evaluation)."""
        side = params["resolution"] // VAE_FACTOR
        return [(cls.denoiser_network(params), (4, side, side), 1)]

    def _generate(self, prompts, seeds, inputs=None) -> list[Image.Image]:
        size = self.params["resolution"]
        noise = randn((4, size // VAE_FACTOR, size // VAE_FACTOR), generators(seeds)).to(self.device)
        z = ddim_sample(self.denoiser(prompts, size), noise, self.grid())
        return self.decode(z)

class CogView3RelaySystem(_CogView3):
    """Stage 2: relay super-resolution of the ``input`` system's images (x2, e.g. 512 -> 1024).

    ``t_r`` and ``steps`` pick the relay grid (:func:`models.cogview3.schedule.relay_timesteps`: exactly
    ``steps`` timesteps from t = T_r - 1): t_r 500 / 10 steps is the paper's setting (499, 449, ..., 49);
    t_r 500 / 12 steps the official config's (24-point grid from t = 499); distilled relays use t_r 200
    with 1 or 2 steps (199 / 199, 99). ``form`` picks the step (:func:`models.cogview3.sampling.relay_step`):
    ``official`` (default) the released sampler's closed form, ``paper`` Algorithm 1 as printed.
    """

    GUIDANCE_EMBED_DIM = RELAY_GUIDANCE_EMBED_DIM
    # The relay works in the base stage's latent space (the same VAE) at `scale` x its resolution;
    # an SDXL or Stable Cascade image would run, but it is not the system the paper measures.
    INPUT_MODELS = ("cogview3-base",)
    QUICK_PARAMS = {"input": "cogview3-base", "t_r": 500, "steps": 2}
    PARAMS = {
        "t_r": {"default": 500, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}, "doc": "relay start T_r"},
        "steps": {"default": 10, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}, "doc": "relay steps"},
        "blending": {"default": "step", "schema": {"enum": ["step", "time"]},
                     "doc": "blur fraction k/N by sampler step (official code) or t/T_r (paper's training)"},
        "delta": {"default": 0.0, "schema": {"type": "number", "minimum": 0, "maximum": 1},
                  "doc": "stochastic degree of eq. 7 as a fraction of sigma_(t-1); 0 = deterministic"},
        "form": {"default": "official", "schema": {"enum": ["official", "paper"]},
                 "doc": "relay step: the official closed form, or the paper's Algorithm 1 literally (running "
                        "estimate z0^(t-1) = z0^t + (D - z0^t)/t from z^L; needs blending step)"},
        "scale": {"default": 2, "schema": {"type": "integer", "minimum": 2, "maximum": 2}, "doc": "upsampling factor"},
        "tile_size": {"default": None, "schema": {"type": ["integer", "null"], "minimum": 16, "multipleOf": 4},
                      "doc": "latent tile size for tiled SR (null: whole image); 128 = 1024 px"},
        "tile_overlap": {"default": 32, "schema": {"type": "integer", "minimum": 0}, "doc": "latent tile overlap"},
        **_COMMON,
    }

    @classmethod
    def resolve_params(cls, params: dict[str, Any], system_name: str) -> dict[str, Any]:
        out = super().resolve_params(params, system_name)
        if not out["input"]:
            raise ConfigError(f"config key 'systems.{system_name}.input': a relay system needs the name of its base system")
        if out["form"] == "paper" and out["blending"] != "step":
            raise ConfigError(f"config key 'systems.{system_name}.form': 'paper' (Algorithm 1) updates its running "
                              f"estimate by 1/t, the step blending k/N; it cannot run with blending "
                              f"{out['blending']!r}: set blending: step or form: official")
        try:
            relay_timesteps(out["t_r"], out["steps"])
        except ValueError as err:
            raise ConfigError(f"config key 'systems.{system_name}.steps': {err}") from None
        return out

    def fingerprint(self) -> dict[str, Any]:
        fp = super().fingerprint()
        # The default form leaves the key out, so results made before `form` existed keep their digests
        # (the official form's images are bit-identical to those of the sampler before it).
        if fp["params"].get("form") == "official":
            fp["params"] = {k: v for k, v in fp["params"].items() if k != "form"}
        return fp

    def grid(self) -> list[int]:
        return relay_timesteps(self.params["t_r"], self.params["steps"])

    @classmethod
    def unet_calls(cls, params, input_resolution=None):
        steps = len(relay_timesteps(params["t_r"], params["steps"]))
        return [(steps * _passes(params), (input_resolution or 512) * params["scale"])]

    @classmethod
    def denoiser_stages(cls, params, input_resolution=None):
        """Per stage of :meth:`unet_calls`: (full-size network, latent (C, H, W) of one evaluation at
        batch 1, network forwards per evaluation: the tiles of a tiled relay, as ``TiledDenoiser``)."""
        from models.cogview3.tiling import tile_starts

        side = (input_resolution or 512) * params["scale"] // VAE_FACTOR
        tile = params["tile_size"]
        if not tile or tile >= side:
            return [(cls.denoiser_network(params), (4, side, side), 1)]
        tiles = len(tile_starts(side, tile, params["tile_overlap"])) ** 2
        return [(cls.denoiser_network(params), (4, tile, tile), tiles)]

    @torch.inference_mode()
    def encode_lr(self, images: Sequence[Image.Image], gens) -> torch.Tensor:
        """z^L: the 8-bit images in [-1, 1], bilinear x2 in pixel space, VAE posterior sample x 0.13025."""
        x = torch.stack([torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32)) for im in images])
        x = (x.permute(0, 3, 1, 2) / 255.0) * 2.0 - 1.0
        x = F.interpolate(x, scale_factor=self.params["scale"], mode="bilinear", align_corners=False)
        dist = self.vae.encode(x.to(self.device)).latent_dist
        eps = randn(dist.mean.shape[1:], gens).to(self.device)
        return (dist.mean + dist.std * eps) * VAE_SCALE

    def _generate(self, prompts, seeds, inputs=None) -> list[Image.Image]:
        if inputs is None:
            raise ValueError("the relay stage needs the base stage's images")
        # One generator per sample on the relay's own stream: first the posterior sample, then the noise.
        gens = generators(seeds, stream="relay")
        z_lr = self.encode_lr(inputs, gens)
        noise = randn(z_lr.shape[1:], gens).to(self.device)
        size = inputs[0].width * self.params["scale"]
        z = relay_sample(
            self.relay_denoiser(prompts, size, z_lr.shape[-2:]), z_lr, self.grid(), noise,
            blending=self.params["blending"], t_r=self.params["t_r"], delta=self.params["delta"], generator=gens,
            form=self.params["form"],
        )
        return self.decode(z)

    def relay_denoiser(self, prompts: Sequence[str], size: int, latent_hw):
        tile = self.params["tile_size"]
        if not tile or tile >= max(latent_hw):
            return self.denoiser(prompts, size)
        from models.cogview3.tiling import TiledDenoiser

        context = self.text_encoder(prompts)  # encoded once, shared by every tile

        def make(top, left, h, w):
            return self.denoiser(prompts, size, crop=(top * VAE_FACTOR, left * VAE_FACTOR), target=h * VAE_FACTOR, context=context)

        return TiledDenoiser(make, latent_hw[0], latent_hw[1], tile, self.params["tile_overlap"])

    def _build(self) -> None:
        super()._build()
        if self.params["tile_size"]:
            self.vae.enable_tiling()  # VAE activations at 4096 px would dwarf the tiled UNet's

    @classmethod
    def describe_grid(cls, params: dict[str, Any]) -> str:
        g = relay_timesteps(params["t_r"], params["steps"])
        tiles = (f"; tiled, {params['tile_size']}-latent tiles overlapping {params['tile_overlap']}"
                 if params["tile_size"] else "")
        form = "; form: paper (Algorithm 1's running estimate)" if params["form"] == "paper" else ""
        return (f"T_r={params['t_r']}: {len(g)} steps at t={', '.join(map(str, g))}; blending by {params['blending']}"
                f"{form}{tiles}")
