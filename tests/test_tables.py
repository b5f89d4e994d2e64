"""Table 1 assembly (harness/tables.py): it refuses scores from mixed scorer versions."""

import json

import pytest
import yaml

from harness.errors import HarnessError
from harness.manifests import scores_path
from harness.scoring import run_scoring
from harness.tables import write_table1
from tests.conftest import ROOT, smoke_config
from tests.helpers import generate


def table1_text(cfg, tmp_path):
    return write_table1(cfg, tmp_path / "reports" / "table1.md").read_text()


def test_table_refuses_mixed_scorer_versions(tmp_path):
    cfg = smoke_config(tmp_path, num_prompts=2, metrics=["aesthetic"])
    cfg["systems"] = {"sdxl": dict(cfg["systems"]["sdxl"], steps=3), "sdxl-b": dict(cfg["systems"]["sdxl"], steps=3)}
    for name in ("sdxl", "sdxl-b"):
        generate(cfg, name)
        run_scoring(cfg, "smoke", name, "aesthetic")
    assert "(N=2)" in table1_text(cfg, tmp_path)

    path = scores_path(cfg["results_dir"], "smoke", "sdxl-b", "aesthetic")
    data = json.loads(path.read_text())
    data["scorer_digest"] = "0123456789abcdef"
    path.write_text(json.dumps(data))
    with pytest.raises(HarnessError, match="scored by different scorer versions"):
        table1_text(cfg, tmp_path)


# ---- the paper's values beside ours ------------------------------------------------------------

#: what every image of every system scores in :class:`FixedScores` (so each mean, and each Δ, is known)
IMAGE_SCORE = 0.9
SET_VALUES = {"fid": {"value": 30.0, "n": 5000}, "kid": {"value": 0.01, "std": 0.001, "n": 5000}}


class FixedScores:
    """Stands in for :class:`harness.scores.ScoreReader`: 4 prompts scoring IMAGE_SCORE for image
    metrics, SET_VALUES for set metrics; this test is about the paper-value join, not about score files."""

    def __init__(self, config):
        self.config = config

    def read(self, benchmark, system, metric):
        from harness.scorers.registry import scorer_class
        from harness.scores import ScoreSet

        if scorer_class(metric).set_metric:
            return ScoreSet(True, value=dict(SET_VALUES[metric]))
        return ScoreSet(False, rows=[{"prompt_id": f"p{i}", "score": IMAGE_SCORE} for i in range(4)])

    def fingerprint_note(self):
        return "Scorer fingerprints: fixed"


def paper_config(tmp_path):
    """config/paper.yaml as the DAG reads it, outputs under tmp_path (no weights or images needed here)."""
    import yaml

    from harness.config import validate_config
    from tests.conftest import ROOT

    cfg = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    cfg.update(results_dir=str(tmp_path / "results"), reports_dir=str(tmp_path / "reports"))
    return validate_config(cfg)


def markdown_cells(text):
    """{first cell of a row: {column heading: cell}} of the first Markdown table in ``text``."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|---")]
    header, body = rows[0], rows[1:]
    return {r[0]: dict(zip(header, r)) for r in body}


#: Table 1/2 rows with a paper row (config/paper.yaml's names; `cogview3-official` has none)
PAPER_ROWS = ["sdxl", "stable-cascade", "lcm-sdxl", "cogview3", "cogview3-distill-4+1", "cogview3-distill-8+2"]


def test_paper_tables_print_the_paper_value_and_the_difference(tmp_path, monkeypatch):
    from harness import tables
    from harness.render import render_markdown

    monkeypatch.setattr(tables, "ScoreReader", FixedScores)
    cfg = paper_config(tmp_path)
    assert set(PAPER_ROWS) < set(tables.final_systems(cfg))

    # Table 1: the paper's DrawBench ImageReward of CogView3 (50+10) is 0.847.
    table, _ = tables.paper_table(cfg, "table1", "Table 1", tables.table1_benchmarks(cfg), tables.table1_metrics(cfg))
    t1 = markdown_cells(render_markdown(table, "> banner"))
    assert t1["cogview3"]["DrawBench ImageReward ↑"] == "0.900 [0.900, 0.900] (N=4) (paper 0.847, Δ +0.053)"
    assert t1["cogview3"]["DrawBench ImageReward ↑"].endswith(f"(paper 0.847, Δ {IMAGE_SCORE - 0.847:+.3f})")
    assert t1["lcm-sdxl"]["PartiPrompts Aes ↑"].endswith("(paper 5.590, Δ -4.690)")
    record = next(r for r in table.records
                  if (r["benchmark"], r["system"], r["metric"]) == ("drawbench", "cogview3", "imagereward"))
    assert record["paper"] == 0.847 and record["diff_vs_paper"] == pytest.approx(IMAGE_SCORE - 0.847)
    # Every paper cell is filled: 6 systems x 2 benchmarks x (Aes, HPS v2, ImageReward); the released
    # 12-step relay and CLIP score (not in the paper) print none.
    columns = [f"{b} {m}" for b in ("DrawBench", "PartiPrompts") for m in ("Aes ↑", "HPS v2.0 ↑", "ImageReward ↑")]
    assert all("(paper " in t1[s][c] for s in PAPER_ROWS for c in columns)
    assert not any("(paper " in cell for cell in t1["cogview3-official"].values())
    assert not any("(paper " in t1[s][c] for s in t1 for c in t1[s] if "CLIP" in c)

    # Table 2: FID is a set metric (one value, no CI), still with the paper's value and Δ.
    table, _ = tables.paper_table(cfg, "table2", "Table 2", tables.table2_benchmarks(cfg), tables.table2_metrics(cfg))
    t2 = markdown_cells(render_markdown(table, "> banner"))
    assert t2["cogview3"]["COCO-5k FID ↓"] == "30.0000 (N=5000) (paper 31.630, Δ -1.630)"
    assert t2["cogview3-distill-8+2"]["COCO-5k ImageReward ↑"].endswith("(paper 0.921, Δ -0.021)")
    columns = [f"COCO-5k {m}" for m in ("FID ↓", "Aes ↑", "HPS v2.0 ↑", "ImageReward ↑")]
    assert all("(paper " in t2[s][c] for s in PAPER_ROWS for c in columns)
    assert not any("(paper " in t2[s][c] for s in t2 for c in t2[s] if "KID" in c)

    # Table 3: rows are keyed by T_r; the paper reports HPS v2 and ImageReward there, not Aes.
    t3 = markdown_cells(tables.write_table3(cfg, tmp_path / "reports" / "table3.md").read_text())
    assert t3["500"]["ImageReward ↑"].endswith("(paper 0.847, Δ +0.053)")
    assert t3["800"]["HPS v2.0 ↑"].endswith(f"(paper 0.286, Δ {IMAGE_SCORE - 0.286:+.3f})")
    assert all("(paper " in t3[t][m] for t in ("200", "400", "500", "600", "800")
               for m in ("HPS v2.0 ↑", "ImageReward ↑"))
    assert not any("(paper " in t3[t]["Aes ↑"] for t in t3)


# ---- Table 3: the T_r sweep and its form: paper row (harness/tables.py write_table3) ---------------


class Table3Scores:
    """Stands in for ScoreReader: every image of a system scores a value of its own (known per row)."""

    VALUES = {"cogview3-tr200": 0.1, "cogview3-tr400": 0.2, "cogview3-tr500": 0.3, "cogview3-tr600": 0.4,
              "cogview3-tr800": 0.5, "cogview3-form-paper-tr500": 0.7}

    def __init__(self, config):
        self.config = config

    def read(self, benchmark, system, metric):
        from harness.scores import ScoreSet

        return ScoreSet(False, rows=[{"prompt_id": f"p{i}", "score": self.VALUES[system]} for i in range(3)])

    def fingerprint_note(self):
        return "Scorer fingerprints: fixed"


def test_table3_has_one_row_per_t_r_and_the_form_paper_row(tmp_path, monkeypatch):
    from harness import plots, tables

    monkeypatch.setattr(tables, "ScoreReader", Table3Scores)
    plotted = []
    monkeypatch.setattr(plots, "plot_tr_sweep", lambda records, *a, **k: plotted.extend(records))
    cfg = smoke_config(tmp_path, metrics=["imagereward"])
    text = tables.write_table3(cfg, tmp_path / "reports" / "table3.md").read_text()
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| T_r")]
    assert [r[:3] for r in rows] == [["200", "cogview3-tr200", "50+10"], ["400", "cogview3-tr400", "50+10"],
                                     ["500", "cogview3-tr500", "50+10"], ["600", "cogview3-tr600", "50+10"],
                                     ["800", "cogview3-tr800", "50+10"],
                                     ["500 (form: paper)", "cogview3-form-paper-tr500", "50+10"]]
    assert rows[-1][3].startswith("0.700 [0.700, 0.700] (N=3)") and rows[2][3].startswith("0.300 ")
    assert "one base pass, 5 relay runs for the T_r points and 1 for the `form: paper` row" in text
    assert "Row `500 (form: paper)` (`cogview3-form-paper-tr500`): the same relay setting as T_r = 500" in text
    # every grid note: the same 10 steps from t = T_r - 1; the extra row says its form
    for t_r in (200, 400, 500, 600, 800):
        assert f"- cogview3-tr{t_r}: T_r={t_r}: 10 steps at t={t_r - 1}, " in text
    assert ("- cogview3-form-paper-tr500: T_r=500: 10 steps at t=499, 449, 399, 349, 299, 249, 199, 149, 99, 49; "
            "blending by step; form: paper") in text
    # the plot is the sweep against T_r: the extra row is not a sixth point at T_r = 500
    assert sorted((r["extra"], round(r["mean"], 9)) for r in plotted) == [
        ("t_r=200", 0.1), ("t_r=400", 0.2), ("t_r=500", 0.3), ("t_r=600", 0.4), ("t_r=800", 0.5)]
    import csv

    records = {r["system"]: r for r in csv.DictReader((tmp_path / "reports" / "table3.csv").open())}
    assert float(records["cogview3-form-paper-tr500"]["mean"]) == pytest.approx(0.7)
    assert records["cogview3-form-paper-tr500"]["extra"] == "t_r=500; form=paper"
    assert records["cogview3-tr500"]["extra"] == "t_r=500"


def test_the_papers_columns_come_first_and_extra_metrics_follow_in_config_order(tmp_path):
    """Issue 18: Tables 1 and 2 take any configured metric as an extra column; the paper's columns stay first, in
    the paper's order, whatever order the config lists them in; HPS v2.0 and v2.1 are two columns, each with its
    version in the header."""
    from harness import tables
    from harness.scorers.registry import scorer_class

    weights = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["weights"]
    cfg = smoke_config(tmp_path, metrics=["hpsv21", "clip_score", "kid", "imagereward", "hpsv2", "fid", "aesthetic"],
                       weights={**weights, "hpsv21": "tiny", "fid": "tiny", "kid": "tiny"})
    assert tables.table1_metrics(cfg) == ["aesthetic", "hpsv2", "imagereward", "hpsv21", "clip_score", "kid", "fid"]
    assert tables.table2_metrics(cfg) == ["fid", "aesthetic", "hpsv2", "imagereward", "kid", "hpsv21", "clip_score"]
    assert [scorer_class(m).heading() for m in ("hpsv2", "hpsv21")] == ["HPS v2.0 ↑", "HPS v2.1 ↑"]
