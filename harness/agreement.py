"""Where the metrics agree (``reports/metrics_agreement.md``): Kendall's tau-b between every pair of the config's
metrics, per benchmark, over systems and over images.

- **Over systems**: each scored system's value as Table 1 prints it (the mean over prompts of an image metric, a set
  metric's value): do the two metrics rank the systems alike?
- **Over images**: the per-image scores of two image metrics, every scored system's images pooled (a set metric has
  no per-image score): do they rank the same images alike?

Each metric is oriented by its ``higher_is_better`` (a distance enters negated), so tau > 0 always means the two agree
on which is better. Tau is undefined where a metric is constant over the items (e.g. an exact-match rate of 0 for every
system): the report says so instead of printing a number. An image whose score is not finite under either metric is
left out of that pair, and the count left out is printed beside N.
"""

from __future__ import annotations

import csv
import io
import math
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from harness.io import atomic_write_text
from harness.render import banner


def kendall(x: list[float], y: list[float]) -> tuple[float, float]:
    """Kendall's tau-b and its two-sided p-value (scipy); (nan, nan) when either side is constant or N < 2."""
    from scipy.stats import kendalltau

    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan, math.nan
    result = kendalltau(x, y, variant="b")
    return float(result.statistic), float(result.pvalue)


def agreement(config: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per (benchmark, metric pair, over): tau, p, N, and the images left out (over images)."""
    from harness.scorers.registry import metric_applies, scorer_class
    from harness.scores import ScoreReader
    from harness.systems import scored_systems

    reader = ScoreReader(config)
    systems = scored_systems(config)
    records = []
    for bench in config["benchmarks"]:
        metrics = [m for m in config["metrics"] if metric_applies(m, bench)]
        sign = {m: 1.0 if scorer_class(m).higher_is_better else -1.0 for m in metrics}
        sets = {(s, m): reader.read(bench, s, m) for s in systems for m in metrics}
        for a, b in combinations(metrics, 2):
            xs = [sign[a] * sets[s, a].aggregate()[0] for s in systems]
            ys = [sign[b] * sets[s, b].aggregate()[0] for s in systems]
            tau, p = kendall(xs, ys)
            records.append({"benchmark": bench, "metric_a": a, "metric_b": b, "over": "systems", "tau": tau,
                            "p": p, "n": len(systems), "left_out": 0})
            if sets[systems[0], a].set_metric or sets[systems[0], b].set_metric:
                continue
            pairs, left_out = [], 0
            for s in systems:
                score_b = {(r["prompt_id"], r["sample"]): r["score"] for r in sets[s, b].rows}
                for r in sets[s, a].rows:
                    x, y = r["score"], score_b[r["prompt_id"], r["sample"]]
                    if np.isfinite(x) and np.isfinite(y):
                        pairs.append((sign[a] * x, sign[b] * y))
                    else:
                        left_out += 1
            tau, p = kendall([x for x, _ in pairs], [y for _, y in pairs])
            records.append({"benchmark": bench, "metric_a": a, "metric_b": b, "over": "images", "tau": tau,
                            "p": p, "n": len(pairs), "left_out": left_out})
    return records


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "– (a set metric)"
    if not np.isfinite(r["tau"]):
        return f"undefined: a metric is constant (N={r['n']})"
    dropped = f", {r['left_out']} not finite" if r["left_out"] else ""
    return f"{r['tau']:+.3f} (p={r['p']:.3g}, N={r['n']}{dropped})"


def render(config: dict[str, Any], records: list[dict[str, Any]]) -> str:
    from harness.scorers.registry import scorer_class
    from harness.systems import scored_systems

    lines = [banner(config), "", "# Metric agreement", "",
             "Kendall's tau-b between two metrics, each oriented by its higher_is_better (tau > 0: they agree on "
             "which is better). Over systems: each system's value as Table 1 prints it "
             f"({', '.join(scored_systems(config))}). Over images: the per-image scores of two image metrics, "
             "every system's images pooled. p: two-sided, no correction for the number of pairs (harness/agreement.py).",
             ""]
    for bench in dict.fromkeys(r["benchmark"] for r in records):
        rows = [r for r in records if r["benchmark"] == bench]
        lines += [f"## {bench}", "", "| Metric | Metric | Over systems | Over images |", "|---|---|---|---|"]
        for r in (r for r in rows if r["over"] == "systems"):
            images = next((i for i in rows if i["over"] == "images" and (i["metric_a"], i["metric_b"])
                           == (r["metric_a"], r["metric_b"])), None)
            la, lb = (scorer_class(m).label for m in (r["metric_a"], r["metric_b"]))
            lines.append(f"| {la} | {lb} | {_cell(r)} | {_cell(images)} |")
        lines.append("")
    if not records:
        lines.append("Fewer than two metrics apply to any benchmark of this config: nothing to compare.")
    return "\n".join(lines) + "\n"


def write_agreement(config: dict[str, Any], out: str | Path) -> Path:
    """``out`` (Markdown) and its CSV beside it."""
    out = Path(out)
    records = agreement(config)
    atomic_write_text(out, render(config, records))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["benchmark", "metric_a", "metric_b", "over", "tau", "p", "n", "left_out"])
    writer.writeheader()
    writer.writerows(records)
    atomic_write_text(out.with_suffix(".csv"), buf.getvalue())
    return out
