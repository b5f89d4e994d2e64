"""The training jobs: ``train`` (the relay loss of eq. 6 or the base loss, from data) and one round
of progressive distillation (``distill``), each a resumable job that exports a SAT checkpoint folder.

A schedule (config ``distillation.base`` / ``.relay``, e.g. ``[50, 25, 12, 8, 4]``) is a chain of
rounds: round i trains a student with ``schedule[i]`` steps to take, in one step, what its teacher
does in (at most) two; the teacher of round 1 is the configured system (``distillation.base_system``
/ ``relay_system``) sampling with ``schedule[0]`` steps, the teacher of round i > 1 the student of
round i - 1. Every student is w-conditioned (``w_proj``; zero-initialised in round 1, where the
teacher's classifier-free guidance is distilled into it) and is written to

    <results>/distill/<stage>/<n>-step/latest
    <results>/distill/<stage>/<n>-step/1/mp_rank_00_model_states.pt   the EMA weights, SAT layout
    <results>/distill/<stage>/<n>-step/metrics.json                    losses, timings, settings

with its training checkpoint under ``.state/`` beside them (not a Snakemake output, so a killed job's
checkpoint survives Snakemake's clean-up of its outputs and the rerun resumes from it).

The students generate as systems of a derived config (:func:`student_config`): the base student
``student-base-<n>step`` and the relay student ``student-<n>+<m>`` that relays its images; their
images go to ``<results>/distill/samples/<benchmark>/<system>/`` through the harness's runner.
"""

from __future__ import annotations

import copy
import gc
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.errors import ConfigError, HarnessError
from harness.io import atomic_write_json, atomic_write_text, digest
from harness.training.loop import CHECKPOINT_NAME, LoopSettings, train_loop
from harness.training.schedule import MODELS, check_schedule, stage_grid

log = logging.getLogger(__name__)

STAGES = ("base", "relay")
STATE_DIR = ".state"
METRICS = "metrics.json"
ITERATION = 1  # the exported SAT folder's iteration (``latest`` holds it)


# ---- where things are ----------------------------------------------------------------------------


def distill_root(config: dict[str, Any]) -> Path:
    return Path(config["results_dir"]) / "distill"


def round_dir(config: dict[str, Any], stage: str, steps: int) -> Path:
    return distill_root(config) / stage / f"{steps}-step"


def round_outputs(config: dict[str, Any], stage: str, steps: int) -> dict[str, Path]:
    """The files a finished round leaves (the Snakemake outputs of its job)."""
    from models.layouts import SAT_STATE_FILE

    folder = round_dir(config, stage, steps)
    return {"latest": folder / "latest", "state": folder / str(ITERATION) / SAT_STATE_FILE,
            "metrics": folder / METRICS}


def samples_dir(config: dict[str, Any]) -> Path:
    return distill_root(config) / "samples"


# ---- the schedule --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    stage: str
    index: int  # 1-based position in the schedule
    teacher_steps: int
    student_steps: int
    teacher_weights: str  # the teacher UNet's weights value: the system's entry (round 1) or the last round's folder
    teacher_distilled: bool
    out: Path

    @property
    def name(self) -> str:
        return f"{self.stage} {self.teacher_steps} -> {self.student_steps} steps"


def stage_system(config: dict[str, Any], stage: str) -> tuple[str, dict[str, Any]]:
    """(name, spec) of the system a stage trains and takes its data from; an error names the key."""
    if stage not in STAGES:
        raise HarnessError(f"stage {stage!r}: choose one of {', '.join(STAGES)}")
    key = f"{stage}_system"
    name = config["distillation"][key]
    spec = config["systems"].get(name)
    if spec is None:
        cands = [s for s, sp in config["systems"].items() if sp["model"] == MODELS[stage] and not sp.get("ablation")]
        raise ConfigError(f"config key 'distillation.{key}': {name!r} is not a system in this config; name a "
                          f"{MODELS[stage]} system" + (f" (here: {', '.join(cands)})" if cands else ""))
    if spec["model"] != MODELS[stage]:
        raise ConfigError(f"config key 'distillation.{key}': {name!r} is a {spec['model']!r} system; the {stage} "
                          f"schedule distils a {MODELS[stage]!r} system")
    return name, spec


def relay_t_r(config: dict[str, Any]) -> int:
    """T_r of the relay rounds: ``distillation.relay_t_r``, else the relay system's ``t_r``."""
    from models.registry import model_class

    if config["distillation"]["relay_t_r"] is not None:
        return int(config["distillation"]["relay_t_r"])
    name, spec = stage_system(config, "relay")
    return int(model_class(spec["model"]).resolve_params(spec, name)["t_r"])


def rounds(config: dict[str, Any], stage: str) -> list[Round]:
    """Every round of a stage's schedule, first first (none when the schedule has one entry)."""
    name, spec = stage_system(config, stage)
    schedule = config["distillation"][stage]
    check_schedule(stage, schedule, relay_t_r(config) if stage == "relay" else None)
    weights_key = spec.get("weights", spec["model"])
    if weights_key not in config["weights"]:
        raise ConfigError(f"config key 'systems.{name}': weights entry {weights_key!r} is missing under weights:")
    out, teacher, distilled = [], str(config["weights"][weights_key]), bool(spec.get("distilled"))
    for i in range(1, len(schedule)):
        folder = round_dir(config, stage, schedule[i])
        out.append(Round(stage, i, schedule[i - 1], schedule[i], teacher, distilled, folder))
        teacher, distilled = str(folder), True
    return out


def find_round(config: dict[str, Any], stage: str, student_steps: int) -> Round:
    for rnd in rounds(config, stage):
        if rnd.student_steps == student_steps:
            return rnd
    schedule = config["distillation"][stage]
    raise ConfigError(f"config key 'distillation.{stage}': {schedule} has no round whose student takes "
                      f"{student_steps} steps; the students are {schedule[1:] or 'none (one entry: no round)'}")


# ---- settings ------------------------------------------------------------------------------------


def loop_settings(config: dict[str, Any], steps: int | None = None) -> LoopSettings:
    d = config["distillation"]
    return LoopSettings(
        steps=steps or d["steps_per_round"], batch_size=d["batch_size"], grad_accum=d["grad_accum"], lr=d["lr"],
        weight_decay=d["weight_decay"], betas=tuple(d["betas"]), warmup_steps=d["warmup_steps"],
        max_grad_norm=d["max_grad_norm"], ema_decay=d["ema_decay"], checkpoint_every=d["checkpoint_every"],
        seed=config["seed"] if d["seed"] is None else d["seed"], log_every=d["log_every"], precision=d["precision"],
    )


# ---- models --------------------------------------------------------------------------------------


def build_stage_system(config: dict[str, Any], stage: str, weights_value: str, distilled: bool, steps: int,
                       label: str):
    """The stage system with another UNet (``weights_value``), distilled or not, sampling ``steps``:
    the teacher of a round (its UNet, VAE and T5: the T5 and VAE entries stay the system's)."""
    from models.registry import build_system

    name, spec = stage_system(config, stage)
    weights = dict(config["weights"])
    key = spec.get("weights", spec["model"])
    if weights_value != str(weights.get(key)):
        key = label
        weights[key] = weights_value
    spec = {**copy.deepcopy(spec), "weights": key, "distilled": distilled, "steps": steps}
    return build_system(name, spec, weights, config["device"], config["dtype"], batch_invariant=False)


def tiny_sat_unet_config(guidance_embed_dim: int | None, text_dim: int) -> dict[str, Any]:
    """What a ``tiny`` teacher is trained as: CogView3's topology at 64/64/128 channels with the official
    64-d attention heads (as the real-layout fixtures, harness/fixtures.py) over the tiny T5's states.

    The smoke systems' own tiny UNet has 32-d heads, which the SAT layout cannot state (a SAT file holds
    no head width; the loader takes the official 64), so its students could not load back through
    ``weights:``. This stand-in is as random as that one and exports and loads like a real checkpoint.
    """
    from models.cogview3.unet import unet_config

    return unet_config(guidance_embed_dim, channels=(64, 64, 128), head_dim=64, depths=(1, 1, 1),
                       cross_attention_dim=text_dim)


def use_sat_compatible_tiny_unet(system) -> None:
    """A built system with ``tiny`` weights gets the SAT-compatible tiny UNet (:func:`tiny_sat_unet_config`),
    seeded from its weights key as the smoke build is, in the system's dtype."""
    from models.base import move
    from models.cogview3.system import _tiny_seed
    from models.cogview3.unet import build_unet

    if not system.weights.is_tiny:
        return
    dim = system.GUIDANCE_EMBED_DIM if system.params["distilled"] else None
    text_dim = system.text_encoder.encoder.config.d_model
    unet = build_unet(tiny_sat_unet_config(dim, text_dim), seed=_tiny_seed(system.weights.key))
    system.unet = move(unet, system.device, system.dtype).eval()


def load_unet_fp32(system, distilled: bool, device: torch.device):
    """The system's UNet as float32 master weights on ``device`` (the teacher may run in bf16 on a GPU,
    the student's weights, gradients, optimizer and EMA are float32)."""
    from models.cogview3.unet import build_unet, unet_config

    dim = system.GUIDANCE_EMBED_DIM if distilled else None
    if system.weights.is_tiny:  # the stand-in of use_sat_compatible_tiny_unet, in float32
        from models.cogview3.system import _tiny_seed

        config = tiny_sat_unet_config(dim, system.text_encoder.encoder.config.d_model)
        return build_unet(config, seed=_tiny_seed(system.weights.key)).to(device)
    if system.weights.is_random:
        with torch.device(device):
            return build_unet(unet_config(dim))
    from models.cogview3.checkpoint import load_sat_unet

    return load_sat_unet(system.files().root, dim, device, torch.float32)


def export_sat(unet, ema: dict[str, torch.Tensor], folder: Path) -> Path:
    """Write the EMA weights in ``unet``'s architecture as a SAT folder (``latest`` last, so a folder
    with ``latest`` always holds a complete state file)."""
    from diffusers import UNet2DConditionModel

    from models.cogview3.checkpoint import save_sat_unet
    from models.layouts import SAT_STATE_FILE

    folder = Path(folder)
    with torch.device("meta"):
        cpu = UNet2DConditionModel.from_config(unet.config)
    cpu.load_state_dict({k: v.to("cpu", torch.float32) for k, v in ema.items()}, strict=True, assign=True)
    tmp = folder / ".export"
    shutil.rmtree(tmp, ignore_errors=True)
    written = save_sat_unet(cpu, tmp, iteration=ITERATION)
    (folder / str(ITERATION)).mkdir(parents=True, exist_ok=True)
    target = folder / str(ITERATION) / SAT_STATE_FILE
    os.replace(written, target)
    atomic_write_text(folder / "latest", f"{ITERATION}\n")
    shutil.rmtree(tmp, ignore_errors=True)
    return target


def _free(*modules) -> None:
    del modules
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- the jobs ------------------------------------------------------------------------------------


def run_round(config: dict[str, Any], stage: str, student_steps: int, *, out: str | Path | None = None,
              teacher: str | None = None, teacher_steps: int | None = None, train_steps: int | None = None,
              progress: bool = True, images=None) -> dict[str, Any]:
    """One round of progressive distillation: train the student, export its EMA weights, write the
    metrics. ``images``: the data (a :class:`harness.training.data.TrainingImages`; the micro world's stream
    when ``distillation.images`` is ``world``, which the caller draws), else the stage system's images. ``teacher``/``teacher_steps`` replace the schedule's teacher (a weights value: a SAT folder,
    ``tiny``; the teacher is then taken as distilled unless it is the system's own entry)."""
    rnd = _round(config, stage, student_steps, out, teacher, teacher_steps)
    if images is None:
        if config["distillation"]["images"] == "world":
            raise HarnessError("distillation.images is 'world': pass the micro world's stream as images= "
                               "(harness.micro.train.distillation_images; `python -m harness distill` does)")
        _require_data(config, stage)
    label = f"distill {rnd.name}"
    teacher_sys = build_stage_system(config, stage, rnd.teacher_weights, rnd.teacher_distilled, rnd.teacher_steps,
                                     f"{stage}-teacher-{rnd.teacher_steps}step").build()
    use_sat_compatible_tiny_unet(teacher_sys)
    return _run(config, stage, rnd.out, label, teacher_sys, kind="distill", rnd=rnd, train_steps=train_steps,
                progress=progress, make_objective=lambda student: distill_objective(config, stage, rnd, teacher_sys),
                images=images)


def run_train(config: dict[str, Any], stage: str, *, out: str | Path | None = None, init: str | None = None,
              train_steps: int | None = None, progress: bool = True, images=None) -> dict[str, Any]:
    """Train a stage on its own loss from data (the relay loss of eq. 6, or the base loss), starting
    from the stage system's weights (or ``init``, a weights value); exported like a round. The data are the
    stage system's images on ``distillation.benchmark``, or ``images`` (a
    :class:`harness.training.data.TrainingImages`, e.g. the micro world's stream)."""
    name, spec = stage_system(config, stage)
    key = spec.get("weights", spec["model"])
    weights = str(init if init is not None else config["weights"][key])
    distilled = bool(spec.get("distilled"))
    out = Path(out) if out is not None else Path(config["results_dir"]) / "train" / stage
    if init is not None and init not in ("tiny", "random") and not Path(os.path.expandvars(init)).expanduser().exists():
        raise HarnessError(f"--init: {init} does not exist; give a SAT checkpoint folder (latest + <iteration>/"
                           "mp_rank_00_model_states.pt), tiny, or leave it out for the stage system's weights")
    if images is None:
        _require_data(config, stage)
    system = build_stage_system(config, stage, weights, distilled, spec.get("steps") or 1, f"{stage}-init").build()
    use_sat_compatible_tiny_unet(system)
    return _run(config, stage, out, f"train {stage}", system, kind="train", rnd=None, train_steps=train_steps,
                progress=progress, make_objective=lambda student: train_objective(config, stage, system),
                images=images)


def _require_data(config: dict[str, Any], stage: str) -> None:
    """The stage's data are in place (before any model is loaded: the error comes in seconds)."""
    from harness.training.data import manifest_images

    manifest_images(config, config["distillation"]["benchmark"], stage_system(config, stage)[0])


def _round(config, stage, student_steps, out, teacher, teacher_steps) -> Round:
    if teacher is None and teacher_steps is None:
        rnd = find_round(config, stage, student_steps)
    else:
        rnd = None
        for r in rounds(config, stage):
            if r.student_steps == student_steps:
                rnd = r
        _, spec = stage_system(config, stage)
        own = str(config["weights"][spec.get("weights", spec["model"])])
        t_weights = teacher if teacher is not None else (rnd.teacher_weights if rnd else own)
        t_steps = teacher_steps if teacher_steps is not None else (rnd.teacher_steps if rnd else None)
        if t_steps is None:
            raise HarnessError(f"--teacher-steps: {student_steps} is not a student of distillation.{stage}; say how "
                               "many steps the teacher takes")
        if not t_steps // 2 <= student_steps < t_steps:
            raise HarnessError(f"--steps {student_steps} after a {t_steps}-step teacher: a student takes fewer steps "
                               "than its teacher and at least half as many")
        distilled = bool(spec.get("distilled")) if t_weights == own else True
        rnd = Round(stage, rnd.index if rnd else 0, t_steps, student_steps, t_weights, distilled,
                    rnd.out if rnd else round_dir(config, stage, student_steps))
    if out is not None:
        rnd = Round(rnd.stage, rnd.index, rnd.teacher_steps, rnd.student_steps, rnd.teacher_weights,
                    rnd.teacher_distilled, Path(out))
    if rnd.teacher_weights not in ("tiny", "random") and rnd.index != 1 and not (Path(rnd.teacher_weights) / "latest").is_file():
        raise HarnessError(f"the teacher of {rnd.name} is {rnd.teacher_weights}, which holds no finished round "
                           f"(no latest file): run the {rnd.teacher_steps}-step round first (`python -m harness "
                           f"distill --stage {stage} --steps {rnd.teacher_steps}`)")
    return rnd


def _run(config, stage, out, label, system, *, kind, rnd, train_steps, progress, make_objective,
         images=None) -> dict[str, Any]:
    from harness.training.data import encode_data, manifest_images

    t_start = time.perf_counter()
    out = Path(out)
    d = config["distillation"]
    settings = loop_settings(config, train_steps)
    data_system, _ = stage_system(config, stage)
    if images is None:
        images = manifest_images(config, d["benchmark"], data_system)
    data, about = encode_data(config, stage, images, system, settings.seed, batch_size=d["batch_size"],
                              progress=progress)
    device = system.device
    student = load_unet_fp32(system, system.params["distilled"], device)
    system.text_encoder = None  # T5 is done (T5-XXL is 4.7 B parameters)
    _free()
    if kind == "distill":
        from models.cogview3.training import with_guidance_projection

        student = with_guidance_projection(student, system.GUIDANCE_EMBED_DIM)
    if d["gradient_checkpointing"]:
        student.enable_gradient_checkpointing()
    objective, objective_about = make_objective(student)
    identity = {"kind": kind, "stage": stage, "label": label, "objective": objective_about,
                "teacher": system.weights_fingerprint()[system.weights.key], "data": about["cache_key"],
                "student_distilled": kind == "distill" or bool(system.params["distilled"])}
    t_loop = time.perf_counter()
    result = train_loop(student, objective, data, settings, out / STATE_DIR, fingerprint=digest(identity),
                        device=device, progress=progress, describe=label)
    export_sat(student, result.ema, out)
    wall = time.perf_counter() - t_start
    n = len(result.losses)
    window = max(1, min(10, n // 4 or 1))
    metrics = {
        "kind": kind, "stage": stage, "label": label, "output": str(out),
        "round": None if rnd is None else {"index": rnd.index, "teacher_steps": rnd.teacher_steps,
                                           "student_steps": rnd.student_steps, "teacher": rnd.teacher_weights,
                                           "teacher_distilled": rnd.teacher_distilled},
        "objective": objective_about, "data": about, "settings": {**settings.identity(), "steps": settings.steps},
        "device": result.device, "precision": result.precision,
        "steps": result.steps, "resumed_from": result.resumed_from, "losses": result.losses,
        "loss_first": sum(result.losses[:window]) / window, "loss_last": sum(result.losses[-window:]) / window,
        "loss_window": window,
        "job_wall_s": wall, "setup_wall_s": t_loop - t_start, "loop_wall_s": result.wall_s,
        "train_wall_s": result.train_wall_s,
        "seconds_per_step": result.train_wall_s / max(1, settings.steps),
        "distilled": identity["student_distilled"],
    }
    atomic_write_json(out / METRICS, metrics)
    if not d["keep_checkpoint"]:
        (out / STATE_DIR / CHECKPOINT_NAME).unlink(missing_ok=True)
    log.info("%s: %d steps, loss %.4g -> %.4g, %.1f s (loop %.1f s) -> %s", label, settings.steps,
             metrics["loss_first"], metrics["loss_last"], wall, result.wall_s, out)
    return metrics


# ---- objectives (the equations: models.cogview3.training) -----------------------------------------


def relay_sampling(config: dict[str, Any]) -> dict[str, Any]:
    """How the relay rounds and their students take a relay step: the relay system's blending and step
    form (``form`` where the system has it; the official closed form otherwise) on ``relay_t_r``."""
    from models.registry import model_class

    name, spec = stage_system(config, "relay")
    params = model_class(spec["model"]).resolve_params(spec, name)
    return {"t_r": relay_t_r(config), "blending": params["blending"], "form": params.get("form", "official")}


def distill_objective(config: dict[str, Any], stage: str, rnd: Round, teacher_sys):
    """(objective, its description) of one round: :class:`models.cogview3.training.BaseDistillation` or
    ``RelayDistillation`` with the teacher's UNet on the teacher's grid. A teacher without ``w_proj``
    (round 1) applies CFG with the w drawn per sample, which the student learns through its guidance
    embedding; a distilled teacher is fed the same w through its own."""
    from models.cogview3 import training as T

    teacher = teacher_sys.unet.eval().requires_grad_(False)
    kw = dict(w_range=tuple(config["distillation"]["guidance_range"]),
              student_embed_dim=teacher_sys.GUIDANCE_EMBED_DIM)
    about: dict[str, Any] = {}
    if stage == "base":
        grid = stage_grid("base", rnd.teacher_steps)
        objective = T.BaseDistillation(teacher, grid, **kw)
        about["weighting"] = objective.weighting
    else:
        how = relay_sampling(config)
        grid = stage_grid("relay", rnd.teacher_steps, how["t_r"])
        objective = T.RelayDistillation(teacher, grid, form=how["form"], blending=how["blending"], t_r=how["t_r"], **kw)
        about.update(how)
    if len(objective.student_grid) != rnd.student_steps:
        raise HarnessError(f"{rnd.name}: halving the teacher's {len(grid)}-point grid gives {len(objective.student_grid)} "
                           f"student steps, not {rnd.student_steps}")
    about = {"name": type(objective).__name__, "teacher_grid": grid, "student_grid": objective.student_grid,
             "teacher_guidance": objective.teacher_guidance, "w_range": list(objective.w_range or []), **about}
    return objective, about


def train_objective(config: dict[str, Any], stage: str, system):
    """(objective, description) of ``train``: the relay loss of eq. 6 (``RelayObjective``, t < 500 as the
    official relay config) or the base eps loss (``BaseObjective``), both with offset noise 0.05 and text
    states zeroed with probability ``distillation.text_dropout``."""
    from models.cogview3 import training as T

    dropout = float(config["distillation"]["text_dropout"])
    objective = T.RelayObjective(text_dropout=dropout) if stage == "relay" else T.BaseObjective(text_dropout=dropout)
    about = {"name": type(objective).__name__, "offset_noise": objective.offset_noise, "text_dropout": dropout}
    if stage == "relay":
        about["t_r"] = objective.t_r
    return objective, about


# ---- the students as systems ---------------------------------------------------------------------


def student_names(config: dict[str, Any]) -> dict[str, str]:
    """{'base': name, 'relay': name} of the final students that generate (a stage without rounds: none)."""
    d = config["distillation"]
    out = {}
    if len(d["base"]) > 1:
        out["base"] = f"student-base-{d['base'][-1]}step"
    if len(d["relay"]) > 1 and len(d["base"]) > 1:
        out["relay"] = f"student-{d['base'][-1]}+{d['relay'][-1]}"
    return out


def student_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config the students generate under: the run's settings, the final students as its only
    systems (each a weights entry pointing at its round's folder), results under distill/samples/."""
    from harness.config import validate_config

    names = student_names(config)
    if not names:
        raise ConfigError("config key 'distillation.base': a schedule of one entry has no round, so there is no "
                          "student to generate with; give at least two entries (teacher steps, student steps)")
    d = config["distillation"]
    _, base_spec = stage_system(config, "base")
    systems, weights = {}, dict(config["weights"])
    n = d["base"][-1]
    weights[names["base"]] = str(round_dir(config, "base", n))
    systems[names["base"]] = {**_plain(base_spec), "weights": names["base"], "distilled": True, "steps": n}
    if "relay" in names:
        _, relay_spec = stage_system(config, "relay")
        m = d["relay"][-1]
        weights[names["relay"]] = str(round_dir(config, "relay", m))
        systems[names["relay"]] = {**_plain(relay_spec), "input": names["base"], "weights": names["relay"],
                                   "distilled": True, "steps": m, "t_r": relay_t_r(config)}
    raw = {k: copy.deepcopy(v) for k, v in config.items() if k not in ("systems", "weights")}
    raw.update(systems=systems, weights=weights, results_dir=str(samples_dir(config)), tr_sweep=[],
               expansion={"enabled": False}, benchmarks=[d["benchmark"]])
    return validate_config(raw)


def _plain(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in spec.items() if k not in ("ablation", "expand")}
