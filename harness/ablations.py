"""Systems the harness derives from the config for the paper's ablations.

* T_r sweep (Table 3, config ``tr_sweep``): one relay system per relay start, each a copy of the
  paper's CogView3 relay system (``cogview3``) with another ``t_r`` and the same number of relay
  steps, chosen from the full schedule as in Fig. 6 (:func:`models.cogview3.schedule.relay_timesteps`).
  All of them read the same base stage's images, so k points cost one base pass plus k relay runs.
  The point equal to the source system is still its own system (``cogview3-tr500``): it costs one
  relay run, and in exchange ``reports/table3.md`` depends on nothing but the sweep.
* Prompt expansion (Fig. 7/8, config ``expansion``): for each listed system a twin ``<name>-expanded``
  that generates from the expanded prompts; for a relay system its whole stage chain is twinned
  (the base stage reads the prompt too).

Derived systems carry ``ablation: tr_sweep | expansion`` and are not rows of Table 1/2.
"""

from __future__ import annotations

import copy
from typing import Any

from harness.errors import ConfigError
from harness.systems import input_chain

SWEEP_SOURCE = "cogview3"  # the paper's relay system (50 base + 10 relay steps from T_r = 500)
EXPANDED_SUFFIX = "-expanded"


def sweep_source(systems: dict[str, dict]) -> str | None:
    """The relay system the T_r sweep varies: ``cogview3`` if configured, else the first
    non-distilled CogView3 relay system."""
    if SWEEP_SOURCE in systems:
        return SWEEP_SOURCE
    for name, spec in systems.items():
        if spec["model"] == "cogview3-relay" and not spec.get("distilled") and not spec.get("ablation"):
            return name
    return None


def sweep_name(t_r: int) -> str:
    return f"{SWEEP_SOURCE}-tr{t_r}"


def tr_sweep_points(config: dict[str, Any]) -> list[tuple[int, str]]:
    """(T_r, system name) for every point of the sweep, in the config's order."""
    source = sweep_source(config["systems"])
    if source is None or not config.get("tr_sweep"):
        return []
    return [(t, sweep_name(t)) for t in config["tr_sweep"]]


def expanded_name(system: str) -> str:
    return system + EXPANDED_SUFFIX


def expansion_pairs(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(system, its expanded twin) for the expansion ablation."""
    exp = config.get("expansion") or {}
    if not exp.get("enabled"):
        return []
    return [(s, expanded_name(s)) for s in exp.get("systems", [])]


def derive_systems(config: dict[str, Any]) -> dict[str, dict]:
    """The config's systems plus the derived ones (returned; the config is not changed)."""
    systems = copy.deepcopy(config["systems"])
    source = sweep_source(systems)
    if config.get("tr_sweep") and source is not None:
        base = systems[source]
        for t_r, name in tr_sweep_points(config):
            if name in systems and not systems[name].get("ablation"):
                raise ConfigError(f"config key 'systems.{name}': the name is taken by the T_r sweep; rename the system")
            systems[name] = {**copy.deepcopy(base), "t_r": t_r, "ablation": "tr_sweep"}

    exp = config.get("expansion") or {}
    if exp.get("enabled"):
        for i, name in enumerate(exp.get("systems", [])):
            if name not in config["systems"]:
                raise ConfigError(f"config key 'expansion.systems.{i}': {name!r} is not a system in this config")
            for stage in input_chain(systems, name):
                twin = expanded_name(stage)
                if twin in config["systems"] and config["systems"][twin].get("ablation") != "expansion":
                    raise ConfigError(f"config key 'systems.{twin}': the name is taken by the expansion ablation")
                spec = {**copy.deepcopy(systems[stage]), "expand": True, "ablation": "expansion"}
                if spec.get("input"):
                    spec["input"] = expanded_name(spec["input"])
                systems[twin] = spec
    return systems
