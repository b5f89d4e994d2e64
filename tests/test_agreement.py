"""reports/metrics_agreement.md (harness/agreement.py): Kendall's tau-b between metrics over systems and over images,
equal to scipy's on the same numbers, oriented by higher_is_better, undefined (not a number) for a constant metric."""

import csv
import math

import pytest
from scipy.stats import kendalltau

from harness.agreement import agreement, kendall, write_agreement
from harness.scores import ScoreReader
from harness.scoring import run_scoring
from tests.conftest import smoke_config
from tests.helpers import generate

METRICS = ["aesthetic", "clip_score"]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agreement")
    cfg = smoke_config(tmp, num_prompts=3, metrics=METRICS, tr_sweep=[], expansion={"enabled": False})
    sdxl = cfg["systems"]["sdxl"]
    cfg["systems"] = {name: dict(sdxl, steps=steps) for name, steps in (("a", 2), ("b", 3), ("c", 4))}
    for name in cfg["systems"]:
        generate(cfg, name)
    for metric in METRICS:
        run_scoring(cfg, "smoke", list(cfg["systems"]), metric)
    return tmp, cfg


def test_kendall_is_tau_b_and_undefined_for_a_constant_side():
    assert kendall([1, 2, 3], [1, 3, 2])[0] == pytest.approx(1 / 3)  # 2 concordant, 1 discordant pair
    assert kendall([1, 2, 2, 3], [1, 2, 3, 3])[0] == pytest.approx(kendalltau([1, 2, 2, 3], [1, 2, 3, 3]).statistic)
    assert math.isnan(kendall([0.0, 0.0, 0.0], [1, 2, 3])[0])  # e.g. an exact-match rate of 0 everywhere
    assert math.isnan(kendall([1.0], [2.0])[0])


def test_tau_over_systems_and_images_equals_scipy_on_the_score_files(scored):
    tmp, cfg = scored
    reader = ScoreReader(cfg)
    means = {m: [reader.read("smoke", s, m).aggregate()[0] for s in "abc"] for m in METRICS}
    per_image = {m: {(s, r["prompt_id"], r["sample"]): r["score"] for s in "abc" for r in reader.read("smoke", s, m).rows}
                 for m in METRICS}
    keys = sorted(per_image["aesthetic"])
    records = {r["over"]: r for r in agreement(cfg)}
    assert set(records) == {"systems", "images"}
    expected = kendalltau(means["aesthetic"], means["clip_score"])
    assert records["systems"]["tau"] == pytest.approx(expected.statistic, abs=1e-12) and records["systems"]["n"] == 3
    expected = kendalltau([per_image["aesthetic"][k] for k in keys], [per_image["clip_score"][k] for k in keys])
    assert records["images"]["tau"] == pytest.approx(expected.statistic, abs=1e-12)
    assert records["images"]["p"] == pytest.approx(expected.pvalue, rel=1e-9) and records["images"]["n"] == 9

    out = write_agreement(cfg, tmp / "reports" / "metrics_agreement.md")
    text = out.read_text()
    assert text.startswith("> **Smoke profile") and "## smoke" in text
    assert f"{records['images']['tau']:+.3f} (p={records['images']['p']:.3g}, N=9)" in text
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert [r["over"] for r in rows] == ["systems", "images"]


def test_a_lower_is_better_metric_enters_negated(scored, monkeypatch):
    """Declared lower-is-better, clip_score's ranking flips: tau changes sign, so tau > 0 still means agreement."""
    from harness.scorers.clip_score import CLIPScorer

    _, cfg = scored
    before = {r["over"]: r["tau"] for r in agreement(cfg)}
    monkeypatch.setattr(CLIPScorer, "higher_is_better", False)
    after = {r["over"]: r["tau"] for r in agreement(cfg)}
    assert before["images"] != 0 and after["images"] == pytest.approx(-before["images"])
    assert after["systems"] == pytest.approx(-before["systems"])
