"""CogView3's base and relay systems (models/cogview3/system.py): decoding, the relay input, determinism, distilled builds."""

import numpy as np
import pytest
import torch
from PIL import Image

from models.registry import build_system

TINY_WEIGHTS = {k: "tiny" for k in ("cogview3-base", "cogview3-relay", "cogview3-base-distill-4step",
                                    "cogview3-relay-distill-1step", "t5", "sdxl-vae")}


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
    assert relay.describe_grid(relay.params) == "T_r=500: 3 steps at t=499, 333, 166; blending by step"


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
