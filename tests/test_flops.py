"""The performance model (harness/flops.py): FLOPs of the full-size denoisers, counted on the meta device."""

import pytest
import torch

from harness.flops import dense_bf16_peak, meta_network, network_flops, network_inputs, stage_costs, unet_flops_per_image
from tests.conftest import ROOT


def hook_flops(model: torch.nn.Module, inputs: dict) -> int:
    """An independent count of one forward (no FlopCounterMode): 2 x multiply-adds of every
    convolution, linear layer and attention product, from the shapes forward hooks see."""
    from diffusers.models.attention_processor import Attention

    total = 0

    def conv(m, args, out):
        nonlocal total
        kh, kw = m.kernel_size
        if isinstance(m, torch.nn.ConvTranspose2d):  # every input element meets Cout/groups x k x k weights
            total += 2 * args[0].numel() * (m.out_channels // m.groups) * kh * kw
        else:  # every output element is a dot product of length Cin/groups x k x k
            total += 2 * out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear(m, args, out):
        nonlocal total
        total += 2 * args[0].numel() * m.out_features

    def attention(m, args, kwargs, out):
        nonlocal total
        x = args[0] if args else kwargs["hidden_states"]
        context = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        queries = x.shape[1] if x.ndim == 3 else x.shape[2] * x.shape[3]  # (B, L, C) or (B, C, H, W)
        keys = queries if context is None else context.shape[1]
        total += 2 * 2 * x.shape[0] * queries * keys * m.inner_dim  # Q K^T and softmax(.) V

    handles = []
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            handles.append(m.register_forward_hook(conv))
        elif isinstance(m, torch.nn.Linear):
            handles.append(m.register_forward_hook(linear))
        elif isinstance(m, Attention):
            handles.append(m.register_forward_hook(attention, with_kwargs=True))
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for h in handles:
            h.remove()
    return total


@pytest.mark.parametrize("network,latent", [
    ("sdxl-unet", (4, 128, 128)),
    ("lcm-sdxl-unet", (4, 64, 64)),
    ("cogview3-unet", (4, 64, 64)),
    ("cogview3-unet-w256", (4, 128, 128)),
    ("stable-cascade-prior", (16, 24, 24)),
    ("stable-cascade-decoder", (4, 256, 256)),
])
def test_one_unet_call_equals_an_independent_count(network, latent):
    counted = network_flops(network, latent)
    assert counted == pytest.approx(hook_flops(meta_network(network), network_inputs(network, latent)), rel=0.01)


def test_reference_counts_of_one_call():
    """Measured for the issue on a batch of 1 at one UNet call."""
    assert network_flops("sdxl-unet", (4, 128, 128)) / 1e12 == pytest.approx(6.76, rel=0.02)
    assert network_flops("cogview3-unet", (4, 64, 64)) / 1e12 == pytest.approx(1.86, rel=0.02)
    assert network_flops("cogview3-unet", (4, 128, 128)) / 1e12 == pytest.approx(7.08, rel=0.02)
    # LCM's guidance embedding and CogView3's w_proj are one small linear layer each.
    assert network_flops("lcm-sdxl-unet", (4, 128, 128)) == pytest.approx(network_flops("sdxl-unet", (4, 128, 128)), rel=1e-6)
    assert network_flops("cogview3-unet-w512", (4, 64, 64)) == pytest.approx(network_flops("cogview3-unet", (4, 64, 64)), rel=1e-6)


@pytest.fixture(scope="module")
def timecost_config():
    from harness.config import load_config

    return load_config(ROOT / "config" / "timecost.yaml")


def test_stages_steps_and_cfg_per_image(timecost_config):
    cost = {s: [(c.system, c.network, c.latent, c.evaluations, c.forwards) for c in stage_costs(timecost_config, s)]
            for s in ("sdxl", "lcm-sdxl", "stable-cascade", "cogview3", "cogview3-distill-4+1")}
    assert cost["sdxl"] == [("sdxl", "sdxl-unet", (4, 128, 128), 100, 1)]
    assert cost["lcm-sdxl"] == [("lcm-sdxl", "lcm-sdxl-unet", (4, 128, 128), 4, 1)]  # embedded guidance: no CFG
    assert cost["stable-cascade"] == [("stable-cascade", "stable-cascade-prior", (16, 24, 24), 40, 1),
                                      ("stable-cascade", "stable-cascade-decoder", (4, 256, 256), 10, 1)]
    assert cost["cogview3"] == [("cogview3-base", "cogview3-unet", (4, 64, 64), 100, 1),
                                ("cogview3", "cogview3-unet", (4, 128, 128), 20, 1)]
    assert cost["cogview3-distill-4+1"] == [("cogview3-distill-base4", "cogview3-unet-w512", (4, 64, 64), 4, 1),
                                            ("cogview3-distill-4+1", "cogview3-unet-w256", (4, 128, 128), 1, 1)]


def test_flop_ratios_to_sdxl(timecost_config):
    sdxl = unet_flops_per_image(timecost_config, "sdxl")
    assert sdxl / 1e12 == pytest.approx(100 * 6.76, rel=0.02)
    assert unet_flops_per_image(timecost_config, "cogview3") / sdxl == pytest.approx(0.484, rel=0.01)  # paper time: 0.525
    assert unet_flops_per_image(timecost_config, "cogview3-distill-4+1") / sdxl == pytest.approx(0.022, rel=0.03)
    assert unet_flops_per_image(timecost_config, "lcm-sdxl") / sdxl == pytest.approx(0.04, rel=1e-3)


def test_tiled_relay_counts_one_forward_per_tile():
    from models.cogview3.system import CogView3RelaySystem

    params = CogView3RelaySystem.resolve_params({"model": "cogview3-relay", "input": "b", "tile_size": 128}, "r")
    # 1024 px in, 2048 px out: a 256-latent side in tiles of 128 overlapping >= 32 starts at 0, 96, 128.
    assert CogView3RelaySystem.denoiser_stages(params, 1024) == [("cogview3-unet", (4, 128, 128), 9)]
    assert CogView3RelaySystem.denoiser_stages(params, 512) == [("cogview3-unet", (4, 128, 128), 1)]


@pytest.mark.parametrize("name,peak", [
    ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA A100 80GB PCIe", 312), ("NVIDIA H100 80GB HBM3", 989),
    ("NVIDIA H100 PCIe", 756), ("NVIDIA H100 NVL", 835), ("NVIDIA H200", 989), ("NVIDIA GH200 480GB", 989),
    ("NVIDIA L40S", 362), ("NVIDIA L4", 121), ("NVIDIA A10", 125), ("NVIDIA GeForce RTX 4090", 165),
    ("NVIDIA A10G", None), ("NVIDIA RTX A4000", None), ("Tesla V100-SXM2-16GB", None),
])
def test_dense_bf16_peaks_by_device_name(name, peak):
    assert dense_bf16_peak(name) == (None if peak is None else peak * 1e12)
