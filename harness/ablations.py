"""Systems the harness derives from the config for the paper's ablations.

* T_r sweep (Table 3, config ``tr_sweep``): one relay system per relay start, each a copy of the
  paper's CogView3 relay system (``cogview3``) with another ``t_r`` and the same number of relay
  steps: exactly the source's ``steps`` (10) at every T_r, on the grid that starts at t = T_r - 1
  (:func:`models.cogview3.schedule.relay_timesteps`; T_r = 500 is the paper's 499, 449, ..., 49).
  All of them read the same base stage's images, so k points cost one base pass plus k relay runs.
  The point equal to the source system is still its own system (``cogview3-tr500``): it costs one
  relay run, and in exchange ``reports/table3.md`` depends on nothing but the sweep.
* Table 3's ``form: paper`` row: one more relay system, ``cogview3-form-paper-tr<T>``, the source
  system (its T_r and steps: the paper's 500 / 10) sampled by the paper's Algorithm 1 literally
  (``form: paper``, :func:`models.cogview3.sampling.relay_step`) instead of the official closed form.
  It relays the same base pass: one more relay run. Not derived when the source already runs
  ``form: paper`` (then every sweep point does) or blends by t/T_r (Algorithm 1 needs ``blending: step``).
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
from models.registry import model_class

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


def paper_form_name(t_r: int) -> str:
    return f"{SWEEP_SOURCE}-form-paper-tr{t_r}"


def _paper_form_point(systems: dict[str, dict], source: str) -> tuple[int, str] | None:
    """(T_r, name) of Table 3's ``form: paper`` row: the source's own T_r. None if the source already
    samples in the paper's form, or blends by t/T_r (Algorithm 1's 1/t update is the step blending)."""
    spec = systems[source]
    if spec.get("model") != "cogview3-relay":
        return None
    defaults = model_class(spec["model"]).PARAMS
    if spec.get("form", defaults["form"]["default"]) == "paper" or \
            spec.get("blending", defaults["blending"]["default"]) != "step":
        return None
    t_r = int(spec.get("t_r", defaults["t_r"]["default"]))
    return t_r, paper_form_name(t_r)


def tr_sweep_points(config: dict[str, Any]) -> list[tuple[int, str]]:
    """(T_r, system name) for every row of Table 3: the sweep's points in the config's order, then the
    ``form: paper`` row (same T_r as the source system; tell it apart with :func:`is_paper_form`)."""
    source = sweep_source(config["systems"])
    if source is None or not config.get("tr_sweep"):
        return []
    points = [(t, sweep_name(t)) for t in config["tr_sweep"]]
    extra = _paper_form_point(config["systems"], source)
    return points + ([extra] if extra else [])


def is_paper_form(config: dict[str, Any], system: str) -> bool:
    """Whether ``system`` samples its relay steps by Algorithm 1 (``form: paper``)."""
    return config["systems"][system].get("form") == "paper"


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
        for t_r in config["tr_sweep"]:
            name = sweep_name(t_r)
            if name in systems and not systems[name].get("ablation"):
                raise ConfigError(f"config key 'systems.{name}': the name is taken by the T_r sweep; rename the system")
            systems[name] = {**copy.deepcopy(base), "t_r": t_r, "ablation": "tr_sweep"}
        extra = _paper_form_point(systems, source)
        if extra:
            t_r, name = extra
            if name in systems and not systems[name].get("ablation"):
                raise ConfigError(f"config key 'systems.{name}': the name is taken by Table 3's form: paper row; "
                                  "rename the system")
            systems[name] = {**copy.deepcopy(base), "t_r": t_r, "form": "paper", "ablation": "tr_sweep"}

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
