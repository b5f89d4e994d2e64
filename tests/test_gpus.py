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
from harness.errors import HarnessError
from harness.gpus import IDS_ENV, JOB_GPUS_ENV, POOL_ENV, acquire, pool_status, visible_gpus, wants_pool
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
    env = {**os.environ, IDS_ENV: ids, POOL_ENV: str(tmp_path / "locks"), JOB_GPUS_ENV: "1", "PYTHONPATH": str(ROOT)}
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
    assert max(sum(b["start"] <= a["start"] < b["end"] for b in records) for a in records) <= 4  # at any instant


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


@pytest.mark.parametrize("pool, declared, pooled", [
    ("/tmp/locks", "1", True), ("/tmp/locks", "0", False), ("", "1", False), ("/tmp/locks", "", False),
])
def test_a_job_takes_a_gpu_when_its_rule_declares_one_in_a_local_run(monkeypatch, pool, declared, pooled):
    """The pool is on only in a local run (its onstart sets HARNESS_GPU_POOL; a SLURM job or a
    hand-run command has none) and for a rule that declared gpu=1 (HARNESS_JOB_GPUS={resources.gpu})."""
    monkeypatch.setenv(POOL_ENV, pool)
    monkeypatch.setenv(JOB_GPUS_ENV, declared)
    assert wants_pool() is pooled


FAKE_NVIDIA_SMI = """#!/bin/sh
[ "$1" = "-L" ] || exit 9
echo "GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-aaaa-0000)"
echo "  MIG 3g.40gb     Device  0: (UUID: MIG-aaaa-slice-0)"
echo "  MIG 3g.40gb     Device  1: (UUID: MIG-aaaa-slice-1)"
echo "GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-bbbb-1111)"
"""


def test_gpus_are_named_by_uuid_and_mig_slices_count_as_gpus(tmp_path, monkeypatch):
    """Locks name a physical device (UUID), whatever numbering a process sees; a GPU in MIG mode
    offers its slices; CUDA_VISIBLE_DEVICES indices (PCI order) select among them."""
    (tmp_path / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    (tmp_path / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv(IDS_ENV, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus() == ["MIG-aaaa-slice-0", "MIG-aaaa-slice-1", "GPU-bbbb-1111"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    assert visible_gpus() == ["GPU-bbbb-1111"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb-1111")
    assert visible_gpus() == ["GPU-bbbb-1111"]
    monkeypatch.setenv(IDS_ENV, "GPU-aaaa-0000")  # may only narrow what CUDA_VISIBLE_DEVICES allows
    with pytest.raises(HarnessError, match="outside CUDA_VISIBLE_DEVICES"):
        visible_gpus()


def test_a_harness_command_runs_holding_its_gpu(tmp_path, monkeypatch):
    """The CLI takes the GPU first, then runs the command (in its own process, not the preload server)."""
    snapshot = tmp_path / "config.json"
    snapshot.write_text(json.dumps({"device": "auto"}))
    monkeypatch.setenv(IDS_ENV, "5,6")
    monkeypatch.setenv(POOL_ENV, str(tmp_path / "locks"))
    monkeypatch.setenv(JOB_GPUS_ENV, "1")
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
    """The smoke DAG on a fake 2-GPU node with 4 cores and three systems ready at once: Snakemake
    starts at most 2 model jobs (the `gpu` resource the run sets from the node), so no job ever
    waits for the pool; every generate and score job logs the GPU it held, set before torch was
    imported; reports load no model and take none. (CUDA is absent here: `device: auto` then runs
    on the CPU.)"""
    import yaml

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    systems = ("sdxl", "lcm-sdxl", "cogview3-distill-base4", "cogview3-distill-4+1")
    cfg.update(num_prompts=2, metrics=["clip_score"], tr_sweep=[], expansion={"enabled": False},
               systems={k: v for k, v in cfg["systems"].items() if k in systems})
    cfg["humaneval"].update(comparisons=[["cogview3-distill-4+1", "sdxl"]])
    for key in ("distillation",):
        cfg.pop(key, None)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", IDS_ENV: "0,1", "HARNESS_GPU_LOCK_DIR": str(tmp_path / "locks")}
    out = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path),
                          "--cores", "4", "reports/table1.md", "--configfile", str(tmp_path / "config.yaml")],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "note: GPUs 0,1: each job that loads a model takes one of them" in out.stderr
    logs = tmp_path / "results" / "logs"
    model_logs = sorted(logs.glob("generate/**/*.log")) + sorted(logs.glob("score/**/*.log"))
    assert len(model_logs) == 5, model_logs  # 4 systems, 1 metric
    for log in model_logs:
        text = log.read_text()
        held = re.findall(r"gpu: this job holds GPU (\d) of 0,1; CUDA_VISIBLE_DEVICES=\1 set before torch was imported",
                          text)
        assert len(held) == 1, (log, text[:500])
        assert "busy; waiting" not in text, (log, text[:500])  # Snakemake never started a third GPU job
    assert "gpu:" not in (logs / "table1.log").read_text()
    assert not any(r["held"] for r in pool_status(["0", "1"], tmp_path / "locks"))
