"""Simulated annotators (harness/humaneval/simulate.py): the statistics recover a known preference model from them."""

from __future__ import annotations

import numpy as np
import pytest

from harness.humaneval.agreement import OUTCOMES, cluster_bootstrap_rates, fleiss_kappa
from harness.humaneval.results import import_annotations, read_filled_sheets
from harness.humaneval.simulate import simulate_sheets
from tests.helpers import export, fake_results, he_config


TRUTH = {0: {"alignment": (0.70, 0.10, 0.20), "aesthetics": (0.45, 0.25, 0.30)},
         1: {"alignment": (0.35, 0.15, 0.50), "aesthetics": (0.55, 0.30, 0.15)}}


def test_simulated_annotations_recover_the_true_win_rates(tmp_path):
    cfg = he_config(tmp_path, prompts=["original"], annotators=4, attention_checks=1)
    fake_results(cfg, 60, systems=("cogview3", "sdxl", "stable-cascade"))
    key = export(tmp_path, cfg)

    # One run: every win / tie / lose rate is within its 95% pair-bootstrap CI... is a 95% statement
    # per interval, so check coverage over many independent annotation rounds instead of one.
    covered, total, errors, kappas = 0, 0, [], []
    for seed in range(30):
        paths = simulate_sheets(key, tmp_path / f"f{seed}", truth=TRUTH, consistency=0.7, seed=seed)
        ratings, _ = read_filled_sheets(key, paths)
        real = [r for r in ratings if r.kind == "pair"]
        for gi in (0, 1):
            for q in ("alignment", "aesthetics"):
                rs = [r for r in real if r.group == gi and r.question == q]
                by_pair = {}
                for r in rs:
                    by_pair.setdefault(r.pair_id, []).append(r.outcome)
                ci = cluster_bootstrap_rates(list(by_pair.values()), n_boot=400, seed=seed)
                for j, o in enumerate(OUTCOMES):
                    rate = sum(r.outcome == o for r in rs) / len(rs)
                    errors.append(rate - TRUTH[gi][q][j])
                    covered += ci[o][0] <= TRUTH[gi][q][j] <= ci[o][1]
                    total += 1
        # Within one group (one set of true probabilities): pooling groups with different marginals
        # lowers the pooled chance agreement and inflates kappa above c^2 (0.537 here).
        for gi in (0, 1):
            kappas.append(fleiss_kappa(list(_by_item([r for r in real if r.group == gi], "alignment").values())))
    assert abs(np.mean(errors)) < 0.01  # unbiased
    assert 0.88 <= covered / total <= 0.995, covered / total  # nominal 95% (percentile bootstrap, 60 pairs)
    # two annotators agree beyond chance with kappa = consistency^2 (see harness.humaneval.simulate)
    assert np.mean(kappas) == pytest.approx(0.49, abs=0.04)

    # And the full import on one round: the report's rates sit near the truth.
    paths = simulate_sheets(key, tmp_path / "final", truth=TRUTH, consistency=0.7, seed=99)
    an = import_annotations(cfg, tmp_path / "reports" / "humaneval" / "key.json", paths,
                            tmp_path / "reports" / "humaneval" / "results.md")
    for row in an.rates:
        gi = [g["label"] for g in key["groups"]].index(row["comparison"])
        for j, o in enumerate(OUTCOMES):
            assert row[f"{o}_boot_lo"] - 0.05 <= TRUTH[gi][row["question"]][j] <= row[f"{o}_boot_hi"] + 0.05


def _by_item(ratings, question):
    out = {}
    for r in ratings:
        if r.question == question:
            out.setdefault(r.pair_id, []).append(r.outcome)
    return out
