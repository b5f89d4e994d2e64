"""CogView3's UNet (sizes, SAT weights), denoiser and pipeline stages."""

import numpy as np
import pytest
import torch
from PIL import Image

from harness.errors import HarnessError
from models.cogview3.checkpoint import (SAT_PREFIX, load_sat_unet, sat_key_map, sat_state_file, sat_unet_config,
                                        save_sat_unet)
from models.cogview3.denoiser import CogView3Denoiser
from models.cogview3.schedule import sigmas
from models.cogview3.unet import FULL_PARAMETERS, build_unet, tiny_unet_config, unet_config
from models.registry import build_system

TINY_WEIGHTS = {k: "tiny" for k in ("cogview3-base", "cogview3-relay", "cogview3-base-distill-4step",
                                    "cogview3-relay-distill-1step", "t5", "sdxl-vae")}


def meta_unet(dim=None):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**unet_config(dim))


@pytest.mark.parametrize("dim,extra", [(None, 0), (512, 163_840), (256, 81_920)])
def test_full_size_parameter_count(dim, extra):
    unet = meta_unet(dim)
    assert sum(p.numel() for p in unet.parameters()) == FULL_PARAMETERS + extra == 2_906_612_484 + extra
    assert unet.config.cross_attention_dim == 4096
    assert unet.class_embedding.linear_1.in_features == 1536 and unet.class_embedding.linear_2.out_features == 1280
    if dim:
        assert unet.time_embedding.cond_proj.weight.shape == (320, dim) and unet.time_embedding.cond_proj.bias is None


def test_full_size_forward_shapes_on_meta():
    unet = meta_unet(256)
    with torch.device("meta"):
        out = unet(torch.empty(2, 4, 128, 128), torch.tensor([499, 499]), encoder_hidden_states=torch.empty(2, 225, 4096),
                   class_labels=torch.empty(2, 1536), timestep_cond=torch.empty(2, 256)).sample
    assert out.shape == (2, 4, 128, 128)


def test_sat_key_names_agree_with_diffusers_own_ldm_converter():
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet = meta_unet(512)
    mapping = sat_key_map(unet.config, list(unet.state_dict()))
    assert len(set(mapping.values())) == len(mapping) == 1681
    for key in ("input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight", "input_blocks.3.0.op.weight",
                "input_blocks.4.0.skip_connection.weight", "middle_block.1.proj_in.weight",
                "output_blocks.2.2.conv.weight", "output_blocks.5.2.conv.weight", "label_emb.0.0.weight",
                "time_embed.2.bias", "out.2.weight", "w_proj.weight"):
        assert SAT_PREFIX + key in mapping.values()
    # Feed diffusers' converter a state dict with a unique value per SAT key: it must route every
    # key where we do (w_proj is CogView3's own and unknown to it).
    sat = {sk: torch.full((1,), float(i)) for i, sk in enumerate(mapping.values())}
    converted = convert_ldm_unet_checkpoint(sat, dict(unet.config))
    ours = {dk: sat[sk] for dk, sk in mapping.items()}
    assert set(ours) - set(converted) == {"time_embedding.cond_proj.weight"}
    assert all(torch.equal(converted[k], ours[k]) for k in converted)


def _small_official(guidance_dim):
    """The official structure (depths 1/2/10, 2 res blocks, 64-d heads) at reduced width."""
    return unet_config(guidance_dim, channels=(64, 64, 128), depths=(1, 2, 10), cross_attention_dim=32)


def test_sat_checkpoint_round_trip_is_bit_exact(tmp_path):
    config = _small_official(256)
    src = build_unet(config, seed=0)
    save_sat_unet(src, tmp_path, iteration=7)
    assert sat_state_file(tmp_path) == tmp_path / "7" / "mp_rank_00_model_states.pt"
    dst = load_sat_unet(tmp_path, 256)
    assert dict(dst.config) == dict(src.config)
    for (k, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        assert torch.equal(a, b), k
    assert not any(t.is_meta for t in dst.state_dict().values())


@pytest.mark.parametrize("guidance_dim", [None, 512, 256])
def test_sat_config_is_read_off_the_official_shapes(guidance_dim):
    # The full-size UNet on the meta device: the shapes alone must give back the official config.
    with torch.device("meta"):
        unet = build_unet(unet_config(guidance_dim))
    mapping = sat_key_map(unet.config, list(unet.state_dict()))
    state = {mapping[k]: v for k, v in unet.state_dict().items()}
    assert sat_unet_config(state) == unet_config(guidance_dim)


def test_sat_loader_casts_to_the_target_dtype(tmp_path):
    save_sat_unet(build_unet(_small_official(None), seed=0).half(), tmp_path)  # the official files are fp16
    unet = load_sat_unet(tmp_path, None, "cpu", torch.bfloat16)
    assert {p.dtype for p in unet.parameters()} == {torch.bfloat16}


def test_sat_checkpoint_in_the_pre_zip_format_loads(tmp_path):
    # torch.save before 1.6 wrote no zip archive, which cannot be memory-mapped: it is read whole.
    src = build_unet(_small_official(None), seed=0)
    path = save_sat_unet(src, tmp_path)
    torch.save(torch.load(path, weights_only=True), path, _use_new_zipfile_serialization=False)
    dst = load_sat_unet(tmp_path, None)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


def test_sat_checkpoint_with_wrong_keys_lists_them(tmp_path):
    save_sat_unet(build_unet(_small_official(256), seed=0), tmp_path)
    with pytest.raises(HarnessError, match=r"unexpected keys \['model.diffusion_model.w_proj.weight'\]"):
        load_sat_unet(tmp_path, None)  # a distilled file read as a plain UNet
    save_sat_unet(build_unet(_small_official(None), seed=0), tmp_path)
    with pytest.raises(HarnessError, match=r"missing keys \['model.diffusion_model.w_proj.weight'\]"):
        load_sat_unet(tmp_path, 256)
    with pytest.raises(HarnessError, match="nowhere does not exist, expected a SAT checkpoint folder"):
        load_sat_unet(tmp_path / "nowhere", None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match="empty/latest is missing"):
        load_sat_unet(tmp_path / "empty", None)
    save_sat_unet(build_unet(tiny_unet_config(None), seed=0), tmp_path)  # 32-d heads: not CogView3's
    with pytest.raises(HarnessError, match="not multiples of the official 64-d attention heads"):
        load_sat_unet(tmp_path, None)


class Recorder(torch.nn.Module):
    """Stands in for the UNet: eps = 0.1 * x_in + mean of the text states; records what it was fed."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, x, t, encoder_hidden_states, class_labels, timestep_cond=None):
        from types import SimpleNamespace

        self.calls.append(dict(x=x.clone(), t=t.clone(), ctx=encoder_hidden_states.clone(), cond=timestep_cond))
        eps = 0.1 * x + encoder_hidden_states.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)
        return SimpleNamespace(sample=eps)


def test_denoiser_cfg_zero_negative_and_eps_parametrisation():
    unet = Recorder()
    ctx = torch.ones(2, 225, 8)
    den = CogView3Denoiser(unet, ctx, torch.zeros(2, 1536), guidance=7.5)
    x = torch.randn(2, 4, 8, 8)
    out = den(x, 499)
    call = unet.calls[0]
    assert call["x"].shape[0] == 4 and call["t"].tolist() == [499] * 4
    assert torch.equal(call["ctx"][:2], torch.zeros(2, 225, 8)) and torch.equal(call["ctx"][2:], ctx)
    sigma = sigmas()[499].item()
    torch.testing.assert_close(call["x"][:2], x / (1 + sigma**2) ** 0.5)  # c_in = sqrt(abar)
    eps_u = 0.1 * x / (1 + sigma**2) ** 0.5
    eps_c = eps_u + 1.0
    d_u, d_c = x - sigma * eps_u, x - sigma * eps_c
    torch.testing.assert_close(out, d_u + 7.5 * (d_c - d_u))


def test_distilled_denoiser_has_no_cfg_batch_and_feeds_the_guidance_embedding():
    from models.cogview3.conditioning import guidance_embedding

    unet = Recorder()
    emb = guidance_embedding(7.5, 256, 2)
    den = CogView3Denoiser(unet, torch.ones(2, 225, 8), torch.zeros(2, 1536), guidance_embedding=emb)
    den(torch.randn(2, 4, 8, 8), 199)
    assert unet.calls[0]["x"].shape[0] == 2 and torch.equal(unet.calls[0]["cond"], emb)


@pytest.fixture(scope="module")
def base_and_relay():
    base = build_system("b", {"model": "cogview3-base", "weights": "cogview3-base", "steps": 4, "resolution": 64}, TINY_WEIGHTS,
                        batch_invariant=True)
    relay = build_system("r", {"model": "cogview3-relay", "input": "b", "weights": "cogview3-relay", "t_r": 500, "steps": 3},
                         TINY_WEIGHTS, batch_invariant=True)
    return base.build(), relay.build()


def test_decode_truncates_like_the_official_code(base_and_relay, monkeypatch):
    base, _ = base_and_relay
    values = torch.tensor([-1.0, -0.5, 0.0, 0.999, 1.0, 2.0]).reshape(1, 1, 1, 6).expand(1, 3, 1, 6).clone()
    monkeypatch.setattr(base.vae, "decode", lambda z: type("O", (), {"sample": values})())
    px = np.asarray(base.decode(torch.zeros(1, 4, 1, 1))[0])[0, :, 0]
    # (x+1)/2*255 = 0, 63.75, 127.5, 254.87, 255, clamp: truncation gives 63, 127, 254 (rounding: 64, 128, 255)
    assert px.tolist() == [0, 63, 127, 254, 255, 255]


def test_relay_input_is_bilinear_x2_in_pixel_space_then_a_posterior_sample(base_and_relay, monkeypatch):
    import torch.nn.functional as F

    _, relay = base_and_relay
    seen = {}
    real_encode = relay.vae.encode

    def spy(x):
        seen["x"] = x
        return real_encode(x)

    monkeypatch.setattr(relay.vae, "encode", spy)
    img = Image.fromarray(np.random.RandomState(0).randint(0, 256, (32, 32, 3), dtype=np.uint8))
    from models.base import generators

    z1 = relay.encode_lr([img], generators([5], "relay"))
    want = F.interpolate(torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1,
                         scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(seen["x"], want)
    z2 = relay.encode_lr([img], generators([6], "relay"))
    dist = real_encode(want).latent_dist
    assert z1.shape == (1, 4, 8, 8) and not torch.equal(z1, z2)  # a sample, not the mode
    torch.testing.assert_close((z1 / 0.13025 - dist.mean).abs().mean() > 0, torch.tensor(True))


def test_systems_are_deterministic_per_seed(base_and_relay):
    base, relay = base_and_relay
    a = base.generate(["a red car", "two cats"], [1, 2])
    b = base.generate(["two cats"], [2])
    assert np.array_equal(np.asarray(a[1]), np.asarray(b[0])) and a[0].size == (64, 64)
    up = relay.generate(["a red car", "two cats"], [1, 2], a)
    assert up[0].size == (128, 128)
    assert np.array_equal(np.asarray(up[1]), np.asarray(relay.generate(["two cats"], [2], [a[1]])[0]))
    assert relay.describe_grid() == "T_r=500: 3 steps at t=499, 333, 166; blending by step"


def test_distilled_systems_build_with_guidance_projection():
    base = build_system("d", {"model": "cogview3-base", "weights": "cogview3-base-distill-4step", "distilled": True,
                              "steps": 4, "resolution": 64}, TINY_WEIGHTS).build()
    relay = build_system("d1", {"model": "cogview3-relay", "input": "d", "weights": "cogview3-relay-distill-1step",
                                "distilled": True, "t_r": 200, "steps": 1}, TINY_WEIGHTS).build()
    assert base.unet.config.time_cond_proj_dim == 512 and relay.unet.config.time_cond_proj_dim == 256
    assert relay.grid() == [199] and base.grid() == [999, 749, 499, 249]
    assert not relay.denoiser(["x"], 128).uses_cfg
    img = base.generate(["a cat"], [3])
    assert relay.generate(["a cat"], [3], img)[0].size == (128, 128)
