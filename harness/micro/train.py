"""The micro world's models, trained by the DAG before anything generates (config key ``micro``; README "The
micro world").

Every model is written in its upstream layout under ``<results_dir>/micro/`` and read back through the
config's ``weights:`` entries, exactly as a user's real checkpoints are:

- the text encoder (``micro.text_encoder``): a frozen random T5 with the world's word-level vocabulary, in
  CogVideoX-2b's ``tokenizer/`` + ``text_encoder/`` layout (:func:`harness.micro.models.write_text_encoder`);
- the VAE (``micro.vae``): trained on world renders, a diffusers ``AutoencoderKL`` folder
  (:func:`harness.micro.models.train_autoencoder`);
- each diffusion model (``micro.models``): a fresh CogView3-topology UNet trained on the world's stream by the
  project's training code (:func:`harness.training.rounds.run_train`: the base loss, or the relay loss of
  eq. 6), exported as a SAT folder. The single-stage baseline ("the SDXL of this world") is a base-stage model
  trained at the high resolution.

The distilled students come from ``distillation`` (its rounds read the world's stream when
``distillation.images`` is ``world``): :func:`harness.training.rounds.run_round`.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, HarnessError

from harness.micro.paths import (VAE_FOLDER, check_micro, expected_weights, micro_dir, model_dir,  # noqa: F401
                                 path_key, same_path, text_encoder_path, vae_dir)


def trained_markers(config: dict[str, Any]) -> dict[str, list[str]]:
    """Normalised weights path -> the files that show the DAG finished writing it (Snakemake inputs of the
    jobs that read it): the micro models and the distillation rounds' students."""
    from harness.training.rounds import round_outputs, rounds

    out: dict[str, list[str]] = {}
    micro = config.get("micro")
    if micro:
        out[path_key(text_encoder_path(config))] = [str(text_encoder_path(config) / "text_encoder" / "config.json")]
        vae = vae_dir(config) / VAE_FOLDER
        out[path_key(vae)] = [str(vae / "config.json")]
        for key in micro["models"]:
            out[path_key(model_dir(config, key))] = [str(model_dir(config, key) / "latest")]
    for stage in ("base", "relay"):
        try:
            stage_rounds = rounds(config, stage)
        except HarnessError:  # no CogView3 stage system of that name (ConfigError): the config distils nothing
            continue
        for rnd in stage_rounds:
            files = round_outputs(config, stage, rnd.student_steps)
            out[path_key(rnd.out)] = [str(files["latest"])]
    return out


def weights_markers(config: dict[str, Any], keys) -> list[str]:
    """The marker files of the weights entries among ``keys`` that the DAG makes (inputs of a job)."""
    made = trained_markers(config)
    out = []
    for key in keys:
        value = config["weights"].get(key)
        if value is not None:
            out += made.get(path_key(value), [])
    return out


def is_trained_here(config: dict[str, Any], key: str) -> bool:
    value = config["weights"].get(key)
    return value is not None and path_key(value) in trained_markers(config)


# ---- the jobs ----------------------------------------------------------------------------------------------


def _settings(spec: dict[str, Any], seed: int):
    from harness.training.loop import LoopSettings

    return LoopSettings(steps=spec["steps"], batch_size=spec["batch_size"], lr=spec["lr"],
                        warmup_steps=spec["warmup_steps"], ema_decay=spec["ema_decay"],
                        checkpoint_every=spec["checkpoint_every"], log_every=spec["log_every"], seed=seed)


def train_text_encoder(config: dict[str, Any]) -> dict[str, Any]:
    from harness.micro.models import TEXT_ENCODER_SEED, write_text_encoder

    folder = text_encoder_path(config)
    tmp = folder.with_name(f".{folder.name}.tmp")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    write_text_encoder(tmp, seed=TEXT_ENCODER_SEED)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return {"output": str(folder), "seed": TEXT_ENCODER_SEED}


def train_vae(config: dict[str, Any], progress: bool = False) -> dict[str, Any]:
    from harness.io import atomic_write_json
    from harness.micro.models import train_autoencoder

    spec = config["micro"]["vae"]
    out = vae_dir(config)
    about = train_autoencoder(out, spec["size"], _settings(spec, config["micro"]["seed"]), crop=spec["crop"],
                              progress=progress)
    n = len(about["losses"])
    window = max(1, min(50, n // 4 or 1))
    metrics = {"kind": "vae", "output": str(out / VAE_FOLDER), **{k: v for k, v in about.items() if k != "losses"},
               "loss_first": sum(about["losses"][:window]) / window, "loss_last": sum(about["losses"][-window:]) / window,
               "losses": about["losses"]}
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def stage_config(config: dict[str, Any], key: str) -> dict[str, Any]:
    """The config a micro model trains under: ``distillation``'s optimizer settings replaced by the model's."""
    spec = config["micro"]["models"][key]
    cfg = copy.deepcopy(config)
    cfg["distillation"].update(batch_size=spec["batch_size"], grad_accum=1, lr=spec["lr"],
                               warmup_steps=spec["warmup_steps"], ema_decay=spec["ema_decay"],
                               checkpoint_every=spec["checkpoint_every"], log_every=spec["log_every"],
                               seed=config["micro"]["seed"], text_dropout=spec["text_dropout"])
    return cfg


def train_model(config: dict[str, Any], key: str, progress: bool = False) -> dict[str, Any]:
    """One diffusion model of ``micro.models`` from a fresh UNet (seeded by ``micro.seed`` and the model's
    place in the list) on the world's stream at its resolution."""
    import json

    from harness.fixtures import T5_D_MODEL
    from harness.micro.models import world_images, write_initial_unet
    from harness.training.rounds import run_train

    micro = config["micro"]
    if key not in micro["models"]:
        raise ConfigError(f"--model {key!r}: not a model of config key 'micro.models' ({', '.join(micro['models'])})")
    spec = micro["models"][key]
    out = model_dir(config, key)
    t5_config = text_encoder_path(config) / "text_encoder" / "config.json"
    text_dim = json.loads(t5_config.read_text())["d_model"] if t5_config.is_file() else T5_D_MODEL
    seed = 1000 * micro["seed"] + list(micro["models"]).index(key)
    init = write_initial_unet(out / ".state" / "init", seed=seed, text_dim=text_dim)
    return run_train(stage_config(config, key), spec["stage"], out=out, init=str(init), train_steps=spec["steps"],
                     images=world_images(spec["examples"], spec["resolution"]), progress=progress)


def distillation_images(config: dict[str, Any], stage: str):
    """The world's stream as a distillation round's data (``distillation.images: world``): the base stage at
    its system's resolution, the relay stage at twice that (the relay's output size)."""
    from harness.micro.models import world_images
    from harness.training.rounds import stage_system
    from models.registry import model_class

    _, spec = stage_system(config, "base")
    size = int(model_class(spec["model"]).resolve_params(spec, config["distillation"]["base_system"])["resolution"])
    return world_images(config["distillation"]["world_examples"], size * (2 if stage == "relay" else 1))
