"""CogView3 samplers: plain functions of a denoiser, a starting tensor and a timestep grid.

Notation (docs/reference.md §3-§4; one letter per concept):

- ``x`` the sampler state, the variance-exploding latent x = z0 + sigma * eps (eps unit Gaussian);
- ``z0`` the clean latent, ``z^L`` (``z_lr``) the upsampled low-resolution latent of the relay stage;
- ``D`` the denoiser output, ``denoiser(x, t) -> x0 prediction`` at integer timestep t (classifier-free
  guidance, if any, lives inside it; see :mod:`models.cogview3.denoiser`);
- ``sigma`` the noise level of a grid timestep (:func:`models.cogview3.schedule.sampler_sigmas`, with
  sigma = 0 after the last grid point);
- ``slope`` the Euler derivative (x - D) / sigma of the base sampler;
- ``f`` the blur fraction, B_f(z) = (1 - f) z + f z^L the linear blur toward z^L;
- ``a, b, c`` the relay coefficients on x, D and z^L; ``delta_t`` the stochastic degree of a relay step
  (standard deviation of the fresh noise eps' it adds); ``k`` the number of relay steps remaining;
- ``form`` how a relay step forms its blurred target: ``official`` (the released sampler's closed form,
  from the current D) or ``paper`` (Algorithm 1's running estimate z0^k, the ``state`` of :func:`relay_step`).

Equation numbers are those of the paper (arXiv 2403.05121v1) as docs/reference.md §4.3 maps them:
eqs. 4-5 the linearly blurred forward process, eqs. 6-9 the DDIM-style relay step with delta_t in
eq. 7, Algorithm 1 the relay sampler. Subscripts count grid positions (x_t, then x_{t-1}); primes mark
the next grid point (sigma', f'). Algorithm 1's step counter t is ``k`` here, as t already names the
integer timestep.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch

from models.cogview3.schedule import sampler_sigmas

Denoiser = Callable[[torch.Tensor, int], torch.Tensor]


def ddim_sample(denoiser: Denoiser, noise: torch.Tensor, timesteps: Sequence[int]) -> torch.Tensor:
    """Base-stage sampler: deterministic DDIM (eta = 0) in the sigma variable (docs/reference.md §4.2).

    The official ``EulerEDMSampler`` with s_churn = 0. x_T = noise * sqrt(1 + sigma_T^2), then per step
    the Euler step of the probability-flow ODE dx/dsigma = slope = (x - D(x)) / sigma, which is exactly
    DDIM (eta = 0) in these variables:

        x_{t-1} = x_t + (sigma_{t-1} - sigma_t) * slope
                = D + (sigma_{t-1} / sigma_t) * (x_t - D)

    with sigma after the last grid point = 0, so the last step returns D. ``noise`` is unit Gaussian.
    """
    sig = sampler_sigmas(list(timesteps))
    x = noise.float() * torch.sqrt(1.0 + sig[0] ** 2)
    for i, t in enumerate(timesteps):
        denoised = denoiser(x, int(t)).float()
        slope = (x - denoised) / sig[i]
        x = x + (sig[i + 1] - sig[i]) * slope
    return x


def relay_fractions(timesteps: Sequence[int], blending: str = "step", t_r: int | None = None) -> list[float]:
    """Blur fraction f of each relay step, plus f = 0 after the last one.

    The relay model is trained on x = B_f(z0) + sigma * eps with B_f(z0) = (1 - f) z0 + f z^L, the
    linear blur of eqs. 4-5 (docs/reference.md §4.4). Two choices of f per step:

    - ``step`` (the official sampler, the default): f = k / N with k = N, N-1, ..., 1 the steps remaining;
    - ``time`` (the paper's and the official training schedule): f = t / T_r with t the DDPM timestep
      (clipped to 1).

    They differ slightly on a real grid (24/12 grid: 11/12 = 0.9167 vs 457/500 = 0.914).
    """
    n = len(timesteps)
    if blending == "step":
        return [(n - i) / n for i in range(n)] + [0.0]
    if blending == "time":
        if t_r is None:
            raise ValueError("time blending needs t_r")
        return [min(1.0, t / t_r) for t in timesteps] + [0.0]
    raise ValueError(f"blending must be 'step' or 'time', got {blending!r}")


def relay_coefficients(
    timesteps: Sequence[int],
    blending: str = "step",
    t_r: int | None = None,
    delta: float | Sequence[float] = 0.0,
) -> list[tuple[float, float, float, float]]:
    """(a, b, c, delta_t) per relay step: x_{t-1} = a x_t + b D + c z^L + delta_t eps'.

    These are the coefficients of the official closed form (``LinearRelayEDMSampler``,
    docs/reference.md §4.3), a DDIM step on the manifold of "blurred x0 + sigma eps" (eqs. 6-9):

        x_{t-1} = B_{f'}(D) + a (x_t - B_f(D)) + delta_t eps',    a = sqrt(sigma'^2 - delta_t^2) / sigma

    with B_f(z) = (1 - f) z + f z^L, f and f' the blur fractions of this step and the next
    (:func:`relay_fractions`), sigma and sigma' the noise levels of this grid point and the next. Expanding
    B gives b = (1 - f') - a (1 - f) and c = f' - a f, so a + b + c = 1. With ``blending="step"`` and
    delta_t = 0 this is the official update term for term: in its r and beta, a = r = sigma'/sigma,
    c = -beta and b = 1 - r + beta.

    ``delta`` is the stochastic degree delta_t of eq. 7: one number eta, giving delta_t = eta * sigma' at
    every step, or one delta_t per step (each in [0, sigma']). The official code is deterministic
    (delta_t = 0, the default). How the closed form relates to Algorithm 1: see :func:`relay_sample`.
    """
    sig = sampler_sigmas(list(timesteps)).double()
    f = relay_fractions(timesteps, blending, t_r)
    n = len(timesteps)
    deltas = [float(delta) * float(sig[i + 1]) for i in range(n)] if isinstance(delta, (int, float)) else list(delta)
    if len(deltas) != n:
        raise ValueError(f"need one delta per relay step ({n}), got {len(deltas)}")
    out = []
    for i in range(n):
        sigma, sigma_next, delta_t = float(sig[i]), float(sig[i + 1]), deltas[i]
        if not 0.0 <= delta_t <= sigma_next:
            raise ValueError(f"delta_t must lie in [0, sigma_(t-1)] = [0, {sigma_next:.6f}], got {delta_t}")
        a = (sigma_next**2 - delta_t**2) ** 0.5 / sigma
        b = (1.0 - f[i + 1]) - a * (1.0 - f[i])
        c = f[i + 1] - a * f[i]
        out.append((a, b, c, delta_t))
    return out


RELAY_FORMS = ("official", "paper")


@functools.lru_cache(maxsize=64)
def _coefficient_table(grid: tuple[int, ...], blending: str, t_r: int | None,
                       delta: float | tuple[float, ...]) -> tuple[tuple[float, float, float, float], ...]:
    return tuple(relay_coefficients(grid, blending, t_r, delta))


def relay_step(
    x: torch.Tensor,
    denoised: torch.Tensor,
    z_lr: torch.Tensor,
    i: int | torch.Tensor,
    timesteps: Sequence[int],
    *,
    form: str = "official",
    state: torch.Tensor | None = None,
    blending: str = "step",
    t_r: int | None = None,
    delta: float | Sequence[float] = 0.0,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One relay step from grid position ``i``: x_t -> x_{t-1}, in the official closed form or Algorithm 1's.

    A pure function (no denoiser call, no random draw): :func:`relay_sample` loops it, and the relay
    distillation targets (eqs. 8-9) call it for the teacher's two steps and the student's one.

    Arguments:

    - ``x``: the state x_t at position i of ``timesteps``, [B, C, H, W] (any shape whose first dim is the batch);
    - ``denoised``: D = D(x_t, timesteps[i]), the denoiser's x0 prediction (Algorithm 1's z~0), shaped like x;
    - ``z_lr``: z^L, the upsampled low-resolution latent, shaped like x;
    - ``i``: the grid position, 0 = the first relay step (at timesteps[0], from x = z^L + sigma_0 eps);
      an int, or a 1-D integer tensor of one position per sample (training draws a position per sample);
    - ``timesteps``: the whole descending relay grid, e.g. ``relay_timesteps(500, 10)``; the step goes from
      sigma = sigma(timesteps[i]) to sigma' = sigma(timesteps[i + 1]), or 0 after the last point;
    - ``form``: ``"official"`` or ``"paper"`` (below);
    - ``state``: ``form="paper"`` only: Algorithm 1's running estimate z0^k of the blurred target at this
      step, shaped like x; None means z0^N = z^L, Algorithm 1's start, allowed at i = 0 only.
      ``form="official"`` carries no state: pass None;
    - ``blending``, ``t_r``: the blur fraction f of each step (:func:`relay_fractions`); ``form="paper"``
      presumes f = k/N (``blending="step"``), since its 1/k update is that schedule;
    - ``delta``: the stochastic degree delta_t of eq. 7 (:func:`relay_coefficients`: one eta, delta_t =
      eta sigma', or one delta_t per step); 0 (the official sampler) makes the step deterministic;
    - ``noise``: eps', unit Gaussian shaped like x, required where delta_t > 0 (ignored otherwise).

    Returns ``(x_next, state_next)``: x_{t-1}, and for ``form="paper"`` the running estimate z0^{k-1} to pass
    as ``state`` to the next step (None for ``form="official"``). Computed in x's dtype.

    With k = N - i the steps remaining (Algorithm 1's t), sigma, sigma' this and the next noise level,
    a = sqrt(sigma'^2 - delta_t^2) / sigma (a = sigma'/sigma when delta_t = 0) and B_f(z) = (1 - f) z + f z^L
    the linear blur of eqs. 4-5:

    - ``official`` (``LinearRelayEDMSampler``, the default; eqs. 6-9 with the blurred target formed from the
      current D at every step):

          x_{t-1} = B_{f'}(D) + a (x_t - B_f(D)) + delta_t eps' = a x_t + b D + c z^L + delta_t eps'

      with (a, b, c) from :func:`relay_coefficients`; bit-identical to the sampler before this function.
    - ``paper`` (Algorithm 1 literally): the running estimate and the DDIM-style update of eq. 7 around it,

          z0^{k-1} = z0^k + (D - z0^k) / k,
          x_{t-1}  = z0^{k-1} + a (x_t - z0^k) + delta_t eps'
                   = a x_t + (1/k) D + ((k - 1)/k - a) z0^k + delta_t eps'.

      At the first step (k = N, z0^N = z^L = B_1(D)) the two forms take the same step, at the last (k = 1,
      sigma' = 0) both return D; so with N <= 2 they are one sampler. Beyond that they take identical steps
      when D is the same tensor at every step and differ otherwise (:func:`relay_sample` derives both facts).
    """
    if form not in RELAY_FORMS:
        raise ValueError(f"form must be one of {', '.join(RELAY_FORMS)}, got {form!r}")
    if form == "paper" and blending != "step":
        raise ValueError("form='paper' (Algorithm 1) updates its running estimate by 1/k, i.e. blur fraction k/N: "
                         f"it needs blending='step', got {blending!r}")
    if form == "official" and state is not None:
        raise ValueError("form='official' carries no running estimate: pass state=None")
    grid = tuple(int(t) for t in timesteps)
    n = len(grid)
    table = _coefficient_table(grid, blending, t_r, delta if isinstance(delta, (int, float)) else tuple(delta))
    per_sample = isinstance(i, torch.Tensor)
    positions = i.detach().to("cpu", torch.long).reshape(-1) if per_sample else torch.tensor([int(i)])
    if per_sample and positions.numel() != x.shape[0]:
        raise ValueError(f"i has {positions.numel()} positions for a batch of {x.shape[0]}")
    if bool(((positions < 0) | (positions >= n)).any()):
        raise ValueError(f"relay position i must lie in 0..{n - 1}, got {positions.tolist()}")

    if per_sample:  # one row of the table per sample, as [B, 1, ..., 1] in x's dtype
        rows = torch.tensor(table, dtype=torch.float64)[positions]
        shape = (-1,) + (1,) * (x.dim() - 1)
        a, b, c, delta_t = (rows[:, m].reshape(shape).to(x.device, x.dtype) for m in range(4))
        k = (n - positions).to(torch.float64).reshape(shape).to(x.device, x.dtype)
        has_noise = bool((rows[:, 3] > 0).any())
    else:
        a, b, c, delta_t = table[int(i)]  # Python floats: the arithmetic of the sampler before relay_step
        k = n - int(i)
        has_noise = delta_t > 0
    if has_noise and noise is None:
        raise ValueError("delta_t > 0 at this step: pass the fresh noise eps' as noise")

    if form == "official":
        x_next, state_next = a * x + b * denoised + c * z_lr, None
    else:
        if state is None:
            if bool((positions != 0).any()):
                raise ValueError("form='paper' needs the running estimate (state) after the first step")
            state = z_lr  # Algorithm 1: z0^{T} = z^L
        state_next = state + (denoised - state) / k
        x_next = state_next + a * (x - state)
    if has_noise:
        x_next = x_next + delta_t * noise
    return x_next, state_next


def relay_sample(
    denoiser: Denoiser,
    z_lr: torch.Tensor,
    timesteps: Sequence[int],
    noise: torch.Tensor,
    blending: str = "step",
    t_r: int | None = None,
    delta: float | Sequence[float] = 0.0,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    *,
    form: str = "official",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Relay super-resolution from the upsampled low-resolution latent ``z_lr`` (z^L); returns the final latent.

    Start: x = z^L + sigma_0 * noise at the first grid timestep (no blur there: f = 1, so B_1(D) = z^L).
    Step: :func:`relay_step` in ``form`` (one implementation for sampling and distillation). The default,
    ``form="official"``, is the official closed form

        x_{t-1} = a x_t + b D(x_t, t) + c z^L (+ delta_t eps') = B_{f'}(D) + a (x_t - B_f(D)) (+ delta_t eps')

    with the coefficients of :func:`relay_coefficients`; ``form="paper"`` is Algorithm 1 as printed, with its
    running estimate of the blurred target (below). ``timesteps`` is the descending relay grid, e.g.
    ``relay_timesteps(500, 12)`` = ``timesteps(24)[12:]``; ``noise`` is unit Gaussian shaped like ``z_lr``;
    ``generator`` (one per sample, or one) draws eps' when delta_t > 0. Computed in ``dtype`` (float32, as
    the official sampler; float64 for tests).

    Where the official form follows the official code (docs/reference.md §4.3) rather than the paper's text:
    B_f is formed from the *current* D at every step (below); the blur fraction defaults to the step
    counter k / N, not t / T_r (``blending``); delta_t defaults to 0; the grid starts at the first
    timestep below T_r (499 for T_r = 500).

    Relation to Algorithm 1. Count steps by k = N, ..., 1 (steps remaining), take f_k = k / N and
    delta_t = 0, write D_k for the denoiser output at step k and a_k = sigma_{k-1} / sigma_k. The code:

        x_{k-1} = B_{(k-1)/N}(D_k) + a_k (x_k - B_{k/N}(D_k)).

    Algorithm 1 instead carries a running estimate of the blurred target from step to step,
    z0^N = z^L and z0^{k-1} = z0^k + (D_k - z0^k) / k, and takes the same DDIM step around it,
    x_{k-1} = z0^{k-1} + a_k (x_k - z0^k).

    - D_k = D at every step: if z0^k = B_{k/N}(D), then
      z0^{k-1} = ((k-1)/k) B_{k/N}(D) + D/k = (1 - (k-1)/N) D + ((k-1)/N) z^L = B_{(k-1)/N}(D);
      since z0^N = z^L = B_1(D), this holds at every k and the two samplers take identical steps.
    - D changing from step to step (the real case: D depends on x_t and t): unrolling gives, for k >= 2,
      z0^{k-1} = ((k-1)/N) z^L + (k-1) * sum_{s=k..N} D_s / (s (s-1)),
      i.e. weight (k-1)/(s (s-1)) on every past output D_s (total 1 - (k-1)/N), where the code puts
      that whole weight on the current D_k. The trajectories then differ from x_{N-2} on (the first
      step is common to both, so N <= 2 relay steps are the same in both forms); both end on the last D
      (a_1 = 0), but evaluated at different x_1. The 1/k update also presumes f = k/N; the closed
      form takes any f, which is how ``blending="time"`` works (``form="paper"`` needs ``blending="step"``).
    """
    sig = sampler_sigmas(list(timesteps))
    coeffs = relay_coefficients(timesteps, blending, t_r, delta)
    z_lr = z_lr.to(dtype)
    x = z_lr + sig[0] * noise.to(dtype)
    state = None
    for i, t in enumerate(timesteps):
        denoised = denoiser(x, int(t)).to(dtype)
        eps = _randn_like(x, generator) if coeffs[i][3] > 0 else None
        x, state = relay_step(x, denoised, z_lr, i, timesteps, form=form, state=state, blending=blending, t_r=t_r,
                              delta=delta, noise=eps)
    return x


def _randn_like(x: torch.Tensor, generator) -> torch.Tensor:
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    if len(generator) != x.shape[0]:
        raise ValueError("one generator per sample is needed")
    return torch.stack([torch.randn(x.shape[1:], generator=g, dtype=x.dtype) for g in generator]).to(x.device)
