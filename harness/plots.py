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


def plot_win_rates(rates: Sequence[dict], out: Path, stamp: str = "") -> None:
    """The paper's Fig. 4 view: one stacked horizontal bar (win / tie / lose) per comparison, a panel
    per question, with the win share's bootstrap CI as a whisker at the win/tie boundary."""
    plt = _pyplot()
    questions = list(dict.fromkeys(r["question"] for r in rates))
    comparisons = list(dict.fromkeys(r["comparison"] for r in rates))
    colours = {"win": "#2e7d32", "tie": "#bdbdbd", "lose": "#c62828"}
    fig, axes = plt.subplots(1, len(questions), figsize=(6.5 * len(questions), 0.55 * len(comparisons) + 1.4),
                             squeeze=False, sharey=True)
    for ax, q in zip(axes[0], questions):
        by = {r["comparison"]: r for r in rates if r["question"] == q}
        y = np.arange(len(comparisons))[::-1]
        left = np.zeros(len(comparisons))
        for outcome in ("win", "tie", "lose"):
            share = np.array([by[c][outcome] if c in by else np.nan for c in comparisons])
            ax.barh(y, share, left=left, color=colours[outcome], label=outcome, height=0.6)
            for yi, l, s in zip(y, left, share):
                if s >= 0.06:
                    ax.text(l + s / 2, yi, f"{100 * s:.0f}%", ha="center", va="center", fontsize=8,
                            color="white" if outcome != "tie" else "black")
            left = left + np.nan_to_num(share)
        win = np.array([by[c]["win"] for c in comparisons])
        lo = np.array([by[c]["win_boot_lo"] for c in comparisons])
        hi = np.array([by[c]["win_boot_hi"] for c in comparisons])
        ok = np.isfinite(lo) & np.isfinite(hi)
        ax.errorbar(win[ok], y[ok], xerr=[(win - lo)[ok], (hi - win)[ok]], fmt="none", ecolor="black", capsize=3, lw=1)
        ax.set_xlim(0, 1)
        ax.set_yticks(y)
        ax.set_yticklabels(comparisons, fontsize=8)
        ax.set_xlabel("share of ratings")
        ax.set_title({"alignment": "Prompt alignment", "aesthetics": "Aesthetic quality"}.get(q, q), fontsize=10)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Human evaluation: win / tie / lose of the first system (95% bootstrap CI of the win share)", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    _save(fig, out, stamp)
