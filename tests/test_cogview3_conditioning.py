"""CogView3's embeddings (models/cogview3/conditioning.py) against the numbers of docs/reference.md §8."""

import math

import numpy as np
import pytest
import torch

from models.cogview3.conditioning import guidance_embedding, guidance_frequencies, sinusoid, size_vector


def test_guidance_embedding_matches_spec():
    # docs/reference.md §8.4 lists float64 values; the official code (like ours) computes in float32,
    # which moves the sinusoid of w*1000 = 7500 by up to ~1e-4.
    e = guidance_embedding(7.5, 512)[0]
    assert e.shape == (512,)
    np.testing.assert_allclose(e[0:3], [-0.851236, 0.911304, 0.155478], atol=3e-4)
    np.testing.assert_allclose(e[256:259], [-0.524783, -0.411735, -0.987839], atol=3e-4)
    e = guidance_embedding(7.5, 256)[0]
    np.testing.assert_allclose(e[0:3], [-0.851236, 0.842228, 0.011820], atol=3e-4)
    np.testing.assert_allclose(e[128:131], [-0.524783, 0.539121, -0.999930], atol=3e-4)
    assert e[0].item() == pytest.approx(math.sin(7500), abs=1e-5) and e[128].item() == pytest.approx(math.cos(7500), abs=1e-5)


def official_guidance_scale_embedding(w: torch.Tensor, embedding_dim: int) -> torch.Tensor:
    """The official embedding, restated line for line from THUDM/CogView3 sat/sgm/modules/diffusionmodules/
    sampling.py L39-46 (float32; the odd-width padding left out): the step ln(10000)/(half-1) is a float32
    scalar, then exp(arange * -step)."""
    w = w * 1000.0
    half = embedding_dim // 2
    step = torch.log(torch.tensor(10000.0)) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -step)
    args = w.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


@pytest.mark.parametrize("dim", [512, 256])  # base-distill and relay-distill widths (docs/reference.md §5)
@pytest.mark.parametrize("w", [7.5, 1.0, 8.1])  # float32(8.1) * 1000 is 8100.0005, not 8100
def test_guidance_embedding_is_bitwise_the_official_one(dim, w):
    # The official sampler builds w as torch.ones(B) * cfg_cond_scale (sampling.py L95, in denoise).
    official = official_guidance_scale_embedding(torch.ones(2) * w, dim)
    assert torch.equal(guidance_embedding(w, dim, batch=2), official)
    # The same step formed in float64 and rounded once to float32 when it meets the arange gives the
    # same frequencies at these widths, so either reading of "the official formula" is pinned here.
    half = dim // 2
    float64_step = torch.exp(torch.arange(half, dtype=torch.float32) * (-(math.log(10000) / (half - 1))))
    assert torch.equal(guidance_frequencies(half), float64_step)


def test_guidance_frequencies_are_not_the_twice_rounded_ones():
    # The formula this module used before: -ln(10000) * arange, then / (half - 1): two roundings per
    # element. Its exponents are up to 2 ulp off, which exp turns into 126 of the 256 base-distill
    # frequencies differing (by up to 16 float32 ulp) and the embedding of w*1000 = 7500 moving by
    # ~4.8e-4, so an equality against the official frequencies must reject it.
    half = 256
    twice_rounded = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / (half - 1))
    official = guidance_frequencies(half)
    assert int((twice_rounded != official).sum()) == 126
    ulps = (twice_rounded.view(torch.int32) - official.view(torch.int32)).abs()  # positive floats: bits order as values
    assert int(ulps.max()) == 16
    args = 7500.0 * twice_rounded
    drift = (torch.cat([torch.sin(args), torch.cos(args)]) - guidance_embedding(7.5, 512)[0]).abs().max().item()
    assert drift == pytest.approx(4.83e-4, abs=1e-5)


def test_timestep_sinusoid_matches_spec_and_the_unet():
    from diffusers.models.embeddings import get_timestep_embedding

    e = sinusoid(torch.tensor([999.0]), 320)[0]
    np.testing.assert_allclose(e[0:3], [0.999650, 0.802681, -0.278114], atol=1e-4)
    np.testing.assert_allclose(e[160:163], [-0.026461, 0.596409, -0.960548], atol=1e-4)
    # The diffusers UNet configured with flip_sin_to_cos=True, freq_shift=0 embeds t exactly so.
    torch.testing.assert_close(get_timestep_embedding(torch.tensor([999]), 320, True, 0)[0], e)


def test_size_vector():
    v = size_vector((512, 512), (0, 0), (512, 512), batch=3)
    assert v.shape == (3, 1536)
    assert v[0, 0].item() == pytest.approx(-0.996833, abs=1e-5)  # cos(512)
    assert v[0, 1].item() == pytest.approx(0.480827, abs=1e-5)  # cos(512 * 10000^(-1/128))
    assert v[0, 512:768].tolist() == [1.0] * 128 + [0.0] * 128  # crop top = 0
    torch.testing.assert_close(v[0, :512], v[0, 1024:])  # original size == target size
