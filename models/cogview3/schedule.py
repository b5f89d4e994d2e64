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
    """The relay grid: exactly ``steps`` timesteps, the first at t = T_r - 1 (descending).

    Rule. With N = ``steps`` and j = 0, ..., N - 1,

        t_j = floor(999 * (N - j) * T_r / (1000 * N)),

    the official N-point floor-spaced grid of the whole schedule, floor(999 (n - j) / n) (:func:`timesteps`),
    compressed from [0, 1000) into [0, T_r). It is evaluated in float64 the way the official code builds
    its grids, as the last N points of a floor-spaced grid of M = 1000 N / T_r points (M need not be an
    integer): t_j = floor(999 - (M - N + j) * (999 / M)). The float64 value differs from the exact one
    only where the exact one is an integer, and then, as in the official grid, it can floor one lower
    (T_r = 500, N = 99: t_55 = 221, where 999 * 44 * 500 / 99000 = 222; no 10-step grid is affected).

    Consequences (tests/test_cogview3_schedule.py checks each):

    - every T_r gets the same N steps, and the first is T_r - 1 (999 T_r / 1000 lies in (T_r - 1, T_r));
    - when M is an integer the grid is exactly the official ``timesteps(M)[M - N:]``: T_r = 500 gives
      ``timesteps(2N)[N:]``, i.e. the released config's 24/12 grid (499, 457, ..., 41) and the paper's
      10 steps (499, 449, ..., 49); T_r = 200 gives 199 (the 1-step distilled relay) and 199, 99;
    - the Table 3 sweep at 10 steps: T_r = 200: 199, 179, ..., 19; 400: 399, 359, ..., 39;
      600: 599, 539, ..., 59; 800: 799, 719, ..., 79;
    - halving a 2N-step grid (every second point) gives the N-step grid from the same T_r.

    The steps must fit below T_r: more than T_r steps would repeat a timestep, a ValueError (up to T_r
    steps the spacing 0.999 T_r / N keeps them distinct). The rule before this one kept the points below
    T_r of a round(1000 N / T_r)-point grid, which gave T_r = 800 nine steps from t = 749 and T_r = 600
    ten from t = 587.
    """
    if not 1 <= t_r <= NUM_TRAIN_TIMESTEPS:
        raise ValueError(f"t_r must be in 1..1000, got {t_r}")
    if steps < 1:
        raise ValueError(f"number of relay steps must be at least 1, got {steps}")
    grid = _compressed_grid(t_r, steps)
    if steps > t_r or len(set(grid)) != steps:
        raise ValueError(f"{steps} relay steps do not fit below t_r={t_r}: at most {t_r} distinct timesteps")
    return grid


def _compressed_grid(t_r: int, steps: int) -> list[int]:
    # As np.linspace(999, 0, M, endpoint=False).astype(int)[M - N:] computes it (y_j = j * (-999 / M) + 999,
    # truncated), with M = 1000 N / T_r allowed to be fractional.
    full = steps * NUM_TRAIN_TIMESTEPS / t_r
    step = -(NUM_TRAIN_TIMESTEPS - 1) / full
    return [int((full - steps + j) * step + (NUM_TRAIN_TIMESTEPS - 1)) for j in range(steps)]
