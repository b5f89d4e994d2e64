"""The regression gate: current metric values against thresholds and a stored golden.

``config/thresholds.yaml`` (config key ``thresholds``)::

    golden: reports/golden/smoke.json   # values the tolerance checks compare with
    checks:
      - {benchmark: smoke, system: "*", metric: "*", rel_tolerance: 1.0e-4, tolerance: 1.0e-6}
      - {benchmark: drawbench, system: cogview3, metric: imagereward, min: 0.8}

A check matches (benchmark, system, metric) with ``*`` wildcards and holds any of ``min``, ``max``
(bounds on the value) and ``tolerance`` / ``rel_tolerance`` (a band around the golden value:
|value − golden| <= tolerance + rel_tolerance·|golden|). Values: the mean over prompts of an image
metric, the value of a set metric (FID/KID). Every breach is listed; the gate exits non-zero if any.
A check that matches nothing, or a band with no golden value, is itself a breach (a typo must not
pass silently). Outputs: Markdown, JSON and JUnit XML side by side.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import yaml

from harness.config import resolve_path
from harness.errors import ConfigError, HarnessError
from harness.io import atomic_write_json, atomic_write_text
from harness.manifests import images_digest
from harness.render import banner

CHECK_KEYS = {"benchmark", "system", "metric", "min", "max", "tolerance", "rel_tolerance"}


def load_thresholds(path: str | Path) -> dict[str, Any]:
    path = resolve_path(path)
    if not path.is_file():
        raise ConfigError(f"config key 'thresholds': {path} does not exist; see config/thresholds.yaml for the format")
    data = yaml.safe_load(path.read_text()) or {}
    checks = data.get("checks")
    if not isinstance(checks, list) or not checks:
        raise ConfigError(f"{path}: 'checks' must be a non-empty list")
    for i, c in enumerate(checks):
        unknown = set(c) - CHECK_KEYS
        if unknown:
            raise ConfigError(f"{path}: checks.{i}: unknown key {sorted(unknown)[0]!r}; known: {', '.join(sorted(CHECK_KEYS))}")
        if not {"min", "max", "tolerance", "rel_tolerance"} & set(c):
            raise ConfigError(f"{path}: checks.{i} sets none of min, max, tolerance, rel_tolerance")
        for k in ("min", "max", "tolerance", "rel_tolerance"):
            if k in c and not isinstance(c[k], (int, float)):
                raise ConfigError(f"{path}: checks.{i}.{k}: {c[k]!r} is not a number")
    data["path"] = str(path)
    return data


def current_values(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """'benchmark/system/metric' -> {value, n, images} for every score file the config produces;
    each must exist and score exactly the images its manifest lists (a missing one is an error, not
    a check that quietly matches fewer values)."""
    from harness.scorers.registry import metric_applies
    from harness.scores import ScoreReader
    from harness.systems import scored_systems

    reader = ScoreReader(config)
    out = {}
    for bench in config["benchmarks"]:
        for system in scored_systems(config):
            for metric in config["metrics"]:
                if not metric_applies(metric, bench):
                    continue
                value, n = reader.read(bench, system, metric).aggregate()
                out[f"{bench}/{system}/{metric}"] = {"value": value, "n": n,
                                                     "images": images_digest(config["results_dir"], bench, system)}
    return out


@dataclass
class CheckResult:
    key: str
    check: str
    value: float | None
    golden: float | None
    passed: bool
    message: str
    images_changed: bool | None = None
    #: the move from the golden value: "better" / "worse" by the metric's higher_is_better, or ""
    direction: str = ""


def evaluate(thresholds: dict[str, Any], values: dict[str, dict], golden: dict[str, dict]) -> list[CheckResult]:
    results = []
    for i, c in enumerate(thresholds["checks"]):
        pattern = "/".join(str(c.get(k, "*")) for k in ("benchmark", "system", "metric"))
        keys = sorted(k for k in values if fnmatch.fnmatchcase(k, pattern))
        name = f"checks.{i} ({pattern})"
        if not keys:
            results.append(CheckResult(pattern, name, None, None, False,
                                       "matches no computed value: check the names, or run the scoring first"))
            continue
        for key in keys:
            v = values[key]["value"]
            g_row = golden.get(key)
            g = g_row["value"] if g_row else None
            changed = None if not g_row or not g_row.get("images") else g_row["images"] != values[key]["images"]
            problems = []
            if not np.isfinite(v):
                problems.append(f"value is {v}")
            if "min" in c and not v >= c["min"]:
                problems.append(f"{v:.6g} < min {c['min']}")
            if "max" in c and not v <= c["max"]:
                problems.append(f"{v:.6g} > max {c['max']}")
            if "tolerance" in c or "rel_tolerance" in c:
                if g is None:
                    problems.append("no golden value (run `python -m harness regression --update-golden`)")
                else:
                    band = c.get("tolerance", 0.0) + c.get("rel_tolerance", 0.0) * abs(g)
                    if not abs(v - g) <= band:
                        problems.append(f"moved {v - g:+.3g} from golden {g:.6g} (band ±{band:.3g})")
            results.append(CheckResult(key, name, v, g, not problems, "; ".join(problems) or "ok", changed,
                                       direction(key, v, g)))
    return results


def direction(key: str, value: float, golden: float | None) -> str:
    """Whether ``value`` moved from ``golden`` in the metric's good or bad direction."""
    from harness.scorers.registry import scorer_class

    if golden is None or value == golden or not np.isfinite(value):
        return ""
    up = value > golden
    return "better" if up == scorer_class(key.rsplit("/", 1)[1]).higher_is_better else "worse"


def render_markdown(config: dict[str, Any], results: list[CheckResult], thresholds_path: str, golden_path: str) -> str:
    failed = [r for r in results if not r.passed]
    verdict = f"**FAIL: {len(failed)} of {len(results)} checks breached**" if failed else f"**PASS: all {len(results)} checks hold**"
    lines = [banner(config), "", "# Regression gate", "", verdict, "",
             f"Thresholds: `{thresholds_path}`; golden: `{golden_path}`.", "",
             "| Status | Value | Check | Current | Golden | Δ (direction) | Images changed | Detail |", "|---|---|---|---|---|---|---|---|"]
    order = sorted(results, key=lambda r: (r.passed, -abs((r.value or 0) - (r.golden or 0)) if r.golden is not None else 0))
    for r in order:
        delta = f"{r.value - r.golden:+.3g} {r.direction}".rstrip() if r.value is not None and r.golden is not None else "–"
        cur = f"{r.value:.6g}" if r.value is not None else "–"
        gold = f"{r.golden:.6g}" if r.golden is not None else "–"
        changed = {True: "yes", False: "no", None: "–"}[r.images_changed]
        lines.append(f"| {'PASS' if r.passed else '**FAIL**'} | {r.key} | {r.check} | {cur} | {gold} | {delta} | {changed} | {r.message} |")
    return "\n".join(lines) + "\n"


def render_junit(results: list[CheckResult]) -> str:
    failed = sum(not r.passed for r in results)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<testsuite name="regression" tests="{len(results)}" failures="{failed}" errors="0">']
    for r in results:
        out.append(f"  <testcase classname={quoteattr('regression.' + r.check)} name={quoteattr(r.key)}>")
        if not r.passed:
            out.append(f"    <failure message={quoteattr(r.message)}>{escape(r.message)}</failure>")
        out.append("  </testcase>")
    out.append("</testsuite>")
    return "\n".join(out) + "\n"


def run_regression(config: dict[str, Any], out: str | Path, update_golden: bool = False) -> bool:
    """Write the gate's reports (``out`` .md, .json, .junit.xml); True when every check holds."""
    thresholds = load_thresholds(config["thresholds"])
    golden_path = resolve_path(thresholds.get("golden", "reports/golden/smoke.json"))
    values = current_values(config)
    if not values:
        raise HarnessError(f"no score files under {config['results_dir']}: run the scoring (e.g. `snakemake reports/table1.md`) first")
    if update_golden:
        atomic_write_json(golden_path, {"profile": config["profile"], "values": values})
        print(f"golden values ({len(values)}) -> {golden_path}")
    golden = json.loads(golden_path.read_text())["values"] if golden_path.is_file() else {}
    results = evaluate(thresholds, values, golden)
    out = Path(out)
    atomic_write_text(out, render_markdown(config, results, thresholds["path"], str(golden_path)))
    atomic_write_json(out.with_suffix(".json"), {"passed": all(r.passed for r in results),
                                                 "results": [asdict(r) for r in results]})
    atomic_write_text(out.with_suffix(".junit.xml"), render_junit(results))
    return all(r.passed for r in results)
