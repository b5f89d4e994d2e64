"""Performance model: FLOPs of the denoiser networks per image, and the floor time at a GPU's peak.

One denoiser forward is counted with :class:`torch.utils.flop_counter.FlopCounterMode` on the meta
device (shapes only: no memory, no arithmetic), for the **full-size** architecture of each model at
batch 1 with realistic conditioning shapes, whatever weights a run builds (the smoke profile's tiny
models time the code path; the FLOPs are those of the paper's models). The counter counts matrix
products, convolutions and attention (a multiply-add is 2 FLOPs); norms, activations and other
elementwise work are not counted. Text encoders, the VAE / VQGAN and the sampler are outside the model.

Per image, a system costs the sum over its stages (a relay includes its base stage, Stable Cascade
its prior and decoder) of evaluations (steps, x2 under CFG: :meth:`System.unet_calls`) x network
forwards per evaluation (tiles) x FLOPs of one forward at that stage's latent size
(:meth:`denoiser_stages` of each model class). Constructing a full-size model on the meta device
takes seconds, so models and counts are cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

#: Dense (no 2:4 sparsity) fp16/bf16 tensor-core peaks with fp32 accumulation, FLOP/s, from NVIDIA's
#: data sheets and architecture whitepapers (where a sheet gives only the sparse figure, halved):
#: A100 (SXM and PCIe) 312 T; H100 SXM 989 T, PCIe 756 T, NVL 835 T; H200 (SXM) 989 T, H200 NVL 835 T;
#: GH200 989 T; B200 2250 T; L40S 362 T; L40 181 T; L4 121 T; A10 125 T; A40 150 T; RTX A6000 155 T;
#: RTX 6000 Ada 364 T; GeForce RTX 4090 165 T and RTX 3090 71 T (GeForce parts run fp32-accumulate
#: MMA at half the fp16-accumulate rate, and PyTorch accumulates in fp32: Ada and GA102 whitepapers).
#: A key matches whole words of ``torch.cuda.get_device_name`` (e.g. "NVIDIA H100 PCIe",
#: "NVIDIA A100-SXM4-80GB"); the first match wins, so "H100 PCIe" precedes "H100".
DENSE_BF16_PEAKS: tuple[tuple[str, float], ...] = (
    ("GH200", 989e12),
    ("H200 NVL", 835e12),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10", 125e12),
    ("A40", 150e12),
    ("RTX 6000 Ada", 364e12),
    ("RTX A6000", 155e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
)

#: The paper's GPU (Table 1: one A100, batch 4)
A100_PEAK = 312e12


def _words(name: str) -> list[str]:
    import re

    return [w for w in re.split(r"[\s\-_/]+", name.lower()) if w]


def dense_bf16_peak(device_name: str) -> float | None:
    """The dense bf16 tensor peak (FLOP/s) of a GPU named like ``torch.cuda.get_device_name``; None if unknown."""
    words = _words(device_name)
    for key, peak in DENSE_BF16_PEAKS:
        k = _words(key)
        if any(words[i : i + len(k)] == k for i in range(len(words) - len(k) + 1)):
            return peak
    return None


# ---- the full-size networks and one forward's inputs at batch 1 -----------------------------------
def _sdxl_config(guidance_dim: int | None) -> dict[str, Any]:
    from models.sdxl import SDXL_UNET_CONFIG

    return dict(SDXL_UNET_CONFIG, time_cond_proj_dim=guidance_dim)


def _cogview3_config(guidance_dim: int | None) -> dict[str, Any]:
    from models.cogview3.unet import unet_config

    return unet_config(guidance_dim)


def _network_spec(network: str) -> tuple[str, dict[str, Any]]:
    """(diffusers class name, config) of a network name that a model's ``denoiser_stages`` returns."""
    from models.cogview3.unet import BASE_GUIDANCE_EMBED_DIM, RELAY_GUIDANCE_EMBED_DIM
    from models.sdxl import LCMSDXLSystem
    from models.stable_cascade import DECODER_CONFIG, PRIOR_CONFIG

    specs = {
        "sdxl-unet": ("UNet2DConditionModel", _sdxl_config(None)),
        "lcm-sdxl-unet": ("UNet2DConditionModel", _sdxl_config(LCMSDXLSystem.GUIDANCE_EMBED_DIM)),
        "stable-cascade-prior": ("StableCascadeUNet", PRIOR_CONFIG),
        "stable-cascade-decoder": ("StableCascadeUNet", DECODER_CONFIG),
        "cogview3-unet": ("UNet2DConditionModel", _cogview3_config(None)),
        f"cogview3-unet-w{BASE_GUIDANCE_EMBED_DIM}": ("UNet2DConditionModel", _cogview3_config(BASE_GUIDANCE_EMBED_DIM)),
        f"cogview3-unet-w{RELAY_GUIDANCE_EMBED_DIM}": ("UNet2DConditionModel", _cogview3_config(RELAY_GUIDANCE_EMBED_DIM)),
    }
    if network not in specs:
        raise KeyError(f"no full-size network {network!r}; known: {', '.join(specs)}")
    return specs[network]


@lru_cache(maxsize=None)
def meta_network(network: str) -> torch.nn.Module:
    """The full-size network on the meta device (parameters have shapes, no storage)."""
    import diffusers

    cls_name, config = _network_spec(network)
    with torch.device("meta"):
        return getattr(diffusers, cls_name)(**config).eval()


def network_inputs(network: str, latent: tuple[int, int, int]) -> dict[str, Any]:
    """Keyword arguments of one forward at batch 1, shaped as the pipelines feed them (meta tensors)."""
    _, config = _network_spec(network)
    c, h, w = latent
    meta = dict(device="meta")
    if network.startswith("stable-cascade"):
        # StableCascadePriorPipeline: CLIP bigG last hidden states [1, 77, 1280], its pooled projection
        # [1, 1, 1280] and a zero CLIP image embedding [1, 1, 768]; the decoder pipeline: the pooled
        # text and the prior's image embeddings as ``effnet`` (resized to the latent inside the model,
        # so their size does not change the count: 16 x latent/10.67).
        kw = dict(sample=torch.empty(1, c, h, w, **meta), timestep_ratio=torch.full((1,), 0.5, **meta),
                  clip_text_pooled=torch.empty(1, 1, config["clip_text_pooled_in_channels"], **meta),
                  return_dict=False)
        if config["clip_text_in_channels"]:
            kw["clip_text"] = torch.empty(1, 77, config["clip_text_in_channels"], **meta)
        if config["clip_image_in_channels"]:
            kw["clip_img"] = torch.empty(1, 1, config["clip_image_in_channels"], **meta)
        if config["effnet_in_channels"]:
            side = (max(1, round(h / 10.67)), max(1, round(w / 10.67)))
            kw["effnet"] = torch.empty(1, config["effnet_in_channels"], *side, **meta)
        return kw
    kw = dict(sample=torch.empty(1, c, h, w, **meta), timestep=torch.full((1,), 500, **meta), return_dict=False)
    if network.startswith("cogview3"):
        from models.cogview3.conditioning import T5_MAX_LENGTH

        # T5-XXL states of the 225 padded tokens [1, 225, 4096] and the 1536-d size vector (class labels).
        kw["encoder_hidden_states"] = torch.empty(1, T5_MAX_LENGTH, config["cross_attention_dim"], **meta)
        kw["class_labels"] = torch.empty(1, config["projection_class_embeddings_input_dim"], **meta)
    else:
        # SDXL: both CLIP towers' penultimate states concatenated [1, 77, 768 + 1280], the pooled
        # bigG projection (1280) and the 6 size/crop ids (2816 = 1280 + 6 x 256).
        pooled = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
        kw["encoder_hidden_states"] = torch.empty(1, 77, config["cross_attention_dim"], **meta)
        kw["added_cond_kwargs"] = {"text_embeds": torch.empty(1, pooled, **meta), "time_ids": torch.empty(1, 6, **meta)}
    if config.get("time_cond_proj_dim"):
        kw["timestep_cond"] = torch.empty(1, config["time_cond_proj_dim"], **meta)  # embedded guidance w
    return kw


@lru_cache(maxsize=None)
def network_flops(network: str, latent: tuple[int, int, int]) -> int:
    """FLOPs of one forward of the full-size ``network`` at batch 1 on a latent of shape (C, H, W)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = meta_network(network)
    inputs = network_inputs(network, tuple(latent))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(**inputs)
    return int(counter.get_total_flops())


# ---- systems ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageCost:
    system: str  # the config's system name of this stage
    network: str
    latent: tuple[int, int, int]
    evaluations: int  # denoiser evaluations per image (CFG doubling included)
    forwards: int  # network forwards per evaluation (tiles)
    flops_per_forward: int

    @property
    def flops(self) -> int:
        return self.evaluations * self.forwards * self.flops_per_forward


def _own_stages(config: dict[str, Any], name: str) -> tuple[list[StageCost], int]:
    """The stages system ``name`` runs itself, and its output resolution (px)."""
    from models.registry import model_class

    spec = config["systems"][name]
    cls = model_class(spec["model"])
    upstream = _own_stages(config, spec["input"])[1] if spec.get("input") else None
    params = cls.resolve_params(spec, name)
    calls = cls.unet_calls(params, upstream)
    if not hasattr(cls, "denoiser_stages"):
        raise NotImplementedError(f"{cls.__name__} states no full-size denoiser stages")
    stages = cls.denoiser_stages(params, upstream)
    if len(stages) != len(calls):
        raise ValueError(f"{cls.__name__}: {len(calls)} UNet-call stages but {len(stages)} denoiser stages")
    out = [StageCost(name, network, tuple(latent), evals, forwards, network_flops(network, tuple(latent)))
           for (evals, _), (network, latent, forwards) in zip(calls, stages)]
    return out, calls[-1][1]


def stage_costs(config: dict[str, Any], name: str) -> list[StageCost]:
    """Every denoising stage behind one image of system ``name``, its input systems' first."""
    from harness.systems import stage_chain

    return [cost for stage in stage_chain(config, name) for cost in _own_stages(config, stage)[0]]


def unet_flops_per_image(config: dict[str, Any], name: str) -> int:
    """Denoiser FLOPs behind one image of system ``name`` (all stages, steps and CFG doubling)."""
    return sum(cost.flops for cost in stage_costs(config, name))


def floor_seconds(flops: float, peak: float) -> float:
    """The time ``flops`` take at ``peak`` FLOP/s: no run can be faster (MFU = floor / measured)."""
    return flops / peak
