"""CogView3's noise schedule and timestep grids (models/cogview3/schedule.py) against docs/reference.md §8."""

import math
from fractions import Fraction

import pytest
import torch

from models.cogview3.schedule import alphas_cumprod, relay_timesteps, sampler_sigmas, sigmas, timesteps


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
    """The official denoiser quantises sigma to the index of the nearest training sigma (docs/reference.md §3);
    the samplers pass the grid's t instead, which is the same only if that index is t for every sampler sigma."""
    grid = timesteps(n)
    training = sigmas()
    assert bool((training[1:] > training[:-1]).all())  # strictly increasing: the nearest index is unique
    sampler = sampler_sigmas(grid)
    assert sampler[-1].item() == 0.0 and len(sampler) == len(grid) + 1
    nearest = (sampler[:-1].reshape(-1, 1) - training.reshape(1, -1)).abs().argmin(dim=1)
    assert nearest.tolist() == grid
    torch.testing.assert_close(sampler[:-1], training[grid], rtol=0, atol=0)


def test_relay_grids_official_paper_and_distilled():
    assert relay_timesteps(500, 12) == timesteps(24)[12:]
    assert relay_timesteps(500, 10) == [499, 449, 399, 349, 299, 249, 199, 149, 99, 49] == timesteps(20)[10:]
    assert relay_timesteps(200, 1) == [199] == timesteps(5)[4:]
    assert relay_timesteps(200, 2) == [199, 99]
    assert relay_timesteps(200, 8) == [199, 174, 149, 124, 99, 74, 49, 24]


# ---- the relay grid rule: exactly `steps` steps from t = T_r - 1 (relay_timesteps docstring) --------


def exact_rule(t_r, n):
    """t_j = floor(999 (N - j) T_r / (1000 N)) in exact rational arithmetic."""
    return [math.floor(Fraction(999 * (n - j) * t_r, 1000 * n)) for j in range(n)]


def test_table3_sweep_gives_every_t_r_the_same_steps_from_t_r_minus_1():
    sweep = {t_r: relay_timesteps(t_r, 10) for t_r in (200, 400, 500, 600, 800)}
    assert {len(g) for g in sweep.values()} == {10}
    assert all(g[0] == t_r - 1 for t_r, g in sweep.items())
    assert sweep[500] == [499, 449, 399, 349, 299, 249, 199, 149, 99, 49] == timesteps(20)[10:]  # the paper's
    assert sweep[200] == list(range(199, 0, -20)) and sweep[400] == list(range(399, 0, -40))
    assert sweep[600] == list(range(599, 0, -60)) and sweep[800] == list(range(799, 0, -80))
    assert 749 not in sweep[800]  # the old round(12.5)-point rule: nine steps from t = 749


def test_relay_grid_rule_for_every_t_r():
    for t_r in range(1, 1001):
        for n in sorted({1, 2, 3, 10, 12, t_r // 3 + 1, t_r // 2 + 1, t_r}):
            if n > t_r:
                continue
            grid = relay_timesteps(t_r, n)
            assert len(grid) == n and grid[0] == t_r - 1, (t_r, n)
            assert all(a > b for a, b in zip(grid, grid[1:])) and grid[-1] >= 0, (t_r, n)
            full = Fraction(1000 * n, t_r)
            if full.denominator == 1 and full <= 1000:
                # an integer number of points M: the official grid's last N points, bit for bit
                assert grid == timesteps(int(full))[int(full) - n:], (t_r, n)
            elif n <= 12:
                assert grid == exact_rule(t_r, n), (t_r, n)


def test_relay_grid_matches_the_official_grids_at_t_r_500_for_every_step_count():
    for n in range(1, 501):
        assert relay_timesteps(500, n) == timesteps(2 * n)[n:]


def test_halving_a_relay_grid_gives_the_grid_of_half_the_steps():
    for t_r in (200, 300, 500, 600, 750, 800, 999, 1000):
        for n in range(1, 33):
            assert relay_timesteps(t_r, 2 * n)[::2] == relay_timesteps(t_r, n), (t_r, n)


def test_more_steps_than_t_r_allows_is_an_error():
    assert relay_timesteps(10, 10) == list(range(9, -1, -1))
    with pytest.raises(ValueError, match="11 relay steps do not fit below t_r=10"):
        relay_timesteps(10, 11)
    with pytest.raises(ValueError, match="t_r must be in 1..1000"):
        relay_timesteps(0, 1)
