"""CogView3's samplers (models/cogview3/sampling.py): relay coefficients and the relay and DDIM samplers."""

import math

import pytest
import torch

from models.cogview3.sampling import ddim_sample, relay_coefficients, relay_fractions, relay_sample, relay_step
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


# ---- relay step forms: the official closed form and the paper's Algorithm 1 --------------------

F64 = torch.float64
FORM_GRIDS = [timesteps(24)[12:], relay_timesteps(500, 10), relay_timesteps(200, 2), relay_timesteps(800, 10)]


def varying_denoiser(z_lr):
    """A D that depends on x and t, as a real denoiser does (elementwise mul/add/tanh only)."""
    return lambda x, t: 0.6 * x + 0.3 * torch.tanh(x) * (t / 500) + 0.1 * z_lr


def latents(seed, dtype=torch.float32, shape=(2, 4, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(shape, generator=g, dtype=dtype) for _ in range(3))


def closed_form_loop(denoiser, z_lr, grid, noise, blending="step", t_r=None, delta=0.0, generator=None):
    """The relay sampler as it was before relay_step (the official closed form, float32), kept verbatim
    so that the refactored sampler is checked bit for bit."""
    sig = sampler_sigmas(list(grid))
    z_lr = z_lr.float()
    x = z_lr + sig[0] * noise.float()
    for (a, b, c, delta_t), t in zip(relay_coefficients(grid, blending, t_r, delta), grid):
        denoised = denoiser(x, int(t)).float()
        x = a * x + b * denoised + c * z_lr
        if delta_t > 0:
            x = x + delta_t * torch.stack([torch.randn(x.shape[1:], generator=g) for g in generator])
    return x


@pytest.mark.parametrize("blending,delta", [("step", 0.0), ("time", 0.0), ("step", 0.5), ("time", 0.3)])
@pytest.mark.parametrize("grid", FORM_GRIDS)
def test_official_form_is_bit_identical_to_the_closed_form_sampler(grid, blending, delta):
    z_lr, noise, _ = latents(0)
    den = varying_denoiser(z_lr)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (5, 6)]  # noqa: E731
    want = closed_form_loop(den, z_lr, grid, noise, blending, 500, delta, gens())
    got = relay_sample(den, z_lr, grid, noise, blending, 500, delta, gens())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(relay_sample(den, z_lr, grid, noise, blending, 500, delta, gens(), form="official"),
                               want, rtol=0, atol=0)


@pytest.mark.parametrize("delta", [0.0, 0.4])
@pytest.mark.parametrize("grid", FORM_GRIDS)
def test_the_two_forms_agree_when_the_denoiser_is_constant(grid, delta):
    """Constant D (the same tensor every call): Algorithm 1's running estimate is B_{(k-1)/N}(D) at every
    step, the official closed form's target, so the trajectories agree (float64, to rounding); the fresh
    noise of eq. 7 is the same draw in both."""
    z_lr, noise, d = latents(1, F64)
    traj = {}
    for form in ("official", "paper"):
        seen = []

        def den(x, t):
            seen.append(x)
            return d

        gens = [torch.Generator().manual_seed(s) for s in (7, 8)]
        out = relay_sample(den, z_lr, grid, noise, "step", None, delta, gens, form=form, dtype=F64)
        assert out.dtype == F64
        traj[form] = seen + [out]
    assert len(traj["paper"]) == len(grid) + 1
    for x_official, x_paper in zip(traj["official"], traj["paper"]):
        torch.testing.assert_close(x_paper, x_official, rtol=0, atol=1e-12)
    torch.testing.assert_close(traj["paper"][-1], d, rtol=0, atol=1e-12)  # both end on D (a_1 = 0)


@pytest.mark.parametrize("grid", FORM_GRIDS)
def test_the_two_forms_differ_when_the_denoiser_changes(grid):
    z_lr, noise, _ = latents(2, F64)
    den = varying_denoiser(z_lr)
    official = relay_sample(den, z_lr, grid, noise, form="official", dtype=F64)
    paper = relay_sample(den, z_lr, grid, noise, form="paper", dtype=F64)
    if len(grid) <= 2:
        # The first step coincides (z0^N = z^L = B_1(D)) and the last returns D: with two steps or fewer
        # the forms are the same sampler for any D.
        torch.testing.assert_close(paper, official, rtol=0, atol=1e-12)
        return
    # D changes from step to step, and Algorithm 1 weights every past D where the closed form takes the current one
    assert (paper - official).abs().max().item() > 1e-2


def test_paper_form_is_algorithm_1_as_printed():
    """An independent transcription of Algorithm 1 (t = k the steps remaining): z~0 = D(z_t, t);
    z0^{t-1} = z0^t + (z~0 - z0^t)/t; z_{t-1} = a_t z_t + b_t z~0 + c_t z0^t + delta_t eps with
    a_t = sqrt(sigma_{t-1}^2 - delta_t^2)/sigma_t, b_t = 1/t, c_t = (t-1)/t - a_t; and the running
    estimate unrolled, z0^{k-1} = ((k-1)/N) z^L + (k-1) sum_{s=k..N} D_s / (s (s-1))."""
    grid, eta = relay_timesteps(500, 10), 0.3
    n = len(grid)
    z_lr, noise, _ = latents(3, F64)
    den = varying_denoiser(z_lr)
    sig = [float(v) for v in sampler_sigmas(grid).double()]
    eps = [torch.randn(z_lr.shape, generator=torch.Generator().manual_seed(10 + j), dtype=F64) for j in range(n)]

    x, est, outputs = z_lr + sig[0] * noise, z_lr, []
    for j, t in enumerate(grid):
        k = n - j
        d = den(x, t)
        outputs.append(d)
        delta_t = eta * sig[j + 1]
        a = math.sqrt(sig[j + 1] ** 2 - delta_t**2) / sig[j]
        x_next = a * x + (1 / k) * d + ((k - 1) / k - a) * est + delta_t * eps[j]
        est = est + (d - est) / k
        if k >= 2:  # the unrolled weights on every past output
            unrolled = (k - 1) / n * z_lr + (k - 1) * sum(outputs[n - s] / (s * (s - 1)) for s in range(k, n + 1))
            torch.testing.assert_close(est, unrolled, rtol=0, atol=1e-12)
        x = x_next

    xs, state = z_lr + sig[0] * noise, None
    for j, t in enumerate(grid):
        xs, state = relay_step(xs, den(xs, t), z_lr, j, grid, form="paper", state=state, delta=eta, noise=eps[j])
    torch.testing.assert_close(xs, x, rtol=0, atol=1e-12)
    torch.testing.assert_close(state, outputs[-1], rtol=0, atol=1e-12)  # z0^0 = the last D


@pytest.mark.parametrize("form", ["official", "paper"])
def test_relay_step_takes_one_position_per_sample(form):
    """The distillation targets step each sample from its own grid position: a tensor i gives, per
    sample, exactly the int-i step (float64; float32 to rounding)."""
    grid, delta = relay_timesteps(500, 10), 0.2
    for dtype, tol in ((F64, 0.0), (torch.float32, 1e-6)):
        x, z_lr, d = latents(4, dtype, shape=(4, 4, 8, 8))
        state, noise, _ = latents(5, dtype, shape=(4, 4, 8, 8))
        i = torch.tensor([0, 3, 9, 5])
        st = None if form == "official" else torch.where((i == 0).reshape(-1, 1, 1, 1), z_lr, state)
        got, got_state = relay_step(x, d, z_lr, i, grid, form=form, state=st, delta=delta, noise=noise)
        for b in range(4):
            one = (None if st is None else st[b:b + 1])
            want, want_state = relay_step(x[b:b + 1], d[b:b + 1], z_lr[b:b + 1], int(i[b]), grid, form=form,
                                          state=one, delta=delta, noise=noise[b:b + 1])
            assert got.dtype == dtype
            torch.testing.assert_close(got[b:b + 1], want, rtol=tol, atol=tol)
            if form == "paper":
                torch.testing.assert_close(got_state[b:b + 1], want_state, rtol=tol, atol=tol)
            else:
                assert got_state is None and want_state is None


def test_relay_step_refuses_what_algorithm_1_does_not_define():
    grid = relay_timesteps(500, 10)
    x, z_lr, d = latents(6)
    with pytest.raises(ValueError, match="blending='step'"):
        relay_step(x, d, z_lr, 0, grid, form="paper", blending="time", t_r=500)
    with pytest.raises(ValueError, match="needs the running estimate"):
        relay_step(x, d, z_lr, 1, grid, form="paper")
    with pytest.raises(ValueError, match="carries no running estimate"):
        relay_step(x, d, z_lr, 1, grid, form="official", state=z_lr)
    with pytest.raises(ValueError, match="pass the fresh noise"):
        relay_step(x, d, z_lr, 0, grid, delta=0.5)
    with pytest.raises(ValueError, match=r"0\.\.9"):
        relay_step(x, d, z_lr, 10, grid)
    with pytest.raises(ValueError, match="form must be"):
        relay_step(x, d, z_lr, 0, grid, form="Paper")
    with pytest.raises(ValueError, match="blending='step'"):
        relay_sample(lambda x, t: x, z_lr, grid, x, "time", 500, form="paper")


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
