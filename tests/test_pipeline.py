"""End to end: the Snakemake DAG on the smoke profile, in a temporary directory."""

import json
import subprocess
import sys

import pytest
import yaml

from harness.errors import HarnessError
from harness.runner import manifest_path, merge_manifests, run_generation, system_dir
from harness.scoring import run_scoring, scores_path
from harness.tables import SMOKE_BANNER, table1
from tests.conftest import ROOT, smoke_config


def snakemake(workdir, *args):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2", *args],
        capture_output=True, text=True, timeout=900,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_smoke_dag_writes_every_report_and_a_rerun_does_nothing(tmp_path, data_dir):
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg.update(data_dir=str(data_dir), benchmarks=["drawbench"], num_prompts=2, thresholds=str(tmp_path / "t.yaml"))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"golden": str(tmp_path / "golden.json"), "checks": [
        {"metric": "*", "min": -1000.0, "max": 1000.0}]}))

    targets = ["reports/table1.md", "reports/table3.md", "reports/ablation_expansion.md", "reports/regression.md"]
    rc, log = snakemake(tmp_path, *targets, "--configfile", str(tmp_path / "c.yaml"))
    assert rc == 0, log
    reports = tmp_path / "reports"
    for name in ("table1.csv", "table1.tex", "table1_paired.csv", "table1_categories.md", "table1_categories.png",
                 "table3.md", "table3.csv", "table3.tex", "table3.png", "ablation_expansion.md", "regression.junit.xml"):
        assert (reports / name).stat().st_size > 0, name
    for name in ("table3.md", "ablation_expansion.md", "regression.md", "table1_categories.md"):
        assert (reports / name).read_text().splitlines()[0] == SMOKE_BANNER, name
    # Table 3: one base pass for all five relay starts
    assert len(list((tmp_path / "results" / "drawbench").glob("cogview3-base*/images/*.png"))) == 2 * 2  # + its expanded twin
    table3 = (reports / "table3.md").read_text()
    assert table3.count("| cogview3-tr") == 5 and "one base pass, 5 relay runs" in table3
    assert "| 400 | cogview3-tr400 | 50+10 |" in table3
    # per-category companion: DrawBench categories of the two prompts
    assert "## DrawBench: Aes by category" in (reports / "table1_categories.md").read_text()
    exp = (reports / "ablation_expansion.md").read_text()
    assert "| cogview3 | 225 | T5Tokenizer | 0 / 2 |" in exp and "| sdxl | 77 | CLIPTokenizer" in exp
    assert "**PASS" in (reports / "regression.md").read_text()
    table = (tmp_path / "reports" / "table1.md").read_text().splitlines()
    assert table[0] == SMOKE_BANNER
    header = next(line for line in table if line.startswith("| Model"))
    assert "| Model | Steps | Time cost (paper) | DrawBench Aes | DrawBench HPS v2 | DrawBench ImageReward | PartiPrompts Aes" in header
    main_table = table[: table.index(next(line for line in table if line.startswith("## Paired")))]
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in main_table if line.startswith("| ")}
    assert set(rows) == {"Model", "sdxl", "stable-cascade", "lcm-sdxl", "cogview3", "cogview3-official",
                         "cogview3-distill-4+1", "cogview3-distill-8+2"}
    assert rows["stable-cascade"][1] == "20+10" and rows["lcm-sdxl"][1] == "4"
    assert "(10.83 s)" in rows["stable-cascade"][2] and "(2.06 s)" in rows["lcm-sdxl"][2]
    assert [rows[s][1] for s in ("cogview3", "cogview3-official", "cogview3-distill-4+1", "cogview3-distill-8+2")] == [
        "50+10", "50+12", "4+1", "8+2"]
    assert "- cogview3-official: T_r=500: 12 steps at t=499, 457, 416, 374, 333, 291, 249, 208, 166, 124, 83, 41; blending by step" in table
    # the relay stage is its own job, reading the base stage's images
    assert len(list((tmp_path / "results" / "drawbench" / "cogview3-base" / "images").glob("*.png"))) == 2
    row = rows["sdxl"]
    assert row[1] == "50" and "(19.67 s)" in row[2]
    assert "(N=2)" in row[3]  # DrawBench Aes filled from 2 prompts
    assert "(N=2)" in row[4] and "(N=2)" in row[5] and row[6] == "–"  # Aes, HPS v2, ImageReward; no Parti
    assert "- benchmark `parti` not in this config's benchmarks" in table
    paired = next(line for line in table if line.startswith("| DrawBench | HPS v2 |"))
    assert paired.count("(N=2)") == 6  # cogview3 minus each of the six other rows
    assert len(list((tmp_path / "results" / "drawbench" / "sdxl" / "images").glob("*.png"))) == 2

    rc, log = snakemake(tmp_path, *targets, "--configfile", str(tmp_path / "c.yaml"))
    assert rc == 0 and "Nothing to be done" in log, log

    # A deliberately broken threshold fails the gate (non-zero exit) and the report says what moved.
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"golden": str(tmp_path / "golden.json"), "checks": [
        {"system": "sdxl", "metric": "imagereward", "max": -1000.0}]}))
    rc, log = snakemake(tmp_path, "reports/regression.md", "--forcerun", "regression", "--keep-incomplete",
                        "--configfile", str(tmp_path / "c.yaml"))
    assert rc != 0 and "**FAIL: 1 of 1 checks breached**" in (reports / "regression.md").read_text(), log

    # Changing one system parameter reruns that system's jobs only.
    cfg["systems"]["sdxl"]["steps"] = 3
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    rc, log = snakemake(tmp_path, "-n", "reports/table1.md", "--configfile", str(tmp_path / "c.yaml"))
    assert rc == 0 and "generate_shard" in log, log


def generate(cfg, system, benchmark="smoke"):
    """Generate one unsharded (benchmark, system) and merge its manifest, as the DAG does."""
    summary = run_generation(cfg, benchmark, system, progress=False)
    merge_manifests([summary.manifest], manifest_path(cfg["results_dir"], benchmark, system))


def test_table_refuses_mixed_scorer_versions(tmp_path):
    cfg = smoke_config(tmp_path, num_prompts=2, metrics=["aesthetic"])
    cfg["systems"] = {"sdxl": dict(cfg["systems"]["sdxl"], steps=3), "sdxl-b": dict(cfg["systems"]["sdxl"], steps=3)}
    for name in ("sdxl", "sdxl-b"):
        generate(cfg, name)
        run_scoring(cfg, "smoke", name, "aesthetic")
    assert "(N=2)" in table1(cfg, {"sdxl": "4", "sdxl-b": "4"})

    path = scores_path(cfg["results_dir"], "smoke", "sdxl-b", "aesthetic")
    data = json.loads(path.read_text())
    data["scorer_digest"] = "0123456789abcdef"
    path.write_text(json.dumps(data))
    with pytest.raises(HarnessError, match="scored by different scorer versions"):
        table1(cfg, {"sdxl": "4", "sdxl-b": "4"})


def test_scoring_stops_on_a_missing_image(tmp_path):
    cfg = smoke_config(tmp_path, num_prompts=2)
    cfg["systems"]["sdxl"]["steps"] = 3
    generate(cfg, "sdxl")
    (system_dir(cfg["results_dir"], "smoke", "sdxl") / "images" / "s01_0.png").unlink()
    with pytest.raises(HarnessError, match=r"s01_0.png listed in .* is missing"):
        run_scoring(cfg, "smoke", "sdxl", "aesthetic")


class CountingScorer:
    """A real scorer that counts the images it is asked to score."""

    def __init__(self, inner):
        self.inner, self.batch_size, self.seen = inner, inner.batch_size, 0

    def fingerprint(self):
        return self.inner.fingerprint()

    def score(self, images, prompts):
        self.seen += len(images)
        return self.inner.score(images, prompts)


def test_rescoring_scores_only_new_images_and_survives_a_torn_cache(tmp_path):
    from harness.scorers.registry import build_scorer
    from harness.scoring import ScoreCache

    cfg = smoke_config(tmp_path, num_prompts=3, metrics=["aesthetic"])
    cfg["systems"] = {"a": dict(cfg["systems"]["sdxl"], steps=2), "b": dict(cfg["systems"]["sdxl"], steps=3)}
    for name in cfg["systems"]:
        generate(cfg, name)
    scorer = CountingScorer(build_scorer("aesthetic", cfg["weights"], "cpu", "float32", batch_size=2))
    first = [json.loads(p.read_text()) for p in run_scoring(cfg, "smoke", ["a", "b"], "aesthetic", scorer=scorer)]
    assert scorer.seen == 6 and [d["n"] for d in first] == [3, 3]

    cfg["systems"]["b"]["steps"] = 4  # system b changes; a does not
    generate(cfg, "b")
    run_scoring(cfg, "smoke", ["a", "b"], "aesthetic", scorer=scorer)
    assert scorer.seen == 9  # only b's three new images

    cache = ScoreCache(cfg["results_dir"], "aesthetic", first[0]["scorer_digest"], "smoke")
    with open(cache.path, "a") as f:
        f.write('{"sha256": "abc", "pro')  # a crash mid-append
    again = [json.loads(p.read_text()) for p in run_scoring(cfg, "smoke", ["a", "b"], "aesthetic", scorer=scorer)]
    assert scorer.seen == 9 and again[0]["rows"] == first[0]["rows"]
    (tmp_path / "results" / "smoke" / "a" / "images" / "s00_0.png").unlink()
    generate(cfg, "a")  # regenerated: same bytes, so still cached
    cache.add([("new", "prompt", 1.0)])  # appended after the torn line stays readable
    assert ScoreCache(cfg["results_dir"], "aesthetic", first[0]["scorer_digest"], "smoke").scores[("new", "prompt")] == 1.0
