"""Paired statistics (harness/stats.py): the paired bootstrap."""

import numpy as np
import pytest

from harness.stats import paired_bootstrap


def test_paired_bootstrap_detects_a_shift_and_covers_the_truth():
    rng = np.random.default_rng(0)
    prompt_effect = rng.normal(0, 1.0, 200)  # large variation the two systems share
    a = {f"p{i}": e + 0.1 + rng.normal(0, 0.05) for i, e in enumerate(prompt_effect)}
    b = {f"p{i}": e + rng.normal(0, 0.05) for i, e in enumerate(prompt_effect)}
    d = paired_bootstrap(a, b, seed=1)
    assert d.diff.lo < 0.1 < d.diff.hi and d.diff.lo > 0.08 and d.p_value < 0.01 and d.diff.n == 200
    same = paired_bootstrap(b, {k: v + rng.normal(0, 0.05) for k, v in b.items()}, seed=1)
    assert same.diff.lo < 0 < same.diff.hi and same.p_value > 0.05
    # unpaired, the shared prompt variation (sd 1) would swamp the 0.1 difference
    assert (d.diff.hi - d.diff.lo) < 0.05
    with pytest.raises(ValueError, match="share no prompts"):
        paired_bootstrap({"x": 1.0}, {"y": 1.0})
