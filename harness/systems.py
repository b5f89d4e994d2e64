"""The configured systems as the reports see them: stage chains, table rows, Steps labels, grids.

A system may read another system's images (its ``input``, e.g. CogView3's relay reads the 512 px
base), so a table row is a chain of stages. Everything here is computed from the config's
parameters and the model classes' facts; no model is built.
"""

from __future__ import annotations

from typing import Any

from models.registry import model_class


def input_chain(systems: dict[str, dict], name: str) -> list[str]:
    """``name`` and the systems it reads images from, first stage first (e.g. base, relay)."""
    chain = [name]
    while systems[chain[0]].get("input"):
        chain.insert(0, systems[chain[0]]["input"])
    return chain


def stage_chain(config: dict[str, Any], name: str) -> list[str]:
    return input_chain(config["systems"], name)


def is_stage(config: dict[str, Any], name: str) -> bool:
    """An intermediate stage (e.g. CogView3's 512 px base): a model that can feed another system
    (``IS_STAGE``) and does here; it is no row. The same model read by no system is a row of its own
    (the micro world's single-stage baseline is a base-stage model at the high resolution)."""
    systems = config["systems"]
    return model_class(systems[name]["model"]).IS_STAGE and any(s.get("input") == name for s in systems.values())


def scored_systems(config: dict[str, Any]) -> list[str]:
    """Every system whose images are scored: table rows and ablation systems, in config order."""
    return [name for name in config["systems"] if not is_stage(config, name)]


def final_systems(config: dict[str, Any]) -> list[str]:
    """The rows of Tables 1 and 2: scored systems not derived for an ablation."""
    return [name for name in scored_systems(config) if not config["systems"][name].get("ablation")]


def ablation_systems(config: dict[str, Any], ablation: str) -> list[str]:
    """The scored systems the harness derived for one ablation (``tr_sweep`` or ``expansion``)."""
    return [name for name in scored_systems(config) if config["systems"][name].get("ablation") == ablation]


def params(config: dict[str, Any], name: str) -> dict[str, Any]:
    """System ``name``'s parameters with its model's defaults filled in."""
    spec = config["systems"][name]
    return model_class(spec["model"]).resolve_params(spec, name)


def steps_label(config: dict[str, Any], name: str) -> str:
    """The paper's "Steps" column: one number per stage of the chain, e.g. ``50+10``."""
    return "+".join(model_class(config["systems"][s]["model"]).steps_label(params(config, s))
                    for s in stage_chain(config, name))


def unet_calls(config: dict[str, Any], name: str) -> int:
    """Denoiser network evaluations per image over the row's stages (steps, x2 under CFG; a Stable
    Cascade row counts its prior and decoder): the cost the Steps column does not show."""
    total = 0
    for stage in stage_chain(config, name):
        total += sum(n for n, _ in model_class(config["systems"][stage]["model"]).unet_calls(params(config, stage)))
    return total


def grid_note(config: dict[str, Any], name: str) -> str:
    """Which timestep grid (relay start, steps, blending, tiling) the system samples on; "" if none."""
    return model_class(config["systems"][name]["model"]).describe_grid(params(config, name))
