"""Load and validate the harness config; every failure names the key and what is wrong with it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "workflows" / "schema" / "config.schema.yaml"


def load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _schema_error(config: dict[str, Any], schema: dict[str, Any]) -> ConfigError | None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if not errors:
        return None
    err = errors[0]
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = set((err.schema.get("properties") or {}).keys())
        extra = sorted(k for k in err.instance if k not in allowed)
        where = _key([*err.absolute_path, extra[0]]) if extra else _key(err.absolute_path)
        known = ", ".join(sorted(allowed))
        return ConfigError(f"config key {where!r}: unknown key; known keys here: {known}")
    if err.validator == "required":
        return ConfigError(f"config key {_key(err.absolute_path)!r}: {err.message}")
    if err.validator == "propertyNames":
        return ConfigError(f"config key {_key(err.absolute_path)!r}: name {err.instance!r} must match {err.validator_value}")
    return ConfigError(f"config key {_key(err.absolute_path)!r}: {err.message}")


def apply_defaults(config: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(config)
    for key, prop in schema.get("properties", {}).items():
        if key not in out and "default" in prop:
            out[key] = copy.deepcopy(prop["default"])
    return out


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Return the config with defaults filled in, or raise :class:`ConfigError` naming the bad key."""
    from harness.scorers.registry import SCORERS
    from models.registry import model_class, system_weight_keys

    if not isinstance(config, dict):
        raise ConfigError("config: the top level must be a mapping of keys to values")
    schema = load_schema()
    error = _schema_error(config, schema)
    if error:
        raise error
    config = apply_defaults(config, schema)
    config["expansion"] = apply_defaults(config["expansion"], schema["properties"]["expansion"])
    _check_expansion(config["expansion"])
    config["humaneval"] = apply_defaults(config["humaneval"], schema["properties"]["humaneval"])

    _check_benchmarks(config)

    from harness.ablations import derive_systems

    config["systems"] = derive_systems(config)
    for name, spec in config["systems"].items():
        cls = model_class(spec["model"], f"systems.{name}.model")
        error = _schema_error(spec, cls.params_schema())
        if error:
            # Re-root the key at systems.<name> so the message points into the config file.
            raise ConfigError(str(error).replace("config key '", f"config key 'systems.{name}.", 1).replace("'systems." + name + ".(top level)'", f"'systems.{name}'"))
        system_weight_keys(name, spec, config["weights"])
        upstream = spec.get("input")
        if upstream is not None and upstream not in config["systems"]:
            raise ConfigError(f"config key 'systems.{name}.input': {upstream!r} is not a system in this config")

    for i, metric in enumerate(config["metrics"]):
        if metric not in SCORERS:
            raise ConfigError(f"config key 'metrics.{i}': unknown metric {metric!r}; known: {', '.join(sorted(SCORERS))}")
        if metric not in config["weights"]:
            raise ConfigError(
                f"config key 'weights.{metric}': missing; metric {metric!r} needs its checkpoint path or `tiny`"
            )
    return config


def _check_benchmarks(config: dict[str, Any]) -> None:
    """Benchmark names are checked against the registry, where they are declared (not the schema)."""
    from harness.prompts import BENCHMARKS

    named = [(f"benchmarks.{i}", b) for i, b in enumerate(config["benchmarks"])]
    named += [(f"expansion.benchmarks.{i}", b) for i, b in enumerate(config["expansion"].get("benchmarks") or [])]
    named.append(("humaneval.benchmark", config["humaneval"]["benchmark"]))
    for key, name in named:
        if name not in BENCHMARKS:
            raise ConfigError(f"config key '{key}': unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")


def _check_expansion(exp: dict[str, Any]) -> None:
    if not exp["enabled"]:
        return
    needs = {"openai": ("base_url", "model"), "transformers": ("model_path",)}.get(exp["backend"], ())
    for key in needs:
        if not exp.get(key):
            raise ConfigError(f"config key 'expansion.{key}': required by backend {exp['backend']!r}")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    if overrides:
        config.update(overrides)
    return validate_config(config)
