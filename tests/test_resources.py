"""Resource estimates (harness/resources.py): the registries' parameter counts equal the full-size
builds, the time model is the least-squares fit of the paper's time costs, and the Snakemake plan
declares a GPU and memory on exactly the rules that load a model."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
import yaml

from harness import resources
from harness.config import validate_config
from harness.paper import paper_values
from models.registry import MODELS, build_system, model_class
from tests.conftest import ROOT, smoke_config


def modules_of(obj, depth: int = 0) -> dict[int, torch.nn.Module]:
    """Every distinct nn.Module a built system holds (its pipeline's components included)."""
    found = {}
    for value in vars(obj).values():
        if isinstance(value, torch.nn.Module):
            found[id(value)] = value
        elif depth < 2 and type(value).__module__.split(".")[0] in ("models", "diffusers", "harness"):
            found.update(modules_of(value, depth + 1))
    return found


@pytest.mark.parametrize("model", sorted(MODELS))
def test_declared_parameters_equal_the_full_size_build(model):
    """Each model's PARAMETERS are what its random full-size build holds (counted on the meta device)."""
    config = yaml.safe_load((ROOT / "config" / "timecost.yaml").read_text())
    name = next(n for n, s in config["systems"].items() if s["model"] == model)
    system = build_system(name, config["systems"][name], config["weights"], device="cpu", dtype="float32")
    system.device = torch.device("meta")  # shapes only: no memory, no init arithmetic
    system._build()
    counted = sum(p.numel() for m in modules_of(system).values() for p in m.parameters())
    declared = sum(model_class(model).PARAMETERS.values())
    assert counted == pytest.approx(declared, rel=1e-3), (model, counted, declared)


def test_time_model_is_the_fit_of_the_paper_time_costs():
    config = validate_config(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()) | {"benchmarks": ["drawbench"]})
    rows = paper_values()["time_cost_s"]
    overhead, rate = resources.fit_paper_time_model(config, rows)
    assert overhead == pytest.approx(resources.PAPER_OVERHEAD_S, rel=0.01)
    assert rate == pytest.approx(resources.PAPER_DENOISER_FLOPS_PER_S, rel=0.01)
    # the model is within 5 % of the paper for its three slow rows (SDXL, CogView3 ...)
    assert resources.seconds_per_image(config, "sdxl") == pytest.approx(19.67 / 4, rel=0.05)
    relay_row = resources.seconds_per_image(config, "cogview3-base") + resources.seconds_per_image(config, "cogview3")
    assert relay_row - resources.PAPER_OVERHEAD_S == pytest.approx(10.33 / 4, rel=0.05)  # one overhead per image


def test_memory_follows_weights_dtype_and_device(tmp_path):
    paper = validate_config(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()) | {"benchmarks": ["drawbench"]})
    half = resources.generation_resources(paper, "drawbench", "sdxl", runtime=False)
    full = resources.generation_resources(paper | {"dtype": "float32"}, "drawbench", "sdxl", runtime=False)
    weights_mb = sum(model_class("sdxl").PARAMETERS.values()) * 2 / 2**20
    assert half.gpu == 1 and full.gpu_mem_mb - half.gpu_mem_mb == pytest.approx(weights_mb, abs=2)
    assert half.mem_mb - resources.HOST_BASE_MB == pytest.approx(weights_mb, abs=2)
    cpu = resources.generation_resources(paper | {"device": "cpu"}, "drawbench", "sdxl", runtime=False)
    assert cpu.gpu == 0 and cpu.gpu_mem_mb == 0 and cpu.mem_mb > full.mem_mb - resources.CUDA_CONTEXT_MB
    # the relay at 1024 px holds more activations than its 512 px base stage
    base = resources.generation_resources(paper, "drawbench", "cogview3-base", runtime=False)
    relay = resources.generation_resources(paper, "drawbench", "cogview3", runtime=False)
    assert relay.gpu_mem_mb - base.gpu_mem_mb == pytest.approx(paper["batch_size"] * 3072 * (1 - 0.25), abs=2)
    tiny = resources.generation_resources(smoke_config(tmp_path), "smoke", "sdxl", runtime=False)
    assert tiny.mem_mb == resources.HOST_BASE_MB  # tiny builds: nothing but the process itself


def test_runtime_grows_with_the_images_of_a_shard(data_dir):
    paper = validate_config(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
                            | {"benchmarks": ["drawbench"], "data_dir": str(data_dir)})
    one = resources.generation_resources(paper, "drawbench", "sdxl")
    four = resources.generation_resources(paper | {"shards": 4}, "drawbench", "sdxl")
    per_image = resources.seconds_per_image(paper, "sdxl")
    margin, load = resources.RUNTIME_MARGIN, resources.MODEL_LOAD_S
    assert one.runtime == pytest.approx((load + 200 * per_image) * margin / 60, abs=1)  # DrawBench: 200 prompts
    assert four.runtime == max(resources.MIN_RUNTIME_MINUTES, round((load + 50 * per_image) * margin / 60 + 0.5))


def planned_resources(*args: str, env: dict | None = None) -> dict[str, list[dict[str, str]]]:
    """rule -> the resources of each job, from `snakemake -n` (dry run) output."""
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", *args], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    plan: dict[str, list[dict[str, str]]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out.stdout + out.stderr):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if head:
            line = re.search(r"^\s+resources: (.*)$", block, re.M)
            pairs = dict(kv.split("=", 1) for kv in line.group(1).split(", ")) if line else {}
            plan.setdefault(head.group(1), []).append(pairs)
    return plan


def test_gpu_node_profile_plans_one_gpu_per_model_job(tmp_path):
    """`snakemake --profile profiles/gpu-node -n reports/table1.md`: each model job declares a GPU
    (the pool itself starts with the run, not in a dry run: tests/test_gpus.py)."""
    plan = planned_resources("--profile", "profiles/gpu-node", "reports/table1.md", "-d", str(tmp_path),
                             env={"HARNESS_GPU_IDS": "0,1,2,3"})
    assert set(plan) == {"generate", "score", "table1"}
    for rule in ("generate", "score"):
        for job in plan[rule]:
            assert job["gpu"] == "1" and int(job["gpu_mem_mb"]) >= resources.CUDA_CONTEXT_MB
            assert int(job["mem_mb"]) >= resources.HOST_BASE_MB
    assert "gpu" not in plan["table1"][0]  # a report loads no model


def test_a_cpu_run_asks_for_no_gpu(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text()) | {"device": "cpu"}
    (tmp_path / "cpu.yaml").write_text(yaml.safe_dump(config))
    plan = planned_resources("reports/table1.md", "-d", str(tmp_path), "--configfile", str(tmp_path / "cpu.yaml"))
    assert {job["gpu"] for rule in ("generate", "score") for job in plan[rule]} == {"0"}


def test_readme_wall_time_table_is_the_estimate_command_output(data_dir):
    """README "Running on a GPU node" shows what `python -m harness estimate --config config/paper.yaml` prints."""
    paper = validate_config(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()) | {"data_dir": str(data_dir)})
    table = resources.wall_time_table(paper, [1, 8])
    assert table in (ROOT / "README.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert set(rows) == {"table1", "table2", "table3"}


def test_makespan_waits_for_inputs_and_fills_free_gpus():
    jobs = [resources.PlannedJob("base", 10), resources.PlannedJob("sdxl", 10),
            resources.PlannedJob("relay", 5, ("base",)), resources.PlannedJob("lcm", 1)]
    assert resources.makespan(jobs, 1) == 26
    assert resources.makespan(jobs, 2) == 15  # relay starts when base ends, lcm fills the other GPU
    assert resources.makespan(jobs, 8) == 15  # the relay chain bounds it
