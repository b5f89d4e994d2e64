"""The paper's Tables 1-3, rebuilt from per-image scores and manifests.

Every cell is a mean over prompts with N and a 95% percentile-bootstrap CI; the paper's value is
printed beside it with the difference where ``harness/paper_values.yaml`` has one. Which benchmarks
and metrics a table shows comes from their registries (:data:`harness.prompts.BENCHMARKS`, the
scorer classes' facts): a table shows every configured metric of the right kind, and the paper's
benchmarks for it. Rendering is :mod:`harness.render`; rows and Steps labels :mod:`harness.systems`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.ablations import sweep_source
from harness.errors import HarnessError
from harness.io import atomic_write_text, records_csv
from harness.manifests import generation_seconds
from harness.paper import paper_metrics, paper_time_cost, paper_value
from harness.prompts import BENCHMARKS
from harness.render import Cell, Table, banner, mark_short_cells, plot_banner, render_csv, render_latex, render_markdown
from harness.scorers.registry import scorer_class
from harness.scores import ScoreReader
from harness.stats import Estimate, bootstrap_mean, paired_bootstrap, per_prompt_means
from harness.systems import final_systems, grid_note, stage_chain, steps_label, unet_calls

CELL_NOTE = ("Cells: mean [95% percentile-bootstrap CI over prompts] (N = prompts); samples of a prompt are averaged "
             "first; (paper x, Δ d) where the paper's value is entered in harness/paper_values.yaml. Set metrics "
             "(FID/KID): one value for the image set against the reference images (KID: mean ± std over subsets). "
             "↑/↓: higher/lower is better.")


# ---- what each table shows ----------------------------------------------------------------------


def image_metrics(config: dict[str, Any]) -> list[str]:
    """Configured per-image metrics, in config order."""
    return [m for m in config["metrics"] if not scorer_class(m).set_metric]


def _paper_first(metrics: list[str], table: str) -> list[str]:
    """The paper's columns of ``table`` first, in its order and unchanged; every other metric after them."""
    paper = [m for m in paper_metrics(table) if m in metrics]
    return paper + [m for m in metrics if m not in paper]


def table1_metrics(config: dict[str, Any]) -> list[str]:
    """The paper's columns (Aes, HPS v2.0, ImageReward), then the other per-image metrics in config order (HPS v2.1,
    CLIP score, ...), then set metrics (a set metric shows only where it applies to a Table 1 benchmark: the micro
    world's distance, not FID/KID, whose benchmarks are Table 2's)."""
    return _paper_first(image_metrics(config) + [m for m in config["metrics"] if scorer_class(m).set_metric], "table1")


def table2_metrics(config: dict[str, Any]) -> list[str]:
    """The paper's columns (FID, Aes, HPS v2.0, ImageReward), then the other set metrics, then the other per-image
    ones."""
    return _paper_first([m for m in config["metrics"] if scorer_class(m).set_metric] + image_metrics(config), "table2")


def table3_metrics(config: dict[str, Any]) -> list[str]:
    return image_metrics(config)


def _paper_benchmarks(table: str) -> list[str]:
    return [name for name, b in BENCHMARKS.items() if table in b.paper_tables]


def table1_benchmarks(config: dict[str, Any]) -> list[str]:
    """The paper's (DrawBench, PartiPrompts), then any other configured prompt set without references."""
    paper = _paper_benchmarks("table1")
    return paper + [b for b in config["benchmarks"]
                    if b not in paper and not BENCHMARKS[b].paper_tables and not BENCHMARKS[b].has_references]


def table2_benchmarks(config: dict[str, Any]) -> list[str]:
    """The paper's (COCO-5k), then any other configured benchmark with reference images."""
    paper = _paper_benchmarks("table2")
    return paper + [b for b in config["benchmarks"] if b not in paper and BENCHMARKS[b].has_references]


def table3_benchmark(config: dict[str, Any]) -> str:
    """The paper's (DrawBench) when configured; else the first configured prompt set without references."""
    for b in _paper_benchmarks("table3"):
        if b in config["benchmarks"]:
            return b
    return next(b for b in config["benchmarks"] if not BENCHMARKS[b].has_references)


# ---- cells --------------------------------------------------------------------------------------


def metric_cell(reader: ScoreReader, config: dict[str, Any], table_key: str, benchmark: str, system: str,
                metric: str, paper_row: str | int | None = None) -> tuple[Cell, dict]:
    record = {"table": table_key, "benchmark": benchmark, "system": system, "metric": metric}
    if benchmark not in config["benchmarks"]:
        return Cell("–", note=f"benchmark `{benchmark}` not in this config's benchmarks"), {}
    paper = paper_value(table_key, benchmark, paper_row if paper_row is not None else system, metric)
    scores = reader.read(benchmark, system, metric)
    if scores.set_metric:  # one number for the image set
        data = scores.value
        std = f" ± {data['std']:.4f}" if "std" in data else ""
        record.update(mean=data["value"], n=data["n"], paper=paper, extra=f"std={data['std']}" if "std" in data else "")
        if paper is not None:
            record["diff_vs_paper"] = data["value"] - paper
        return Cell(f"{data['value']:.4f}{std} (N={data['n']})", value=data["value"], paper=paper, n=data["n"]), record
    values = per_prompt_means([r["prompt_id"] for r in scores.rows], [r["score"] for r in scores.rows])
    est = bootstrap_mean(values, seed=config["seed"])
    record.update(mean=est.mean, ci_low=est.lo, ci_high=est.hi, n=est.n, paper=paper)
    if paper is not None:
        record["diff_vs_paper"] = est.mean - paper
    return Cell(est.fmt(), estimate=est, paper=paper, n=est.n), record


def time_cost_cell(config: dict[str, Any], benchmarks: list[str], system: str) -> tuple[str, str]:
    """Mean generation wall time per image x 4 over the row's stages (from the manifests), with the
    paper's figure in brackets; and the device it was measured on."""
    seconds, device = generation_seconds(config["results_dir"], benchmarks, stage_chain(config, system))
    ours = "–" if seconds is None else f"{4 * seconds:.2f} s"
    paper = paper_time_cost(system)
    return f"{ours} ({paper:.2f} s)" if paper is not None else f"{ours} (–)", device


# ---- Table 1 and 2 ------------------------------------------------------------------------------


def paper_table(config: dict[str, Any], table_key: str, title: str, groups: list[str],
                metrics: list[str]) -> tuple[Table, ScoreReader]:
    header = ["Model", "Steps", "UNet calls", "Time cost (paper)"]
    for b in groups:
        header += [f"{BENCHMARKS[b].title} {scorer_class(m).heading()}" for m in metrics if scorer_class(m).applies_to(b)]
    reader = ScoreReader(config)
    rows, records, empty, devices = [], [], {}, set()
    for system in final_systems(config):
        cost, device = time_cost_cell(config, [b for b in groups if b in config["benchmarks"]], system)
        devices.add(device)
        row: list[Cell | str] = [system, steps_label(config, system), str(unet_calls(config, system)), cost]
        for b in groups:
            for metric in metrics:
                if not scorer_class(metric).applies_to(b):
                    continue
                cell, record = metric_cell(reader, config, table_key, b, system, metric)
                if cell.note:
                    empty.setdefault(cell.note, set()).add(b)
                if record:
                    records.append(record)
                row.append(cell)
        rows.append(row)
    short = mark_short_cells(rows)
    notes = [
        CELL_NOTE,
        "Steps of a multi-stage system are per stage (base+relay); stages that only feed another system are not rows. "
        "UNet calls: denoiser evaluations per image over all stages (x2 per step under CFG; distilled: x1).",
        f"Time cost: mean generation wall time per image x 4 from the manifests, on {', '.join(sorted(devices))}; "
        "the paper's figure (one A100, batch 4) in brackets. This is not the paper's timing protocol: "
        "`reports/timecost.md` is.",
    ]
    if short:
        notes += ["", f"**{short} cells are computed over fewer prompts than other cells of their column** (marked)."]
    if empty:
        notes += ["", "Not computed (–):"] + [f"- {note}" for note in sorted(empty)]
    grids = [(name, n) for name in final_systems(config) if (n := grid_note(config, name))]
    if grids:
        notes += ["", "Relay grids:"] + [f"- {name}: {n}" for name, n in grids]
    return Table(title, header, rows, records, notes), reader


def paired_section(config: dict[str, Any], reader: ScoreReader, groups: list[str],
                   metrics: list[str]) -> tuple[list[str], list[dict]]:
    """Paired bootstrap of CogView3 minus each other row, on the prompts (and seeds) both share."""
    ref = sweep_source(config["systems"])
    rows = final_systems(config)
    others = [s for s in rows if s != ref]
    if ref is None or ref not in rows or not others:
        return [], []
    lines = ["", f"## Paired differences: {ref} minus each system", "",
             "Mean over prompts of (ours − theirs) on identical prompts and seeds, 95% paired-bootstrap CI, "
             "two-sided bootstrap p.", "", "| Benchmark | Metric | " + " | ".join(f"{ref} − {o}" for o in others) + " |",
             "|---|---|" + "---|" * len(others)]
    records = []
    for b in groups:
        if b not in config["benchmarks"]:
            continue
        for metric in metrics:
            if scorer_class(metric).set_metric:
                continue
            a = reader.read(b, ref, metric).per_prompt()
            cells = []
            for o in others:
                d = paired_bootstrap(a, reader.read(b, o, metric).per_prompt(), seed=config["seed"])
                cells.append(d.fmt())
                records.append({"benchmark": b, "metric": metric, "system": ref, "versus": o, "mean_diff": d.diff.mean,
                                "ci_low": d.diff.lo, "ci_high": d.diff.hi, "n": d.diff.n, "p_value": d.p_value})
            lines.append(f"| {BENCHMARKS[b].title} | {scorer_class(metric).heading()} | " + " | ".join(cells) + " |")
    return lines, records


def write_paper_table(config: dict[str, Any], out: str | Path, table_key: str) -> Path:
    """Table 1 or 2 as .md (with paired differences), .csv, .tex, and Table 1's per-category files."""
    if table_key == "table1":
        groups, metrics, title = table1_benchmarks(config), table1_metrics(config), "Table 1"
    else:
        groups, metrics, title = table2_benchmarks(config), table2_metrics(config), "Table 2"
    # titled by the benchmarks it covers here (the paper's: DrawBench and PartiPrompts; COCO-5k)
    title += ": " + " and ".join(BENCHMARKS[b].title for b in groups if b in config["benchmarks"])
    table, reader = paper_table(config, table_key, title, groups, metrics)
    paired, paired_records = paired_section(config, reader, groups, metrics)
    table.notes += paired + ["", reader.fingerprint_note()]
    out = Path(out)
    first_line = banner(config)
    atomic_write_text(out, render_markdown(table, first_line))
    atomic_write_text(out.with_suffix(".csv"), render_csv(table))
    atomic_write_text(out.with_suffix(".tex"), render_latex(table, first_line))
    atomic_write_text(out.with_name(out.stem + "_paired.csv"), records_csv(paired_records))
    if table_key == "table1":
        from harness.plots import plot_categories

        breakdown = category_breakdown(config, reader, groups, metrics)
        atomic_write_text(out.with_name(out.stem + "_categories.md"), render_categories(config, breakdown))
        atomic_write_text(out.with_name(out.stem + "_categories.csv"), records_csv(breakdown))
        plot_categories(breakdown, out.with_name(out.stem + "_categories.png"), plot_banner(config))
    return out


def write_table1(config: dict[str, Any], out: str | Path) -> Path:
    return write_paper_table(config, out, "table1")


def write_table2(config: dict[str, Any], out: str | Path) -> Path:
    return write_paper_table(config, out, "table2")


# ---- per-category breakdowns --------------------------------------------------------------------


def category_breakdown(config: dict[str, Any], reader: ScoreReader, groups: list[str], metrics: list[str]) -> list[dict]:
    """Mean [CI] per (benchmark, grouping field, group, system, metric) from the prompts' fields."""
    from harness.prompts import load_prompts

    out = []
    for b in groups:
        if b not in config["benchmarks"] or not BENCHMARKS[b].category_fields:
            continue
        prompts = {p.id: p for p in load_prompts(b, config["data_dir"], config["num_prompts"])}
        for fld in BENCHMARKS[b].category_fields:
            for metric in metrics:
                if scorer_class(metric).set_metric:
                    continue
                for system in final_systems(config):
                    per_prompt = reader.read(b, system, metric).per_prompt()
                    by_group: dict[str, list[float]] = {}
                    for pid, v in per_prompt.items():
                        by_group.setdefault(getattr(prompts[pid], fld) or "(none)", []).append(v)
                    for group in sorted(by_group):
                        est = bootstrap_mean(by_group[group], seed=config["seed"])
                        out.append({"benchmark": b, "field": fld, "group": group, "system": system, "metric": metric,
                                    "label": scorer_class(metric).label, "mean": est.mean, "ci_low": est.lo,
                                    "ci_high": est.hi, "n": est.n})
    return out


def render_categories(config: dict[str, Any], records: list[dict]) -> str:
    lines = [banner(config), "", "# Table 1 by category", ""]
    keys = list(dict.fromkeys((r["benchmark"], r["field"], r["metric"], r["label"]) for r in records))
    for b, fld, metric, label in keys:
        rs = [r for r in records if (r["benchmark"], r["field"], r["metric"]) == (b, fld, metric)]
        systems = list(dict.fromkeys(r["system"] for r in rs))
        lines += [f"## {BENCHMARKS[b].title}: {label} by {fld}", "", f"| {fld} | " + " | ".join(systems) + " |",
                  "|---|" + "---|" * len(systems)]
        for group in dict.fromkeys(r["group"] for r in rs):
            cells = {r["system"]: Estimate(r["mean"], r["ci_low"], r["ci_high"], r["n"]).fmt() for r in rs if r["group"] == group}
            lines.append(f"| {group} | " + " | ".join(cells.get(s, "–") for s in systems) + " |")
        lines.append("")
    if not keys:
        lines.append("No configured benchmark has prompt categories.")
    return "\n".join(lines) + "\n"


# ---- Table 3: the T_r sweep ---------------------------------------------------------------------


def table3_row_label(config: dict[str, Any], t_r: int, system: str) -> str:
    """Table 3's first cell: the T_r, marked where the row samples by the paper's Algorithm 1."""
    from harness.ablations import is_paper_form

    return f"{t_r} (form: paper)" if is_paper_form(config, system) else str(t_r)


def write_table3(config: dict[str, Any], out: str | Path) -> Path:
    """The T_r sweep: one row per ``tr_sweep`` point, then the ``form: paper`` row (the paper's T_r = 500 /
    10 steps by Algorithm 1 instead of the official closed form; :mod:`harness.ablations`). Every row
    prints the paper's value at its T_r. The plot shows the sweep points of the source's form."""
    from harness.ablations import is_paper_form, tr_sweep_points
    from harness.plots import plot_tr_sweep

    points = tr_sweep_points(config)
    if not points:
        raise HarnessError("Table 3 needs `tr_sweep` (relay starts) and a CogView3 relay system named `cogview3` in the config")
    bench = table3_benchmark(config)
    metrics = table3_metrics(config)
    if not metrics:
        raise HarnessError("Table 3 needs a per-image metric (e.g. hpsv2 or imagereward) in the config's `metrics`")
    reader = ScoreReader(config)
    rows, records, plotted = [], [], []
    source_form = is_paper_form(config, points[0][1])
    for t_r, system in points:
        row: list[Cell | str] = [table3_row_label(config, t_r, system), system, steps_label(config, system)]
        for metric in metrics:
            cell, record = metric_cell(reader, config, "table3", bench, system, metric, paper_row=t_r)
            record["extra"] = f"t_r={t_r}" + ("; form=paper" if is_paper_form(config, system) else "")
            records.append(record)
            if is_paper_form(config, system) == source_form:
                plotted.append({**record, "extra": f"t_r={t_r}"})
            row.append(cell)
        rows.append(row)
    mark_short_cells(rows)
    base = stage_chain(config, points[0][1])[0]
    table = Table(f"Table 3: relay start T_r ({BENCHMARKS[bench].title})",
                  ["T_r", "System", "Steps"] + [scorer_class(m).heading() for m in metrics], rows, records)
    paper_rows = [(t, s) for t, s in points if is_paper_form(config, s) != source_form]
    sweep = len(points) - len(paper_rows)
    runs = (f"one base pass, {sweep} relay runs" if not paper_rows else
            f"one base pass, {sweep} relay runs for the T_r points and {len(paper_rows)} for the `form: paper` row")
    table.notes = [f"Every point relays the same base-stage images (`{base}`): {runs}."]
    if paper_rows:
        table.notes += [
            f"Row `{table3_row_label(config, *paper_rows[0])}` (`{paper_rows[0][1]}`): the same relay setting as "
            f"T_r = {paper_rows[0][0]}, sampled by the paper's Algorithm 1 as printed (running estimate "
            "z0^(t-1) = z0^t + (z~0 - z0^t)/t from z0^T = z^L, t the steps remaining) instead of the official "
            "closed form (`LinearRelayEDMSampler`) of the other rows; the two agree when the denoiser's output "
            "does not change from step to step. The plot shows the T_r points only."]
    table.notes += [
        "Cells: mean [95% percentile-bootstrap CI over prompts] (N = prompts); (paper x, Δ d): the paper's value "
        "at the row's T_r.",
        "", "Relay grids (every T_r point takes the same number of steps, from t = T_r - 1):"] + \
        [f"- {s}: {grid_note(config, s)}" for _, s in points] + ["", reader.fingerprint_note()]
    out = Path(out)
    first_line = banner(config)
    atomic_write_text(out, render_markdown(table, first_line))
    atomic_write_text(out.with_suffix(".csv"), render_csv(table))
    atomic_write_text(out.with_suffix(".tex"), render_latex(table, first_line))
    plot_tr_sweep(plotted, metrics, {m: scorer_class(m).label for m in metrics}, out.with_suffix(".png"),
                  plot_banner(config))
    return out
