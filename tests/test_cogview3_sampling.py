"""CogView3's schedule, samplers and embeddings against the numbers of cogview3-spec.md §10."""

import math

import numpy as np
import pytest
import torch

from models.cogview3.conditioning import guidance_embedding, sinusoid, size_vector
from models.cogview3.sampling import ddim_sample, relay_coefficients, relay_fractions, relay_sample
from models.cogview3.schedule import alphas_cumprod, relay_timesteps, sampler_sigmas, sigma_to_timestep, sigmas, timesteps


# ---- schedule --------------------------------------------------------------------------------

def test_alphas_cumprod_and_sigmas_match_spec():
    abar = alphas_cumprod()
    for t, want in {0: 0.999150, 199: 0.755238, 249: 0.675432, 499: 0.277670, 999: 0.0046601}.items():
        assert abar[t].item() == pytest.approx(want, abs=5e-7)
    sig = sigmas()
    assert sig.dtype == torch.float32 and sig.shape == (1000,)
    for t, want in {0: 0.029167, 19: 0.134451, 41: 0.201793, 199: 0.569285, 249: 0.693205, 499: 1.612886,
                    999: 14.614641}.items():
        assert sig[t].item() == pytest.approx(want, abs=5e-7)
    assert 1 / math.sqrt(1 + sig[499].item() ** 2) == pytest.approx(0.526944, abs=5e-7)  # c_in = sqrt(abar)
    assert math.sqrt(1 + sig[999].item() ** 2) == pytest.approx(14.64881, abs=5e-6)  # base init scale


def test_floor_spaced_grids():
    assert timesteps(24) == [999, 957, 915, 874, 832, 790, 749, 707, 666, 624, 582, 541, 499, 457, 416, 374, 333,
                             291, 249, 208, 166, 124, 83, 41]
    assert timesteps(50) == list(range(999, 0, -20))
    assert timesteps(4) == [999, 749, 499, 249]
    assert timesteps(8) == [999, 874, 749, 624, 499, 374, 249, 124]
    assert timesteps(5) == [999, 799, 599, 399, 199]
    assert timesteps(20) == list(range(999, 0, -50))
    s = sampler_sigmas(timesteps(50))
    assert [round(v, 5) for v in s[:4].tolist()] == [14.61464, 12.96632, 11.54277, 10.3094]
    assert [round(v, 5) for v in s[-3:].tolist()] == [0.1963, 0.13445, 0.0]
    assert sampler_sigmas(timesteps(8))[-2].item() == pytest.approx(0.39775, abs=5e-6)
    assert [round(v, 5) for v in sampler_sigmas(timesteps(4)).tolist()] == [14.61464, 4.08173, 1.61289, 0.6932, 0.0]


@pytest.mark.parametrize("n", [4, 8, 24, 50, 1000])
def test_every_sampler_sigma_quantises_to_its_exact_timestep(n):
    grid = timesteps(n)
    assert sigma_to_timestep(sampler_sigmas(grid)[:-1]).tolist() == grid


def test_relay_grids_official_paper_and_distilled():
    assert relay_timesteps(500, 12) == timesteps(24)[12:]
    assert relay_timesteps(500, 10) == [499, 449, 399, 349, 299, 249, 199, 149, 99, 49] == timesteps(20)[10:]
    assert relay_timesteps(200, 1) == [199] == timesteps(5)[4:]
    assert relay_timesteps(200, 2) == [199, 99]
    for t_r in (200, 400, 500, 600, 800):  # Table 3 sweep: about 10 steps, all below T_r
        grid = relay_timesteps(t_r, 10)
        assert 9 <= len(grid) <= 10 and max(grid) < t_r


# ---- relay coefficients (Algorithm 1) ---------------------------------------------------------

SPEC_24_12 = [  # (tau, A, B, C) from spec §10
    (499, 0.870227, 0.083333, +0.046440), (457, 0.874240, 0.093813, +0.031947),
    (416, 0.871146, 0.104809, +0.024045), (374, 0.872217, 0.115279, +0.012504),
    (333, 0.865503, 0.128166, +0.006331), (291, 0.859034, 0.142069, -0.001103),
    (249, 0.852331, 0.157168, -0.009499), (208, 0.833405, 0.180514, -0.013919),
    (166, 0.807754, 0.211497, -0.019251), (124, 0.767328, 0.257838, -0.025165),
    (83, 0.661181, 0.365683, -0.026863), (41, 0.0, 1.0, 0.0),
]


def test_relay_coefficient_table_24_12():
    grid = timesteps(24)[12:]
    assert grid == [row[0] for row in SPEC_24_12]
    for (a, b, c, d), (_, A, B, C) in zip(relay_coefficients(grid), SPEC_24_12):
        assert (a, b, c) == pytest.approx((A, B, C), abs=1e-6)
        assert a + b + c == pytest.approx(1.0, abs=1e-12) and d == 0.0
    assert relay_coefficients(grid)[0][1] == pytest.approx(1 / 12, abs=1e-12)  # B at step 0 = 1/N


def test_relay_coefficients_20_10_and_one_step():
    coeffs = relay_coefficients(timesteps(20)[10:])
    assert coeffs[0][:3] == pytest.approx((0.847656, 0.100000, 0.052344), abs=1e-6)
    assert coeffs[1][:3] == pytest.approx((0.848889, 0.115111, 0.036000), abs=1e-6)
    assert coeffs[-1][:3] == pytest.approx((0.0, 1.0, 0.0), abs=1e-12)
    assert relay_coefficients([199]) == [(0.0, 1.0, 0.0, 0.0)]


@pytest.mark.parametrize("blending,delta", [("step", 0.0), ("time", 0.0), ("step", 0.5), ("time", 0.3)])
def test_coefficients_sum_to_one_in_every_mode(blending, delta):
    for a, b, c, d in relay_coefficients(relay_timesteps(500, 10), blending, 500, delta):
        assert a + b + c == pytest.approx(1.0, abs=1e-12)


def test_time_blending_uses_t_over_t_r():
    f = relay_fractions(timesteps(24)[12:], "time", 500)
    assert f[0] == pytest.approx(0.998) and f[1] == pytest.approx(457 / 500) and f[-1] == 0.0
    assert relay_fractions(timesteps(24)[12:], "step")[:2] == [1.0, 11 / 12]


@pytest.mark.parametrize("blending,delta", [("step", 0.0), ("time", 0.0), ("step", 0.4)])
def test_perfect_denoiser_with_exact_low_res_latent_returns_z0(blending, delta):
    z0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    out = relay_sample(lambda x, t: z0, z0.clone(), relay_timesteps(500, 12), noise, blending, 500, delta,
                       generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(out, z0, rtol=0, atol=1e-5)


@pytest.mark.parametrize("blending,delta", [("step", 0.0), ("time", 0.0), ("step", 0.5), ("time", 0.8)])
def test_gaussian_marginals_follow_the_blurred_forward_process(blending, delta):
    """Appendix A: given z0, every relay state is distributed as the forward process,
    x_t ~ N(z0^t, sigma_t^2) with z0^t = (1 - f_t) z0 + f_t z^L, when D returns z0.

    Gaussian data z0 ~ N(0, 1) with a correlated low-resolution latent z^L = 0.6 z0 + 0.8 v. Checked
    on 400k samples at every step: residual mean 0, variance sigma_t^2, and no correlation with z0 or z^L.
    """
    n = 400_000
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(n, generator=g)
    z_lr = 0.6 * z0 + 0.8 * torch.randn(n, generator=g)
    grid = relay_timesteps(500, 10)
    fracs = dict(zip(grid, relay_fractions(grid, blending, 500)))
    sigma_of_t = dict(zip(grid, sampler_sigmas(grid).tolist()))
    checked = []

    def denoiser(x, t):
        resid = (x - ((1 - fracs[t]) * z0 + fracs[t] * z_lr)).double()
        sigma = sigma_of_t[t]
        se = math.sqrt(2 / n)  # relative standard error of a sample variance
        assert abs(resid.mean().item()) < 5 * sigma / math.sqrt(n) + 1e-5
        assert resid.var().item() == pytest.approx(sigma**2, rel=5 * se + 1e-5)
        for other in (z0, z_lr):
            assert abs(torch.corrcoef(torch.stack([resid, other.double()]))[0, 1].item()) < 5 / math.sqrt(n) + 1e-5
        checked.append(t)
        return z0

    noise = torch.randn(n, generator=g)
    out = relay_sample(denoiser, z_lr, grid, noise, blending, 500, delta, generator=torch.Generator().manual_seed(3))
    assert checked == grid
    torch.testing.assert_close(out, z0, rtol=0, atol=1e-5)


# ---- base sampler vs diffusers' DDIM ----------------------------------------------------------

def toy_eps(x_vp, t, shift):
    return 0.3 * x_vp * math.cos(t / 170 + shift) + 0.2 * torch.sin(2 * x_vp + shift) + 0.05 * t / 1000


def test_base_sampler_equals_diffusers_ddim_with_cfg():
    from diffusers import DDIMScheduler

    scale = 7.5
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    sig = sigmas()

    def denoiser(x, t):  # D = x - sigma * eps(x * c_in), CFG on the x0 prediction
        sigma = sig[t].item()
        x_in = x / math.sqrt(1 + sigma**2)
        d_u, d_c = x - sigma * toy_eps(x_in, t, 0.0), x - sigma * toy_eps(x_in, t, 1.0)
        return d_u + scale * (d_c - d_u)

    ours = ddim_sample(denoiser, noise, timesteps(50))

    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=True, timestep_spacing="trailing", prediction_type="epsilon")
    sched.set_timesteps(50)
    assert sched.timesteps.tolist() == timesteps(50)
    x = noise.clone()  # VP latent: sqrt(abar_999) * noise * sqrt(1 + sigma_999^2) == noise
    for t in sched.timesteps:
        t = int(t)
        e_u, e_c = toy_eps(x, t, 0.0), toy_eps(x, t, 1.0)
        x = sched.step(e_u + scale * (e_c - e_u), t, x, eta=0.0).prev_sample
    torch.testing.assert_close(ours, x, rtol=2e-4, atol=2e-4)


# ---- embeddings ---------------------------------------------------------------------------------

def test_guidance_embedding_matches_spec():
    # §10 lists float64 values; the official code (like ours) computes in float32, which moves the
    # sinusoid of w*1000 = 7500 by up to ~1e-4.
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
