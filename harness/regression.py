"""The regression gate: current metric values against thresholds and a stored golden.

``config/thresholds.yaml`` (config key ``thresholds``)::

    golden: reports/golden/smoke.json   # values the tolerance checks compare with
    checks:
      - {benchmark: smoke, system: "*", metric: "*", rel_tolerance: 1.0e-4, tolerance: 1.0e-6}
      - {benchmark: drawbench, system: cogview3, metric: imagereward, min: 0.8}

A check matches (benchmark, system, metric) with ``*`` wildcards and holds any of ``min``, ``max``
(bounds on the value) and ``tolerance`` / ``rel_tolerance`` (a band around the golden value:
|value − golden| <= tolerance + rel_tolerance·|golden|). A check with ``versus: <system>`` bounds the paired
difference instead, value(system) − value(versus) on the same benchmark and metric (same prompts, same
seeds), with ``min`` / ``max``, and ``max_p``: the two-sided p-value of the paired bootstrap over prompts
(:func:`harness.stats.paired_bootstrap`, the test Table 1 prints) must not exceed it. A gain that one configuration must
show over another on the same run, e.g. what classifier-free guidance adds over the same models unguided:
``{system: cogview3, versus: cogview3-unguided, metric: micro_colour, min: 0.0, max_p: 0.01}``. Values: the mean over prompts of an image
metric, the value of a set metric (FID/KID). Every breach is listed; the gate exits non-zero if any.
A check that matches nothing, or a band with no golden value, is itself a breach (a typo must not
pass silently). Outputs: Markdown, JSON and JUnit XML side by side.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import yaml

from harness.config import resolve_path
from harness.errors import ConfigError, HarnessError
from harness.io import atomic_write_json, atomic_write_text
from harness.manifests import images_digest
from harness.render import banner

CHECK_KEYS = {"benchmark", "system", "metric", "versus", "max_p", "min", "max", "tolerance", "rel_tolerance"}


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
        for k in ("min", "max", "max_p", "tolerance", "rel_tolerance"):
            if k in c and not isinstance(c[k], (int, float)):
                raise ConfigError(f"{path}: checks.{i}.{k}: {c[k]!r} is not a number")
        if "versus" in c:
            if {"tolerance", "rel_tolerance"} & set(c) or not {"min", "max"} & set(c):
                raise ConfigError(f"{path}: checks.{i}: a 'versus' check bounds a difference with min and/or max "
                                  "(no golden band)")
            if any(ch in str(c.get(k, "*")) for k in ("system", "versus") for ch in "*?["):
                raise ConfigError(f"{path}: checks.{i}: 'system' and 'versus' of a paired check name one system each")
        if "max_p" in c and "versus" not in c:
            raise ConfigError(f"{path}: checks.{i}: max_p bounds the paired test of a 'versus' check; add versus")
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


def evaluate(thresholds: dict[str, Any], values: dict[str, dict], golden: dict[str, dict],
             per_prompt: Callable[[str], dict[str, float]] | None = None) -> list[CheckResult]:
    """Every check against ``values``; ``per_prompt('benchmark/system/metric')`` gives the per-prompt scores
    that a ``max_p`` check tests (:func:`per_prompt_reader`)."""
    results = []
    for i, c in enumerate(thresholds["checks"]):
        pattern = "/".join(str(c.get(k, "*")) for k in ("benchmark", "system", "metric"))
        keys = sorted(k for k in values if fnmatch.fnmatchcase(k, pattern))
        name = f"checks.{i} ({pattern}" + (f" versus {c['versus']})" if "versus" in c else ")")
        if not keys:
            results.append(CheckResult(pattern, name, None, None, False,
                                       "matches no computed value: check the names, or run the scoring first"))
            continue
        if "versus" in c:
            results.extend(_paired(c, name, keys, values, per_prompt))
            continue
        for key in keys:
            v = values[key]["value"]
            g_row = golden.get(key)
            g = g_row["value"] if g_row else None
            changed = None if not g_row or not g_row.get("images") else g_row["images"] != values[key]["images"]
            problems = _bounds(c, v)
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


def _bounds(c: dict[str, Any], v: float) -> list[str]:
    problems = [] if np.isfinite(v) else [f"value is {v}"]
    if "min" in c and not v >= c["min"]:
        problems.append(f"{v:.6g} < min {c['min']}")
    if "max" in c and not v <= c["max"]:
        problems.append(f"{v:.6g} > max {c['max']}")
    return problems


def _paired(c: dict[str, Any], name: str, keys: list[str], values: dict[str, dict],
            per_prompt: Callable[[str], dict[str, float]] | None) -> list[CheckResult]:
    """The ``versus`` checks: value(system) − value(versus), per matched benchmark, and its paired test."""
    from harness.stats import paired_bootstrap

    out = []
    for key in keys:
        bench, system, metric = key.split("/")
        other = f"{bench}/{c['versus']}/{metric}"
        shown = f"{bench}/{system} − {c['versus']}/{metric}"
        if other not in values:
            out.append(CheckResult(shown, name, None, None, False,
                                   f"{other} has no value: add system {c['versus']!r} to the config, or run its scoring"))
            continue
        v = values[key]["value"] - values[other]["value"]
        problems = _bounds(c, v)
        detail = ""
        if "max_p" in c:
            if per_prompt is None:
                raise HarnessError(f"{name}: max_p needs the per-prompt scores; pass per_prompt to evaluate()")
            test = paired_bootstrap(per_prompt(key), per_prompt(other))
            detail = f"paired bootstrap: {test.fmt(4)}"
            if not test.p_value <= c["max_p"]:
                problems.append(f"p={test.p_value:.4g} > max_p {c['max_p']} (the gain is not distinguishable from 0)")
        message = "; ".join(problems) or "ok"
        out.append(CheckResult(shown, name, v, None, not problems, f"{message} ({detail})" if detail else message))
    return out


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


def per_prompt_reader(config: dict[str, Any]) -> Callable[[str], dict[str, float]]:
    """'benchmark/system/metric' -> that score file's mean score per prompt (checked as the tables read it)."""
    from harness.scores import ScoreReader

    reader = ScoreReader(config)
    return lambda key: reader.read(*key.split("/")).per_prompt()


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
    results = evaluate(thresholds, values, golden, per_prompt_reader(config))
    out = Path(out)
    atomic_write_text(out, render_markdown(config, results, thresholds["path"], str(golden_path)))
    atomic_write_json(out.with_suffix(".json"), {"passed": all(r.passed for r in results),
                                                 "results": [asdict(r) for r in results]})
    atomic_write_text(out.with_suffix(".junit.xml"), render_junit(results))
    return all(r.passed for r in results)
