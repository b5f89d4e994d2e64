"""Human-evaluation statistics (harness/humaneval/agreement.py) against published worked examples and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.humaneval.agreement import (
    OUTCOMES,
    cluster_bootstrap_rates,
    fit_bradley_terry_ties,
    fleiss_kappa,
    gwet_ac1,
    krippendorff_alpha,
    wilson_interval,
)


def test_fleiss_kappa_matches_the_published_example():
    # Fleiss (1971) as worked on Wikipedia "Fleiss' kappa": 10 subjects, 14 raters, 5 categories.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    cats = list("12345")
    ratings = [[c for c, n in zip(cats, row) for _ in range(n)] for row in table]
    assert fleiss_kappa(ratings, cats) == pytest.approx(0.20993, abs=1e-5)
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([["1", "1"], ["1", "2", "2"]], cats)


def test_krippendorff_alpha_matches_krippendorff_2011():
    # "Computing Krippendorff's alpha-reliability" (2011), the 4 coders x 12 units example with
    # missing values: nominal 0.743, ordinal 0.815.
    coders = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
              [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
              [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
              [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]
    units = [[v for v in col if v is not None] for col in zip(*coders)]
    assert krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, "ordinal", rank={v: v for v in range(1, 6)}) == pytest.approx(0.815, abs=5e-4)


def test_gwet_ac1_by_hand():
    # Two raters, 4 items: agree on 3 (win, win, lose), disagree on 1 (win/tie).
    # p_a = 3/4; pi = (win 5/8, tie 1/8, lose 2/8); p_e = sum pi(1-pi) / 2 = (15/64 + 7/64 + 12/64) / 2 = 17/64
    ratings = [["win", "win"], ["win", "win"], ["lose", "lose"], ["win", "tie"]]
    assert gwet_ac1(ratings) == pytest.approx((0.75 - 17 / 64) / (1 - 17 / 64))
    assert gwet_ac1([["win", "win"], ["tie", "tie"]]) == 1.0


def test_wilson_interval_equals_scipy():
    from scipy.stats import binomtest

    for k, n in [(8, 10), (0, 12), (77, 100), (199, 200)]:
        for level in (0.80, 0.95, 0.99):  # more than one level: a `level` not passed through fails here
            ref = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
            assert wilson_interval(k, n, level) == pytest.approx((ref.low, ref.high), abs=1e-12)
    # A value independent of scipy: k=81, n=263 from the closed form (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2))
    # / (1 + z^2/n), z = 1.95996 (95%) and 2.57583 (99%).
    assert wilson_interval(81, 263) == pytest.approx((0.2552885, 0.3662096), abs=1e-6)
    assert wilson_interval(81, 263, level=0.99) == pytest.approx((0.2401369, 0.3852825), abs=1e-6)
    lo, hi = wilson_interval(0, 0)  # no ratings: no interval
    assert math.isnan(lo) and math.isnan(hi)


def test_bradley_terry_two_players_is_the_closed_form():
    # Two players: the Davidson model is saturated, theta_a - theta_b = log(W/L), nu = T / sqrt(W L).
    data = [("a", "b", "win")] * 30 + [("a", "b", "tie")] * 10 + [("a", "b", "lose")] * 20
    fit = fit_bradley_terry_ties(data, reference="b")
    assert fit.theta["a"] == pytest.approx(math.log(30 / 20), abs=1e-5)
    assert fit.nu == pytest.approx(10 / math.sqrt(30 * 20), abs=1e-5)
    p = fit.probabilities("a", "b")
    assert (p["win"], p["tie"], p["lose"]) == pytest.approx((0.5, 1 / 6, 1 / 3), abs=1e-5)


def test_bradley_terry_recovers_known_strengths():
    rng = np.random.default_rng(1)
    theta = {"cv3": 0.0, "sdxl": -0.8, "sc": -0.3}
    nu = 0.5

    def probs(a, b):
        pa, pb = math.exp(theta[a]), math.exp(theta[b])
        t = nu * math.sqrt(pa * pb)
        return np.array([pa, t, pb]) / (pa + pb + t)

    data = [(a, b, OUTCOMES[rng.choice(3, p=probs(a, b))]) for a, b in [("cv3", "sdxl"), ("cv3", "sc"), ("sc", "sdxl")]
            for _ in range(3000)]
    fit = fit_bradley_terry_ties(data, reference="cv3")
    assert fit.theta["sdxl"] == pytest.approx(-0.8, abs=0.08)
    assert fit.theta["sc"] == pytest.approx(-0.3, abs=0.08)
    assert fit.nu == pytest.approx(0.5, abs=0.05)


def test_cluster_bootstrap_is_wider_than_wilson_when_annotators_agree():
    # 20 pairs, 5 identical ratings each: really 20 observations, not 100.
    pairs = [["win"] * 5] * 12 + [["lose"] * 5] * 8
    boot = cluster_bootstrap_rates(pairs, n_boot=4000, seed=0)
    lo, hi = wilson_interval(60, 100)
    assert (boot["win"][1] - boot["win"][0]) > 1.5 * (hi - lo)
