"""A small image grid of the micro world (prompt x system) for the README: what the models draw, beside the
ground-truth render of the same caption, with the judge's score and micro_colour under each image.

    python -m harness micro-grid --config config/micro.yaml --out docs/micro-grid.png
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from PIL import Image, ImageDraw

from harness.errors import HarnessError

CELL = 96
LABEL_H = 14
CAPTION_W = 230


def grid_prompts(config: dict[str, Any], benchmark: str, per_category: int = 1) -> list[Any]:
    from harness.prompts import load_prompts

    seen: dict[str, int] = {}
    out = []
    for p in load_prompts(benchmark, config["data_dir"], config["num_prompts"]):
        if seen.get(p.category, 0) < per_category:
            seen[p.category] = seen.get(p.category, 0) + 1
            out.append(p)
    return out


def contact_sheet(config: dict[str, Any], systems: Sequence[str], out: str | Path, benchmark: str = "micro-drawbench",
                  per_category: int = 1) -> Path:
    """Rows: prompts (one per category); columns: the ground-truth render, then ``systems`` (sample 0 of
    each); under each generated image the judge's clause score."""
    from harness.io import atomic_write_bytes
    from harness.manifests import open_row_image, read_manifest
    from harness.micro.judge import colour_fidelity, judge
    from harness.micro.world import evaluation_scene, render

    prompts = grid_prompts(config, benchmark, per_category)
    rows_of = {}
    for s in systems:
        rows = read_manifest(config["results_dir"], benchmark, s)
        if not rows:
            raise HarnessError(f"{config['results_dir']}/{benchmark}/{s}: no manifest; generate it first")
        rows_of[s] = {r["prompt_id"]: r for r in rows if r.get("sample", 0) == 0}
    columns = ["ground truth", *systems]
    sheet = Image.new("RGB", (CAPTION_W + CELL * len(columns), LABEL_H + (CELL + LABEL_H) * len(prompts)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, name in enumerate(columns):
        draw.text((CAPTION_W + j * CELL + 2, 1), name.replace("cogview3-distill-", "distilled ")[:16], fill="black")
    for i, p in enumerate(prompts):
        y = LABEL_H + i * (CELL + LABEL_H)
        words, line, lines = p.text.split(), "", []
        for w in words:
            if len(line) + len(w) > 36:
                lines.append(line)
                line = ""
            line += (" " if line else "") + w
        lines.append(line)
        draw.text((2, y + 2), f"[{p.category}]", fill="gray")
        for k, text in enumerate(lines[:6]):
            draw.text((2, y + 16 + 12 * k), text, fill="black")
        sheet.paste(render(evaluation_scene(p.text, 0), CELL), (CAPTION_W, y))
        for j, s in enumerate(systems, 1):
            row = rows_of[s].get(p.id)
            if row is None:
                continue
            image = open_row_image(config["results_dir"], benchmark, s, row).convert("RGB")
            sheet.paste(image.resize((CELL, CELL), Image.NEAREST), (CAPTION_W + j * CELL, y))
            draw.text((CAPTION_W + j * CELL + 2, y + CELL + 1), f"judge {judge(image, p.text).score:.2f} col {colour_fidelity(image, p.text):.2f}", fill="black")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    import io

    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write_bytes(out, buf.getvalue())
    return out
