"""A real Snakemake run, killed with SIGKILL (the whole process group) during generation, during
scoring and during the table step: the same command, run again with no extra flags, completes with
the numbers of an uninterrupted run. And damage done after a run (a truncated PNG, a deleted PNG,
deleted score files) never ends in an old table with exit code 0.

Slow (about 4 minutes on 2 cores): `.ci/run` runs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.resume import processes_in, send_signal
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

TARGET = "reports/table1.md"
#: a small smoke config: one baseline and CogView3's two stages, two scorers, one image per batch
#: (so the runner's state file grows image by image and a kill lands mid-job)
CONFIG = {
    "num_prompts": 4, "batch_size": 1, "metrics": ["aesthetic", "clip_score"], "tr_sweep": [],
    "expansion": {"enabled": False},
    "humaneval": {"benchmark": "smoke", "comparisons": [["cogview3", "sdxl"]], "prompts": ["original"]},
}
SYSTEMS = ("sdxl", "cogview3-base", "cogview3")


def write_config(workdir: Path) -> Path:
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg.update(CONFIG)
    cfg["systems"] = {k: v for k, v in cfg["systems"].items() if k in SYSTEMS}
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def command(workdir: Path) -> list[str]:
    """The README's command, pointed at the checkout's Snakefile from another folder."""
    return [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2",
            TARGET, "--configfile", str(workdir / "config.yaml")]


def run(workdir: Path, *cmd: str) -> tuple[int, str]:
    proc = subprocess.run(list(cmd) or command(workdir), cwd=workdir, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return proc.returncode, proc.stdout + proc.stderr


def kill_when(workdir: Path, ready, what: str, group: bool = True) -> str:
    """Start the run, SIGKILL its whole process group (or only Snakemake) as soon as ``ready()`` holds."""
    log = open(workdir / "killed-run.log", "w")
    proc = subprocess.Popen(command(workdir), cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 600
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before it reached {what}: "
                        + (workdir / "killed-run.log").read_text()[-3000:])
        assert time.monotonic() < deadline, f"never reached {what}"
        time.sleep(0.02)
    if group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:  # an OOM kill of the Snakemake process alone: its jobs go on; the next run must stop them
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    log.close()
    if not group:
        return (workdir / "killed-run.log").read_text()
    # Nothing of the killed run may go on writing: preload children die with their clients at once,
    # the server within its 1 s poll (a job left running would take several seconds more).
    deadline = time.monotonic() + 3
    while processes_in(workdir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_in(workdir), f"processes of the killed run still alive: {processes_in(workdir)}"
    return (workdir / "killed-run.log").read_text()


def results(workdir: Path) -> Path:
    return workdir / "results" / "smoke"


def table_numbers(workdir: Path) -> str:
    """Table 1's cells (the CSV: means, CIs, N), which must not depend on where a run was killed."""
    return (workdir / "reports" / "table1.csv").read_text()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("reference")
    write_config(workdir)
    code, out = run(workdir)
    assert code == 0, out[-4000:]
    return workdir


def generating(workdir: Path):
    """Some system has written images to its state file but not finished its manifest."""
    def ready() -> bool:
        for s in SYSTEMS:
            state = results(workdir) / s / ".state" / "shard-0-of-1.jsonl"
            if state.is_file() and state.read_text().count("\n") >= 1 and not (results(workdir) / s / "manifest.jsonl").exists():
                return True
        return False
    return ready


def scoring(workdir: Path):
    logs = workdir / "results" / "logs" / "score" / "smoke"

    def ready() -> bool:
        return logs.is_dir() and any(logs.iterdir()) and not all(
            (results(workdir) / s / "scores" / f"{m}.json").exists() for s in ("sdxl", "cogview3") for m in CONFIG["metrics"])
    return ready


def table_step(workdir: Path):
    def ready() -> bool:
        return (workdir / "results" / "logs" / "table1.log").exists() and not (workdir / TARGET).exists()
    return ready


@pytest.mark.parametrize("stage", [generating, scoring, table_step], ids=["generation", "scoring", "table"])
def test_a_killed_run_resumes_with_the_same_command(reference, tmp_path, stage):
    workdir = tmp_path / "run"
    write_config(workdir)
    kill_when(workdir, stage(workdir), stage.__name__)
    assert list((workdir / ".snakemake" / "locks").glob("*.lock")), "the kill should leave Snakemake's locks behind"
    kept = {p: p.stat().st_mtime_ns for p in results(workdir).glob("*/images/*.png")}

    code, out = run(workdir)
    assert code == 0, out[-4000:]
    assert "stale Snakemake lock" in out
    assert table_numbers(workdir) == table_numbers(reference)
    # Finished images were resumed, not made again.
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    code, out = run(workdir, sys.executable, "-m", "harness", "verify", "--config-snapshot", "results/.harness/config.json")
    assert code == 0, out


def test_jobs_left_running_by_a_killed_snakemake_are_stopped_by_the_rerun(reference, tmp_path):
    workdir = tmp_path / "run"
    write_config(workdir)
    kill_when(workdir, generating(workdir), "generation", group=False)
    # Freeze the job processes that outlived Snakemake (its process group, named in the run lock): a
    # real generation job runs for hours, this tiny one would finish during the rerun's start-up and
    # leave nothing to stop (the test then passed or failed by timing). Their preload children run on:
    # they must die with their clients when the rerun stops them.
    pgid = int((workdir / ".snakemake" / "harness-run.lock").read_text().split()[3])
    send_signal(processes_in(workdir, pgid), signal.SIGSTOP)
    assert processes_in(workdir), "the generation job should outlive Snakemake"
    code, out = run(workdir)
    assert code == 0, out[-4000:]
    assert "processes the killed run" in out and "stale Snakemake lock" in out
    left = [pid for pid in processes_in(workdir) if pid in orphans]
    assert not left, f"jobs of the killed run still alive after the rerun: {left}"
    assert table_numbers(workdir) == table_numbers(reference)


def copy_of(reference: Path, tmp_path: Path) -> Path:
    workdir = tmp_path / "copy"
    shutil.copytree(reference, workdir, symlinks=True)
    return workdir


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_damaged_image_is_regenerated_by_the_rerun_never_an_old_table(reference, tmp_path, damage):
    workdir = copy_of(reference, tmp_path)
    image = results(workdir) / "sdxl" / "images" / "s02_0.png"
    others = {p: p.read_bytes() for p in results(workdir).glob("*/images/*.png") if p != image}
    original = image.read_bytes()
    if damage == "truncate":
        image.write_bytes(original[: len(original) // 2])
    else:
        image.unlink()
    before = (workdir / TARGET).stat().st_mtime_ns

    code, out = run(workdir)
    assert code == 0, out[-4000:]
    assert "s02_0.png" in out and "regenerated in this run" in out and "removed reports/table1.md" in out
    assert image.read_bytes() == original  # regenerated, bit for bit (batch_invariant)
    assert all(p.read_bytes() == b for p, b in others.items())
    assert (workdir / TARGET).stat().st_mtime_ns > before and table_numbers(workdir) == table_numbers(reference)
    if damage == "truncate":
        assert list((workdir / "results" / ".harness" / "quarantine").rglob("s02_0.png")), "the damaged file is kept aside"


def test_verify_repair_regenerates_exactly_the_damaged_image(reference, tmp_path):
    workdir = copy_of(reference, tmp_path)
    image = results(workdir) / "cogview3-base" / "images" / "s01_0.png"
    original = image.read_bytes()
    image.write_bytes(b"overwritten")
    snapshot = ("--config-snapshot", "results/.harness/config.json")
    code, out = run(workdir, sys.executable, "-m", "harness", "verify", *snapshot)
    assert code == 2 and out.startswith("error: 1 problem") and "s01_0.png" in out, out
    code, out = run(workdir, sys.executable, "-m", "harness", "verify", "--repair", *snapshot)
    assert code == 0 and "repaired" in out, out
    assert image.read_bytes() == original
    code, out = run(workdir)
    assert code == 0, out[-4000:]
    assert table_numbers(workdir) == table_numbers(reference)


def test_deleted_score_files_are_rescored_not_ignored(reference, tmp_path):
    workdir = copy_of(reference, tmp_path)
    for folder in results(workdir).glob("*/scores"):
        shutil.rmtree(folder)
    before = (workdir / TARGET).stat().st_mtime_ns

    code, out = run(workdir)
    assert code == 0, out[-4000:]
    assert "Nothing to be done" not in out
    assert "removed reports/table1.md" in out
    assert (workdir / TARGET).stat().st_mtime_ns > before
    assert table_numbers(workdir) == table_numbers(reference)
