"""The paper profile end to end on tiny checkpoints in every upstream layout (README 'Weights').

    python -m harness fixtures --out DIR
    snakemake --cores 2 reports/table1.md reports/table2.md reports/table3.md reports/humaneval/export \
        reports/timecost.md --configfile DIR/paper-tiny.yaml

Every loader a real user hits runs here: diffusers folders (SDXL, the fp16-only LCM-SDXL UNet,
Stable Cascade's two repos), the six SAT folders, the T5 folder with only spiece.model, the
LDM-key VAE file, and each scorer's files. Nothing in the code path knows these are fixtures.
Marked slow; .ci/run runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ["reports/table1.md", "reports/table2.md", "reports/table3.md", "reports/humaneval/export",
           "reports/timecost.md"]


@pytest.mark.slow
def test_paper_profile_runs_on_real_layout_checkpoints(tmp_path, data_dir):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HARNESS_CACHE_DIR=str(tmp_path / "cache"),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    fixtures = tmp_path / "fixtures"
    subprocess.run([sys.executable, "-m", "harness", "fixtures", "--out", str(fixtures), "--data-dir", str(data_dir)],
                   cwd=ROOT, env=env, check=True)
    work = tmp_path / "work"
    work.mkdir()
    # Preflight on the fixtures: every entry present, every file hashed, and a plan.
    pre = subprocess.run([sys.executable, "-m", "harness", "preflight", "--config", str(fixtures / "paper-tiny.yaml")],
                         cwd=work, env=dict(env, PYTHONPATH=str(ROOT)), capture_output=True, text=True)
    assert pre.returncode == 0, pre.stdout + pre.stderr
    assert "preflight OK" in pre.stdout and "GPU-hours" in pre.stdout
    run = subprocess.run(
        ["snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2", *TARGETS,
         "--configfile", str(fixtures / "paper-tiny.yaml")],
        cwd=work, env=env, capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr[-6000:]

    table1 = (work / "reports" / "table1.md").read_text()
    from harness.render import BANNERS

    for report in ("table1.md", "table2.md", "table3.md"):  # numbers from random weights say so first
        assert (work / "reports" / report).read_text().startswith(BANNERS["fixtures"]), report
    for system in ("sdxl", "stable-cascade", "lcm-sdxl", "cogview3", "cogview3-distill-4+1", "cogview3-distill-8+2"):
        assert f"| {system} " in table1 or f"| `{system}` " in table1 or system in table1, system
    table2 = (work / "reports" / "table2.md").read_text()
    assert "FID" in table2 and "KID" in table2
    assert (work / "reports" / "table3.md").is_file()
    assert (work / "reports" / "timecost.md").is_file()
    assert any((work / "reports" / "humaneval" / "export").glob("*.html"))

    # Every system was built from the fixture files (a weights digest, never `tiny`) ...
    systems = list((work / "results" / "drawbench").glob("*/system.json"))
    assert systems
    for path in systems:
        fp = json.loads(path.read_text())["fingerprint"]["weights"]
        assert all(v not in ("tiny", "random") and len(v) == 16 for v in fp.values()), (path, fp)
    # ... and each metric from its real files.
    scores = list((work / "results").glob("*/*/scores/*.json"))
    metrics = {p.stem for p in scores}
    # the tables' metrics (clip_score, read by the regression gate only, loads ViT-L-14.pt as aesthetic does)
    assert {"aesthetic", "hpsv2", "imagereward", "fid", "kid"} <= metrics, metrics
    for path in scores:
        fp = json.loads(path.read_text())["scorer_fingerprint"]["checkpoints"]
        assert "tiny" not in json.dumps(fp), (path, fp)
