"""The training loop and the distillation jobs (harness/training/): atomic checkpoints and resume
after a SIGKILL with the same final weights, the EMA and gradient-accumulation arithmetic, the exported
SAT checkpoints loading through the CogView3 systems (distilled: true) and generating, one round of
each stage end to end on the tiny models, and the CLI's errors naming the key or file."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from harness.errors import ConfigError, HarnessError
from harness.training.loop import (CHECKPOINT_NAME, LoopSettings, atomic_torch_save, ema_init, ema_update,
                                   read_checkpoint, train_loop)
from tests.conftest import ROOT, smoke_config

# ---- a toy problem: an MLP regressing noisy targets --------------------------------------------------


def toy_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.SiLU(), torch.nn.Linear(16, 4))


def toy_data(n: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g)
    return {"x": x, "y": x.flip(1) + 0.1 * torch.randn(n, 4, generator=g)}


def noisy_objective(model, batch, generator):
    noise = torch.randn(batch["x"].shape, generator=generator)
    return ((model(batch["x"] + 0.1 * noise) - batch["y"]) ** 2).mean(1)


def plain_objective(model, batch, generator):
    return ((model(batch["x"]) - batch["y"]) ** 2).mean(1)


SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch
    sys.path.insert(0, {root!r})
    torch.set_num_threads(1)
    from harness.training.loop import LoopSettings, train_loop
    from tests.test_train import noisy_objective, toy_data, toy_model

    state, out, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    calls = [0]

    def objective(model, batch, generator):
        calls[0] += 1
        if calls[0] == kill_at:  # mid-step (the second micro-batch), between checkpoints
            os.kill(os.getpid(), signal.SIGKILL)
        return noisy_objective(model, batch, generator)

    settings = LoopSettings(steps=30, batch_size=4, grad_accum=2, lr=3e-3, ema_decay=0.9, checkpoint_every=7,
                            weight_decay=0.01, warmup_steps=3, seed=5)
    model = toy_model()
    result = train_loop(model, objective, toy_data(), settings, state, progress=True, describe="toy")
    torch.save({{"model": model.state_dict(), "ema": result.ema, "losses": result.losses,
                "resumed_from": result.resumed_from}}, out)
""")


def run_toy(tmp_path: Path, state: Path, out: Path, kill_at: int = 0) -> subprocess.CompletedProcess:
    script = tmp_path / "toy_train.py"
    script.write_text(SCRIPT.format(root=str(ROOT)))
    return subprocess.run([sys.executable, str(script), str(state), str(out), str(kill_at)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_a_run_killed_mid_step_resumes_from_its_checkpoint_to_the_same_weights(tmp_path):
    straight = run_toy(tmp_path, tmp_path / "a", tmp_path / "a.pt")
    assert straight.returncode == 0, straight.stderr

    # SIGKILL in step 17's second micro-batch: the checkpoint of step 14 is the last one written
    killed = run_toy(tmp_path, tmp_path / "b", tmp_path / "b.pt", kill_at=2 * 16 + 2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "b.pt").exists()
    blob = read_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)
    assert blob["step"] == 14 and len(blob["losses"]) == 14
    assert set(blob) >= {"model", "ema", "optimizer", "rng", "step", "losses"}
    assert not [p for p in (tmp_path / "b").iterdir() if p.name != CHECKPOINT_NAME]  # no temporary file left

    resumed = run_toy(tmp_path, tmp_path / "b", tmp_path / "b.pt")
    assert resumed.returncode == 0, resumed.stderr
    a, b = torch.load(tmp_path / "a.pt"), torch.load(tmp_path / "b.pt")
    assert b["resumed_from"] == 14 and a["resumed_from"] == 0
    assert a["losses"] == b["losses"]
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert "toy:" in resumed.stderr and "loss=" in resumed.stderr  # the progress bar shows the loss


def test_a_checkpoint_write_that_dies_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "state" / CHECKPOINT_NAME
    atomic_torch_save({"format": "harness-train/1", "step": 7}, path)
    before = path.read_bytes()

    def dying_save(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # killed while writing

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"format": "harness-train/1", "step": 14}, path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [CHECKPOINT_NAME]


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path):
    settings = LoopSettings(steps=4, batch_size=2, lr=1e-2, checkpoint_every=2)
    train_loop(toy_model(), noisy_objective, toy_data(), settings, tmp_path, progress=False, fingerprint="teacher A")
    again = train_loop(toy_model(), noisy_objective, toy_data(), LoopSettings(steps=6, batch_size=2, lr=1e-2),
                       tmp_path, progress=False, fingerprint="teacher A")
    assert again.resumed_from == 4  # more steps of the same run: resumed
    other = train_loop(toy_model(), noisy_objective, toy_data(), settings, tmp_path, progress=False,
                       fingerprint="teacher B")
    assert other.resumed_from == 0
    lr = train_loop(toy_model(), noisy_objective, toy_data(), LoopSettings(steps=4, batch_size=2, lr=2e-2), tmp_path,
                    progress=False, fingerprint="teacher B")
    assert lr.resumed_from == 0


def test_ema_is_decay_times_ema_plus_one_minus_decay_times_the_weights(tmp_path):
    decay = 0.8
    model = toy_model()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    def recording(m, batch, generator):
        seen.append({k: v.detach().clone() for k, v in m.state_dict().items()})  # the weights after the last step
        return plain_objective(m, batch, generator)

    result = train_loop(model, recording, toy_data(), LoopSettings(steps=5, batch_size=4, lr=1e-2, ema_decay=decay),
                        tmp_path, progress=False)
    weights = seen[1:] + [model.state_dict()]  # after steps 1..5
    expected = {k: v.double() for k, v in init.items()}
    for w in weights:
        expected = {k: decay * expected[k] + (1 - decay) * w[k].double() for k in expected}
    for k in expected:
        torch.testing.assert_close(result.ema[k].double(), expected[k], rtol=1e-6, atol=1e-7)
    assert not torch.allclose(result.ema["0.weight"], model.state_dict()["0.weight"])

    # the update itself, on numbers
    m = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(2.0)
    ema = ema_init(m)
    with torch.no_grad():
        m.weight.fill_(4.0)
    ema_update(ema, m, 0.75)
    assert float(ema["weight"]) == pytest.approx(0.75 * 2.0 + 0.25 * 4.0)


def test_gradient_accumulation_equals_the_big_batch(tmp_path):
    data = toy_data(48)
    big, small = toy_model(), toy_model()
    common = dict(steps=3, lr=1e-2, seed=3, ema_decay=0.5, max_grad_norm=0.5)
    rb = train_loop(big, plain_objective, data, LoopSettings(batch_size=12, grad_accum=1, **common), tmp_path / "big",
                    progress=False)
    rs = train_loop(small, plain_objective, data, LoopSettings(batch_size=3, grad_accum=4, **common),
                    tmp_path / "small", progress=False)
    for (k, a), b in zip(big.state_dict().items(), small.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
    for k in rb.ema:
        torch.testing.assert_close(rb.ema[k], rs.ema[k], rtol=1e-5, atol=1e-6)
    assert rb.losses == pytest.approx(rs.losses, rel=1e-6)
    assert not torch.equal(big.state_dict()["0.weight"], toy_model().state_dict()["0.weight"])


def test_the_objective_must_return_one_loss_per_sample(tmp_path):
    with pytest.raises(ValueError, match="one value per sample"):
        train_loop(toy_model(), lambda m, b, g: plain_objective(m, b, g).mean(), toy_data(),
                   LoopSettings(steps=1, batch_size=2), tmp_path, progress=False)


# ---- export: SAT folders the CogView3 systems load ------------------------------------------------


@pytest.mark.parametrize("model", ["cogview3-base", "cogview3-relay"])
def test_an_exported_student_loads_as_a_distilled_system_and_generates(tmp_path, model):
    from PIL import Image

    from harness.training.rounds import export_sat, tiny_sat_unet_config
    from models.cogview3.training import with_guidance_projection
    from models.cogview3.unet import build_unet
    from models.registry import build_system

    teacher = build_unet(tiny_sat_unet_config(None, 32), seed=11)  # the tiny T5's 32-d states
    student = with_guidance_projection(teacher, 512 if model == "cogview3-base" else 256)
    assert float(student.time_embedding.cond_proj.weight.detach().abs().sum()) == 0.0  # zero-initialised w_proj
    g = torch.Generator().manual_seed(0)
    ema = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in student.state_dict().items()}
    export_sat(student, ema, tmp_path / "student")
    assert (tmp_path / "student" / "latest").read_text() == "1\n"
    assert not (tmp_path / "student" / ".export").exists()

    spec = {"model": model, "weights": "student", "distilled": True, "steps": 1}
    if model == "cogview3-relay":
        spec.update(input="cogview3-base", t_r=200)
    else:
        spec.update(resolution=64)
    weights = {"student": str(tmp_path / "student"), "t5": "tiny", "sdxl-vae": "tiny"}
    system = build_system("student", spec, weights, "cpu", "float32").build()
    loaded = system.unet.state_dict()
    assert loaded.keys() == ema.keys()
    for k in ema:
        assert torch.equal(loaded[k], ema[k].float()), k
    inputs = [Image.new("RGB", (64, 64), (120, 30, 200))] if model == "cogview3-relay" else None
    images = system.generate(["a red bicycle"], [7], inputs)
    assert images[0].size == ((128, 128) if model == "cogview3-relay" else (64, 64))
    # without distilled: true the checkpoint's w_proj is refused, naming the setting
    with pytest.raises(HarnessError, match="distilled"):
        build_system("student", {**spec, "distilled": False}, weights, "cpu", "float32").build()


# ---- the jobs: one round of each stage on the tiny models, through the CLI ----------------------------


def distill_config(tmp_path: Path, **distillation) -> dict:
    """The smoke profile on 2 prompts, 4 base and 2 relay steps, rounds of 2 steps of 1 x 2 samples."""
    cfg = smoke_config(tmp_path, num_prompts=2)
    cfg["systems"]["cogview3-base"]["steps"] = 4
    cfg["systems"]["cogview3"]["steps"] = 2
    cfg["distillation"].update(steps_per_round=2, batch_size=1, grad_accum=2, checkpoint_every=1, **distillation)
    return cfg


@pytest.fixture(scope="module")
def teacher_data(tmp_path_factory) -> Path:
    """The teachers' images (the data), generated once for the tests of this module that train."""
    from harness.runner import run_generation

    root = tmp_path_factory.mktemp("distill")
    cfg = distill_config(root)
    for system in ("cogview3-base", "cogview3"):  # what the DAG's generate jobs make
        run_generation(cfg, "smoke", system, progress=False)
    return root


def snapshot(cfg: dict, path: Path) -> str:
    path.write_text(json.dumps(cfg))
    return str(path)


def cli(*argv: str) -> int:
    from harness.cli import main

    return main(list(argv))


def test_one_round_of_base_and_relay_trains_resumes_exports_and_the_students_generate(teacher_data, tmp_path, capsys,
                                                                                       monkeypatch):
    from harness.training import rounds
    from models.cogview3.checkpoint import SAT_PREFIX, read_sat_state_dict, sat_state_file

    cfg = distill_config(teacher_data)
    snap = snapshot(cfg, tmp_path / "config.json")

    # the base round dies in step 3 (a crash, exit 3) after the checkpoint of step 2, and resumes from it
    real = rounds.distill_objective

    def dying(*args):
        objective, about = real(*args)
        calls = [0]

        def wrapped(student, batch, generator):
            calls[0] += 1
            if calls[0] == 5:
                raise RuntimeError("the node went away")
            return objective(student, batch, generator)

        return wrapped, about

    monkeypatch.setattr(rounds, "distill_objective", dying)
    base = ("distill", "--config-snapshot", snap, "--stage", "base", "--steps", "2", "--train-steps", "3")
    assert cli(*base) == 3
    out = Path(cfg["results_dir"]) / "distill" / "base" / "2-step"
    assert not (out / "latest").exists() and (out / ".state" / "checkpoint.pt").is_file()
    monkeypatch.setattr(rounds, "distill_objective", real)
    assert cli(*base) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from"] == 2 and metrics["steps"] == 3 and len(metrics["losses"]) == 3
    assert metrics["round"] == {"index": 1, "teacher_steps": 4, "student_steps": 2, "teacher": "tiny",
                                "teacher_distilled": False}
    assert metrics["objective"]["name"] == "BaseDistillation"
    assert metrics["objective"]["teacher_grid"] == [999, 749, 499, 249]
    assert metrics["objective"]["student_grid"] == [999, 499] and metrics["objective"]["teacher_guidance"] == "cfg"
    assert metrics["data"]["images"] == 2 and metrics["distilled"] is True
    assert not (out / ".state" / "checkpoint.pt").exists()  # keep_checkpoint: false

    assert cli("distill", "--config-snapshot", snap, "--stage", "relay", "--steps", "1") == 0
    relay = json.loads((Path(cfg["results_dir"]) / "distill" / "relay" / "1-step" / "metrics.json").read_text())
    assert relay["objective"]["name"] == "RelayDistillation" and relay["objective"]["student_grid"] == [499]
    assert relay["data"]["image_size"] == [128, 128]
    state = read_sat_state_dict(sat_state_file(Path(relay["output"])))
    assert tuple(state[SAT_PREFIX + "w_proj.weight"].shape) == (64, 256)  # the relay's 256-d guidance embedding
    assert "distill relay 2 -> 1 steps" in capsys.readouterr().out

    for student in ("student-base-2step", "student-2+1"):
        assert cli("distill-generate", "--config-snapshot", snap, "--benchmark", "smoke", "--system", student) == 0
    images = sorted((Path(cfg["results_dir"]) / "distill" / "samples" / "smoke" / "student-2+1" / "images").glob("*.png"))
    assert len(images) == 2
    from PIL import Image

    assert Image.open(images[0]).size == (128, 128)
    assert cli("distill-report", "--config-snapshot", snap, "--out", str(tmp_path / "distill.md")) == 0
    report = (tmp_path / "distill.md").read_text()
    assert "| base | 1 | 4 -> 2 | BaseDistillation | 3 (resumed at 2) |" in report
    assert "| student-2+1 | 2+1 steps |" in report


def test_train_fits_the_relay_loss_and_exports_an_undistilled_checkpoint(teacher_data, tmp_path):
    from models.cogview3.checkpoint import SAT_PREFIX, read_sat_state_dict, sat_state_file

    snap = snapshot(distill_config(teacher_data), tmp_path / "config.json")
    assert cli("train", "--config-snapshot", snap, "--stage", "relay", "--train-steps", "1",
               "--out", str(tmp_path / "relay")) == 0
    metrics = json.loads((tmp_path / "relay" / "metrics.json").read_text())
    assert metrics["objective"] == {"name": "RelayObjective", "offset_noise": 0.05, "text_dropout": 0.0, "t_r": 500}
    assert metrics["distilled"] is False and metrics["round"] is None
    state = read_sat_state_dict(sat_state_file(tmp_path / "relay"))
    assert SAT_PREFIX + "w_proj.weight" not in state


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_round_on_cuda_trains_in_bf16_autocast_with_float32_master_weights(teacher_data, tmp_path):
    from harness.training.rounds import run_round
    from models.cogview3.checkpoint import read_sat_state_dict, sat_state_file

    cfg = {**distill_config(teacher_data), "device": "cuda"}
    m = run_round(cfg, "relay", 1, out=tmp_path / "relay", progress=False)
    assert m["precision"] == "bf16" and m["device"].startswith("cuda")  # (the loop stops on a non-finite loss)
    assert {v.dtype for v in read_sat_state_dict(sat_state_file(tmp_path / "relay")).values()} == {torch.float32}


# ---- errors name the key or the file --------------------------------------------------------------


def test_cli_errors_name_the_key_or_the_file(tmp_path, capsys):
    cfg = distill_config(tmp_path)
    snap = snapshot(cfg, tmp_path / "config.json")

    assert cli("distill", "--config-snapshot", snap, "--stage", "base", "--steps", "3") == 2
    assert "config key 'distillation.base': [4, 2] has no round whose student takes 3 steps" in capsys.readouterr().err

    # the data are not there yet: the error names the manifest and how to make it
    assert cli("distill", "--config-snapshot", snap, "--stage", "relay", "--steps", "1") == 2
    err = capsys.readouterr().err
    assert f"no manifest at {cfg['results_dir']}/smoke/cogview3/manifest.jsonl" in err and "snakemake" in err

    assert cli("train", "--config-snapshot", snap, "--stage", "base", "--init", str(tmp_path / "nowhere")) == 2
    assert f"--init: {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err

    other = snapshot({**cfg, "distillation": {**cfg["distillation"], "relay_system": "cogview3-relay-x"}},
                     tmp_path / "other.json")
    assert cli("distill", "--config-snapshot", other, "--stage", "relay", "--steps", "1") == 2
    assert "config key 'distillation.relay_system': 'cogview3-relay-x' is not a system" in capsys.readouterr().err

    assert cli("distill-generate", "--config-snapshot", snap, "--benchmark", "smoke", "--system", "sdxl") == 2
    assert "--system 'sdxl': not a student" in capsys.readouterr().err


@pytest.mark.parametrize("distillation, message", [
    ({"base": [4, 3]}, "'distillation.base.1': 3 steps after 4; each round halves the steps, rounded up"),
    ({"base": [50, 25, 13]}, "'distillation.base.2': the 13-step student would be trained on t = 999, 919, 839"),
    ({"relay": [10, 5, 3], "relay_t_r": 500},
     "'distillation.relay.2': the 3-step student would be trained on t = 499, 299, 99"),
    ({"benchmark": "imagenet"}, "'distillation.benchmark': unknown benchmark 'imagenet'"),
    ({"guidance_range": [9.0, 2.0]}, "'distillation.guidance_range': [9.0, 2.0] is not [low, high]"),
    ({"lr": 0}, "'distillation.lr'"),
    ({"typo": 1}, "'distillation.typo': unknown key"),
])
def test_config_errors_name_the_distillation_key(tmp_path, distillation, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        smoke_config(tmp_path, distillation={**yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
                                              ["distillation"], **distillation})


def test_what_depends_on_the_systems_is_checked_when_training_needs_it(tmp_path, capsys):
    """Every config carries the default block: one whose `cogview3` is another model stays valid, and
    the distillation targets then name the key."""
    from harness.training.rounds import rounds

    cfg = smoke_config(tmp_path, distillation={"base_system": "sdxl", "relay": [10, 5, 3]})
    with pytest.raises(ConfigError, match="'distillation.base_system': 'sdxl' is a 'sdxl' system"):
        rounds(cfg, "base")
    with pytest.raises(ConfigError, match="'distillation.relay.2': the 3-step student would be trained on t = 499, "
                                          "299, 99 .* from T_r = 500"):
        rounds(cfg, "relay")
    snap = snapshot(cfg, tmp_path / "c.json")
    assert cli("distill", "--config-snapshot", snap, "--stage", "base", "--steps", "2") == 2
    assert "'distillation.base_system': 'sdxl' is a 'sdxl' system" in capsys.readouterr().err


def test_the_paper_schedules_keep_the_official_grids():
    from harness.training.schedule import check_schedule, schedule_grids

    base = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())["distillation"]
    grids = schedule_grids("base", base["base"])
    assert grids[3] == [999, 874, 749, 624, 499, 374, 249, 124] and grids[4] == [999, 749, 499, 249]  # spec §5
    relay = schedule_grids("relay", base["relay"], base["relay_t_r"])
    assert relay[2] == [199, 99] and relay[3] == [199]
    check_schedule("base", base["base"])
    check_schedule("relay", base["relay"], base["relay_t_r"])


def test_a_round_declares_the_memory_of_its_student_optimizer_ema_and_teacher(tmp_path):
    from harness.config import load_config
    from harness.training.resources import training_resources

    paper = load_config(ROOT / "config" / "paper.yaml")
    job = training_resources(paper, "base", 32, runtime=False)
    # fp32 weights, gradients, two AdamW moments and the EMA, plus the bf16 teacher: 22 bytes per parameter
    assert job.gpu == 1 and job.gpu_mem_mb > 2_906_612_484 * 22 / 2**20
    smoke = smoke_config(tmp_path, device="cpu")
    assert training_resources(smoke, "relay", 1, runtime=False).gpu == 0


# ---- the DAG --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_smoke_dag_distils_one_round_of_each_stage_and_the_students_generate(tmp_path):
    """`snakemake reports/distill.md` on the smoke profile (2 prompts): the teachers' images, one round of
    base and relay, the students' images and the report; a rerun does nothing, and Table 1's DAG has no
    training job."""
    from tests.helpers import snakemake

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["num_prompts"] = 2
    cfg["systems"]["cogview3-base"]["steps"] = 4
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    rc, log = snakemake(tmp_path, "reports/distill.md", "--configfile", str(tmp_path / "c.yaml"))
    assert rc == 0, log
    report = (tmp_path / "reports" / "distill.md").read_text()
    assert "| base | 1 | 4 -> 2 | BaseDistillation | 4 |" in report
    assert "| relay | 1 | 2 -> 1 | RelayDistillation | 4 |" in report
    for student, size in (("student-base-2step", 64), ("student-2+1", 128)):
        rows = [json.loads(line) for line in
                (tmp_path / "results" / "distill" / "samples" / "smoke" / student / "manifest.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and {(r["width"], r["height"]) for r in rows} == {(size, size)}
    for stage, steps in (("base", 2), ("relay", 1)):
        assert (tmp_path / "results" / "logs" / "distill_round" / stage / f"{steps}-step.log").stat().st_size > 0

    rc, log = snakemake(tmp_path, "reports/distill.md", "--configfile", str(tmp_path / "c.yaml"))
    assert rc == 0 and "Nothing to be done" in log, log

    rc, log = snakemake(tmp_path, "-n", "reports/table1.md", "--configfile", str(tmp_path / "c.yaml"))
    assert rc == 0, log
    rules = re.findall(r"^(\w+)\s+\d+$", log.split("Job stats:", 1)[1], re.M)
    assert "table1" in rules and not [r for r in rules if r.startswith("distill")], rules
