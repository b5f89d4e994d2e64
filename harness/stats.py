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


def per_prompt_means(prompt_ids: Sequence[str], values: Sequence[float]) -> np.ndarray:
    """Average the samples of each prompt, so prompts (not images) are the unit of resampling."""
    groups: dict[str, list[float]] = {}
    for pid, v in zip(prompt_ids, values):
        groups.setdefault(pid, []).append(float(v))
    return np.array([np.mean(groups[k]) for k in sorted(groups)])


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
