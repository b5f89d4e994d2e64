"""Statistics of pairwise human judgements: win-rate intervals, Bradley-Terry with ties, agreement.

Outcomes are coded from system A's side after unblinding: ``win`` (A better), ``tie``, ``lose``.
Every function here is plain numpy/scipy on small arrays, so each can be checked against a published
worked example (see ``tests/test_humaneval_stats.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

OUTCOMES = ("win", "tie", "lose")
#: ordinal position of each outcome (Krippendorff's ordinal alpha, Fig. 4's bar order)
OUTCOME_RANK = {"win": 2, "tie": 1, "lose": 0}


# ---- one proportion --------------------------------------------------------------------------
def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n (no continuity correction), as
    ``scipy.stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")``.
    ``n == 0`` (no ratings) gives ``(nan, nan)``.

    Treats every rating as independent; when several annotators rate the same pair the ratings are
    correlated, and :func:`cluster_bootstrap_rates` (which resamples pairs) is the honest interval.
    """
    if n <= 0:
        return (float("nan"), float("nan"))
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return (float(ci.low), float(ci.high))


def cluster_bootstrap_rates(
    outcomes_by_pair: Sequence[Sequence[str]], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap CIs of the win / tie / lose rates, resampling *pairs* (with all their
    ratings), since ratings of one pair by several annotators are not independent."""
    counts = np.array([[sum(o == c for o in pair) for c in OUTCOMES] for pair in outcomes_by_pair], dtype=np.float64)
    if counts.shape[0] == 0:
        return {c: (float("nan"), float("nan")) for c in OUTCOMES}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, counts.shape[0], size=(n_boot, counts.shape[0]))
    sums = counts[idx].sum(axis=1)  # (n_boot, 3)
    rates = sums / sums.sum(axis=1, keepdims=True)
    a = (1 - level) / 2
    return {c: (float(np.quantile(rates[:, j], a)), float(np.quantile(rates[:, j], 1 - a))) for j, c in enumerate(OUTCOMES)}


# ---- Bradley-Terry with ties (Davidson 1970) -------------------------------------------------
@dataclass(frozen=True)
class BradleyTerryFit:
    """Davidson's extension of Bradley-Terry: with strengths pi_i = exp(theta_i) and tie parameter nu,

        P(i beats j) = pi_i / (pi_i + pi_j + nu sqrt(pi_i pi_j)),
        P(tie)       = nu sqrt(pi_i pi_j) / (same denominator).

    ``theta`` is identified up to a constant; the reference player's theta is fixed at 0.
    """

    players: tuple[str, ...]
    theta: dict[str, float]
    nu: float
    reference: str
    log_likelihood: float

    def probabilities(self, a: str, b: str) -> dict[str, float]:
        pa, pb = math.exp(self.theta[a]), math.exp(self.theta[b])
        tie = self.nu * math.sqrt(pa * pb)
        d = pa + pb + tie
        return {"win": pa / d, "tie": tie / d, "lose": pb / d}


def fit_bradley_terry_ties(
    comparisons: Sequence[tuple[str, str, str]], reference: str | None = None
) -> BradleyTerryFit:
    """Maximum-likelihood Davidson fit from ``(a, b, outcome-for-a)`` triples.

    With two players the model is saturated and the MLE is closed form: theta_a - theta_b =
    log(W/L) and nu = T / sqrt(W L); the test pins that. A player that never loses (or never wins)
    has an infinite MLE, so the fit adds a tiny ridge penalty (1e-6 theta^2) that only matters then.
    """
    from scipy.optimize import minimize

    if not comparisons:
        raise ValueError("no comparisons to fit")
    players = tuple(sorted({p for a, b, _ in comparisons for p in (a, b)}))
    reference = reference or players[0]
    if reference not in players:
        raise ValueError(f"reference player {reference!r} is not among {players}")
    index = {p: i for i, p in enumerate(players)}
    free = [p for p in players if p != reference]
    counts: dict[tuple[int, int], np.ndarray] = {}
    for a, b, outcome in comparisons:
        if outcome not in OUTCOME_RANK:
            raise ValueError(f"outcome {outcome!r} is not one of {OUTCOMES}")
        counts.setdefault((index[a], index[b]), np.zeros(3))[OUTCOMES.index(outcome)] += 1
    ia = np.array([k[0] for k in counts]); ib = np.array([k[1] for k in counts])
    c = np.array(list(counts.values()))  # (pairs, 3): wins of a, ties, wins of b

    def unpack(x):
        theta = np.zeros(len(players))
        theta[[index[p] for p in free]] = x[:-1]
        return theta, x[-1]

    def nll(x):
        theta, log_nu = unpack(x)
        ta, tb = theta[ia], theta[ib]
        tie = log_nu + (ta + tb) / 2
        log_d = np.logaddexp(np.logaddexp(ta, tb), tie)
        ll = c[:, 0] * (ta - log_d) + c[:, 1] * (tie - log_d) + c[:, 2] * (tb - log_d)
        return -ll.sum() + 1e-6 * float((theta**2).sum())

    res = minimize(nll, np.zeros(len(free) + 1), method="BFGS", options={"gtol": 1e-10, "maxiter": 10_000})
    theta, log_nu = unpack(res.x)
    return BradleyTerryFit(players, {p: float(theta[index[p]]) for p in players}, float(math.exp(log_nu)),
                           reference, float(-res.fun))


# ---- agreement between annotators ------------------------------------------------------------
def _count_matrix(ratings: Sequence[Sequence[str]], categories: Sequence[str]) -> np.ndarray:
    return np.array([[sum(r == c for r in item) for c in categories] for item in ratings], dtype=np.float64)


def fleiss_kappa(ratings: Sequence[Sequence[str]], categories: Sequence[str] = OUTCOMES) -> float:
    """Fleiss' kappa (1971). ``ratings``: one list of labels per item; every item needs the same
    number (>= 2) of ratings, as the statistic requires (use Krippendorff's alpha otherwise)."""
    n = _count_matrix(ratings, categories)
    if n.shape[0] == 0:
        return float("nan")
    raters = n.sum(axis=1)
    if raters.min() != raters.max() or raters[0] < 2:
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of ratings for every item")
    m = raters[0]
    p_items = ((n * n).sum(axis=1) - m) / (m * (m - 1))
    p_bar = p_items.mean()
    p_cat = n.sum(axis=0) / n.sum()
    p_e = float((p_cat**2).sum())
    if p_e == 1.0:
        return float("nan")  # every rating in one category: agreement is undefined
    return float((p_bar - p_e) / (1 - p_e))


def gwet_ac1(ratings: Sequence[Sequence[str]], categories: Sequence[str] = OUTCOMES) -> float:
    """Gwet's AC1 (2008) for multiple raters; items with fewer than 2 ratings are left out.

    Unlike kappa it stays stable when one outcome dominates (the "kappa paradox"), which is common
    when one system wins most pairs.
    """
    n = _count_matrix(ratings, categories)
    r = n.sum(axis=1)
    n = n[r >= 2]; r = r[r >= 2]
    if n.shape[0] == 0:
        return float("nan")
    q = len(categories)
    p_a = float(((n * (n - 1)).sum(axis=1) / (r * (r - 1))).mean())
    pi = (n / r[:, None]).mean(axis=0)
    p_e = float((pi * (1 - pi)).sum() / (q - 1))
    return float((p_a - p_e) / (1 - p_e))


def krippendorff_alpha(
    ratings: Sequence[Sequence[str]], level: str = "nominal", rank: Mapping[str, float] | None = None
) -> float:
    """Krippendorff's alpha from the coincidence matrix; items may have any number of ratings
    (items with fewer than 2 are not pairable and drop out, as in Krippendorff 2011).

    ``level``: ``nominal`` or ``ordinal`` (categories ordered by ``rank``; default win > tie > lose).
    """
    rank = dict(OUTCOME_RANK if rank is None else rank)
    values = sorted({v for item in ratings for v in item}, key=str)
    if level == "ordinal":
        missing = [v for v in values if v not in rank]
        if missing:
            raise ValueError(f"ordinal alpha: no rank for values {missing}")
        values.sort(key=lambda v: rank[v])
    elif level != "nominal":
        raise ValueError(f"level must be 'nominal' or 'ordinal', not {level!r}")
    k = len(values)
    pos = {v: i for i, v in enumerate(values)}
    o = np.zeros((k, k))
    for item in ratings:
        m = len(item)
        if m < 2:
            continue
        cnt = np.zeros(k)
        for v in item:
            cnt[pos[v]] += 1
        o += (np.outer(cnt, cnt) - np.diag(cnt)) / (m - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if n == 0 or k < 2:
        return float("nan") if n == 0 else 1.0
    if level == "nominal":
        delta = 1.0 - np.eye(k)
    else:
        # Ordinal metric: squared sum of the marginals between c and k, minus half the endpoints.
        delta = np.zeros((k, k))
        for c in range(k):
            for d in range(k):
                lo, hi = min(c, d), max(c, d)
                delta[c, d] = (n_c[lo : hi + 1].sum() - (n_c[lo] + n_c[hi]) / 2) ** 2
    d_o = (o * delta).sum() / n
    d_e = (np.outer(n_c, n_c) * delta).sum() / (n * (n - 1))
    return float(1 - d_o / d_e) if d_e > 0 else float("nan")
