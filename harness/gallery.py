"""The gallery (``reports/gallery/``): the generated images side by side, for people, before any number.

``index.html`` is one static, self-contained page (inline CSS and script, no network; images copied beside it):

- per benchmark, one row per prompt (its category shown) and one column per table system plus the CogView3 base
  stage, each cell the prompt's sample 0 (the same seed in every column), a thumbnail linking to the full image,
  with the image's score under every configured image metric;
- a category filter and a search over prompt text, which hide the rows that do not match;
- the T_r strip (Fig. 6 of the paper): each prompt of Table 3's benchmark across the base stage and every sweep point;
- the expansion view: each expansion pair, original and expanded prompt side by side, both prompt texts visible.

``sheet-table1.png``, ``sheet-table2.png``, ``sheet-table3.png`` (the tables the config writes): contact sheets of a
fixed set of prompts (the first of each category, at most ``SHEET_PROMPTS``) x the table's systems (Table 3: the base
stage and the T_r points), for the Snakemake report.

The gallery names every system: it is for researchers, never for annotators. :func:`write_gallery` refuses a folder
inside the blinded human-evaluation export.
"""

from __future__ import annotations

import html
import io
import os
import shutil
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from harness.errors import HarnessError
from harness.io import atomic_write_bytes, atomic_write_text

THUMB = 128
SHEET_CELL = 128
SHEET_PROMPTS = 8


def gallery_systems(config: dict[str, Any]) -> list[str]:
    """The table systems, with CogView3's base stage just before the first system that reads it."""
    from harness.systems import final_systems, stage_chain

    out: list[str] = []
    for name in final_systems(config):
        for stage in stage_chain(config, name)[:-1]:
            if stage.startswith("cogview3-base") and stage not in out and not config["systems"][stage].get("ablation"):
                out.append(stage)
        out.append(name)
    return out


def gallery_shown(config: dict[str, Any]) -> list[str]:
    """Every system the gallery shows: the table systems and base stage, the contact sheets' columns (the T_r strip),
    both sides of each expansion pair."""
    from harness.ablations import expansion_pairs

    names = list(gallery_systems(config))
    for _, columns in sheet_tables(config).values():
        names += columns
    for pair in expansion_pairs(config):
        names += list(pair)
    return list(dict.fromkeys(names))


def _first_samples(config: dict[str, Any], benchmark: str, system: str) -> dict[str, dict]:
    from harness.coverage import checked_manifest

    return {r["prompt_id"]: r for r in checked_manifest(config, benchmark, system) if r.get("sample", 0) == 0}


def _scores(config: dict[str, Any], benchmark: str, system: str) -> dict[str, dict[str, float]]:
    """prompt_id -> {metric label: score of sample 0} for every image metric scored on ``system`` (a stage has none)."""
    from harness.manifests import scores_path
    from harness.scorers.registry import metric_applies, scorer_class
    from harness.scores import load_scores

    out: dict[str, dict[str, float]] = {}
    for metric in config["metrics"]:
        path = scores_path(config["results_dir"], benchmark, system, metric)
        if scorer_class(metric).set_metric or not metric_applies(metric, benchmark) or not path.is_file():
            continue
        scores, _ = load_scores(path)
        for r in scores.rows:
            if r.get("sample", 0) == 0:
                out.setdefault(r["prompt_id"], {})[scorer_class(metric).label] = r["score"]
    return out


class _Writer:
    """Copies each image once (a hard link where the file system allows) and writes its thumbnail."""

    def __init__(self, config: dict[str, Any], out: Path):
        self.config, self.out = config, out

    def cell(self, benchmark: str, system: str, row: dict | None, scores: dict[str, float] | None,
             caption: str = "") -> str:
        from harness.manifests import image_path

        if row is None:
            return '<td class="missing">–</td>'
        src = image_path(self.config["results_dir"], benchmark, system, row)
        rel = Path("images") / benchmark / system / src.name
        full, thumb = self.out / rel, self.out / "thumbs" / benchmark / system / src.name
        full.parent.mkdir(parents=True, exist_ok=True)
        thumb.parent.mkdir(parents=True, exist_ok=True)
        if not full.exists():
            try:
                os.link(src, full)
            except OSError:
                shutil.copyfile(src, full)
        if not thumb.exists():
            with Image.open(src) as im:
                small = im.convert("RGB")
                small.thumbnail((THUMB, THUMB), Image.BICUBIC)
                buf = io.BytesIO()
                small.save(buf, format="PNG")
            atomic_write_bytes(thumb, buf.getvalue())
        score_text = " · ".join(f"{k} {v:.3f}" for k, v in (scores or {}).items())
        text = f'<div class="cap">{html.escape(caption)}</div>' if caption else ""
        return (f'<td>{text}<a href="{rel.as_posix()}"><img src="{(Path("thumbs") / benchmark / system / src.name).as_posix()}" '
                f'alt="{html.escape(system)}" loading="lazy"></a><div class="scores">{html.escape(score_text)}</div></td>')


def _prompt_cell(prompt_id: str, text: str, category: str) -> str:
    return (f'<td class="prompt"><span class="cat">{html.escape(category)}</span> <span class="pid">{html.escape(prompt_id)}'
            f'</span><div>{html.escape(text)}</div></td>')


def _row(prompt_id: str, text: str, category: str, cells: list[str]) -> str:
    return (f'<tr class="prompt-row" data-category="{html.escape(category)}" data-text="{html.escape(text.lower())}">'
            + _prompt_cell(prompt_id, text, category) + "".join(cells) + "</tr>")


def _table(title: str, table_id: str, columns: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["Prompt", *columns])
    return (f'<h2 id="{table_id}">{html.escape(title)}</h2>\n<table class="gallery" id="{table_id}-table">'
            f"<thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Gallery</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
table.gallery {{ border-collapse: collapse; margin-bottom: 2em; }}
table.gallery td, table.gallery th {{ border: 1px solid #ccc; padding: 4px; vertical-align: top; font-size: 12px; }}
td.prompt {{ max-width: 260px; }}
.cat {{ background: #eef; padding: 1px 4px; }} .pid {{ color: #888; }}
.scores {{ color: #555; max-width: {thumb}px; }} .cap {{ max-width: {thumb}px; color: #333; }}
img {{ width: {thumb}px; height: auto; display: block; }}
#controls {{ position: sticky; top: 0; background: white; padding: 0.5em 0; }}
</style></head>
<body>
<p>{banner}</p>
<h1>Gallery</h1>
<p>Sample 0 of every prompt (the same seed in every column); click a thumbnail for the full image. Scores: each image
metric of the config for that image. This page names the systems: it is not for blinded annotation.</p>
<div id="controls">
<label>Category <select id="category"><option value="">all</option>{options}</select></label>
<label>Search <input id="search" type="search" placeholder="words in the prompt"></label>
<span id="count"></span>
<a href="#top">top</a> {links}
</div>
{tables}
<script>
function applyFilters() {{
  const cat = document.getElementById('category').value;
  const q = document.getElementById('search').value.trim().toLowerCase();
  let shown = 0;
  for (const row of document.querySelectorAll('tr.prompt-row')) {{
    const ok = (!cat || row.dataset.category === cat) && (!q || row.dataset.text.includes(q));
    row.hidden = !ok;
    if (ok) shown += 1;
  }}
  document.getElementById('count').textContent = shown + ' rows';
}}
document.getElementById('category').addEventListener('change', applyFilters);
document.getElementById('search').addEventListener('input', applyFilters);
applyFilters();
</script>
</body></html>
"""


def write_gallery(config: dict[str, Any], out: str | Path) -> Path:
    """``out`` = ``<folder>/index.html``; images, thumbnails and the contact sheets beside it."""
    from harness.ablations import expansion_pairs, tr_sweep_points
    from harness.prompts import load_prompts
    from harness.render import banner
    from harness.systems import stage_chain
    from harness.tables import table3_benchmark

    out = Path(out)
    folder = out.parent
    export = Path(config["reports_dir"]) / "humaneval"
    if folder.resolve().is_relative_to(export.resolve()):
        raise HarnessError(f"{folder}: the gallery names every system; it must not be written inside the blinded "
                           f"human-evaluation folder {export}")
    writer = _Writer(config, folder)
    systems = gallery_systems(config)
    tables, categories = [], {}
    for bench in config["benchmarks"]:
        prompts = load_prompts(bench, config["data_dir"], config["num_prompts"])
        rows_of = {s: _first_samples(config, bench, s) for s in systems}
        scores_of = {s: _scores(config, bench, s) for s in systems}
        rows = []
        for p in prompts:
            categories.setdefault(p.category, None)
            rows.append(_row(p.id, p.text, p.category,
                             [writer.cell(bench, s, rows_of[s].get(p.id), scores_of[s].get(p.id)) for s in systems]))
        tables.append((f"bench-{bench}", bench, _table(f"{bench}: prompts x systems", f"bench-{bench}", systems, rows)))
    points = tr_sweep_points(config)
    if points:
        bench = table3_benchmark(config)
        base = stage_chain(config, points[0][1])[0]
        strip = [base] + [name for _, name in sorted(points)]
        rows_of = {s: _first_samples(config, bench, s) for s in strip}
        scores_of = {s: _scores(config, bench, s) for s in strip}
        labels = [f"{base} (base)"] + [f"T_r {t}" + (" (form: paper)" if "form-paper" in name else "")
                                       for t, name in sorted(points)]
        rows = [_row(p.id, p.text, p.category, [writer.cell(bench, s, rows_of[s].get(p.id), scores_of[s].get(p.id))
                                               for s in strip])
                for p in load_prompts(bench, config["data_dir"], config["num_prompts"])]
        tables.append(("tr-strip", "T_r strip", _table(
            f"T_r strip ({bench}): one prompt across the relay starting points (Fig. 6)", "tr-strip", labels, rows)))
    for system, expanded in expansion_pairs(config):
        for bench in config["benchmarks"]:
            original, longer = _first_samples(config, bench, system), _first_samples(config, bench, expanded)
            scores_o, scores_e = _scores(config, bench, system), _scores(config, bench, expanded)
            rows = []
            for p in load_prompts(bench, config["data_dir"], config["num_prompts"]):
                e = longer.get(p.id)
                rows.append(_row(p.id, p.text, p.category, [
                    writer.cell(bench, system, original.get(p.id), scores_o.get(p.id), caption=p.text),
                    writer.cell(bench, expanded, e, scores_e.get(p.id), caption=e["prompt"] if e else "")]))
            anchor = f"expansion-{system}-{bench}"
            tables.append((anchor, f"expansion {system} ({bench})", _table(
                f"Expansion ({bench}): {system}, original vs expanded prompt", anchor,
                [f"{system} (original)", f"{expanded} (expanded)"], rows)))
    links = " ".join(f'<a href="#{anchor}">{html.escape(name)}</a>' for anchor, name, _ in tables)
    options = "".join(f'<option value="{html.escape(c)}">{html.escape(c)}</option>' for c in categories)
    atomic_write_text(out, PAGE.format(thumb=THUMB, banner=html.escape(banner(config).lstrip("> ")), options=options,
                                       links=links, tables="\n".join(t for _, _, t in tables)))
    for table, (bench, columns) in sheet_tables(config).items():
        contact_sheet(config, bench, columns, folder / f"sheet-{table}.png")
    return out


def sheet_tables(config: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    """table -> (benchmark, systems) of its contact sheet, for the tables this config writes."""
    from harness.ablations import tr_sweep_points
    from harness.systems import stage_chain
    from harness.tables import table1_benchmarks, table2_benchmarks, table3_benchmark

    out = {}
    for table, benches in (("table1", table1_benchmarks(config)), ("table2", table2_benchmarks(config))):
        benches = [b for b in benches if b in config["benchmarks"]]
        if benches:
            out[table] = (benches[0], gallery_systems(config))
    points = tr_sweep_points(config)
    if points and table3_benchmark(config) in config["benchmarks"]:
        out["table3"] = (table3_benchmark(config), [stage_chain(config, points[0][1])[0]] + [n for _, n in sorted(points)])
    return out


def contact_sheet(config: dict[str, Any], benchmark: str, systems: list[str], out: Path) -> Path:
    """The first prompt of each category (at most ``SHEET_PROMPTS``) x ``systems``, sample 0, names on top."""
    from harness.manifests import open_row_image
    from harness.prompts import load_prompts

    prompts, seen = [], set()
    for p in load_prompts(benchmark, config["data_dir"], config["num_prompts"]):
        if p.category not in seen and len(prompts) < SHEET_PROMPTS:
            seen.add(p.category)
            prompts.append(p)
    label_h, caption_w = 14, 200
    sheet = Image.new("RGB", (caption_w + SHEET_CELL * len(systems), label_h + SHEET_CELL * len(prompts)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, s in enumerate(systems):
        draw.text((caption_w + j * SHEET_CELL + 2, 1), s[:20], fill="black")
    rows_of = {s: _first_samples(config, benchmark, s) for s in systems}
    for i, p in enumerate(prompts):
        y = label_h + i * SHEET_CELL
        draw.text((2, y + 2), f"[{p.category}]", fill="gray")
        for k in range(0, min(len(p.text), 180), 30):
            draw.text((2, y + 16 + 12 * (k // 30)), p.text[k:k + 30], fill="black")
        for j, s in enumerate(systems):
            row = rows_of[s].get(p.id)
            if row is not None:
                image = open_row_image(config["results_dir"], benchmark, s, row).convert("RGB")
                sheet.paste(image.resize((SHEET_CELL, SHEET_CELL), Image.BICUBIC), (caption_w + j * SHEET_CELL, y))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write_bytes(out, buf.getvalue())
    return out
