"""Figures beside the tables (matplotlib, Agg backend, PNG): metric vs T_r with CIs, per-category bars."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, stamp: str) -> None:
    if stamp:  # smoke-profile figures carry the warning on the image itself
        fig.text(0.5, -0.02, stamp, ha="center", va="top", fontsize=8, color="firebrick")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight", metadata={"Software": None})
    tmp.replace(out)
    _pyplot().close(fig)


def plot_tr_sweep(records: Sequence[dict], metrics: Sequence[str], labels: dict[str, str], out: Path, stamp: str = "") -> None:
    """One panel per metric: mean with its 95% CI against T_r (the paper's Table 3 / Fig. 6 view)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        rs = sorted((r for r in records if r["metric"] == metric), key=lambda r: int(r["extra"].split("=")[1]))
        t = [int(r["extra"].split("=")[1]) for r in rs]
        mean = np.array([r["mean"] for r in rs])
        lo = np.array([r.get("ci_low", r["mean"]) for r in rs])
        hi = np.array([r.get("ci_high", r["mean"]) for r in rs])
        ax.errorbar(t, mean, yerr=[mean - lo, hi - mean], marker="o", capsize=3)
        ax.set_xlabel("relay start $T_r$")
        ax.set_ylabel(labels.get(metric, metric))
        ax.set_xticks(t)
        ax.grid(alpha=0.3)
    fig.suptitle("Relay start sweep (95% bootstrap CI over prompts)")
    _save(fig, out, stamp)


def plot_categories(records: Sequence[dict], out: Path, stamp: str = "") -> None:
    """Grouped bars per category, one bar per system, CI whiskers; one panel per (benchmark, field, metric)."""
    plt = _pyplot()
    panels = list(dict.fromkeys((r["benchmark"], r["field"], r["metric"], r["label"]) for r in records))
    if not panels:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no categorised benchmark configured", ha="center")
        _save(fig, out, stamp)
        return
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.2 * len(panels)), squeeze=False)
    for ax, (bench, fld, metric, label) in zip(axes[:, 0], panels):
        rs = [r for r in records if (r["benchmark"], r["field"], r["metric"]) == (bench, fld, metric)]
        groups = list(dict.fromkeys(r["group"] for r in rs))
        systems = list(dict.fromkeys(r["system"] for r in rs))
        width = 0.8 / len(systems)
        for i, system in enumerate(systems):
            by = {r["group"]: r for r in rs if r["system"] == system}
            x = np.arange(len(groups)) + i * width
            mean = np.array([by[g]["mean"] if g in by else np.nan for g in groups])
            err = np.array([[by[g]["mean"] - by[g]["ci_low"], by[g]["ci_high"] - by[g]["mean"]] if g in by else [0, 0]
                            for g in groups]).T
            ax.bar(x, mean, width, yerr=err, capsize=2, label=system)
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2)
        ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.set_title(f"{bench}: {label} by {fld}", fontsize=10)
        ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    _save(fig, out, stamp)
