"""The GPU pool of local runs (harness/gpus.py) on a fake 4-GPU node: concurrent jobs never share an
id, every id is used, a SIGKILLed holder frees its id, and a harness command takes its GPU (and sets
CUDA_VISIBLE_DEVICES) before it runs."""

from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import cli
from harness.gpus import IDS_ENV, POOL_ENV, acquire, configured_device, pool_status, visible_gpus, wants_pool
from tests.conftest import ROOT

#: one job: take a GPU the way a harness command does, record (id, interval, CUDA_VISIBLE_DEVICES), hold it
JOB = """
import json, os, sys, time
from harness.gpus import job_gpu
out, hold = sys.argv[1], float(sys.argv[2])
with job_gpu(log=lambda line: None) as lease:
    start = time.time()
    print("holding", lease.gpu, flush=True)
    time.sleep(hold)
    end = time.time()
json.dump({"gpu": lease.gpu, "start": start, "end": end, "visible": os.environ["CUDA_VISIBLE_DEVICES"]}, open(out, "w"))
"""


def job(tmp_path: Path, name: str, hold: float, ids: str) -> subprocess.Popen:
    env = {**os.environ, IDS_ENV: ids, POOL_ENV: str(tmp_path / "locks"), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", JOB, str(tmp_path / f"{name}.json"), str(hold)], env=env,
                            stdout=subprocess.PIPE, text=True)


def test_eight_concurrent_jobs_on_four_fake_gpus_never_share_one(tmp_path):
    jobs = [job(tmp_path, f"job{i}", 1.0, "0,1,2,3") for i in range(8)]
    assert all(p.wait(timeout=60) == 0 for p in jobs)
    records = [json.loads((tmp_path / f"job{i}.json").read_text()) for i in range(8)]
    for r in records:
        assert r["visible"] == r["gpu"]  # the job sees exactly the GPU it was given
    for i, a in enumerate(records):
        for b in records[i + 1:]:
            overlap = a["start"] < b["end"] and b["start"] < a["end"]
            assert not (overlap and a["gpu"] == b["gpu"]), (a, b)
    assert sorted({r["gpu"] for r in records}) == ["0", "1", "2", "3"]
    # 8 jobs of 1 s on 4 GPUs: two waves, so jobs did wait for a free id rather than double up
    assert max(sum(a["start"] < b["end"] and b["start"] < a["end"] for b in records) for a in records) <= 4


def test_a_sigkilled_job_releases_its_gpu(tmp_path):
    holder = job(tmp_path, "holder", 300.0, "7")
    assert holder.stdout.readline().split() == ["holding", "7"]
    assert pool_status(["7"], tmp_path / "locks")[0]["held"]
    with pytest.raises(Exception, match="no GPU of 7 became free"):
        acquire(["7"], tmp_path / "locks", timeout_s=0.5)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    status = pool_status(["7"], tmp_path / "locks")[0]
    assert not status["held"] and status["holder"] is None
    lease = acquire(["7"], tmp_path / "locks", timeout_s=5)  # the id is free again at once
    assert lease.gpu == "7" and lease.waited_s < 1.0
    lease.release()


def test_visible_gpus_read_without_torch(monkeypatch):
    monkeypatch.setenv(IDS_ENV, "0, 2,3")
    assert visible_gpus() == ["0", "2", "3"]
    monkeypatch.delenv(IDS_ENV)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,2")  # CUDA ignores ids after an invalid one
    assert visible_gpus() == ["1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


@pytest.mark.parametrize("device, command, pooled", [
    ("auto", "generate", True), ("cuda", "score", True), ("cpu", "generate", False),
    ("cuda:1", "generate", False), ("auto", "table1", False),
])
def test_which_commands_take_a_gpu(tmp_path, monkeypatch, device, command, pooled):
    snapshot = tmp_path / "config.json"
    snapshot.write_text(json.dumps({"device": device}))
    monkeypatch.setenv(POOL_ENV, str(tmp_path / "locks"))
    argv = [command, "--config-snapshot", str(snapshot)]
    assert configured_device(argv) == device
    assert wants_pool(argv) is pooled
    monkeypatch.delenv(POOL_ENV)
    assert not wants_pool(argv)  # no pool outside a local Snakemake run (hand-run commands, SLURM jobs)


def test_a_harness_command_runs_holding_its_gpu(tmp_path, monkeypatch):
    """The CLI takes the GPU first, then runs the command (in its own process, not the preload server)."""
    snapshot = tmp_path / "config.json"
    snapshot.write_text(json.dumps({"device": "auto"}))
    monkeypatch.setenv(IDS_ENV, "5,6")
    monkeypatch.setenv(POOL_ENV, str(tmp_path / "locks"))
    monkeypatch.setenv("HARNESS_PRELOAD_SOCKET", str(tmp_path / "nobody.sock"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    seen = {}

    def run(argv):
        seen["visible"] = os.environ["CUDA_VISIBLE_DEVICES"]
        seen["held"] = [r["gpu"] for r in pool_status(["5", "6"], tmp_path / "locks") if r["held"]]
        return 0

    monkeypatch.setattr(cli, "_run", run)
    monkeypatch.setattr("harness.preload.run_in_server", lambda argv: pytest.fail("a GPU job went to the preload server"))
    assert cli.main(["generate", "--config-snapshot", str(snapshot)]) == 0
    assert seen["held"] == [seen["visible"]] and seen["visible"] in ("5", "6")
    assert not any(r["held"] for r in pool_status(["5", "6"], tmp_path / "locks"))  # released when done


@pytest.mark.slow
def test_a_local_snakemake_run_gives_each_model_job_a_gpu_of_the_node(tmp_path):
    """The smoke DAG on a fake 2-GPU node: every generate and score job logs the GPU it held, set
    before torch was imported; reports load no model and take none. (CUDA is absent here, so
    `device: auto` then runs on the CPU.)"""
    import yaml

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg.update(num_prompts=2, metrics=["clip_score"], tr_sweep=[], expansion={"enabled": False},
               systems={k: v for k, v in cfg["systems"].items() if k in ("sdxl", "cogview3-base", "cogview3")})
    cfg["humaneval"].update(comparisons=[["cogview3", "sdxl"]])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", IDS_ENV: "0,1", POOL_ENV: str(tmp_path / "locks")}
    out = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path),
                          "--cores", "2", "reports/table1.md", "--configfile", str(tmp_path / "config.yaml")],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "note: GPUs 0,1: each job that loads a model takes one of them" in out.stderr
    logs = tmp_path / "results" / "logs"
    model_logs = sorted(logs.glob("generate/**/*.log")) + sorted(logs.glob("score/**/*.log"))
    assert len(model_logs) == 4, model_logs  # 3 systems, 1 metric
    for log in model_logs:
        held = re.findall(r"gpu: this job holds GPU (\d) of 0,1; CUDA_VISIBLE_DEVICES=\1 set before torch was imported",
                          log.read_text())
        assert len(held) == 1, (log, log.read_text()[:500])
    assert "gpu:" not in (logs / "table1.log").read_text()
    assert not any(r["held"] for r in pool_status(["0", "1"], tmp_path / "locks"))
