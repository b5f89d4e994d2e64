"""Where the micro world's models go (config key ``micro``), and the config check that each weights entry names
that place. No training code here: :mod:`harness.config` imports it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

#: the VAE's weights folder inside its training folder
VAE_FOLDER = "vae"


def micro_dir(config: dict[str, Any]) -> Path:
    return Path(config["results_dir"]) / "micro"


def text_encoder_path(config: dict[str, Any]) -> Path:
    return micro_dir(config) / "t5"


def vae_dir(config: dict[str, Any]) -> Path:
    """The VAE's training folder (its resumable state and metrics); the weights are its ``vae/`` folder."""
    return micro_dir(config) / "vae"


def model_dir(config: dict[str, Any], key: str) -> Path:
    return micro_dir(config) / key


def expected_weights(config: dict[str, Any]) -> dict[str, Path]:
    """weights key -> the path the DAG writes it to, for every model ``micro`` trains (none without it)."""
    micro = config.get("micro")
    if not micro:
        return {}
    out = {micro["text_encoder"]["key"]: text_encoder_path(config), micro["vae"]["key"]: vae_dir(config) / VAE_FOLDER}
    out.update({key: model_dir(config, key) for key in micro["models"]})
    return out


def path_key(value: str | Path) -> str:
    """A weights value or a path as the DAG compares them: variables expanded, normalised."""
    return os.path.normpath(os.path.expandvars(str(value)))


def same_path(a: str | Path, b: str | Path) -> bool:
    return path_key(a) == path_key(b)


def check_micro(config: dict[str, Any]) -> None:
    """Each model ``micro`` trains is what its weights entry reads (else the run would train a model and
    generate with another); a model's stage and the distillation data are consistent."""
    micro = config.get("micro")
    if not micro:
        if config["distillation"]["images"] == "world":
            raise ConfigError("config key 'distillation.images': 'world' draws the micro world's training stream; it "
                              "needs the micro world (config key 'micro', see config/micro.yaml)")
        return
    for key, path in expected_weights(config).items():
        if key not in config["weights"]:
            raise ConfigError(f"config key 'weights.{key}': missing; the micro world trains it into {path}: set "
                              f"`{key}: {path}`")
        if not same_path(config["weights"][key], path):
            raise ConfigError(f"config key 'weights.{key}': {config['weights'][key]!r} is not where the micro world "
                              f"trains it; set `{key}: {path}` (or take {key!r} out of config key 'micro')")
    # the models train on T5 states of the base system's token count; a system padding to another count would
    # read states unlike any it was trained on, and nothing would fail
    from models.registry import model_class

    lengths = {}
    for name, spec in config["systems"].items():
        params = model_class(spec["model"]).PARAMS
        if "text_tokens" in params:  # the CogView3 stages (their default: the official 225)
            lengths[name] = spec.get("text_tokens", params["text_tokens"]["default"])
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name}: {n}" for name, n in sorted(lengths.items()))
        raise ConfigError(f"config key 'systems.*.text_tokens': the micro world's models train on one T5 length, "
                          f"but its systems differ ({listed}); give every CogView3 system the same text_tokens")
