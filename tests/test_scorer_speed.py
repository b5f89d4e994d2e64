"""The scorer speed benchmark: its timing protocol, and a small real run against the packages."""

import importlib.util

import pytest

from harness.errors import HarnessError
from harness.scorer_speed import SpeedCase, measure, run_scorer_speed
from tests.conftest import smoke_config


def test_measure_calls_the_reference_once_per_image_and_ours_once_per_set():
    calls = {"reference": [], "ours": []}

    def reference(images, prompts):
        calls["reference"].append(len(images))
        return [float(i) for i in images]

    def make_ours(bs):
        def score(images, prompts):
            calls["ours"].append((bs, len(images)))
            return [float(i) + 1e-3 for i in images]
        return score

    row = measure(SpeedCase("m", "ref", reference, make_ours, "w"), list(range(5)), ["p"] * 5, batch_size=4)
    assert calls["reference"] == [1] * 6  # one warm-up call, then one call per image
    assert calls["ours"] == [(1, 1), (1, 5), (4, 1), (4, 5)]  # warm-up + timed run, for batch 1 and batched
    assert row.n == 5 and row.max_abs_diff == pytest.approx(1e-3)
    assert row.speedup == pytest.approx(row.reference_s / row.ours_batched_s)


@pytest.mark.skipif(importlib.util.find_spec("hpsv2") is None, reason="hpsv2x is not installed")
def test_small_run_writes_a_report_where_both_sides_agree(tmp_path):
    out = run_scorer_speed(smoke_config(tmp_path), tmp_path / "scorer_speed.md", metrics=["hpsv2", "fid"], n_images=3,
                           image_size=64, batch_size=3, scale="small")
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| hpsv2") or line.startswith("| fid")]
    assert [r[0] for r in rows] == ["| hpsv2", "| fid"]
    for r in rows:
        assert r[3] == "3" and float(r[-1].rstrip(" |")) < 1e-4  # N, and the two sides' numbers agree
        assert r[-2].endswith("x") and float(r[-2][:-1]) > 0


def test_unknown_metric_and_scale_are_clear_errors(tmp_path):
    cfg = smoke_config(tmp_path)
    with pytest.raises(HarnessError, match=r"no benchmark for \['clip_score'\]"):
        run_scorer_speed(cfg, tmp_path / "x.md", metrics=["clip_score"])
    with pytest.raises(HarnessError, match="scale 'huge'"):
        run_scorer_speed(cfg, tmp_path / "x.md", metrics=["fid"], scale="huge")
