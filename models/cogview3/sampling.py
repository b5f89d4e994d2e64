"""CogView3 samplers: plain functions of a denoiser, a starting tensor and a timestep grid.

Notation (paper §3 and Algorithm 1; spec §4). The state is the variance-exploding latent
x_t = z0 + sigma_t * eps. A *denoiser* ``denoiser(x, t) -> x0_hat`` returns the prediction of z0 for a
batch x at integer timestep t (classifier-free guidance, if any, lives inside it; see
:mod:`models.cogview3.denoiser`). Grids come from :mod:`models.cogview3.schedule`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from models.cogview3.schedule import sampler_sigmas

Denoiser = Callable[[torch.Tensor, int], torch.Tensor]


def ddim_sample(denoiser: Denoiser, noise: torch.Tensor, timesteps: Sequence[int]) -> torch.Tensor:
    """Base-stage sampler: deterministic DDIM (eta = 0) in the sigma variable.

    x_T = eps * sqrt(1 + sigma_T^2), and for each step (the Euler step of the probability-flow ODE
    dx/dsigma = (x - D(x)) / sigma, which is exactly DDIM in these variables):

        x_{t-1} = x_t + (sigma_{t-1} - sigma_t) * (x_t - D(x_t)) / sigma_t
                = D + (sigma_{t-1} / sigma_t) * (x_t - D)

    with sigma after the last grid point = 0, so the last step returns D. ``noise`` is unit Gaussian.
    """
    sig = sampler_sigmas(list(timesteps))
    x = noise.float() * torch.sqrt(1.0 + sig[0] ** 2)
    for i, t in enumerate(timesteps):
        denoised = denoiser(x, int(t)).float()
        d = (x - denoised) / sig[i]
        x = x + (sig[i + 1] - sig[i]) * d
    return x


def relay_fractions(timesteps: Sequence[int], blending: str = "step", t_r: int | None = None) -> list[float]:
    """Blur fraction f of each relay step, plus f = 0 after the last one.

    The relay trains on the blurred target B_f(z0) = (1 - f) z0 + f z^L (eq. 4/5 with the linear blur).
    - ``step`` (official sampler): f = k / N with k = N, N-1, ..., 1 the steps remaining;
    - ``time`` (the paper's training): f = t / T_r with t the DDPM timestep (clipped to 1).
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
    """(a, b, c, d) per step of Algorithm 1: x_{t-1} = a x_t + b x0_hat + c z^L + d eps'.

    A DDIM step on the "blurred x0 + sigma eps" manifold (eq. 6-9): with B_f(D) the blur at fraction f,

        x_{t-1} = B_{f'}(D) + a (x_t - B_f(D)) + delta_t eps',   a = sqrt(sigma'^2 - delta_t^2) / sigma

    so b = (1 - f') - a (1 - f) and c = f' - a f, and a + b + c = 1. ``delta`` is the stochastic degree
    of eq. 7: a fraction eta of sigma' (delta_t = eta * sigma'), or one delta_t per step; 0 gives the
    deterministic sampler of the official code.
    """
    sig = sampler_sigmas(list(timesteps)).double()
    f = relay_fractions(timesteps, blending, t_r)
    n = len(timesteps)
    deltas = [float(delta) * float(sig[i + 1]) for i in range(n)] if isinstance(delta, (int, float)) else list(delta)
    if len(deltas) != n:
        raise ValueError(f"need one delta per relay step ({n}), got {len(deltas)}")
    out = []
    for i in range(n):
        s, s_next = float(sig[i]), float(sig[i + 1])
        if not 0.0 <= deltas[i] <= s_next:
            raise ValueError(f"delta_t must lie in [0, sigma_(t-1)] = [0, {s_next:.6f}], got {deltas[i]}")
        a = (s_next**2 - deltas[i] ** 2) ** 0.5 / s
        b = (1.0 - f[i + 1]) - a * (1.0 - f[i])
        c = f[i + 1] - a * f[i]
        out.append((a, b, c, deltas[i]))
    return out


def relay_sample(
    denoiser: Denoiser,
    z_lr: torch.Tensor,
    timesteps: Sequence[int],
    noise: torch.Tensor,
    blending: str = "step",
    t_r: int | None = None,
    delta: float | Sequence[float] = 0.0,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """Relay super-resolution (Algorithm 1): start from the upsampled low-resolution latent.

    x_{T_r} = z^L + sigma_{T_r} * noise   (no blur at the start: f = 1 there), then per step
    x_{t-1} = a_t x_t + b_t D(x_t, t) + c_t z^L (+ delta_t eps'), coefficients from
    :func:`relay_coefficients`. ``timesteps`` is the descending relay grid, e.g. ``timesteps(24)[12:]``;
    ``noise`` is unit Gaussian shaped like ``z_lr``; ``generator`` (one per sample, or one) draws eps'
    when ``delta`` > 0. Returns the final latent.
    """
    sig = sampler_sigmas(list(timesteps))
    coeffs = relay_coefficients(timesteps, blending, t_r, delta)
    z_lr = z_lr.float()
    x = z_lr + sig[0] * noise.float()
    for (a, b, c, d), t in zip(coeffs, timesteps):
        denoised = denoiser(x, int(t)).float()
        x = a * x + b * denoised + c * z_lr
        if d > 0:
            x = x + d * _randn_like(x, generator)
    return x


def _randn_like(x: torch.Tensor, generator) -> torch.Tensor:
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    if len(generator) != x.shape[0]:
        raise ValueError("one generator per sample is needed")
    return torch.stack([torch.randn(x.shape[1:], generator=g, dtype=x.dtype) for g in generator]).to(x.device)
