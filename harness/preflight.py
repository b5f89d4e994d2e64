"""Preflight: every problem a run would meet, found before any model loads, reported at once.

    python -m harness preflight --config config/paper.yaml

Checks, without loading a model:
- every ``weights:`` entry the configured systems and metrics read: the path (environment
  variables set, file versus folder) and every file its loader will read (:mod:`models.layouts`),
  each named with what the README says to put there;
- the prompt files of every benchmark (present, pinned sha256) and, for FID/KID, the COCO
  reference images;
and prints each weight file's sha256 beside the official value where one is pinned
(``models/weight_pins.yaml``), then the plan: images per (benchmark, system), UNet evaluations per
image and an estimate of A100 GPU-hours from the paper's time costs. The Snakefile runs the same
checks (without hashing) at the start of every non-smoke run; ``validate`` runs them too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError

PINS_PATH = Path(__file__).resolve().parent.parent / "models" / "weight_pins.yaml"

@dataclass
class EntryCheck:
    key: str
    value: str
    used_by: list[str]
    files: list[Path] = field(default_factory=list)
    root: Path | None = None
    variant: str | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class Report:
    entries: list[EntryCheck]
    data: list[str]  # one line per benchmark
    problems: list[str]
    warnings: list[str]
    plan: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return not self.problems


def _entry(checks: dict[str, EntryCheck], key: str, value: str, user: str) -> EntryCheck:
    check = checks.setdefault(key, EntryCheck(key, value, []))
    if user not in check.used_by:
        check.used_by.append(user)
    return check


def _record(check: EntryCheck, found) -> None:
    if check.problems and not found.root.is_dir():
        return  # a second role of an entry whose path is missing or a file: one message is enough
    check.root = found.root
    check.files += [f for f in found.files if f not in check.files]
    check.variant = check.variant or found.variant
    check.problems += [p for p in (f"weights.{check.key} ({found.root}): {m}" + (f". {found.hint}" if found.hint else "")
                                   for m in found.missing) if p not in check.problems]


def check_weights(config: dict[str, Any]) -> list[EntryCheck]:
    """Every path entry the configured systems and metrics read, with its files or its problems."""
    from harness.micro.train import is_trained_here
    from harness.scorers.registry import scorer_class
    from models.base import WeightsSpec
    from models.registry import model_class, system_weight_keys

    checks: dict[str, EntryCheck] = {}
    weights = config["weights"]
    wanted = []  # (key, user, layout of the entry's path)
    for name, spec in config["systems"].items():
        cls = model_class(spec["model"], f"systems.{name}.model")
        for role, key in zip((None, *cls.WEIGHT_PARAMS), system_weight_keys(name, spec, weights)):
            wanted.append((key, f"systems.{name}", lambda path, key=key, role=role, cls=cls: cls.entry_files(role, key, path)))
    for metric in (m for m in config["metrics"] if scorer_class(m).NEEDS_WEIGHTS):
        wanted.append((metric, f"metrics: {metric}", lambda path, m=metric: scorer_class(m).entry_files(m, path)))
    for key, user, layout in wanted:
        entry = WeightsSpec(key, str(weights[key]))
        check = _entry(checks, key, entry.value, user)
        if entry.is_builtin or entry.unset_variables:  # unset variables: one message for all entries
            continue
        if is_trained_here(config, key):  # written by this DAG (the micro world, distillation rounds) first
            continue
        try:
            _record(check, layout(entry.path))
        except HarnessError as err:  # an unreadable shard index
            if str(err) not in check.problems:
                check.problems.append(str(err))
    return list(checks.values())


def check_data(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(one line per benchmark, problems): prompt files and, for FID/KID, the reference images."""
    from harness.prompts import benchmark, load_prompts, reference_images
    from harness.scorers.registry import scorer_class

    lines, problems = [], []
    set_metrics = [m for m in config["metrics"] if scorer_class(m).set_metric]
    for name in config["benchmarks"]:
        try:
            prompts = load_prompts(name, config["data_dir"], config["num_prompts"])
        except HarnessError as err:
            problems.append(str(err))  # the loader's message names the prompt set
            continue
        line = f"{name}: {len(prompts)} prompts"
        if benchmark(name).has_references and set_metrics:
            refs = reference_images(name, config["data_dir"], prompts)
            missing = [p for p in refs if not p.is_file()]
            line += f"; reference images for {'/'.join(set_metrics)}: {len(refs) - len(missing)}/{len(refs)} present"
            if missing:
                problems.append(
                    f"benchmark {name}: {len(missing)} of {len(refs)} reference images are missing in "
                    f"{missing[0].parent} (first: {missing[0].name}); put them there (README 'Weights', 'Prompt data')")
        lines.append(line)
    return lines, problems


def load_pins() -> dict[str, dict[str, dict[str, str]]]:
    if not PINS_PATH.is_file():
        return {}
    return yaml.safe_load(PINS_PATH.read_text()) or {}


def pinned(pins: dict, key: str, relative: str) -> dict[str, str] | None:
    return (pins.get(key) or {}).get(relative)


def hash_lines(check: EntryCheck, pins: dict) -> tuple[list[str], list[str]]:
    """One line per file: its sha256 and the pinned value; and a warning per mismatch."""
    from models.weights import file_sha256

    lines, warnings = [], []
    base = check.root if check.root and check.root.is_dir() else (check.root.parent if check.root else Path("."))
    for path in check.files:
        relative = str(path.relative_to(base)) if path.is_relative_to(base) else path.name
        digest = file_sha256(path)
        pin = pinned(pins, check.key, relative) or pinned(pins, check.key, path.name)
        if pin is None:
            mark = "no pinned value"
        else:
            want = pin.get("sha256") or pin.get("sha256_prefix", "")
            if digest.startswith(want):
                mark = f"= pinned ({pin.get('upstream', '')})"
            else:
                mark = f"DIFFERS from pinned {want[:16]}... ({pin.get('upstream', '')})"
                warnings.append(f"weights.{check.key}: {path} has sha256 {digest}, the official file has {want}; "
                                "re-download it unless you meant to use another file")
        lines.append(f"    {relative}  sha256 {digest}  {mark}")
    return lines, warnings


def planned_jobs(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (benchmark, system) generation the DAG's tables and ablations ask for, stages included."""
    from harness.ablations import expansion_pairs, tr_sweep_points
    from harness.expansion_report import expansion_benchmarks
    from harness.systems import final_systems, stage_chain
    from harness.tables import table3_benchmark

    wanted: list[tuple[str, str]] = []
    groups = [(config["benchmarks"], final_systems(config))]
    if tr_sweep_points(config):
        groups.append(([table3_benchmark(config)], [s for _, s in tr_sweep_points(config)]))
    if expansion_pairs(config):
        groups.append((expansion_benchmarks(config), [s for pair in expansion_pairs(config) for s in pair]))
    for benchmarks, systems in groups:
        for benchmark in benchmarks:
            for system in systems:
                for stage in stage_chain(config, system):
                    if (benchmark, stage) not in wanted:
                        wanted.append((benchmark, stage))
    return wanted


def plan(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Images, denoiser evaluations and estimated A100 GPU-hours per (benchmark, system) job, from
    the time model of :mod:`harness.resources` (fitted to the paper's time costs; each stage is
    its own job, so a relay's row excludes its base stage's)."""
    from harness.flops import stage_costs
    from harness.prompts import load_prompts
    from harness.resources import seconds_per_image

    rows, counts = [], {}
    for benchmark, system in planned_jobs(config):
        if benchmark not in counts:
            try:
                counts[benchmark] = len(load_prompts(benchmark, config["data_dir"], config["num_prompts"]))
            except HarnessError:
                counts[benchmark] = 0  # reported by check_data
        images = counts[benchmark] * config["samples_per_prompt"]
        evals = sum(c.evaluations * c.forwards for c in stage_costs(config, system) if c.system == system)
        rows.append({"benchmark": benchmark, "system": system, "images": images, "unet_evaluations": evals,
                     "gpu_hours": images * seconds_per_image(config, system) / 3600})
    return rows


def run_preflight(config: dict[str, Any], with_plan: bool = False) -> Report:
    """Every weights and data problem at once; ``with_plan`` adds the estimated plan (it counts FLOPs
    of full-size networks: seconds, so the Snakefile's check at every start leaves it out)."""
    from models.base import WeightsSpec

    entries = check_weights(config)
    data, data_problems = check_data(config)
    problems = [p for e in entries for p in e.problems]
    unset: dict[str, list[str]] = {}
    for e in entries:
        for name in WeightsSpec(e.key, e.value).unset_variables:
            unset.setdefault(name, []).append(e.key)
    problems = [f"${name} is not set, so {len(keys)} weights entries cannot be found ({', '.join(keys)}); "
                f"export {name}=<the folder that holds the downloads> (README 'Weights' shows its layout)"
                for name, keys in unset.items()] + problems + data_problems
    warnings = []
    exp = config["expansion"]
    if exp["enabled"] and exp["backend"] == "openai" and not os.environ.get(exp["api_key_env"]):
        warnings.append(f"expansion: ${exp['api_key_env']} is not set; the expansion ablation and the expanded "
                        "human-eval prompts need it unless results/.cache/expansions already holds them")
    return Report(entries, data, problems, warnings, plan(config) if with_plan else [])


def render(report: Report, config: dict[str, Any], source: str, hash_files: bool = True) -> str:
    pins = load_pins() if hash_files else {}
    out = [f"preflight: {source} (profile {config['profile']})", "", "weights:"]
    for e in report.entries:
        state = "built in code" if e.value in ("tiny", "random") else ("MISSING" if e.problems else "ok")
        variant = f", {e.variant} variant" if e.variant else ""
        users = ", ".join(e.used_by[:4]) + (f" and {len(e.used_by) - 4} more" if len(e.used_by) > 4 else "")
        out.append(f"  {e.key}: {e.value} -> {state}{variant} (used by {users})")
        if hash_files and not e.problems and e.files:
            lines, warnings = hash_lines(e, pins)
            out += lines
            report.warnings += warnings
    out += ["", "data:"] + [f"  {line}" for line in report.data]
    if report.plan:
        total = sum(r["gpu_hours"] for r in report.plan)
        out += ["", "plan (estimates for one A100 from the paper's time costs, not measurements: harness/resources.py):",
                "  | benchmark | system | images | UNet evaluations / image | GPU-hours |",
                "  |---|---|---:|---:|---:|"]
        out += [f"  | {r['benchmark']} | {r['system']} | {r['images']} | {r['unet_evaluations']} | "
                f"{r['gpu_hours']:.2f} |" for r in report.plan]
        out.append(f"  total: {sum(r['images'] for r in report.plan)} images, about {total:.1f} A100 GPU-hours "
                   "(plus scoring: `python -m harness estimate` counts it)")
    if report.warnings:
        out += ["", f"warnings ({len(report.warnings)}):"] + [f"  - {w}" for w in report.warnings]
    if report.problems:
        out += ["", f"PROBLEMS ({len(report.problems)}): fix these before running (README 'Weights'):"]
        out += [f"  {i}. {p}" for i, p in enumerate(report.problems, 1)]
    else:
        out += ["", "preflight OK"]
    return "\n".join(out)
