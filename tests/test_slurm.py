"""The SLURM profile for real: a single-node SLURM cluster on this host (tests/slurm/up.sh: munge,
MariaDB + slurmdbd, slurmctld, slurmd, from Debian's packages, installed when missing), the smoke DAG
submitted through snakemake-executor-plugin-slurm with ``--profile profiles/slurm``, and the same config
run locally. Every image is byte-identical between the two; every job that loads a model was a SLURM
job, completed, under the profile's account and partition, with its rule's memory and run time and no
GPU (``device: cpu``); the light rules ran on the submit host.

Needs root. Marked ``slurm``, so `make test` leaves it out; `.ci/run` runs it after `make setup-slurm`:

    .venv/bin/python -m pytest -q -m slurm tests/test_slurm.py      # about 3 minutes on 2 cores

In CI (CI=true) it fails when the cluster cannot be brought up; elsewhere it skips without root, without
SLURM and apt-get, or without the plugin. Daemons that were already running are left running; those it
started are stopped at the end (tests/slurm/down.sh).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.slurm

SCRIPTS = ROOT / "tests" / "slurm"
#: what tests/slurm/up.sh sets up: the account of root's association and the one partition
ACCOUNT, PARTITION = "harness", "cpu"
TARGET = "reports/table1.md"
#: the smoke config, small: two prompts, a baseline and a distilled CogView3 chain (base + relay), two
#: cheap scorers; on the CPU, so every job declares gpu=0
CONFIG = {
    "device": "cpu", "num_prompts": 2, "metrics": ["aesthetic", "clip_score"], "tr_sweep": [],
    "expansion": {"enabled": False},
    "humaneval": {"benchmark": "smoke", "comparisons": [["cogview3-distill-4+1", "lcm-sdxl"]], "prompts": ["original"]},
}
SYSTEMS = ("lcm-sdxl", "cogview3-distill-base4", "cogview3-distill-4+1")
#: the jobs SLURM must have run (rule, wildcards as the plugin names its log folders); the rest are local rules
SUBMITTED = {("generate", f"smoke_{s}") for s in SYSTEMS} | {("score", f"smoke_{m}") for m in CONFIG["metrics"]}
SLURM_RUN_TIMEOUT_S, LOCAL_RUN_TIMEOUT_S = 420, 240


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def unavailable(reason: str):
    if in_ci():
        pytest.fail(f"CI cannot run the SLURM test: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster():
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        unavailable("snakemake-executor-plugin-slurm is not installed (make setup-slurm)")
    if os.geteuid() != 0:
        unavailable("bringing up SLURM needs root")
    if not shutil.which("apt-get") and not shutil.which("slurmctld"):
        unavailable("neither SLURM nor apt-get (to install it) is on this machine")
    proc = subprocess.run(["bash", str(SCRIPTS / "up.sh")], capture_output=True, text=True, timeout=900)
    started = [line.split(":", 1)[1].strip() for line in proc.stdout.splitlines() if line.startswith("started: ")]
    try:
        if proc.returncode != 0:
            pytest.fail(f"tests/slurm/up.sh failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        yield
    finally:
        if started:  # only what this test started: a cluster that was up before stays up
            subprocess.run(["bash", str(SCRIPTS / "down.sh"), *started], capture_output=True, text=True, timeout=120)


def write_config(workdir: Path) -> None:
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg.update(CONFIG)
    cfg["systems"] = {k: v for k, v in cfg["systems"].items() if k in SYSTEMS}
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def submitted_jobs(output: str) -> dict[str, tuple[str, str, int]]:
    """SLURM job id -> (rule, wildcards, Snakemake job id), from the plugin's "submitted" lines."""
    return {slurm_id: (rule, wildcards, int(job))
            for job, slurm_id, rule, wildcards in re.findall(
                r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_([^/]+)/([^/]+)/\d+\.log\)",
                output)}


def snakemake(workdir: Path, *args: str, env: dict[str, str], timeout: int) -> str:
    """The README's command from another folder; its output (also in workdir/snakemake.log). A run past
    ``timeout`` is killed with SIGKILL (in sacct mode a stuck Snakemake ignores SIGTERM) and its SLURM
    jobs cancelled."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), TARGET,
           "--configfile", str(workdir / "config.yaml"), *args]
    env = {k: v for k, v in os.environ.items() if k != "SNAKEMAKE_PROFILE"} | {"HF_HUB_OFFLINE": "1"} | env
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        if jobs := submitted_jobs(output):
            subprocess.run(["scancel", *jobs], capture_output=True, timeout=60)
        (workdir / "snakemake.log").write_text(output)
        pytest.fail(f"snakemake ran past {timeout} s:\n{output[-4000:]}")
    (workdir / "snakemake.log").write_text(output)
    assert proc.returncode == 0, output[-6000:]
    return output


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory) -> tuple[Path, str]:
    workdir = tmp_path_factory.mktemp("slurm")
    write_config(workdir)
    output = snakemake(workdir, "--profile", str(ROOT / "profiles" / "slurm"),
                       # first status check after 2 s, not the plugin's 40: these jobs take seconds
                       "--slurm-init-seconds-before-status-checks", "2",
                       env={"HARNESS_SLURM_ACCOUNT": ACCOUNT, "HARNESS_SLURM_PARTITION": PARTITION},
                       timeout=SLURM_RUN_TIMEOUT_S)
    return workdir, output


@pytest.fixture(scope="module")
def local_run(slurm_run, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("local")
    write_config(workdir)
    snakemake(workdir, "--cores", "2", env={}, timeout=LOCAL_RUN_TIMEOUT_S)
    return workdir


def images(workdir: Path) -> dict[Path, bytes]:
    return {p.relative_to(workdir): p.read_bytes() for p in sorted((workdir / "results").rglob("*.png"))}


def job_resources(output: str) -> dict[int, dict[str, str]]:
    """Snakemake job id -> the resources Snakemake printed for it (``resources: name=value, ...``)."""
    found, job = {}, None
    for line in output.splitlines():
        if m := re.match(r"\s+jobid: (\d+)$", line):
            job = int(m.group(1))
        elif (m := re.match(r"\s+resources: (.*)$", line)) and job is not None:
            found[job] = dict(item.split("=", 1) for item in m.group(1).split(", "))
    return found


def sacct(job_ids) -> dict[str, dict[str, str]]:
    fields = ("JobIDRaw", "State", "Account", "Partition", "Timelimit", "ReqMem", "ReqTRES")
    proc = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), f"--format={','.join(fields)}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = [dict(zip(fields, line.split("|"))) for line in proc.stdout.splitlines() if line]
    return {row["JobIDRaw"]: row for row in rows}


def megabytes(reqmem: str) -> float | None:
    """sacct's ReqMem (``3120M``, ``6G``: it shows whole G and T as such) in MB."""
    m = re.fullmatch(r"([\d.]+)([KMGT])\w?", reqmem)
    return None if m is None else float(m.group(1)) * 1024 ** "KMGT".index(m.group(2)) / 1024


def minutes(timelimit: str) -> int | None:
    """sacct's Timelimit ([D-]HH:MM:SS) in minutes; None for UNLIMITED (no --time) or anything else."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d+):(\d+)", timelimit)
    if m is None:
        return None
    days, hours, mins, secs = (int(x or 0) for x in m.groups())
    return days * 1440 + hours * 60 + mins + (secs > 0)


def test_slurm_run_makes_the_images_of_a_local_run(slurm_run, local_run):
    slurm_dir, _ = slurm_run
    on_slurm, local = images(slurm_dir), images(local_run)
    assert on_slurm, "the SLURM run wrote no PNG under results/"
    assert set(on_slurm) == set(local), set(on_slurm) ^ set(local)
    assert all(on_slurm.values()), [str(p) for p, data in on_slurm.items() if not data]
    assert [str(p) for p in on_slurm if on_slurm[p] != local[p]] == [], "images differ between SLURM and local"
    # and so do the scores built from them
    assert (slurm_dir / "reports" / "table1.csv").read_text() == (local_run / "reports" / "table1.csv").read_text()


def test_model_jobs_ran_as_slurm_jobs_with_the_profiles_requests(slurm_run):
    workdir, output = slurm_run
    # each job ran `python -m harness` in its own process: no preload server on the submit host
    assert not (workdir / "results" / "logs" / "preload-server.log").exists()
    jobs = submitted_jobs(output)
    assert {(rule, wildcards) for rule, wildcards, _ in jobs.values()} == SUBMITTED, output[-4000:]
    assert len(jobs) == len(SUBMITTED), "a job was submitted twice (a retry?)"
    declared = job_resources(output)
    accounted = sacct(jobs)
    for slurm_id, (rule, wildcards, job) in jobs.items():
        asked, got = declared[job], accounted.get(slurm_id)
        what = f"{rule} {wildcards} (SLURM job {slurm_id}): declared {asked}, accounted {got}"
        assert got is not None, f"sacct does not know {what}"
        assert got["State"] == "COMPLETED", what
        assert (got["Account"], got["Partition"]) == (ACCOUNT, PARTITION), what
        assert asked["gpu"] == "0" and "gres/gpu" not in got["ReqTRES"], what  # device: cpu asks for no GPU
        assert megabytes(got["ReqMem"]) == int(asked["mem_mb"]), what  # mem_mb -> --mem
        assert "runtime" in asked, f"no run time declared for {what}"
        assert minutes(got["Timelimit"]) == int(asked["runtime"]), what  # runtime -> --time
