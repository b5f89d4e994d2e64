"""How reports look: the profile banner every report starts with, and a table rendered three ways.

A :class:`Table` (cells with their estimates) renders as Markdown (the report), CSV (one row per
cell, long format, for analysis) and LaTeX (booktabs). Nothing here reads results.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from harness.stats import Estimate

#: first line of every report of a profile whose numbers say nothing about image quality
BANNERS = {
    "smoke": "> **Smoke profile: these numbers say nothing about image quality.** Every model and scorer here "
             "is a tiny random-weight build; the table only shows that the pipeline runs end to end.",
    "fixtures": "> **Fixtures profile: these numbers say nothing about image quality.** Every checkpoint is a tiny "
                "random-weight file in its upstream layout (`python -m harness fixtures`); the table only shows that "
                "the paper profile's loaders and DAG run end to end.",
    "micro": "> **Micro profile: these numbers describe the synthetic micro world, not real CogView3 or SDXL.** Every "
             "model was trained by this DAG on 2 CPU cores on procedural shapes (config/micro.yaml) and judged exactly; "
             "they test the protocol and the code (relay vs single stage, T_r, distillation), not image quality at "
             "scale (README \"The micro world\").",
}
#: the same warning, short enough for a plot's title
PLOT_BANNERS = {"smoke": "SMOKE PROFILE: says nothing about image quality",
                "fixtures": "FIXTURES PROFILE: says nothing about image quality",
                "micro": "MICRO WORLD: synthetic shapes, not real CogView3"}


def profile_banner(profile: str | None) -> str | None:
    """The quality warning of a profile, or None for a profile with real weights."""
    return BANNERS.get(profile or "")


def banner(config: dict[str, Any]) -> str:
    """The first line of a report written under ``config``."""
    return profile_banner(config["profile"]) or (
        f"> Profile `{config['profile']}`: real weights as listed in the config; see the fingerprints below.")


def plot_banner(config: dict[str, Any]) -> str:
    return PLOT_BANNERS.get(config["profile"], "")


@dataclass
class Cell:
    text: str
    estimate: Estimate | None = None
    paper: float | None = None
    value: float | None = None  # set metrics (FID/KID): the one number
    note: str = ""  # why the cell is empty
    n: int | None = None  # prompts (image metrics) or images (set metrics) the value is over
    short: str = ""  # set by mark_short_cells: the cell is over fewer than others in its column

    def fmt(self) -> str:
        text = self.text + (f" **{self.short}**" if self.short else "")
        if self.paper is None:
            return text
        ours = self.estimate.mean if self.estimate else self.value
        diff = f", Δ {ours - self.paper:+.3f}" if ours is not None else ""
        return f"{text} (paper {self.paper:.3f}{diff})"

    def latex(self) -> str:
        return self._latex() + (r"$^\dagger$" if self.short else "")  # dagger: over fewer prompts than its column

    def _latex(self) -> str:
        if self.estimate is not None:
            half = (self.estimate.hi - self.estimate.lo) / 2
            return f"${self.estimate.mean:.3f}_{{\\pm {half:.3f}}}$" if self.estimate.n > 1 else f"{self.estimate.mean:.3f}"
        if self.value is not None:
            return f"{self.value:.3f}"
        return "--" if self.text in ("–", "") else latex_escape(self.text)


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[Cell | str]]
    records: list[dict] = field(default_factory=list)  # long format, one per metric cell (the CSV)
    notes: list[str] = field(default_factory=list)


def mark_short_cells(rows: list[list[Cell | str]]) -> int:
    """Flag every cell computed over fewer prompts than another cell of its column (nothing may
    differ silently); returns how many were flagged."""
    flagged = 0
    for col in range(max((len(r) for r in rows), default=0)):
        cells = [r[col] for r in rows if col < len(r) and isinstance(r[col], Cell) and r[col].n is not None]
        most = max((c.n for c in cells), default=0)
        for c in cells:
            if c.n < most:
                c.short = f"(N={c.n}, fewer than the {most} of other cells in this column)"
                flagged += 1
    return flagged


CSV_COLUMNS = ["table", "benchmark", "system", "metric", "mean", "ci_low", "ci_high", "n", "paper", "diff_vs_paper", "extra"]


def latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("Δ", r"$\Delta$"), ("↑", r"$\uparrow$"), ("↓", r"$\downarrow$")):
        text = text.replace(a, b)
    return text


def render_markdown(table: Table, first_line: str) -> str:
    lines = [first_line, "", f"# {table.title}", "", "| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    for row in table.rows:
        lines.append("| " + " | ".join(c.fmt() if isinstance(c, Cell) else str(c) for c in row) + " |")
    if table.notes:
        lines.append("")
        lines += table.notes
    return "\n".join(lines) + "\n"


def render_csv(table: Table) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in table.records:
        writer.writerow({k: r.get(k, "") for k in CSV_COLUMNS})
    return buf.getvalue()


def render_latex(table: Table, first_line: str) -> str:
    plain = first_line.replace("> ", "").replace("**", "")
    cols = "l" * 2 + "r" * (len(table.header) - 2)
    lines = [f"% {plain}", "% Cells: mean with the half-width of the 95% bootstrap CI over prompts.",
             r"\begin{table}[t]", r"\centering", f"\\caption{{{latex_escape(table.title)}}}",
             f"\\begin{{tabular}}{{{cols}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in table.header) + r" \\", r"\midrule"]
    for row in table.rows:
        lines.append(" & ".join(c.latex() if isinstance(c, Cell) else latex_escape(str(c)) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
