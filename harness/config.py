"""Load and validate the harness config; every failure names the key and what is wrong with it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "workflows" / "schema" / "config.schema.yaml"


def resolve_path(path: str | Path) -> Path:
    """A path the config names, as given if it exists (or is absolute), else relative to the harness
    checkout (so the default config/thresholds.yaml is found from any working directory)."""
    p = Path(path)
    return p if p.is_absolute() or p.exists() else ROOT / p


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
    from harness.micro.paths import check_micro
    from harness.scorers.registry import SCORERS, metric_weights
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
    config["distillation"] = apply_defaults(config["distillation"], schema["properties"]["distillation"])
    if config.get("micro"):
        micro_schema = schema["properties"]["micro"]
        config["micro"] = apply_defaults(config["micro"], micro_schema)
        for part in ("text_encoder", "vae"):
            config["micro"][part] = apply_defaults(config["micro"][part], micro_schema["properties"][part])
        model_schema = micro_schema["properties"]["models"]["additionalProperties"]
        config["micro"]["models"] = {k: apply_defaults(v, model_schema) for k, v in config["micro"]["models"].items()}

    _register_prompt_sets(config)
    _check_benchmarks(config)
    _check_distillation(config)
    check_micro(config)
    _check_inputs(config["systems"])
    _check_sweep(config)
    if config["dtype"] == "float16" and config["device"] == "cpu":
        from models.base import HALF_ON_CPU

        raise ConfigError(HALF_ON_CPU)

    from harness.ablations import derive_systems

    config["systems"] = derive_systems(config)
    for name, spec in config["systems"].items():
        cls = model_class(spec["model"], f"systems.{name}.model")
        error = _schema_error(spec, cls.params_schema())
        if error:
            # Re-root the key at systems.<name> so the message points into the config file.
            raise ConfigError(str(error).replace("config key '", f"config key 'systems.{name}.", 1).replace("'systems." + name + ".(top level)'", f"'systems.{name}'"))
        system_weight_keys(name, spec, config["weights"])

    for i, metric in enumerate(config["metrics"]):
        if metric not in SCORERS:
            raise ConfigError(f"config key 'metrics.{i}': unknown metric {metric!r}; known: {', '.join(sorted(SCORERS))}")
        metric_weights(metric, config["weights"])  # the metric's entry, unless it needs none
    return config


def _register_prompt_sets(config: dict[str, Any]) -> None:
    """Custom prompt sets (config ``prompt_sets``: name -> CSV/TSV file) become benchmarks."""
    from harness.prompts import register_prompt_sets

    register_prompt_sets(config.get("prompt_sets") or {})


def _check_inputs(systems: dict[str, dict]) -> None:
    """Every ``input`` names another system, of a model the reader is built for, and no chain of
    inputs comes back to where it started (checked before anything follows the chains)."""
    from models.registry import model_class

    for name, spec in systems.items():
        upstream = spec.get("input")
        if upstream is None:
            continue
        key = f"config key 'systems.{name}.input'"
        if upstream == name:
            raise ConfigError(f"{key}: {name!r} names itself; a relay's input is the base-stage system whose images it "
                              "reads (e.g. cogview3-base)")
        if upstream not in systems:
            raise ConfigError(f"{key}: {upstream!r} is not a system in this config; known: {', '.join(systems)}")
        chain = [name, upstream]
        while systems.get(chain[-1], {}).get("input"):
            nxt = systems[chain[-1]]["input"]
            if nxt in chain:
                raise ConfigError(f"{key}: the inputs go round in a circle ({' -> '.join(chain + [nxt])}); the first "
                                  "stage of a chain must be a system without input")
            chain.append(nxt)
        reader = model_class(spec["model"], f"systems.{name}.model")
        source = systems[upstream].get("model", "")
        if not reader.INPUT_MODELS:
            raise ConfigError(f"{key}: model {spec['model']!r} reads no input images; remove the key")
        if source not in reader.INPUT_MODELS:
            raise ConfigError(f"{key}: {upstream!r} is a {source!r} system, but a {spec['model']!r} system relays the "
                              f"latents of a base stage of model {' or '.join(reader.INPUT_MODELS)} (its resolution "
                              "and latent space); name such a system")


def _check_sweep(config: dict[str, Any]) -> None:
    seen: dict[int, int] = {}
    for i, t_r in enumerate(config.get("tr_sweep") or []):
        if t_r in seen:
            raise ConfigError(f"config key 'tr_sweep.{i}': T_r {t_r} is listed twice (also tr_sweep.{seen[t_r]}); each "
                              "T_r is one row of Table 3: remove the duplicate")
        seen[t_r] = i


def check_run_inputs(config: dict[str, Any], local: bool = True) -> None:
    """What a run needs beyond a valid config, checked before any job runs (the Snakefile's main
    process, ``validate``): the files the config names exist, each prompt set has the prompts
    ``num_prompts`` asks for, and half precision is not about to run on a CPU (``local``: jobs run on
    this machine; a cluster's submit host may have no GPU, and each job checks for itself)."""
    from harness.prompts import load_prompts

    thresholds = resolve_path(config["thresholds"])
    if not thresholds.is_file():
        raise ConfigError(f"config key 'thresholds': {thresholds} does not exist; point it at a thresholds file "
                          "(format: config/thresholds.yaml) before the run, not after hours of generation")
    exp = config["expansion"]
    if exp["enabled"] and exp["backend"] == "transformers" and not Path(exp["model_path"]).is_dir():
        raise ConfigError(f"config key 'expansion.model_path': {exp['model_path']} is not a folder; give a local "
                          "transformers causal LM folder")
    for name in config["benchmarks"]:
        prompts = load_prompts(name, config["data_dir"])
        if config["num_prompts"] is not None and config["num_prompts"] > len(prompts):
            raise ConfigError(f"config key 'num_prompts': {config['num_prompts']}, but prompt set {name!r} has only "
                              f"{len(prompts)} prompts; lower it to {len(prompts)} or less, or set it to null for every "
                              "prompt (a larger value would be quietly cut to the set's size)")
    if local:
        check_local_device(config)


def check_local_device(config: dict[str, Any]) -> None:
    """Half precision is not about to run on this machine's CPU (``device: auto`` without CUDA)."""
    if config["dtype"] == "float16" and config["device"] == "auto":
        import torch

        if not torch.cuda.is_available():
            from models.base import HALF_ON_CPU

            raise ConfigError(HALF_ON_CPU)


def _check_benchmarks(config: dict[str, Any]) -> None:
    """Benchmark names are checked against the registry, where they are declared (not the schema)."""
    from harness.prompts import BENCHMARKS

    named = [(f"benchmarks.{i}", b) for i, b in enumerate(config["benchmarks"])]
    named += [(f"expansion.benchmarks.{i}", b) for i, b in enumerate(config["expansion"].get("benchmarks") or [])]
    named.append(("humaneval.benchmark", config["humaneval"]["benchmark"]))
    for key, name in named:
        if name not in BENCHMARKS:
            raise ConfigError(f"config key '{key}': unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")


def _check_distillation(config: dict[str, Any]) -> None:
    """The ``distillation`` block (README "Training and distillation"), as far as it stands alone: its
    benchmark is known, each schedule halves the steps round by round, the base students' grids (and
    the relay students' where ``relay_t_r`` is given) are the grids their systems sample
    (:func:`harness.training.schedule.check_schedule`). What depends on the systems (the teachers exist and
    are CogView3 stages, the relay system's T_r) is checked when a training job or target needs it: every
    config carries the default block, and one without CogView3 systems (or with another system under the
    default names) must stay valid."""
    from harness.prompts import BENCHMARKS
    from harness.training.schedule import check_schedule

    d = config["distillation"]
    if d["benchmark"] not in BENCHMARKS:
        raise ConfigError(f"config key 'distillation.benchmark': unknown benchmark {d['benchmark']!r}; known: "
                          f"{', '.join(BENCHMARKS)}")
    check_schedule("base", d["base"])
    check_schedule("relay", d["relay"], d["relay_t_r"])
    low, high = d["guidance_range"]
    if low > high:
        raise ConfigError(f"config key 'distillation.guidance_range': [{low}, {high}] is not [low, high]")


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
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ConfigError(f"config file {path}{where} is not valid YAML ({problem}); fix that line") from err
    if overrides:
        config.update(overrides)
    return validate_config(config)
