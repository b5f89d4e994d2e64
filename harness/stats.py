"""Summary statistics for tables: means over prompts with percentile-bootstrap confidence intervals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Estimate:
    mean: float
    lo: float
    hi: float
    n: int  # number of prompts (the resampling unit)

    def fmt(self, digits: int = 3) -> str:
        if self.n < 2:
            return f"{self.mean:.{digits}f} (N={self.n})"
        return f"{self.mean:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}] (N={self.n})"


def per_prompt_table(prompt_ids: Sequence[str], values: Sequence[float]) -> dict[str, float]:
    """prompt id -> mean of its samples."""
    groups: dict[str, list[float]] = {}
    for pid, v in zip(prompt_ids, values):
        groups.setdefault(pid, []).append(float(v))
    return {k: float(np.mean(v)) for k, v in groups.items()}


def per_prompt_means(prompt_ids: Sequence[str], values: Sequence[float]) -> np.ndarray:
    """Average the samples of each prompt, so prompts (not images) are the unit of resampling."""
    table = per_prompt_table(prompt_ids, values)
    return np.array([table[k] for k in sorted(table)])


def bootstrap_mean(values: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Estimate:
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values to summarise")
    if x.size == 1:
        return Estimate(float(x[0]), float(x[0]), float(x[0]), 1)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1 - level) / 2
    return Estimate(float(x.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha)), int(x.size))


@dataclass(frozen=True)
class PairedDifference:
    """mean(a - b) over prompts both systems have, with a paired-bootstrap CI and two-sided p-value."""

    diff: Estimate
    p_value: float  # bootstrap: twice the smaller tail mass of the resampled mean difference at 0
    n_boot: int = 2000

    def fmt(self, digits: int = 3) -> str:
        p = f"p<{1 / self.n_boot:.4f}" if self.p_value == 0 else f"p={self.p_value:.3f}"  # resolution 1/n_boot
        return f"{self.diff.fmt(digits)}, {p}"


def paired_bootstrap(a: dict[str, float], b: dict[str, float], n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> PairedDifference:
    """Paired bootstrap of mean(a - b): prompts are resampled together, so the prompt-to-prompt
    variation both systems share cancels (systems here share prompts and seeds)."""
    keys = sorted(set(a) & set(b))
    if not keys:
        raise ValueError("the two systems share no prompts")
    d = np.array([a[k] - b[k] for k in keys])
    est = bootstrap_mean(d, n_boot=n_boot, seed=seed, level=level)
    if d.size < 2:
        return PairedDifference(est, float("nan"), n_boot)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    p = 2 * min((means <= 0).mean(), (means >= 0).mean())
    return PairedDifference(est, float(min(1.0, p)), n_boot)
