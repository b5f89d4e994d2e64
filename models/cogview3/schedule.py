"""CogView3's noise schedule and timestep grids (docs/reference.md §3, §4.1).

The official code (a fork of Stability's sgm) trains on the SD/SDXL scaled-linear DDPM schedule and
samples in the variance-exploding variable x = z0 + sigma * eps, with

    sigma_t = sqrt((1 - abar_t) / abar_t)

and the network fed the *integer* timestep t whose training sigma is nearest to the sampler's sigma.
Every sampler sigma here is a training sigma (``sampler_sigmas`` indexes ``sigmas()`` by the grid), so
the samplers pass the grid's t directly; tests/test_cogview3_schedule.py checks that the nearest training
sigma of each sampler sigma is indeed at index t.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 0.00085
BETA_END = 0.012


@functools.lru_cache(maxsize=1)
def _alphas_cumprod_f64() -> np.ndarray:
    # Scaled-linear betas, built in float64 as make_beta_schedule does.
    betas = np.linspace(BETA_START**0.5, BETA_END**0.5, NUM_TRAIN_TIMESTEPS, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


def alphas_cumprod() -> torch.Tensor:
    """abar_t for t = 0..999 (float64)."""
    return torch.from_numpy(_alphas_cumprod_f64().copy())


def sigmas() -> torch.Tensor:
    """The 1000 training sigmas, index = integer timestep (ascending, float32).

    As the official code: the ratio (1 - abar)/abar is formed in float64, cast to float32, then sqrt.
    """
    abar = _alphas_cumprod_f64()
    return torch.from_numpy((1.0 - abar) / abar).float().sqrt()


def timesteps(n: int) -> list[int]:
    """The descending grid of ``n`` integer timesteps: floor(999 - j * 999 / n), j = 0..n-1.

    ``generate_roughly_equally_spaced_steps`` in the official code. It floors, so for n not dividing
    1000 it differs from diffusers' "trailing" spacing (n=24: 915 here, 916 there).
    """
    if not 1 <= n <= NUM_TRAIN_TIMESTEPS:
        raise ValueError(f"number of steps must be in 1..1000, got {n}")
    return [int(t) for t in np.linspace(NUM_TRAIN_TIMESTEPS - 1, 0, n, endpoint=False).astype(int)]


def sampler_sigmas(grid: list[int]) -> torch.Tensor:
    """sigma of each grid timestep, with the final sigma = 0 appended (``Discretization.__call__``)."""
    return torch.cat([sigmas()[torch.tensor(grid)], torch.zeros(1)])


def relay_timesteps(t_r: int, steps: int) -> list[int]:
    """A relay grid of about ``steps`` timesteps below ``t_r``, taken from a full floor-spaced grid.

    The full grid has round(steps * 1000 / t_r) points and the relay keeps those below ``t_r``, as the
    official config does (24-point grid, last 12 kept: 499, 457, ..., 41 for t_r=500, steps=12; the
    paper's 10 steps give 499, 449, ..., 49; the 1-step distilled relay gives 199 for t_r=200).
    """
    if not 1 <= t_r <= NUM_TRAIN_TIMESTEPS:
        raise ValueError(f"t_r must be in 1..1000, got {t_r}")
    full = max(steps, round(steps * NUM_TRAIN_TIMESTEPS / t_r))
    grid = [t for t in timesteps(min(full, NUM_TRAIN_TIMESTEPS)) if t < t_r]
    if not grid:
        raise ValueError(f"no relay timestep below t_r={t_r} with {steps} steps")
    return grid
