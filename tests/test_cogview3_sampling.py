"""CogView3's samplers (models/cogview3/sampling.py): relay coefficients and the relay and DDIM samplers."""

import math

import pytest
import torch

from models.cogview3.sampling import ddim_sample, relay_coefficients, relay_fractions, relay_sample
from models.cogview3.schedule import relay_timesteps, sampler_sigmas, sigmas, timesteps


# ---- relay coefficients (official closed form, docs/reference.md §4.3) --------------------------

SPEC_24_12 = [  # (tau, A, B, C) from docs/reference.md §8.3
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
    for (a, b, c, delta_t), (_, A, B, C) in zip(relay_coefficients(grid), SPEC_24_12):
        assert (a, b, c) == pytest.approx((A, B, C), abs=1e-6)
        assert a + b + c == pytest.approx(1.0, abs=1e-12) and delta_t == 0.0
    assert relay_coefficients(grid)[0][1] == pytest.approx(1 / 12, abs=1e-12)  # B at step 0 = 1/N


def test_relay_coefficients_20_10_and_one_step():
    coeffs = relay_coefficients(timesteps(20)[10:])
    assert coeffs[0][:3] == pytest.approx((0.847656, 0.100000, 0.052344), abs=1e-6)
    assert coeffs[1][:3] == pytest.approx((0.848889, 0.115111, 0.036000), abs=1e-6)
    assert coeffs[-1][:3] == pytest.approx((0.0, 1.0, 0.0), abs=1e-12)
    assert relay_coefficients([199]) == [(0.0, 1.0, 0.0, 0.0)]


@pytest.mark.parametrize("blending,delta", [("step", 0.0), ("time", 0.0), ("step", 0.5), ("time", 0.3)])
def test_coefficients_sum_to_one_in_every_mode(blending, delta):
    for a, b, c, _delta_t in relay_coefficients(relay_timesteps(500, 10), blending, 500, delta):
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
