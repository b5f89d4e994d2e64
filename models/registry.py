"""The system registry: model name (the ``model:`` key of a system in the config) -> class.

Adding a generator touches this table and its own module. Entries are import strings so that
reading the config (and validating it) does not import diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

from harness.errors import ConfigError
from models.base import System, WeightsSpec

MODELS: dict[str, str] = {
    "sdxl": "models.sdxl:SDXLSystem",
    "lcm-sdxl": "models.sdxl:LCMSDXLSystem",
    "stable-cascade": "models.stable_cascade:StableCascadeSystem",
    "cogview3-base": "models.cogview3.system:CogView3BaseSystem",
    "cogview3-relay": "models.cogview3.system:CogView3RelaySystem",
}


def lookup(table: dict[str, str], name: str, what: str):
    """The class a registry table names as ``"module:Class"``; an unknown name is a ConfigError."""
    if name not in table:
        raise ConfigError(f"{what}: unknown name {name!r}; known: {', '.join(sorted(table))}")
    module_name, cls_name = table[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def model_class(model: str, where: str = "model") -> type[System]:
    return lookup(MODELS, model, f"config key {where}")


def system_weight_keys(name: str, spec: dict[str, Any], weights: dict[str, str] | None = None) -> list[str]:
    """The ``weights:`` entries system ``name`` reads (main weights first); with ``weights``, each
    must be present or the error names the missing entry."""
    cls = model_class(spec.get("model", ""), f"systems.{name}.model")
    keys = cls.weight_keys({**cls.resolve_params(spec, name), **spec})
    for key in keys if weights is not None else ():
        if key not in weights:
            raise ConfigError(
                f"config key 'systems.{name}': weights entry {key!r} is missing under weights:; "
                f"add `{key}: tiny` (random offline weights) or a local path there"
            )
    return keys


def build_system(
    name: str,
    spec: dict[str, Any],
    weights: dict[str, str],
    device: str = "auto",
    dtype: str = "auto",
    batch_invariant: bool = False,
) -> System:
    """Instantiate (not yet load) the system called ``name`` from its config ``spec``."""
    cls = model_class(spec.get("model", ""), f"systems.{name}.model")
    weights_key = system_weight_keys(name, spec, weights)[0]
    return cls(name, spec, WeightsSpec(weights_key, str(weights[weights_key])), device=device, dtype=dtype,
               batch_invariant=batch_invariant, all_weights=weights)
