"""The paper's tables, rebuilt from per-image scores and manifests.

Each table is built once as a :class:`Table` (cells with their estimates) and rendered three ways:
Markdown (the report), CSV (one row per cell, long format, for analysis) and LaTeX (booktabs).
Every cell is a mean over prompts with N and a 95% percentile-bootstrap CI; the paper's value is
printed beside it with the difference where ``harness/paper_values.yaml`` has one.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.io import atomic_write_text, read_jsonl, records_csv
from harness.paper import paper_value
from harness.runner import manifest_path, system_dir
from harness.scoring import scores_path
from harness.stats import Estimate, bootstrap_mean, paired_bootstrap, per_prompt_means, per_prompt_table
from harness.timecost import PAPER_TIME_COST_S

SMOKE_BANNER = (
    "> **Smoke profile: these numbers say nothing about image quality.** Every model and scorer here "
    "is a tiny random-weight build; the table only shows that the pipeline runs end to end."
)

BENCHMARK_TITLES = {"drawbench": "DrawBench", "parti": "PartiPrompts", "coco5k": "COCO-5k", "smoke": "smoke set"}
TABLE1_METRICS = (("aesthetic", "Aes"), ("hpsv2", "HPS v2"), ("imagereward", "ImageReward"))
TABLE3_METRICS = (("hpsv2", "HPS v2"), ("imagereward", "ImageReward"))
TABLE1_BENCHMARKS = ("drawbench", "parti")
TABLE2_BENCHMARKS = ("coco5k",)
BASELINE_MODELS = ("sdxl", "lcm-sdxl", "stable-cascade")
#: per-category breakdowns: benchmark -> prompt fields to group by
CATEGORY_FIELDS = {"drawbench": ("category",), "parti": ("category", "challenge"), "smoke": ("category",)}


def table1_metrics(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Table 1's metric columns; the HPS column reads v2.1 scores when only those are configured."""
    out = []
    for metric, label in TABLE1_METRICS:
        if metric == "hpsv2" and "hpsv2" not in config["metrics"] and "hpsv21" in config["metrics"]:
            metric, label = "hpsv21", "HPS v2.1"
        out.append((metric, label))
    return out


def table2_metrics(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Table 2 (COCO-5k): FID, then the Table 1 metrics; KID when configured."""
    extra = [("kid", "KID")] if "kid" in config["metrics"] else []
    return [("fid", "FID"), *extra, *table1_metrics(config)]


def table3_metrics(config: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m, label) for m, label in table1_metrics(config) if m != "aesthetic"]


def table1_benchmarks(config: dict[str, Any]) -> list[str]:
    """DrawBench and PartiPrompts, then any other configured prompt set (smoke) except COCO."""
    return list(TABLE1_BENCHMARKS) + [b for b in config["benchmarks"] if b not in TABLE1_BENCHMARKS + TABLE2_BENCHMARKS]


def table3_benchmark(config: dict[str, Any]) -> str:
    """DrawBench as in the paper; the first configured prompt set when DrawBench is not configured."""
    if "drawbench" in config["benchmarks"]:
        return "drawbench"
    return next(b for b in config["benchmarks"] if b != "coco5k")


FIXTURES_BANNER = (
    "> **Fixtures profile: these numbers say nothing about image quality.** Every checkpoint is a tiny "
    "random-weight file in its upstream layout (`python -m harness fixtures`); the table only shows that the "
    "paper profile's loaders and DAG run end to end."
)


def header_line(config: dict[str, Any]) -> str:
    if config["profile"] == "smoke":
        return SMOKE_BANNER
    if config["profile"] == "fixtures":
        return FIXTURES_BANNER
    return f"> Profile `{config['profile']}`: real weights as listed in the config; see the fingerprints below."


# ---- systems ------------------------------------------------------------------------------------


def stage_chain(config: dict[str, Any], system: str) -> list[str]:
    """The system and the stages it reads images from, first stage first (e.g. base, relay)."""
    chain = [system]
    while config["systems"][chain[0]].get("input"):
        chain.insert(0, config["systems"][chain[0]]["input"])
    return chain


def final_systems(config: dict[str, Any]) -> list[str]:
    """Table rows: systems that are a model's output (not an intermediate stage such as a 512 px
    base) and not derived for an ablation."""
    from models.registry import model_class

    return [name for name, spec in config["systems"].items()
            if not model_class(spec["model"]).IS_STAGE and not spec.get("ablation")]


def scored_systems(config: dict[str, Any]) -> list[str]:
    """Every system whose images are scored: table rows and ablation systems."""
    from models.registry import model_class

    return [name for name, spec in config["systems"].items() if not model_class(spec["model"]).IS_STAGE]


def reference_system(config: dict[str, Any]) -> str | None:
    from harness.ablations import sweep_source

    return sweep_source(config["systems"])


def baselines(config: dict[str, Any]) -> list[str]:
    return [s for s in final_systems(config) if config["systems"][s]["model"] in BASELINE_MODELS]


# ---- scores -------------------------------------------------------------------------------------


@dataclass
class ScoreSet:
    """One system's scores for one (benchmark, metric), as the table reads them."""

    kind: str
    rows: list[dict] = field(default_factory=list)  # per image: prompt_id, score (image metrics)
    value: dict = field(default_factory=dict)  # set metrics: value, std, n

    def per_prompt(self) -> dict[str, float]:
        return per_prompt_table([r["prompt_id"] for r in self.rows], [r["score"] for r in self.rows])


class ScoreReader:
    """Reads score files, refusing to mix scorer versions within one (benchmark, metric) column."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.digests: dict[tuple[str, str], tuple[str, str]] = {}

    def read(self, benchmark: str, system: str, metric: str) -> ScoreSet:
        path = scores_path(self.config["results_dir"], benchmark, system, metric)
        if not path.is_file():
            raise HarnessError(f"scores file {path} is missing; run `snakemake {path}` first")
        data = json.loads(path.read_text())
        prev = self.digests.setdefault((benchmark, metric), (data["scorer_digest"], system))
        if prev[0] != data["scorer_digest"]:
            raise HarnessError(
                f"{benchmark}/{metric}: systems {prev[1]!r} and {system!r} were scored by different scorer versions "
                f"({prev[0]} vs {data['scorer_digest']}); rescore both before putting them in one column"
            )
        if data.get("kind") == "set":
            return ScoreSet("set", value=data)
        return ScoreSet("image", rows=data["rows"])

    def fingerprint_note(self) -> str:
        return "Scorer fingerprints: " + ", ".join(f"{b}/{m} `{d}`" for (b, m), (d, _) in sorted(self.digests.items()))


# ---- the table model ----------------------------------------------------------------------------


@dataclass
class Cell:
    text: str
    estimate: Estimate | None = None
    paper: float | None = None
    value: float | None = None  # set metrics (FID/KID): the one number
    n: int | None = None
    note: str = ""  # why the cell is empty

    def fmt(self) -> str:
        if self.paper is None:
            return self.text
        ours = self.estimate.mean if self.estimate else self.value
        diff = f", Δ {ours - self.paper:+.3f}" if ours is not None else ""
        return f"{self.text} (paper {self.paper:.3f}{diff})"

    def latex(self) -> str:
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


def latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("Δ", r"$\Delta$")):
        text = text.replace(a, b)
    return text


def render_markdown(table: Table, banner: str) -> str:
    lines = [banner, "", f"# {table.title}", "", "| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    for row in table.rows:
        lines.append("| " + " | ".join(c.fmt() if isinstance(c, Cell) else str(c) for c in row) + " |")
    if table.notes:
        lines.append("")
        lines += table.notes
    return "\n".join(lines) + "\n"


def render_csv(table: Table) -> str:
    buf = io.StringIO()
    keys = ["table", "benchmark", "system", "metric", "mean", "ci_low", "ci_high", "n", "paper", "diff_vs_paper", "extra"]
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in table.records:
        writer.writerow({k: r.get(k, "") for k in keys})
    return buf.getvalue()


def render_latex(table: Table, banner: str) -> str:
    plain = banner.replace("> ", "").replace("**", "")
    cols = "l" * 2 + "r" * (len(table.header) - 2)
    lines = [f"% {plain}", "% Cells: mean with the half-width of the 95% bootstrap CI over prompts.",
             r"\begin{table}[t]", r"\centering", f"\\caption{{{latex_escape(table.title)}}}",
             f"\\begin{{tabular}}{{{cols}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in table.header) + r" \\", r"\midrule"]
    for row in table.rows:
        lines.append(" & ".join(c.latex() if isinstance(c, Cell) else latex_escape(str(c)) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def metric_cell(reader: ScoreReader, config: dict[str, Any], table_key: str, benchmark: str, system: str,
                metric: str, paper_row: str | int | None = None) -> tuple[Cell, dict]:
    record = {"table": table_key, "benchmark": benchmark, "system": system, "metric": metric}
    if benchmark not in config["benchmarks"]:
        return Cell("–", note=f"benchmark `{benchmark}` not in this config's benchmarks"), {}
    if metric not in config["metrics"]:
        return Cell("–", note=f"metric `{metric}` not in this config's metrics"), {}
    paper = paper_value(table_key, benchmark, paper_row if paper_row is not None else system, metric)
    scores = reader.read(benchmark, system, metric)
    if scores.kind == "set":  # FID / KID: one number for the image set
        data = scores.value
        std = f" ± {data['std']:.4f}" if "std" in data else ""
        record.update(mean=data["value"], n=data["n"], paper=paper, extra=f"std={data['std']}" if "std" in data else "")
        if paper is not None:
            record["diff_vs_paper"] = data["value"] - paper
        return Cell(f"{data['value']:.4f}{std} (N={data['n']})", value=data["value"], n=data["n"], paper=paper), record
    values = per_prompt_means([r["prompt_id"] for r in scores.rows], [r["score"] for r in scores.rows])
    est = bootstrap_mean(values, seed=config["seed"])
    record.update(mean=est.mean, ci_low=est.lo, ci_high=est.hi, n=est.n, paper=paper)
    if paper is not None:
        record["diff_vs_paper"] = est.mean - paper
    return Cell(est.fmt(), estimate=est, n=est.n, paper=paper), record


# ---- Table 1 and 2 ------------------------------------------------------------------------------


def time_cost(config: dict[str, Any], benchmarks: list[str], system: str) -> tuple[str, str]:
    """Mean generation wall time per image x 4 from the manifests (all stages), and the device."""
    total, device = 0.0, "?"
    for stage in stage_chain(config, system):
        times = []
        for b in benchmarks:
            path = manifest_path(config["results_dir"], b, stage)
            if path.is_file():
                times += [r["wall_time_s"] for r in read_jsonl(path)]
                fp = system_dir(config["results_dir"], b, stage) / "system.json"
                if fp.is_file():
                    device = json.loads(fp.read_text())["fingerprint"].get("device_type", "?")
        if not times:
            return "–", device
        total += sum(times) / len(times)
    return f"{4 * total:.2f} s", device


def paper_table(config, steps_labels, table_key: str, title: str, groups: list[str],
                metrics: list[tuple[str, str]]) -> tuple[Table, ScoreReader]:
    header = ["Model", "Steps", "Time cost (paper)"]
    for b in groups:
        header += [f"{BENCHMARK_TITLES[b]} {label}" for _, label in metrics]
    reader = ScoreReader(config)
    rows, records, empty, devices = [], [], {}, set()
    for system in final_systems(config):
        cost, device = time_cost(config, [b for b in groups if b in config["benchmarks"]], system)
        devices.add(device)
        paper = PAPER_TIME_COST_S.get(system)
        row: list[Cell | str] = [system, "+".join(steps_labels.get(s, "?") for s in stage_chain(config, system)),
                                 f"{cost} ({paper:.2f} s)" if paper is not None else f"{cost} (–)"]
        for b in groups:
            for metric, _ in metrics:
                cell, record = metric_cell(reader, config, table_key, b, system, metric)
                if cell.note:
                    empty.setdefault(cell.note, set()).add(b)
                if record:
                    records.append(record)
                row.append(cell)
        rows.append(row)
    notes = [
        "Cells: mean [95% percentile-bootstrap CI over prompts] (N = prompts); samples of a prompt are averaged first; "
        "(paper x, Δ d) where the paper's value is entered in harness/paper_values.yaml. "
        "FID/KID: one value for the image set against the reference images (KID: mean ± std over subsets).",
        "Steps of a multi-stage system are per stage (base+relay); stages that only feed another system are not rows.",
        f"Time cost: mean generation wall time per image x 4 from the manifests, on {', '.join(sorted(devices))}; "
        "the paper's figure (one A100, batch 4) in brackets. This is not the paper's timing protocol: "
        "`reports/timecost.md` is.",
    ]
    if empty:
        notes += ["", "Not computed (–):"] + [f"- {note}" for note in sorted(empty)]
    relays = [(name, n) for name in final_systems(config) if (n := relay_note(config, name))]
    if relays:
        notes += ["", "Relay grids:"] + [f"- {name}: {n}" for name, n in relays]
    return Table(title, header, rows, records, notes), reader


def paired_section(config: dict[str, Any], reader: ScoreReader, groups: list[str],
                   metrics: list[tuple[str, str]]) -> tuple[list[str], list[dict]]:
    """Paired bootstrap of CogView3 minus each baseline, on the prompts (and seeds) both share."""
    ref = reference_system(config)
    others = [s for s in final_systems(config) if s != ref]
    if ref is None or ref not in final_systems(config) or not others:
        return [], []
    lines = ["", f"## Paired differences: {ref} minus each system", "",
             "Mean over prompts of (ours − theirs) on identical prompts and seeds, 95% paired-bootstrap CI, "
             "two-sided bootstrap p.", "", "| Benchmark | Metric | " + " | ".join(f"{ref} − {o}" for o in others) + " |",
             "|---|---|" + "---|" * len(others)]
    records = []
    for b in groups:
        if b not in config["benchmarks"]:
            continue
        for metric, label in metrics:
            if metric not in config["metrics"] or metric in ("fid", "kid"):
                continue
            a = reader.read(b, ref, metric).per_prompt()
            cells = []
            for o in others:
                d = paired_bootstrap(a, reader.read(b, o, metric).per_prompt(), seed=config["seed"])
                cells.append(d.fmt())
                records.append({"benchmark": b, "metric": metric, "system": ref, "versus": o, "mean_diff": d.diff.mean,
                                "ci_low": d.diff.lo, "ci_high": d.diff.hi, "n": d.diff.n, "p_value": d.p_value})
            lines.append(f"| {BENCHMARK_TITLES[b]} | {label} | " + " | ".join(cells) + " |")
    return lines, records


def write_paper_table(config: dict[str, Any], out: str | Path, table_key: str) -> Path:
    """Table 1 or 2 as .md (with paired differences), .csv, .tex, and Table 1's per-category files."""
    labels = steps_labels(config)
    if table_key == "table1":
        groups, metrics, title = table1_benchmarks(config), table1_metrics(config), "Table 1: DrawBench and PartiPrompts"
    else:
        groups, metrics, title = list(TABLE2_BENCHMARKS), table2_metrics(config), "Table 2: COCO-5k"
    table, reader = paper_table(config, labels, table_key, title, groups, metrics)
    paired, paired_records = paired_section(config, reader, groups, metrics)
    table.notes += paired + ["", reader.fingerprint_note()]
    out = Path(out)
    banner = header_line(config)
    atomic_write_text(out, render_markdown(table, banner))
    atomic_write_text(out.with_suffix(".csv"), render_csv(table))
    atomic_write_text(out.with_suffix(".tex"), render_latex(table, banner))
    atomic_write_text(out.with_name(out.stem + "_paired.csv"), records_csv(paired_records))
    if table_key == "table1":
        from harness.plots import plot_categories

        breakdown = category_breakdown(config, reader, groups, metrics)
        atomic_write_text(out.with_name(out.stem + "_categories.md"), render_categories(config, breakdown))
        atomic_write_text(out.with_name(out.stem + "_categories.csv"), records_csv(breakdown))
        plot_categories(breakdown, out.with_name(out.stem + "_categories.png"), banner_short(config))
    return out


def banner_short(config: dict[str, Any]) -> str:
    return {"smoke": "SMOKE PROFILE: says nothing about image quality",
            "fixtures": "FIXTURES PROFILE: says nothing about image quality"}.get(config["profile"], "")


# ---- per-category breakdowns --------------------------------------------------------------------


def category_breakdown(config, reader: ScoreReader, groups: list[str], metrics: list[tuple[str, str]]) -> list[dict]:
    """Mean [CI] per (benchmark, grouping field, group, system, metric) from the manifests' prompt fields."""
    from harness.prompts import load_prompts

    out = []
    for b in groups:
        if b not in config["benchmarks"] or b not in CATEGORY_FIELDS:
            continue
        prompts = {p.id: p for p in load_prompts(b, config["data_dir"], config["num_prompts"])}
        for fld in CATEGORY_FIELDS[b]:
            for metric, label in metrics:
                if metric not in config["metrics"] or metric in ("fid", "kid"):
                    continue
                for system in final_systems(config):
                    per_prompt = reader.read(b, system, metric).per_prompt()
                    by_group: dict[str, list[float]] = {}
                    for pid, v in per_prompt.items():
                        by_group.setdefault(getattr(prompts[pid], fld) or "(none)", []).append(v)
                    for group in sorted(by_group):
                        est = bootstrap_mean(by_group[group], seed=config["seed"])
                        out.append({"benchmark": b, "field": fld, "group": group, "system": system, "metric": metric,
                                    "label": label, "mean": est.mean, "ci_low": est.lo, "ci_high": est.hi, "n": est.n})
    return out


def render_categories(config: dict[str, Any], records: list[dict]) -> str:
    lines = [header_line(config), "", "# Table 1 by category", ""]
    keys = list(dict.fromkeys((r["benchmark"], r["field"], r["metric"], r["label"]) for r in records))
    for b, fld, metric, label in keys:
        rs = [r for r in records if (r["benchmark"], r["field"], r["metric"]) == (b, fld, metric)]
        systems = list(dict.fromkeys(r["system"] for r in rs))
        lines += [f"## {BENCHMARK_TITLES[b]}: {label} by {fld}", "", f"| {fld} | " + " | ".join(systems) + " |",
                  "|---|" + "---|" * len(systems)]
        for group in dict.fromkeys(r["group"] for r in rs):
            cells = {r["system"]: Estimate(r["mean"], r["ci_low"], r["ci_high"], r["n"]).fmt() for r in rs if r["group"] == group}
            lines.append(f"| {group} | " + " | ".join(cells.get(s, "–") for s in systems) + " |")
        lines.append("")
    if not keys:
        lines.append("No configured benchmark has prompt categories.")
    return "\n".join(lines) + "\n"


# ---- Table 3: the T_r sweep ---------------------------------------------------------------------


def write_table3(config: dict[str, Any], out: str | Path) -> Path:
    from harness.ablations import tr_sweep_points
    from harness.plots import plot_tr_sweep

    points = tr_sweep_points(config)
    if not points:
        raise HarnessError("Table 3 needs `tr_sweep` (relay starts) and a CogView3 relay system named `cogview3` in the config")
    bench = table3_benchmark(config)
    metrics = [(m, label) for m, label in table3_metrics(config) if m in config["metrics"]]
    if not metrics:
        raise HarnessError("Table 3 needs metric hpsv2 (or hpsv21) or imagereward in the config's `metrics`")
    labels = steps_labels(config)
    reader = ScoreReader(config)
    rows, records = [], []
    for t_r, system in points:
        row: list[Cell | str] = [str(t_r), system, "+".join(labels[s] for s in stage_chain(config, system))]
        for metric, _ in metrics:
            cell, record = metric_cell(reader, config, "table3", bench, system, metric, paper_row=t_r)
            record["extra"] = f"t_r={t_r}"
            records.append(record)
            row.append(cell)
        rows.append(row)
    base = stage_chain(config, points[0][1])[0]
    table = Table(f"Table 3: relay start T_r ({BENCHMARK_TITLES[bench]})",
                  ["T_r", "System", "Steps"] + [label for _, label in metrics], rows, records)
    table.notes = [
        f"Every point relays the same base-stage images (`{base}`): one base pass, {len(points)} relay runs.",
        "Cells: mean [95% percentile-bootstrap CI over prompts] (N = prompts).",
        "", "Relay grids:"] + [f"- {relay_note(config, s)}" for _, s in points] + ["", reader.fingerprint_note()]
    out = Path(out)
    banner = header_line(config)
    atomic_write_text(out, render_markdown(table, banner))
    atomic_write_text(out.with_suffix(".csv"), render_csv(table))
    atomic_write_text(out.with_suffix(".tex"), render_latex(table, banner))
    plot_tr_sweep(records, [m for m, _ in metrics], dict(metrics), out.with_suffix(".png"), banner_short(config))
    return out


# ---- labels -------------------------------------------------------------------------------------


def relay_note(config: dict[str, Any], system: str) -> str:
    """Which relay grid and blending a system used (every report must say it)."""
    from models.registry import build_system

    sys_obj = build_system(system, config["systems"][system], config["weights"], "cpu", "float32")
    return sys_obj.describe_grid() if hasattr(sys_obj, "describe_grid") else ""


def steps_labels(config: dict[str, Any]) -> dict[str, str]:
    from models.registry import build_system

    return {
        name: build_system(name, spec, config["weights"], "cpu", "float32").steps_label()
        for name, spec in config["systems"].items()
    }


# ---- kept for callers that want the Markdown of Table 1 / 2 only --------------------------------


def table1(config: dict[str, Any], labels: dict[str, str]) -> str:
    table, reader = paper_table(config, labels, "table1", "Table 1: DrawBench and PartiPrompts",
                                table1_benchmarks(config), table1_metrics(config))
    table.notes += ["", reader.fingerprint_note()]
    return render_markdown(table, header_line(config))


def table2(config: dict[str, Any], labels: dict[str, str]) -> str:
    table, reader = paper_table(config, labels, "table2", "Table 2: COCO-5k", list(TABLE2_BENCHMARKS), table2_metrics(config))
    table.notes += ["", reader.fingerprint_note()]
    return render_markdown(table, header_line(config))


def write_table1(config: dict[str, Any], out: str | Path) -> Path:
    return write_paper_table(config, out, "table1")


def write_table2(config: dict[str, Any], out: str | Path) -> Path:
    return write_paper_table(config, out, "table2")
