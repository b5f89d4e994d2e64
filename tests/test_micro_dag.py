"""The micro world through the DAG (config/micro.yaml, README "The micro world").

Default suite: the config's checks (a trained model must be read back from where the DAG writes it) and the
plan (training before generation). Marked ``micro`` (run by ``.ci/run`` after ``make micro-gate``, which trains
the world in ``results-micro/``): a rerun does nothing, the models are in their upstream layouts, an untrained
model scores near chance, and a tiny schedule killed during training resumes from its checkpoint."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.config import load_config, validate_config
from harness.errors import ConfigError
from tests.conftest import ROOT

MICRO = ROOT / "config" / "micro.yaml"


def micro_raw() -> dict:
    return yaml.safe_load(MICRO.read_text())


def micro_config_in(workdir: Path, **changes) -> Path:
    """config/micro.yaml for a run in ``workdir`` (its relative paths resolve there), with ``changes``."""
    raw = micro_raw()
    for key, value in changes.items():
        raw[key] = value
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "micro.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def snakemake(workdir: Path, config: Path, *targets: str, dry: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2",
           *(targets or ("reports/table1.md", "reports/table3.md")), "--configfile", str(config)]
    if dry:
        cmd.insert(3, "-n")
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


# ---- the config ------------------------------------------------------------------------------------------


def test_the_micro_config_is_valid_and_trains_what_its_systems_read():
    cfg = load_config(MICRO)
    from harness.micro.train import expected_weights, is_trained_here

    assert cfg["profile"] == "micro" and cfg["benchmarks"] == ["micro-drawbench"]
    trained = expected_weights(cfg)
    assert set(trained) == {"t5", "sdxl-vae", "cogview3-base", "cogview3-relay", "micro-single"}
    assert all(is_trained_here(cfg, k) for k in cfg["weights"])  # the distilled students too


def test_a_weights_entry_elsewhere_than_where_the_world_trains_it_is_an_error():
    raw = micro_raw()
    raw["weights"]["cogview3-base"] = "/ckpt/cogview3-base"
    with pytest.raises(ConfigError, match=r"weights\.cogview3-base.*set `cogview3-base: results-micro/micro/cogview3-base`"):
        validate_config(raw)


def test_systems_padding_to_different_t5_lengths_are_an_error():
    raw = micro_raw()
    raw["systems"]["single-stage"]["text_tokens"] = 225
    with pytest.raises(ConfigError, match=r"text_tokens.*single-stage: 225"):
        validate_config(raw)


def test_world_images_for_distillation_need_the_micro_world():
    raw = micro_raw()
    raw["micro"] = None
    with pytest.raises(ConfigError, match=r"distillation\.images.*needs the micro world"):
        validate_config(raw)


def test_the_plan_trains_every_model_before_anything_that_reads_it_generates(tmp_path):
    proc = snakemake(tmp_path, micro_config_in(tmp_path), dry=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    assert counts["micro_text_encoder"] == "1" and counts["micro_vae"] == "1" and counts["micro_model"] == "3"
    assert counts["distill_round"] == "4"
    # generation reads the trained files as inputs: the job that generates the base stage waits on its model
    blocks = re.split(r"\n(?:local)?rule ", out)
    [block] = [b for b in blocks if "output: results-micro/micro-drawbench/cogview3-base/manifest.jsonl" in b]
    inputs = next(line for line in block.splitlines() if line.strip().startswith("input:"))
    assert "results-micro/micro/cogview3-base/latest" in inputs and "results-micro/micro/vae/vae/config.json" in inputs


# ---- the trained world (CI: make micro-gate first) --------------------------------------------------------


def trained_world() -> Path:
    results = ROOT / "results-micro"
    if not (results / "micro-drawbench" / "cogview3" / "manifest.jsonl").is_file():
        message = "no trained micro world in results-micro/: run `make micro` first"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(message)
        pytest.skip(message)
    return results


@pytest.mark.micro
def test_a_rerun_of_the_micro_world_trains_and_generates_nothing():
    trained_world()
    proc = snakemake(ROOT, MICRO, dry=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]


@pytest.mark.micro
def test_the_models_are_written_in_their_upstream_layouts_and_the_reports_say_what_they_are():
    from harness.render import BANNERS
    from models.layouts import SAT_STATE_FILE

    results = trained_world()
    micro = results / "micro"
    assert (micro / "t5" / "tokenizer" / "tokenizer_config.json").is_file()
    assert (micro / "t5" / "text_encoder" / "config.json").is_file()
    assert {p.name for p in (micro / "vae" / "vae").iterdir()} == {"config.json", "diffusion_pytorch_model.safetensors"}
    for folder in ("cogview3-base", "cogview3-relay", "micro-single", "../distill/base/4-step", "../distill/relay/1-step"):
        assert (micro / folder / "latest").read_text().strip() == "1"
        assert (micro / folder / "1" / SAT_STATE_FILE).is_file()
    for report in ("table1.md", "table3.md"):
        assert (ROOT / "reports" / report).read_text().splitlines()[0] == BANNERS["micro"]


@pytest.mark.micro
def test_an_untrained_base_scores_near_chance_and_the_trained_one_above_it():
    """The judge's floor: the base stage with its fresh initial weights (what training started from)."""
    from statistics import mean

    from harness.micro.judge import judge
    from harness.micro.world import evaluation_prompts
    from PIL import Image

    from models.registry import build_system

    results = trained_world()
    cfg = load_config(MICRO)
    weights = {**cfg["weights"], "untrained": str(results / "micro" / "cogview3-base" / ".state" / "init")}
    spec = {**cfg["systems"]["cogview3-base"], "weights": "untrained"}
    system = build_system("untrained", spec, weights, "cpu", "float32", batch_invariant=False)
    rows = evaluation_prompts()[::4]
    images = []
    for i in range(0, len(rows), 14):
        images += system.generate([c for _, c, _ in rows[i:i + 14]], list(range(i, i + len(rows[i:i + 14]))))
    untrained = mean(judge(im, c).score for im, (_, c, _) in zip(images, rows))
    # the trained base's images of the same prompts, as the DAG generated them (a stage: not scored on its own)
    stage = results / "micro-drawbench" / "cogview3-base"
    made = {r["prompt_id"]: stage / r["image"] for r in map(json.loads, (stage / "manifest.jsonl").read_text().splitlines())}
    trained = mean(judge(Image.open(made[i]), c).score for i, c, _ in rows)
    print(f"judge: untrained base {untrained:.3f}, trained base {trained:.3f} (the same {len(rows)} prompts)")
    assert untrained < 0.2  # shuffled ground-truth captions score 0.20 (tests/test_micro_world.py)
    assert trained > untrained


@pytest.mark.micro
def test_a_micro_run_killed_during_training_resumes_from_its_checkpoint(tmp_path):
    """A tiny schedule (a few steps per model, 28 prompts), SIGKILLed while the base model trains past its
    first checkpoint, then the same command: the base resumes from that checkpoint, and a third run does nothing."""
    raw = micro_raw()
    raw["micro"] = {"seed": 0, "vae": {"size": 64, "crop": 32, "steps": 4, "batch_size": 4},
                    "models": {"cogview3-base": {"stage": "base", "resolution": 64, "steps": 60, "examples": 64,
                                                 "batch_size": 4, "checkpoint_every": 10, "log_every": 1},
                               "cogview3-relay": {"stage": "relay", "resolution": 128, "steps": 2, "examples": 16,
                                                  "batch_size": 4},
                               "micro-single": {"stage": "base", "resolution": 128, "steps": 2, "examples": 16,
                                                "batch_size": 4}}}
    raw["distillation"].update(steps_per_round=2, world_examples=16, batch_size=4)
    raw.update(num_prompts=14, tr_sweep=[500], thresholds="config/thresholds.micro.yaml")
    for name in ("single-stage", "cogview3-base"):
        raw["systems"][name]["steps"] = 4
    raw["systems"]["cogview3"]["steps"] = 2
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "thresholds.micro.yaml").write_text((ROOT / "config" / "thresholds.micro.yaml").read_text())
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--cores", "2",
           "reports/table1.md", "--configfile", str(path)]
    state = tmp_path / "results-micro" / "micro" / "cogview3-base" / ".state" / "checkpoint.pt"
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})
        deadline = time.monotonic() + 600
        base_log = tmp_path / "results-micro" / "logs" / "micro" / "cogview3-base.log"
        # step 20 is logged just before its checkpoint is written: kill after step 21, past that checkpoint
        while not (base_log.is_file() and re.search(r"step (2[1-9]|3\d)/60", base_log.read_text())):
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the base model never trained past step 21"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert state.is_file() and not (tmp_path / "results-micro" / "micro" / "cogview3-base" / "latest").exists()
    rerun = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1800,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-3000:]
    metrics = json.loads((tmp_path / "results-micro" / "micro" / "cogview3-base" / "metrics.json").read_text())
    assert metrics["resumed_from"] >= 20 and metrics["steps"] == 60
    again = subprocess.run([*cmd, "-n"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert "Nothing to be done" in again.stdout + again.stderr
