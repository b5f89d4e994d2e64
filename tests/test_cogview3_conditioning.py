"""CogView3's embeddings (models/cogview3/conditioning.py) against the numbers of docs/reference.md §8."""

import math

import numpy as np
import pytest
import torch

from models.cogview3.conditioning import guidance_embedding, sinusoid, size_vector


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
