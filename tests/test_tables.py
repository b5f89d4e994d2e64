"""Table 1 assembly (harness/tables.py): it refuses scores from mixed scorer versions."""

import json

import pytest

from harness.errors import HarnessError
from harness.manifests import scores_path
from harness.scoring import run_scoring
from harness.tables import write_table1
from tests.conftest import smoke_config
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
    columns = [f"{b} {m}" for b in ("DrawBench", "PartiPrompts") for m in ("Aes ↑", "HPS v2 ↑", "ImageReward ↑")]
    assert all("(paper " in t1[s][c] for s in PAPER_ROWS for c in columns)
    assert not any("(paper " in cell for cell in t1["cogview3-official"].values())
    assert not any("(paper " in t1[s][c] for s in t1 for c in t1[s] if "CLIP" in c)

    # Table 2: FID is a set metric (one value, no CI), still with the paper's value and Δ.
    table, _ = tables.paper_table(cfg, "table2", "Table 2", tables.table2_benchmarks(cfg), tables.table2_metrics(cfg))
    t2 = markdown_cells(render_markdown(table, "> banner"))
    assert t2["cogview3"]["COCO-5k FID ↓"] == "30.0000 (N=5000) (paper 31.630, Δ -1.630)"
    assert t2["cogview3-distill-8+2"]["COCO-5k ImageReward ↑"].endswith("(paper 0.921, Δ -0.021)")
    columns = [f"COCO-5k {m}" for m in ("FID ↓", "Aes ↑", "HPS v2 ↑", "ImageReward ↑")]
    assert all("(paper " in t2[s][c] for s in PAPER_ROWS for c in columns)
    assert not any("(paper " in t2[s][c] for s in t2 for c in t2[s] if "KID" in c)

    # Table 3: rows are keyed by T_r; the paper reports HPS v2 and ImageReward there, not Aes.
    t3 = markdown_cells(tables.write_table3(cfg, tmp_path / "reports" / "table3.md").read_text())
    assert t3["500"]["ImageReward ↑"].endswith("(paper 0.847, Δ +0.053)")
    assert t3["800"]["HPS v2 ↑"].endswith(f"(paper 0.286, Δ {IMAGE_SCORE - 0.286:+.3f})")
    assert all("(paper " in t3[t][m] for t in ("200", "400", "500", "600", "800")
               for m in ("HPS v2 ↑", "ImageReward ↑"))
    assert not any("(paper " in t3[t]["Aes ↑"] for t in t3)
