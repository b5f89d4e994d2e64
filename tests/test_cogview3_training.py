"""CogView3's training objectives (models/cogview3/training.py): the relay loss (eqs. 4-6, spec §4.4), the base
loss, progressive distillation of the base and relay samplers (eqs. 8-9), and toy training runs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.cogview3.conditioning import guidance_embedding, sinusoid
from models.cogview3.denoiser import CogView3Denoiser
from models.cogview3.sampling import ddim_sample, relay_sample
from models.cogview3.schedule import relay_timesteps, sampler_sigmas, sigmas, timesteps
from models.cogview3.training import (
    BaseDistillation, BaseObjective, RelayDistillation, RelayObjective, TrainingDenoiser, base_distillation_loss,
    base_loss, ddim_step, distillation_grids, draw_training_noise, halve_grid, relay_distillation_loss,
    relay_lr_latent, relay_loss, student_from_teacher,
)

F64 = torch.float64


# ---- independent references -------------------------------------------------------------------


def spec_sigmas() -> np.ndarray:
    """Spec §3, from scratch: scaled-linear betas in float64, sigma = sqrt(float32((1 - abar) / abar)).

    numpy's float32 sqrt is correctly rounded; torch's CPU sqrt is 1 ulp off for 177 of the 1000 (e.g. t = 137),
    so comparisons with the schedule's sigmas allow 1e-6 relative."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    abar = np.cumprod(1.0 - betas)
    return np.sqrt(((1.0 - abar) / abar).astype(np.float32)).astype(np.float64)


def toy_denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A nonlinear stand-in D(x, t) (float64)."""
    s = (t.to(x.dtype) / 1000.0).reshape(-1, 1, 1, 1)
    return torch.tanh(x) * (1 + s) - 0.3 * s * x**2


def fixed_tensors(b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(b, 4, 6, 6, generator=g, dtype=F64)
    z_lr = torch.randn(b, 4, 6, 6, generator=g, dtype=F64)
    noise = torch.randn(b, 4, 6, 6, generator=g, dtype=F64)
    offset = torch.randn(b, generator=g, dtype=F64)
    return z0, z_lr, noise, offset


# ---- eq. 6: relay loss, base loss ------------------------------------------------------------------


def test_relay_loss_equals_the_spec_formula_float64():
    z0, z_lr, noise, offset = fixed_tensors()
    t = torch.tensor([0, 137, 499])
    got = relay_loss(toy_denoiser, z0, z_lr, t, noise, offset, t_r=500)
    sig = spec_sigmas()
    for b in range(3):  # spec §4.4 element by element, in numpy
        tb = int(t[b])
        frac = tb / 500.0
        blurred = z0[b].numpy() * (1 - frac) + z_lr[b].numpy() * frac
        x = blurred + sig[tb] * (noise[b].numpy() + 0.05 * float(offset[b]))  # one offset scalar per sample
        d = toy_denoiser(torch.from_numpy(x)[None], t[b:b + 1])[0].numpy()
        want = np.mean((d - z0[b].numpy()) ** 2) / sig[tb] ** 2  # sigma^-2, mean over C, H, W
        assert float(got[b]) == pytest.approx(want, rel=1e-6)


def test_relay_loss_uses_t_r_and_rejects_t_outside():
    z0, z_lr, noise, offset = fixed_tensors()
    t = torch.tensor([100, 100, 100])
    a = relay_loss(toy_denoiser, z0, z_lr, t, noise, offset, t_r=500)
    b = relay_loss(toy_denoiser, z0, z_lr, t, noise, offset, t_r=200)  # f = 0.5 instead of 0.2
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError):
        relay_loss(toy_denoiser, z0, z_lr, torch.tensor([0, 1, 500]), noise, offset, t_r=500)


def test_perfect_denoisers_give_zero_loss():
    z0, z_lr, noise, offset = fixed_tensors()
    perfect = lambda x, t: z0  # noqa: E731
    t = torch.tensor([0, 250, 499])
    assert torch.equal(relay_loss(perfect, z0, z_lr, t, noise, offset), torch.zeros(3, dtype=F64))
    assert torch.equal(base_loss(perfect, z0, torch.tensor([0, 500, 999]), noise, offset), torch.zeros(3, dtype=F64))


def test_base_loss_is_the_eps_mse_with_offset_noise():
    z0, _, noise, offset = fixed_tensors(seed=1)
    t = torch.tensor([3, 500, 999])
    sig = sigmas()[t].double().reshape(-1, 1, 1, 1)
    eps_hat = torch.randn(z0.shape, generator=torch.Generator().manual_seed(5), dtype=F64)
    den = lambda x, tt: x - sig * eps_hat  # noqa: E731  an eps-predictor with a fixed eps
    got = base_loss(den, z0, t, noise, offset)
    want = ((eps_hat - noise - 0.05 * offset.reshape(-1, 1, 1, 1)) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_draw_training_noise():
    t, noise, offset = draw_training_noise((4000, 4, 2, 2), torch.Generator().manual_seed(0), 500)
    assert t.dtype == torch.long and int(t.min()) == 0 and int(t.max()) == 499
    assert noise.shape == (4000, 4, 2, 2) and offset.shape == (4000,)
    again = draw_training_noise((4000, 4, 2, 2), torch.Generator().manual_seed(0), 500)
    assert all(torch.equal(a, b) for a, b in zip((t, noise, offset), again))
    t, _, _ = draw_training_noise((4000, 1), torch.Generator().manual_seed(0), 1000)
    assert int(t.max()) == 999


def test_relay_lr_latent_is_half_bilinear_down_then_double_up():
    img = torch.rand(2, 3, 8, 12, generator=torch.Generator().manual_seed(0), dtype=F64) * 2 - 1
    got = relay_lr_latent(img, lambda x: x * 0.5)
    low = F.avg_pool2d(img, 2)  # bilinear x1/2, align_corners=False, no antialias = the 2x2 mean

    def up(x, dim):  # bilinear x2, align_corners=False: 0.25/0.75 of the two nearest, edges replicated
        n = x.shape[dim]
        prev = torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, n - 1)], dim)
        nxt = torch.cat([x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)], dim)
        even, odd = 0.25 * prev + 0.75 * x, 0.75 * x + 0.25 * nxt
        return torch.stack([even, odd], dim + 1).flatten(dim, dim + 1)

    torch.testing.assert_close(got, 0.5 * up(up(low, 2), 3), rtol=0, atol=1e-12)


# ---- the training denoiser ---------------------------------------------------------------------------


def tiny_unet(dim=None, seed=0):
    from models.cogview3.unet import build_unet, tiny_unet_config

    return build_unet(tiny_unet_config(dim), seed=seed)


def test_training_denoiser_equals_the_inference_denoiser():
    unet = tiny_unet().eval()
    g = torch.Generator().manual_seed(0)
    ctx, vec = torch.randn(2, 4, 32, generator=g), torch.randn(2, 1536, generator=g)
    x = torch.randn(2, 4, 8, 8, generator=g)
    with torch.no_grad():
        for t in (999, 41):
            ts = torch.full((2,), t)
            for kw, tkw in ((dict(guidance=7.5), dict(guidance=torch.tensor([7.5, 7.5]))), (dict(guidance=1.0), {})):
                want = CogView3Denoiser(unet, ctx, vec, **kw)(x, t)
                assert torch.equal(TrainingDenoiser(unet, ctx, vec, **tkw)(x, ts), want)
        # per-sample t and w: each row as the inference denoiser alone (another batch size: float32 kernels
        # differ in the last bits, amplified by sigma_999 = 14.6 and the CFG scale)
        mixed = TrainingDenoiser(unet, ctx, vec, guidance=torch.tensor([3.0, 7.5]))(x, torch.tensor([999, 41]))
        for row, (w, t) in enumerate(((3.0, 999), (7.5, 41))):
            want = CogView3Denoiser(unet, ctx[row:row + 1], vec[row:row + 1], guidance=w)(x[row:row + 1], t)
            torch.testing.assert_close(mixed[row:row + 1], want, rtol=1e-4, atol=5e-4)
        distilled = tiny_unet(64).eval()
        emb = guidance_embedding(7.5, 64, 2)
        want = CogView3Denoiser(distilled, ctx, vec, guidance_embedding=emb)(x, 499)
        assert torch.equal(TrainingDenoiser(distilled, ctx, vec, w_embedding=emb)(x, torch.full((2,), 499)), want)
    with pytest.raises(ValueError):
        TrainingDenoiser(unet, ctx, vec, guidance=7.5, w_embedding=emb)


def test_student_from_teacher_zero_inits_w_proj_and_equals_the_teachers_conditional_model():
    teacher = tiny_unet().eval()
    student = student_from_teacher(teacher, 64).eval()
    assert student.config.time_cond_proj_dim == 64 and not student.time_embedding.cond_proj.weight.any()
    ref = teacher.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in student.state_dict().items() if k in ref)
    g = torch.Generator().manual_seed(1)
    ctx, vec = torch.randn(2, 4, 32, generator=g), torch.randn(2, 1536, generator=g)
    x = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([999, 249])
    with torch.no_grad():
        emb = torch.cat([guidance_embedding(3.0, 64), guidance_embedding(11.0, 64)])
        torch.testing.assert_close(TrainingDenoiser(student, ctx, vec, w_embedding=emb)(x, t),
                                   TrainingDenoiser(teacher, ctx, vec)(x, t))


def test_objectives_on_the_tiny_unet_have_the_loop_signature_and_train_w_proj():
    g = torch.Generator().manual_seed(0)
    batch = dict(z0=torch.randn(2, 4, 8, 8, generator=g), z_lr=torch.randn(2, 4, 8, 8, generator=g),
                 context=torch.randn(2, 4, 32, generator=g), size_vec=torch.randn(2, 1536, generator=g))
    model = tiny_unet()
    for objective in (RelayObjective(), BaseObjective(text_dropout=0.5)):
        loss = objective(model, batch, torch.Generator().manual_seed(1))
        assert loss.shape == (2,) and torch.isfinite(loss).all()
    teacher = tiny_unet().eval()
    student = student_from_teacher(teacher, 64)
    for objective in (BaseDistillation(teacher, timesteps(8)),
                      RelayDistillation(teacher, relay_timesteps(200, 4), form="paper")):
        assert objective.teacher_guidance == "cfg"
        student.zero_grad()
        loss = objective(student, batch, torch.Generator().manual_seed(2))
        assert loss.shape == (2,) and torch.isfinite(loss).all()
        loss.mean().backward()
        assert student.time_embedding.cond_proj.weight.grad.abs().sum() > 0  # w reaches the student via w_proj
        assert all(p.grad is None for p in teacher.parameters())
    later = BaseDistillation(student, halve_grid(timesteps(8)))  # round 2: the teacher is w-conditioned
    assert later.teacher_guidance == "embedding" and later.teacher_embed_dim == 64


# ---- grids ----------------------------------------------------------------------------------------


def test_halving_the_official_grids_gives_the_spec_grids():
    base = distillation_grids(timesteps(64), 4)
    assert [len(g) for g in base] == [64, 32, 16, 8, 4]
    assert base[1:] == [timesteps(32), timesteps(16), timesteps(8), timesteps(4)]
    assert base[-1] == [999, 749, 499, 249] and base[-2] == [999, 874, 749, 624, 499, 374, 249, 124]  # spec §5
    relay = distillation_grids(relay_timesteps(200, 8), 1)
    assert relay[1:] == [[199, 149, 99, 49], [199, 99], [199]]  # spec §5: 1-step relay at 199, 2-step 199, 99


def test_odd_counts_keep_the_grid_nested():
    base = distillation_grids(timesteps(50), 4)
    assert [len(g) for g in base] == [50, 25, 13, 7, 4] and base[1] == timesteps(25)
    assert base[-1] == [999, 679, 359, 39]  # not the spec's 4-step grid
    relay = distillation_grids(relay_timesteps(500, 10), 1)
    assert [len(g) for g in relay] == [10, 5, 3, 2, 1] and relay[1] == relay_timesteps(500, 5)
    assert relay[-1] == [499]
    with pytest.raises(ValueError):
        distillation_grids(timesteps(50), 3)
    with pytest.raises(ValueError):
        halve_grid([199])


# ---- distillation in closed form: linear teachers, exact students ------------------------------------


def coeff_table(seed):
    g = torch.Generator().manual_seed(seed)
    return 0.2 + 0.6 * torch.rand(1000, generator=g, dtype=F64), torch.randn(1000, generator=g, dtype=F64)


def linear_denoiser(a, b, other):
    """D(x, t) = a_t x + b_t * other (float64)."""
    return lambda x, t: a[t].reshape(-1, 1, 1, 1) * x + b[t].reshape(-1, 1, 1, 1) * other


def table_denoiser(table, other):
    """D(x, t) = A x + B other with (A, B) looked up per sample by t (the analytic students)."""
    def den(x, t):
        ab = torch.stack([torch.stack(table[int(v)]) for v in t])
        return ab[:, 0].reshape(-1, 1, 1, 1) * x + ab[:, 1].reshape(-1, 1, 1, 1) * other
    return den


def exact_base_student(a, b, grid):
    """Per student point: the affine D_s = A x + B c whose one DDIM step equals the teacher's two."""
    sig = [float(s) for s in sampler_sigmas(grid)] + [0.0]
    out = {}
    for i in range(0, len(grid), 2):
        p, q = 1.0, 0.0  # x_now = p x + q c
        for j in (i, i + 1)[: 1 if i + 1 == len(grid) else 2]:
            aj, bj = float(a[grid[j]]), float(b[grid[j]])
            # x' = x + (s' - s)(x - D)/s with D = aj x_now + bj c
            k = (sig[j + 1] - sig[j]) / sig[j]
            p, q = p + k * (p - aj * p), q + k * (q - aj * q - bj)
        end = sig[min(i + 2, len(grid))]
        r = end / sig[i]
        out[grid[i]] = (torch.tensor((p - r) / (1 - r), dtype=F64), torch.tensor(q / (1 - r), dtype=F64))
    return out


@pytest.mark.parametrize("steps", [8, 7])
def test_base_distillation_exact_student_has_zero_loss_and_reproduces_the_teacher(steps):
    grid = timesteps(steps)
    a, b = coeff_table(0)
    g = torch.Generator().manual_seed(0)
    c = torch.randn(5, 4, 4, 4, generator=g, dtype=F64)
    teacher = linear_denoiser(a, b, c)
    student = table_denoiser(exact_base_student(a, b, grid), c)
    n_student = len(halve_grid(grid))
    for i in range(n_student):
        x = torch.randn(5, 4, 4, 4, generator=g, dtype=F64) * 3
        idx = torch.full((5,), i)
        for weighting in ("truncated_snr", "eps"):
            assert float(base_distillation_loss(student, teacher, x, idx, grid, weighting).max()) < 1e-10
        wrong = lambda x, t: student(x, t) * 1.01  # noqa: E731
        assert float(base_distillation_loss(wrong, teacher, x, idx, grid).min()) > 1e-8
    # the inference sampler: the exact student on its grid = the teacher on its grid (float32 there)
    noise = torch.randn(5, 4, 4, 4, generator=g)
    int_den = lambda den: (lambda x, t: den(x.double(), torch.full((x.shape[0],), t)).float())  # noqa: E731
    torch.testing.assert_close(ddim_sample(int_den(student), noise, halve_grid(grid)),
                               ddim_sample(int_den(teacher), noise, grid), rtol=1e-4, atol=1e-4)


def test_ddim_step_is_the_samplers_step():
    grid = timesteps(6)
    den = lambda x, t: torch.tanh(x) * (t / 1000)  # noqa: E731
    noise = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    sig = sampler_sigmas(grid)
    x = noise * torch.sqrt(1.0 + sig[0] ** 2)
    for k, t in enumerate(grid):
        x = ddim_step(x, den(x, t), sig[k], sig[k + 1])
    assert torch.equal(x, ddim_sample(den, noise, grid))


def relay_abc(grid):
    """The official closed form's (a, b, c) from scratch (spec §4.3): f = k/N, a = sigma'/sigma."""
    sig = [float(s) for s in sampler_sigmas(grid)]
    n = len(grid)
    out = []
    for j in range(n):
        f, f1, a = (n - j) / n, (n - j - 1) / n, sig[j + 1] / sig[j]
        out.append((a, (1 - f1) - a * (1 - f), f1 - a * f))
    return out


def exact_relay_student(a, b, grid):
    """Per student point: D_s = A x + B z^L whose one official relay step equals the teacher's two."""
    tab, stab = relay_abc(grid), relay_abc(grid[::2])
    out = {}
    for i in range(0, len(grid), 2):
        p, q = 1.0, 0.0  # x_now = p x + q z^L
        for j in (i, i + 1)[: 1 if i + 1 == len(grid) else 2]:
            A, B, C = tab[j]
            aj, bj = float(a[grid[j]]), float(b[grid[j]])
            p, q = A * p + B * aj * p, A * q + B * (aj * q + bj) + C
        A, B, C = stab[i // 2]
        out[grid[i]] = (torch.tensor((p - A) / B, dtype=F64), torch.tensor((q - C) / B, dtype=F64))
    return out


@pytest.mark.parametrize("grid", [relay_timesteps(500, 10), relay_timesteps(200, 4), relay_timesteps(500, 5)])
def test_relay_distillation_exact_student_has_zero_loss_and_reproduces_the_teacher(grid):
    a, b = coeff_table(1)
    g = torch.Generator().manual_seed(0)
    z_lr = torch.randn(5, 4, 4, 4, generator=g, dtype=F64)
    teacher = linear_denoiser(a, b, z_lr)
    student = table_denoiser(exact_relay_student(a, b, grid), z_lr)
    for i in range(len(halve_grid(grid))):
        x = z_lr + torch.randn(5, 4, 4, 4, generator=g, dtype=F64)
        idx = torch.full((5,), i)
        assert float(relay_distillation_loss(student, teacher, x, z_lr, idx, grid).max()) < 1e-10
        wrong = lambda x, t: student(x, t) + 0.01  # noqa: E731
        assert float(relay_distillation_loss(wrong, teacher, x, z_lr, idx, grid).min()) > 1e-8
    noise = torch.randn(5, 4, 4, 4, generator=g)
    int_den = lambda den: (lambda x, t: den(x.double(), torch.full((x.shape[0],), t)).float())  # noqa: E731
    torch.testing.assert_close(relay_sample(int_den(student), z_lr.float(), halve_grid(grid), noise),
                               relay_sample(int_den(teacher), z_lr.float(), grid, noise), rtol=1e-4, atol=1e-4)


def test_relay_distillation_paper_form_exact_student_has_zero_loss():
    """Algorithm 1 literally: the state is (x, running estimate e). The exact student's D depends on e, which the
    network does not see; with e = z^L (the sampler's start) it is affine in (x, z^L)."""
    grid = relay_timesteps(200, 8)
    a, b = coeff_table(2)
    g = torch.Generator().manual_seed(0)
    z_lr = torch.randn(5, 4, 4, 4, generator=g, dtype=F64)
    teacher = linear_denoiser(a, b, z_lr)
    sig = [float(s) for s in sampler_sigmas(grid)]
    n, m = len(grid), len(grid[::2])
    for i in range(m):
        x = z_lr + torch.randn(5, 4, 4, 4, generator=g, dtype=F64)
        e = z_lr if i == 0 else torch.randn(5, 4, 4, 4, generator=g, dtype=F64)
        xs, es = x, e
        for j in (2 * i, 2 * i + 1):  # Algorithm 1, two teacher steps, k = n - j remaining
            d = float(a[grid[j]]) * xs + float(b[grid[j]]) * z_lr
            e_next = es + (d - es) / (n - j)
            xs, es = e_next + sig[j + 1] / sig[j] * (xs - es), e_next
        k, s0 = m - i, sig[2 * i]
        a_s = (sig[2 * i + 2] if 2 * i + 2 < n else 0.0) / s0
        d_student = k * (xs - a_s * x - (1 - 1 / k - a_s) * e)  # solves e + (D - e)/k + a_s (x - e) = x_{t-2}
        student = lambda x_, t, d=d_student: d  # noqa: E731
        idx = torch.full((5,), i)
        loss = relay_distillation_loss(student, teacher, x, z_lr, idx, grid, form="paper", z0_est=e)
        assert float(loss.max()) < 1e-10
        official = relay_distillation_loss(student, teacher, x, z_lr, idx, grid, form="official")
        assert float(official.min()) > 1e-6  # the two forms differ once D varies


# ---- toy training ----------------------------------------------------------------------------------


class ToyEps(nn.Module):
    """A small conv net with the UNet's call signature: eps(x, t, text, size vector, guidance embedding)."""

    def __init__(self, hidden=32, text_dim=8, cond_dim=None, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.config = SimpleNamespace(time_cond_proj_dim=cond_dim)
        self.t_mlp = nn.Sequential(nn.Linear(32, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.text = nn.Linear(text_dim, hidden)
        if cond_dim:  # w_proj: zero-initialised, added to the timestep sinusoid
            self.cond_proj = nn.Linear(cond_dim, 32, bias=False)
            nn.init.zeros_(self.cond_proj.weight)
        self.conv_in = nn.Conv2d(4, hidden, 3, padding=1)
        self.c1, self.c2, self.c3 = (nn.Conv2d(hidden, hidden, 3, padding=1) for _ in range(3))
        self.conv_out = nn.Conv2d(hidden, 4, 3, padding=1)

    def forward(self, x, t, encoder_hidden_states, class_labels, timestep_cond=None):
        emb = sinusoid(t, 32).to(x.dtype)
        if timestep_cond is not None:
            emb = emb + self.cond_proj(timestep_cond)
        h = self.conv_in(x) + (self.t_mlp(emb) + self.text(encoder_hidden_states.mean(1)))[:, :, None, None]
        h = h + self.c2(F.silu(self.c1(F.silu(h))))
        h = h + self.c3(F.silu(h))
        return SimpleNamespace(sample=self.conv_out(F.silu(h)))


def toy_data(n, seed, components=4):
    """Gaussian-mixture latents [n, 4, 8, 8] (a smooth template per component, random gain, 0.05 pixel noise),
    z^L = 2x2 mean then bilinear x2 of z0 (a known smoothing), text = the component's 4 random tokens."""
    g = torch.Generator().manual_seed(1234)
    templates = F.interpolate(torch.randn(components, 4, 4, 4, generator=g), scale_factor=2, mode="bilinear",
                              align_corners=False)
    words = torch.randn(components, 4, 8, generator=g)
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, components, (n,), generator=g)
    gain = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=g)
    z0 = templates[k] * gain + 0.05 * torch.randn(n, 4, 8, 8, generator=g)
    z_lr = F.interpolate(F.avg_pool2d(z0, 2), scale_factor=2, mode="bilinear", align_corners=False)
    return dict(z0=z0, z_lr=z_lr, context=words[k], size_vec=torch.zeros(n, 1536))


def fit(model, objective, data, steps, lr, batch=16):
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    n = data["z0"].shape[0]
    for step in range(steps):
        g = torch.Generator().manual_seed(1000 + step)
        rows = torch.randint(0, n, (batch,), generator=g)
        loss = objective(model, {k: v[rows] for k, v in data.items()}, g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def held_out(objective, model, data):
    with torch.no_grad():
        return float(objective(model, data, torch.Generator().manual_seed(99)).mean())


@pytest.fixture(scope="module")
def toy():
    return toy_data(512, seed=1), toy_data(128, seed=2)


@pytest.fixture(scope="module")
def trained_relay(toy):
    train, test = toy
    objective, model = RelayObjective(), ToyEps()
    before = held_out(objective, model, test)
    fit(model, objective, train, steps=200, lr=2e-3)
    return model, before, held_out(objective, model, test)


def test_training_a_toy_relay_model_lowers_the_held_out_relay_loss(trained_relay):
    _, before, after = trained_relay
    print(f"held-out relay loss {before:.4f} -> {after:.4f} (x{before / after:.1f})")
    assert after < before / 3  # measured x5.1 (1.029 -> 0.200)


def test_one_relay_distillation_round_brings_the_student_to_the_teachers_two_steps(toy, trained_relay):
    train, test = toy
    teacher = trained_relay[0]
    objective = RelayDistillation(teacher, relay_timesteps(500, 4), w_range=(2.0, 14.0))  # 499, 374, 249, 124
    assert objective.student_grid == [499, 249] and objective.teacher_guidance == "cfg"
    student = ToyEps(cond_dim=64)
    student.load_state_dict(teacher.state_dict(), strict=False)  # w_proj stays zero
    before = held_out(objective, student, test)
    fit(student, objective, train, steps=100, lr=1e-3)
    after = held_out(objective, student, test)
    print(f"relay distillation: student-vs-2-teacher-steps MSE {before:.4f} -> {after:.4f} (x{before / after:.1f})")
    assert after < before / 3  # measured x6.5 (1.745 -> 0.270)


def test_one_base_distillation_round_brings_the_student_to_the_teachers_two_steps(toy):
    train, test = toy
    teacher = ToyEps(seed=3)  # any fixed network is a teacher: the targets are its own steps
    objective = BaseDistillation(teacher, timesteps(8), w_range=(2.0, 14.0))
    student = ToyEps(cond_dim=64)
    student.load_state_dict(teacher.state_dict(), strict=False)
    before = held_out(objective, student, test)
    fit(student, objective, train, steps=100, lr=1e-3)
    after = held_out(objective, student, test)
    print(f"base distillation: weighted x0-target MSE {before:.4f} -> {after:.4f} (x{before / after:.1f})")
    assert after < before / 3  # measured x5.4 (31.2 -> 5.8)
