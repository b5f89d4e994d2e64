"""The Snakemake workflow keeps its conventions: lint-clean, a log per job, an HTML report, no merge job
for one shard.

Every command runs with ``-s <checkout>/Snakefile`` in a temporary working directory, so results,
reports, logs and .snakemake metadata land there and never in the checkout.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.render import BANNERS
from tests.conftest import ROOT
from tests.helpers import snakemake as run_snakemake

SNAKEMAKE = Path(sys.executable).parent / "snakemake"
TIMEOUT = 600


def snakemake(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for var in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS"):  # when the suite itself runs under make
        env.pop(var, None)
    proc = subprocess.run([str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    if check:
        assert proc.returncode == 0, f"snakemake {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc


def job_counts(log: str) -> dict[str, int]:
    """The 'Job stats' table of a (dry) run: rule -> number of jobs."""
    table = log.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def small_config(tmp_path: Path, **overrides) -> Path:
    """The smoke profile cut down to a Table 1 in seconds: 2 prompts, two few-step systems, one metric."""
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["systems"] = {
        "sdxl": {**cfg["systems"]["sdxl"], "steps": 2},
        "lcm-sdxl": {**cfg["systems"]["lcm-sdxl"], "steps": 2},
    }
    cfg.update(num_prompts=2, metrics=["aesthetic"], tr_sweep=[], expansion={"enabled": False},
               humaneval={**cfg["humaneval"], "comparisons": [["sdxl", "lcm-sdxl"]], "prompts": ["original"]})
    cfg.update(overrides)
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_lint_is_clean(tmp_path):
    proc = snakemake(tmp_path, "--lint", check=False)
    assert proc.returncode == 0 and "Congratulations" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_all_is_the_demo_and_one_shard_has_no_merge_job(tmp_path):
    """`snakemake --cores all` (make demo) builds Table 1, Table 3 and the expansion ablation; with one
    shard (the smoke config) each generation job writes the final manifest, so no merge job runs."""
    proc = snakemake(tmp_path, "-n", "--cores", "all")
    counts = job_counts(proc.stdout)
    assert {"all", "table1", "table3", "ablation_expansion"} <= counts.keys(), counts
    assert "table2" not in counts and "merge_manifest" not in counts, counts
    assert re.search(r"rule generate:\n\s+output: results/smoke/sdxl/manifest\.jsonl\n", proc.stdout), proc.stdout


def test_shards_add_a_merge_job_per_system(tmp_path):
    """shards: 2 -> two generation jobs per system writing shard manifests, and one light merge each."""
    config = small_config(tmp_path, shards=2)
    proc = snakemake(tmp_path, "-n", "reports/table1.md", "--configfile", str(config))
    counts = job_counts(proc.stdout)
    assert counts["merge_manifest"] == 2 and counts["generate"] == 4, counts
    assert "results/smoke/sdxl/manifest.shard-1-of-2.jsonl" in proc.stdout, proc.stdout


def test_a_failed_job_prints_its_log(tmp_path):
    """A job's output goes to its log; when it fails, Snakemake names the log and prints it
    (profiles/default: show-failed-logs). The smoke profile runs no preflight, so a weights folder
    that does not exist fails inside the generation job."""
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config = small_config(tmp_path, weights={**base["weights"], "sdxl": str(tmp_path / "no-sdxl")})
    proc = snakemake(tmp_path, "--cores", "1", "results/smoke/sdxl/manifest.jsonl", "--configfile", str(config),
                     check=False)
    out = proc.stdout + proc.stderr
    log = tmp_path / "results" / "logs" / "generate" / "smoke" / "sdxl.log"
    assert proc.returncode != 0 and log.is_file(), out
    error = log.read_text().strip().splitlines()[-1]
    assert error.startswith("error: ") and "no-sdxl" in error, error
    assert "results/logs/generate/smoke/sdxl.log" in out and error in out, out


def embedded_results(html: str) -> dict[str, dict]:
    """The results the HTML report embeds: path -> record with a base64 ``data_uri`` of the file."""
    m = re.search(r'<script id="results">\s*var results = (\{.*?\});\s*</script>', html, re.S)
    assert m, "the report embeds no results"
    return json.loads(m.group(1))


def decode(data_uri: str) -> bytes:
    assert data_uri.startswith("data:") and ";base64," in data_uri, data_uri[:80]
    return base64.b64decode(data_uri.split(";base64,", 1)[1])


@pytest.mark.slow  # 33 s: .ci/run runs it with this file's other slow tests
def test_report_contains_table1(tmp_path):
    """Run Table 1's DAG on a small config, then `snakemake --report`: Table 1 is embedded, with its
    caption, and every job left a log under results/logs/."""
    config = small_config(tmp_path)
    snakemake(tmp_path, "--cores", "2", "reports/table1.md", "--configfile", str(config))
    table1 = (tmp_path / "reports" / "table1.md").read_bytes()
    logs = tmp_path / "results" / "logs"
    for log in ("generate/smoke/sdxl.log", "generate/smoke/lcm-sdxl.log", "score/smoke/aesthetic.log", "table1.log"):
        assert (logs / log).is_file(), sorted(str(p.relative_to(logs)) for p in logs.rglob("*.log"))
    assert "lcm-sdxl: 2 generated" in (logs / "generate/smoke/lcm-sdxl.log").read_text()

    snakemake(tmp_path, "--cores", "1", "--report", "report.html", "--configfile", str(config))
    results = embedded_results((tmp_path / "report.html").read_text())
    assert decode(results["reports/table1.md"]["data_uri"]) == table1
    assert "Table 1" in results["reports/table1.md"]["caption"]
    for name in ("table1.csv", "table1_categories.md", "table1_categories.png"):
        assert decode(results[f"reports/{name}"]["data_uri"]) == (tmp_path / "reports" / name).read_bytes(), name
    assert "sdxl" in table1.decode() and "lcm-sdxl" in table1.decode()


@pytest.mark.slow
def test_lint_is_clean_on_the_paper_profile(tmp_path, data_dir):
    """The paper profile (on the tiny checkpoints of `python -m harness fixtures`) lints clean too."""
    fixtures = tmp_path / "fixtures"
    subprocess.run([sys.executable, "-m", "harness", "fixtures", "--out", str(fixtures), "--data-dir", str(data_dir)],
                   cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"), check=True, capture_output=True, timeout=TIMEOUT)
    for extra in ([], ["--config", "shards=2"]):
        proc = snakemake(tmp_path, "--lint", "--configfile", str(fixtures / "paper-tiny.yaml"), *extra, check=False)
        assert proc.returncode == 0 and "Congratulations" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@pytest.mark.slow  # ~4 minutes on 2 cores: .ci/run runs it (the default suite's budget is 10 minutes)
def test_smoke_dag_writes_every_report_and_a_rerun_does_nothing(tmp_path, data_dir):
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg.update(data_dir=str(data_dir), benchmarks=["drawbench"], num_prompts=2, thresholds=str(tmp_path / "t.yaml"))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"golden": str(tmp_path / "golden.json"), "checks": [
        {"metric": "*", "min": -1000.0, "max": 1000.0}]}))

    targets = ["reports/table1.md", "reports/table3.md", "reports/ablation_expansion.md", "reports/regression.md",
               "reports/metrics_agreement.md"]
    rc, log = run_snakemake(tmp_path, *targets, "--configfile", str(tmp_path / "c.yaml"))
    assert rc == 0, log
    reports = tmp_path / "reports"
    for name in ("table1.csv", "table1.tex", "table1_paired.csv", "table1_categories.md", "table1_categories.png",
                 "table3.md", "table3.csv", "table3.tex", "table3.png", "ablation_expansion.md", "regression.junit.xml"):
        assert (reports / name).stat().st_size > 0, name
    for name in ("table3.md", "ablation_expansion.md", "regression.md", "table1_categories.md", "metrics_agreement.md"):
        assert (reports / name).read_text().splitlines()[0] == BANNERS["smoke"], name
    # every pair of the seven metrics on drawbench, over systems and over images
    agreement = (reports / "metrics_agreement.md").read_text()
    assert agreement.count("| Aes | ") == 6 and "| PickScore | VQAScore | " in agreement
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
    assert table[0] == BANNERS["smoke"]
    header = next(line for line in table if line.startswith("| Model"))
    # the paper's columns first, then the newer metrics of the smoke defaults (issue 18), each filled
    assert ("| Model | Steps | UNet calls | Time cost (paper) | DrawBench Aes ↑ | DrawBench HPS v2.0 ↑ | DrawBench ImageReward ↑ | "
            "DrawBench CLIP score ↑ | DrawBench HPS v2.1 ↑ | DrawBench PickScore ↑ | DrawBench VQAScore ↑ | "
            "PartiPrompts Aes ↑") in header
    main_table = table[: table.index(next(line for line in table if line.startswith("## Paired")))]
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in main_table if line.startswith("| ")}
    assert set(rows) == {"Model", "sdxl", "stable-cascade", "lcm-sdxl", "cogview3", "cogview3-official",
                         "cogview3-distill-4+1", "cogview3-distill-8+2"}
    assert rows["stable-cascade"][1] == "20+10" and rows["lcm-sdxl"][1] == "4"
    # UNet calls: x2 per step under CFG (SDXL 50 steps at 5.0, Cascade's prior at 4.0 and its unguided decoder,
    # CogView3 50 + 10 both guided), LCM's embedded guidance and the distilled students x1
    assert [rows[s][2] for s in ("sdxl", "stable-cascade", "lcm-sdxl", "cogview3", "cogview3-distill-4+1")] == [
        "100", "50", "4", "120", "5"]
    assert "(10.83 s)" in rows["stable-cascade"][3] and "(2.06 s)" in rows["lcm-sdxl"][3]
    assert [rows[s][1] for s in ("cogview3", "cogview3-official", "cogview3-distill-4+1", "cogview3-distill-8+2")] == [
        "50+10", "50+12", "4+1", "8+2"]
    assert "- cogview3-official: T_r=500: 12 steps at t=499, 457, 416, 374, 333, 291, 249, 208, 166, 124, 83, 41; blending by step" in table
    # the relay stage is its own job, reading the base stage's images
    assert len(list((tmp_path / "results" / "drawbench" / "cogview3-base" / "images").glob("*.png"))) == 2
    row = rows["sdxl"]
    assert row[1] == "50" and "(19.67 s)" in row[3]
    assert "(N=2)" in row[4]  # DrawBench Aes filled from 2 prompts
    assert all("(N=2)" in row[i] for i in range(5, 11)) and row[11] == "–"  # HPS, IR, CLIP, HPS 2.1, Pick, VQA; no Parti
    assert "- benchmark `parti` not in this config's benchmarks" in table
    paired = next(line for line in table if line.startswith("| DrawBench | HPS v2.0 ↑ |"))
    assert paired.count("(N=2)") == 6  # cogview3 minus each of the six other rows
    assert len(list((tmp_path / "results" / "drawbench" / "sdxl" / "images").glob("*.png"))) == 2

    rc, log = run_snakemake(tmp_path, *targets, "--configfile", str(tmp_path / "c.yaml"))
    assert rc == 0 and "Nothing to be done" in log, log

    # A deliberately broken threshold fails the gate (non-zero exit) and the report says what moved.
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"golden": str(tmp_path / "golden.json"), "checks": [
        {"system": "sdxl", "metric": "imagereward", "max": -1000.0}]}))
    rc, log = run_snakemake(tmp_path, "reports/regression.md", "--forcerun", "regression", "--keep-incomplete",
                        "--configfile", str(tmp_path / "c.yaml"))
    assert rc != 0 and "**FAIL: 1 of 1 checks breached**" in (reports / "regression.md").read_text(), log

    # Changing one system parameter reruns that system's jobs only.
    cfg["systems"]["sdxl"]["steps"] = 3
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    rc, log = run_snakemake(tmp_path, "-n", "reports/table1.md", "--configfile", str(tmp_path / "c.yaml"))
    assert rc == 0 and "rule generate:" in log, log
