"""Integrity of a results folder, verified rather than assumed.

    python -m harness verify [--repair]

:func:`check` confirms, for every (benchmark, system) the config's reports read:

- the manifest parses, every row carries an intact seal (:func:`harness.manifests.seal_row`) and the
  rows are exactly the config's prompts (:mod:`harness.coverage`);
- every image it lists exists and has the sha256 of its row; an image-to-image stage's row names
  the sha256 of the input image it was made from, which must be the input manifest's;
- every score file scores exactly the images the manifest lists (same sha256s), and (``verify``)
  was made by the scorer version the config names now.

An image is hashed again only when its size or modification time differ from its last verified
hash (:class:`HashCache`, which the runner fills as it writes), so the check at the start of every
Snakemake run (:func:`start_of_run`) costs a ``stat`` per image; ``verify`` hashes everything.

What the start of a run does with what it finds: a damaged image (missing, truncated, overwritten)
and the manifests that list it are moved to ``<results>/.harness/quarantine/`` (nothing is deleted),
as is a manifest that is edited, unsealed, not the config's prompts, or whose relay images were made
from an older input image, and a score file that does not match its manifest. Reports built from
what was moved, or from a score file that is missing, are removed. Snakemake then reruns exactly
the affected jobs (it never rebuilds a missing intermediate file whose consumers look up to date,
so the reports must go), and the runner resumes each from its state file: only the damaged images
are made again. ``verify --repair`` does the same by hand and regenerates the images at once.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.coverage import coverage_problem, score_problem
from harness.errors import HarnessError
from harness.io import read_jsonl
from harness.manifests import (SEAL, HashCache, check_rows, manifest_path, row_key, row_label, rows_by_key, scores_path,
                               seal_ok, system_dir)

#: findings a message lists before "and N more"
SHOWN = 10


@dataclass
class Finding:
    benchmark: str
    system: str
    path: Path
    message: str
    #: "regenerate": generated images or their manifest are damaged (stops a run; ``--repair``);
    #: "rescore": a score file does not match its manifest (derived: moved aside, recomputed)
    action: str
    #: damaged image files to move aside before regenerating
    images: list[Path] = field(default_factory=list)


@dataclass
class CheckResult:
    findings: list[Finding] = field(default_factory=list)
    #: (benchmark, system) whose manifest or a score file is missing: reports built from them are stale
    missing: set[tuple[str, str]] = field(default_factory=set)
    manifests: int = 0
    images: int = 0
    hashed: int = 0
    score_files: int = 0

    @property
    def damage(self) -> list[Finding]:
        return [f for f in self.findings if f.action == "regenerate"]

    @property
    def stale(self) -> list[Finding]:
        return [f for f in self.findings if f.action == "rescore"]

    def summary(self) -> str:
        return (f"{self.manifests} manifests, {self.images} images ({self.hashed} hashed), "
                f"{self.score_files} score files")


# ---- what the reports read ----------------------------------------------------------------------


def report_units(config: dict[str, Any]) -> dict[str, set[tuple[str, str]]]:
    """Report rule -> every (benchmark, system) it is built from, stages included."""
    from harness.ablations import expansion_pairs, tr_sweep_points
    from harness.expansion_report import expansion_benchmarks
    from harness.humaneval.export import humaneval_systems
    from harness.gallery import gallery_shown
    from harness.systems import final_systems, scored_systems, stage_chain
    from harness.tables import table1_benchmarks, table2_benchmarks, table3_benchmark

    def units(benchmarks, systems) -> set[tuple[str, str]]:
        return {(b, st) for b in benchmarks if b in config["benchmarks"] for s in systems
                for st in stage_chain(config, s)}

    out = {"table1": units(table1_benchmarks(config), final_systems(config)),
           "table2": units(table2_benchmarks(config), final_systems(config)),
           "regression": units(config["benchmarks"], scored_systems(config)),
           "metrics_agreement": units(config["benchmarks"], scored_systems(config)),
           "gallery": units(config["benchmarks"], gallery_shown(config))}
    if tr_sweep_points(config):
        out["table3"] = units([table3_benchmark(config)], [s for _, s in tr_sweep_points(config)])
    if expansion_pairs(config):
        out["ablation_expansion"] = units(expansion_benchmarks(config), [s for p in expansion_pairs(config) for s in p])
    try:
        out["humaneval_export"] = units([config["humaneval"]["benchmark"]], humaneval_systems(config))
    except HarnessError:
        pass  # comparisons name systems this config lacks: the export's own error says so when it is asked for
    return out


def checked_units(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Every unit some report reads, each input stage before the systems that read it."""
    from harness.systems import stage_chain

    every = set().union(*report_units(config).values())
    return sorted(every, key=lambda u: (len(stage_chain(config, u[1])), u))


# ---- the check ----------------------------------------------------------------------------------


def _check_unit(config, benchmark, system, rehash: bool, result: CheckResult,
                upstream_rows: dict[tuple[str, str], dict]) -> list[dict] | None:
    """Check one (benchmark, system); returns its manifest rows when they could be read."""
    from harness.scorers.registry import metric_applies
    from harness.systems import is_stage

    results_dir = config["results_dir"]
    spec = config["systems"][system]
    path = manifest_path(results_dir, benchmark, system)
    if not path.is_file():
        result.missing.add((benchmark, system))
        return None
    result.manifests += 1

    def damaged(message: str, images: list[Path] | None = None) -> None:
        result.findings.append(Finding(benchmark, system, path, message, "regenerate", images or []))

    try:
        rows = read_jsonl(path)
    except HarnessError as err:
        damaged(str(err))
        return None
    unsealed = [n for n, r in enumerate(rows, 1) if SEAL not in r]
    if unsealed:
        damaged(f"manifest {path}: {len(unsealed)} rows have no {SEAL} seal (written by an older harness or by hand)")
        return None
    edited = [(n, r) for n, r in enumerate(rows, 1) if not seal_ok(r)]
    for n, r in edited:
        damaged(f"manifest {path} line {n} ({row_label(r)}) was edited after generation (its fields no longer match "
                f"its {SEAL}); the image is not at fault")
    if edited:
        return None
    try:
        check_rows(path, rows, results_dir)
    except HarnessError as err:
        damaged(str(err))
        return None
    problem = coverage_problem(config, benchmark, system, rows, path)
    if problem:
        damaged(problem)

    folder = system_dir(results_dir, benchmark, system)
    cache = HashCache(folder)
    input_rows = upstream_rows.get((benchmark, spec["input"])) if spec.get("input") else None
    for row in rows:
        image = folder / row["image"]
        result.images += 1
        sha = cache.sha256(image, rehash)
        if sha is None:
            damaged(f"image {image} ({row_label(row)}) listed in {path} is missing", [])
        elif sha != row["sha256"]:
            damaged(f"image {image} ({row_label(row)}) was changed after generation: sha256 {sha[:12]}..., its manifest "
                    f"row says {row['sha256'][:12]}... (truncated or overwritten)", [image])
        if input_rows is not None:
            made_from = input_rows.get(row_key(row), {}).get("sha256")
            if row.get("input_sha256") != made_from:
                damaged(f"image {image} ({row_label(row)}) was made from another version of its input image "
                        f"({spec['input']}) than the input manifest lists now")
    result.hashed += cache.hashed
    cache.save()

    if is_stage(config, system):
        return rows
    for metric in config["metrics"]:
        if not metric_applies(metric, benchmark):
            continue
        spath = scores_path(results_dir, benchmark, system, metric)
        if not spath.is_file():
            result.missing.add((benchmark, system))
            continue
        result.score_files += 1
        try:
            data = json.loads(spath.read_text())
            problem = score_problem(config, data, spath, rows)
        except (ValueError, KeyError, TypeError) as err:
            problem = f"score file {spath} cannot be read ({type(err).__name__}: {err})"
        if problem:
            result.findings.append(Finding(benchmark, system, spath, problem, "rescore"))
    return rows


def _check_scorer_versions(config: dict[str, Any], result: CheckResult, units) -> None:
    """Every score file was made by the scorer version the config names now (loads no model)."""
    from harness.io import digest
    from harness.scorers.registry import build_scorer, metric_applies

    flagged = {f.path for f in result.findings}
    for metric in config["metrics"]:
        paths = [scores_path(config["results_dir"], b, s, metric) for b, s in units if metric_applies(metric, b)]
        paths = [p for p in paths if p.is_file() and p not in flagged]
        if not paths:
            continue
        want = digest(build_scorer(metric, config["weights"], config["device"], config["dtype"],
                                   config["batch_size"]).fingerprint())
        for p in paths:
            data = json.loads(p.read_text())
            if data.get("scorer_digest") != want:
                result.findings.append(Finding(data["benchmark"], data["system"], p,
                                               f"score file {p} was made by scorer version {data.get('scorer_digest')}, "
                                               f"the config's {metric} is {want} now", "rescore"))


def check(config: dict[str, Any], rehash: bool = False, scorer_versions: bool = False) -> CheckResult:
    """Check every unit the config's reports read (see the module docstring)."""
    from harness.systems import is_stage

    result = CheckResult()
    units = checked_units(config)  # input stages first
    readers = {s["input"] for s in config["systems"].values() if s.get("input")}
    rows_of: dict[tuple[str, str], dict] = {}  # rows of input stages, for the stages that read them
    for benchmark, system in units:
        rows = _check_unit(config, benchmark, system, rehash, result, rows_of)
        if rows is not None and system in readers:
            rows_of[(benchmark, system)] = rows_by_key(rows)
    if scorer_versions:
        _check_scorer_versions(config, result, [u for u in units if not is_stage(config, u[1])])
    return result


def render_findings(findings: list[Finding]) -> list[str]:
    lines = [f"  {i}. {f.message}" for i, f in enumerate(findings[:SHOWN], 1)]
    if len(findings) > SHOWN:
        lines.append(f"  ... and {len(findings) - SHOWN} more")
    return lines


# ---- repair -------------------------------------------------------------------------------------


def quarantine(results_dir: str | Path, paths: list[Path], stamp: str) -> Path:
    """Move files aside under ``<results>/.harness/quarantine/<stamp>/`` (nothing is deleted)."""
    root = Path(results_dir)
    target = root / ".harness" / "quarantine" / stamp
    for p in paths:
        if p.is_file():
            dest = target / p.resolve().relative_to(root.resolve())
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(p), dest)
    return target


def _regenerate(config: dict[str, Any], benchmark: str, system: str) -> None:
    """Rerun generation of one unit: the runner keeps every intact image and makes the rest."""
    from harness.manifests import merge_manifests, shard_manifest_path
    from harness.runner import run_generation
    from models.registry import build_system

    spec = config["systems"][system]
    built = build_system(system, spec, config["weights"], config["device"], config["dtype"], config["batch_invariant"])
    shards = config["shards"]
    for shard in range(shards):
        run_generation(config, benchmark, system, shard, shards, system=built, progress=False)
    if shards > 1:
        merge_manifests([shard_manifest_path(config["results_dir"], benchmark, system, i, shards) for i in range(shards)],
                        manifest_path(config["results_dir"], benchmark, system))


def repair(config: dict[str, Any], result: CheckResult, log=print) -> CheckResult:
    """Move damaged images and stale score files aside, regenerate exactly the damaged images, and
    check again (a regenerated input image can make the stage that reads it stale: up to 3 rounds)."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for _ in range(3):
        if not result.findings:
            break
        moved = quarantine(config["results_dir"], [p for f in result.damage for p in f.images]
                           + [f.path for f in result.stale], stamp)
        if any(f.images for f in result.damage) or result.stale:
            log(f"moved {sum(len(f.images) for f in result.damage)} damaged images and {len(result.stale)} stale score "
                f"files to {moved}")
        units = list(dict.fromkeys((f.benchmark, f.system) for f in result.damage))
        for benchmark, system in units:
            log(f"regenerating what is damaged in {benchmark}/{system} ...")
            _regenerate(config, benchmark, system)
        result = check(config)  # what was not touched keeps its verified hash
    return result


# ---- the start of a Snakemake run ---------------------------------------------------------------


def unit_manifests(results_dir: str | Path, benchmark: str, system: str) -> list[Path]:
    """A system's finished manifest and its shard manifests (of any shard count)."""
    folder = system_dir(results_dir, benchmark, system)
    return [manifest_path(results_dir, benchmark, system), *sorted(folder.glob("manifest.shard-*-of-*.jsonl"))]


def start_of_run(config: dict[str, Any], report_outputs: dict[str, list[str]], dry_run: bool = False) -> list[str]:
    """The check every run starts with: moves damage aside so that this run redoes it; returns notices.

    ``report_outputs``: report rule -> its output files. With ``dry_run`` (an invocation that runs no
    job) nothing is changed and the notices say what a run would do.
    """
    results_dir = config["results_dir"]
    result = check(config)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    notices = []
    damaged_units = list(dict.fromkeys((f.benchmark, f.system) for f in result.damage))
    for f in result.damage[:SHOWN]:
        notices.append(f"{f.message}: {'a run would regenerate it' if dry_run else 'regenerated in this run'}")
    if len(result.damage) > SHOWN:
        notices.append(f"... and {len(result.damage) - SHOWN} more (all of them: python -m harness verify "
                       f"--config-snapshot {results_dir}/.harness/config.json)")
    for f in result.stale:
        notices.append(f"{f.message}: {'a run would rescore it' if dry_run else 'rescored in this run'}")
    if not dry_run and (result.damage or result.stale):
        moved = [p for f in result.damage for p in f.images]
        for unit in damaged_units:
            for manifest in unit_manifests(results_dir, *unit):
                if manifest.is_file():
                    # The runner resumes from this copy too (it checks every row): a system whose
                    # working manifest is gone still makes only the damaged images again.
                    (manifest.parent / ".state").mkdir(exist_ok=True)
                    shutil.copyfile(manifest, manifest.parent / ".state" / f"recovered-{stamp}-{manifest.name}")
                    moved.append(manifest)
        moved += [f.path for f in result.stale]
        where = quarantine(results_dir, moved, stamp)
        notices.append(f"moved {sum(len(f.images) for f in result.damage)} damaged images, the manifests of "
                       f"{len(damaged_units)} systems and {len(result.stale)} stale score files to {where}")
    dirty = result.missing | set(damaged_units) | {(f.benchmark, f.system) for f in result.stale}
    for rule, units in report_units(config).items():
        why = sorted(units & dirty)
        present = [p for p in report_outputs.get(rule, []) if os.path.exists(p)]
        if not why or not present:
            continue
        what = ", ".join(f"{b}/{s}" for b, s in why[:3]) + (f" and {len(why) - 3} more" if len(why) > 3 else "")
        if dry_run:
            notices.append(f"{present[0]} was built from results that are now missing or stale ({what}); a run "
                           "rebuilds it")
            continue
        for p in present:
            if os.path.isdir(p):
                shutil.rmtree(p)
            else:
                os.remove(p)
        notices.append(f"removed {', '.join(present[:2])}{' ...' if len(present) > 2 else ''}: built from results that "
                       f"are now missing or stale ({what}); this run rebuilds it")
    return notices
