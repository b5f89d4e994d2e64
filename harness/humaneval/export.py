"""Blinded pairwise A/B export: pairs, annotator sheets, annotation pages and the hidden key.

Design (paper Fig. 4/5/7): system A (CogView3) against each baseline B on one benchmark, with the
original and with the expanded prompts. Every comparison group gets the same pairs of prompts, so
groups are comparable; every sheet shows its pairs in its own shuffled order with the sides drawn
per (sheet, pair); all draws come from ``humaneval.seed`` and are recorded in the key.

What annotators get (``reports/humaneval/export/``): one page and one CSV per annotator, images
under opaque names, resized to one size and stripped of metadata so neither resolution nor file
name betrays the system. What they must not get: ``reports/humaneval/key.json`` (which side is
which system; also archived as ``keys/<export_id>.json`` so that a rerun never loses a key that
sheets in the field were made with).
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from harness.errors import ConfigError, HarnessError
from harness.io import atomic_write_json, png_bytes
from harness.coverage import checked_manifest
from harness.manifests import image_path, open_image, rows_by_key

QUESTIONS = ("alignment", "aesthetics")
QUESTION_TEXT = {
    "alignment": "Which image matches the prompt better?",
    "aesthetics": "Which image looks better (aesthetic quality)?",
}
ANSWERS = ("left", "tie", "right")
SHEET_COLUMNS = ("export_id", "sheet", "item", "pair_id", "prompt", "image_left", "image_right", *QUESTIONS)
VARIANT_SUFFIX = {"original": "", "expanded": "-expanded"}
PAGE_TEMPLATE = Path(__file__).with_name("page.html")
#: the ``humaneval:`` keys that shape the export (the rest only matter to the import)
EXPORT_KEYS = ("benchmark", "comparisons", "prompts", "pairs_per_group", "annotators", "ratings_per_pair",
               "attention_checks", "image_size", "seed")


@dataclass(frozen=True)
class Group:
    """One comparison: system ``a`` against ``b`` with the ``original`` or ``expanded`` prompts."""

    variant: str
    a: str  # the base names from the config, e.g. cogview3 / sdxl
    b: str

    @property
    def system_a(self) -> str:
        return self.a + VARIANT_SUFFIX[self.variant]

    @property
    def system_b(self) -> str:
        return self.b + VARIANT_SUFFIX[self.variant]

    @property
    def label(self) -> str:
        return f"{self.a} vs {self.b} ({self.variant} prompts)"


def comparison_groups(config: dict[str, Any]) -> list[Group]:
    """The groups ``humaneval:`` asks for; each system it names must exist (errors name the key)."""
    hv = config["humaneval"]
    systems = config["systems"]
    groups = []
    for i, (a, b) in enumerate(hv["comparisons"]):
        for variant in hv["prompts"]:
            g = Group(variant, a, b)
            for side, name in (("0", g.system_a), ("1", g.system_b)):
                if name not in systems:
                    hint = (f"; add {name.removesuffix('-expanded')!r} to expansion.systems (and enable expansion)"
                            if variant == "expanded" else "")
                    raise ConfigError(f"config key 'humaneval.comparisons.{i}.{side}': no system {name!r}{hint}")
            groups.append(g)
    return groups


def humaneval_systems(config: dict[str, Any]) -> list[str]:
    """Every system whose images the export reads."""
    return sorted({s for g in comparison_groups(config) for s in (g.system_a, g.system_b)})


def seeded_rng(seed: int, *stream: str) -> np.random.Generator:
    # One independent stream per purpose, so changing e.g. the number of annotators does not
    # change which prompts are drawn.
    h = hashlib.sha256(json.dumps([seed, *stream]).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def _side(label: str, row: dict, results: Path, benchmark: str, system: str, degrade: bool = False) -> dict:
    """One side of a pair: what the key records, and where its pixels come from."""
    return {"system": label, "src": image_path(results, benchmark, system, row), "sha256": row["sha256"],
            "degrade": degrade}


def _blinded_png(image: Image.Image, size: int, degrade: bool = False) -> bytes:
    """Pixels only (no PNG text chunks), square ``size``; ``degrade`` makes an attention-check decoy."""
    im = image.resize((size, size), Image.Resampling.LANCZOS)
    if degrade:
        # Unmistakably worse: heavy blur, then 4 colours per channel.
        im = im.filter(ImageFilter.GaussianBlur(radius=max(2, size // 12))).quantize(colors=8).convert("RGB")
    clean = Image.frombytes("RGB", im.size, im.tobytes())  # pixels only: no info, ICC profile or text chunks
    return png_bytes(clean)


def _assign(pairs: list[str], sheets: list[str], per_pair: int, rng: np.random.Generator) -> dict[str, list[str]]:
    """Give each pair to ``per_pair`` distinct sheets, keeping sheet lengths within one of each other."""
    load = {s: 0 for s in sheets}
    out: dict[str, list[str]] = {s: [] for s in sheets}
    for pid in pairs:
        order = sorted(sheets, key=lambda s: (load[s], rng.random()))
        for s in order[:per_pair]:
            out[s].append(pid)
            load[s] += 1
    return out


def build_export(config: dict[str, Any], out_dir: str | Path, key_path: str | Path) -> dict[str, Any]:
    """Write the export folder and the key; returns the key. The folder appears all at once."""
    hv = config["humaneval"]
    seed = int(hv["seed"])
    bench = hv["benchmark"]
    if bench not in config["benchmarks"]:
        raise ConfigError(f"config key 'humaneval.benchmark': {bench!r} is not in benchmarks: {config['benchmarks']}")
    results = Path(config["results_dir"])
    groups = comparison_groups(config)
    manifests = {s: rows_by_key(checked_manifest(config, bench, s)) for s in humaneval_systems(config)}

    # Equal numbers per group, and the same prompts in every group: draw from the keys all share.
    shared = sorted(set.intersection(*(set(manifests[g.system_a]) & set(manifests[g.system_b]) for g in groups)))
    if not shared:
        raise HarnessError(f"human-eval export: the systems {humaneval_systems(config)} share no (prompt, sample) on {bench!r}")
    n = hv["pairs_per_group"] or len(shared)
    if n > len(shared):
        raise ConfigError(
            f"config key 'humaneval.pairs_per_group': {n} pairs asked, but the compared systems share only "
            f"{len(shared)} images on {bench!r}; lower it or raise num_prompts / samples_per_prompt"
        )
    chosen = [shared[i] for i in sorted(seeded_rng(seed, "prompts").choice(len(shared), size=n, replace=False))]

    pair_rng = seeded_rng(seed, "pair-ids")
    used_ids: set[str] = set()

    def new_id(prefix: str) -> str:
        while True:
            pid = prefix + pair_rng.bytes(4).hex()
            if pid not in used_ids:
                used_ids.add(pid)
                return pid

    pairs: dict[str, dict] = {}
    for gi, g in enumerate(groups):
        for pid_key in chosen:
            ra, rb = manifests[g.system_a][pid_key], manifests[g.system_b][pid_key]
            pairs[new_id("p")] = {
                "kind": "pair", "group": gi, "prompt_id": pid_key[0], "sample": pid_key[1],
                "prompt": ra.get("original_prompt", ra["prompt"]), "category": ra.get("category", ""),
                "a": _side(g.system_a, ra, results, bench, g.system_a),
                "b": _side(g.system_b, rb, results, bench, g.system_b),
            }

    sheets = [f"annotator-{i + 1:02d}" for i in range(hv["annotators"])]
    per_pair = hv["ratings_per_pair"] or len(sheets)
    if per_pair > len(sheets):
        raise ConfigError(f"config key 'humaneval.ratings_per_pair': {per_pair} ratings per pair need at least "
                          f"{per_pair} annotators, but humaneval.annotators is {len(sheets)}")
    assignment = _assign(list(pairs), sheets, per_pair, seeded_rng(seed, "assign"))

    # Attention checks: an on-prompt image against a degraded image made for another prompt; the
    # on-prompt side is the right answer to both questions. Each sheet gets its own.
    check_rng = seeded_rng(seed, "attention")
    for s in sheets:
        for _ in range(hv["attention_checks"]):
            g = groups[int(check_rng.integers(len(groups)))]
            i, j = check_rng.choice(len(chosen), size=2, replace=len(chosen) < 2)
            ra = manifests[g.system_a][chosen[i]]
            rd = manifests[g.system_b][chosen[j]]
            pid = new_id("p")
            pairs[pid] = {
                "kind": "attention", "group": None, "prompt_id": chosen[i][0], "sample": chosen[i][1],
                "prompt": ra.get("original_prompt", ra["prompt"]), "category": ra.get("category", ""),
                "a": _side(g.system_a, ra, results, bench, g.system_a),
                "b": _side(f"decoy:{g.system_b}", rd, results, bench, g.system_b, degrade=True),
            }
            assignment[s].append(pid)

    # Image files under opaque names (one per distinct source + treatment).
    size = int(hv["image_size"])
    name_rng = seeded_rng(seed, "image-names")
    images: dict[tuple[str, bool], str] = {}
    for p in pairs.values():
        for side in ("a", "b"):
            k = (p[side]["sha256"], p[side]["degrade"])
            if k not in images:
                images[k] = name_rng.bytes(8).hex() + ".png"

    layout_rng = seeded_rng(seed, "layout")
    key_sheets: dict[str, list[dict]] = {}
    for s in sheets:
        order = list(assignment[s])
        layout_rng.shuffle(order)
        rows = []
        for item, pid in enumerate(order, start=1):
            p = pairs[pid]
            a_left = bool(layout_rng.random() < 0.5)
            left, right = (p["a"], p["b"]) if a_left else (p["b"], p["a"])
            row = {
                "item": item, "pair_id": pid, "kind": p["kind"], "group": p["group"],
                "prompt_id": p["prompt_id"], "sample": p["sample"], "prompt": p["prompt"], "category": p["category"],
                "a_side": "left" if a_left else "right",
                "left_system": left["system"], "right_system": right["system"],
                "image_left": "images/" + images[(left["sha256"], left["degrade"])],
                "image_right": "images/" + images[(right["sha256"], right["degrade"])],
                "left_sha256": left["sha256"], "right_sha256": right["sha256"],
            }
            if p["kind"] == "attention":
                row["expected"] = row["a_side"]  # the on-prompt, undegraded image
            rows.append(row)
        key_sheets[s] = rows

    body = {
        "benchmark": bench,
        "humaneval": {k: hv[k] for k in EXPORT_KEYS},
        "groups": [{"variant": g.variant, "a": g.a, "b": g.b, "system_a": g.system_a, "system_b": g.system_b,
                    "label": g.label} for g in groups],
        "sheets": key_sheets,
    }
    export_id = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:12]
    key = {"export_id": export_id, "profile": config.get("profile", ""), **body}

    _write_folder(Path(out_dir), key, pairs, images, size)
    key_path = Path(key_path)
    atomic_write_json(key_path, key)
    archive = key_path.parent / "keys" / f"{export_id}.json"
    if not archive.exists():
        atomic_write_json(archive, key)
    return key


def sheet_rows(key: dict[str, Any], sheet: str) -> list[dict[str, str]]:
    """The blind rows of one sheet, as its CSV holds them (answers empty)."""
    return [
        {"export_id": key["export_id"], "sheet": sheet, "item": str(r["item"]), "pair_id": r["pair_id"],
         "prompt": r["prompt"], "image_left": r["image_left"], "image_right": r["image_right"],
         **{q: "" for q in QUESTIONS}}
        for r in key["sheets"][sheet]
    ]


def write_sheet_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=SHEET_COLUMNS)
        w.writeheader()
        w.writerows(rows)


def render_page(key: dict[str, Any], sheet: str) -> str:
    data = {
        "export_id": key["export_id"], "sheet": sheet, "columns": list(SHEET_COLUMNS),
        "questions": [{"id": q, "text": QUESTION_TEXT[q]} for q in QUESTIONS], "answers": list(ANSWERS),
        "items": sheet_rows(key, sheet),
        "smoke": key.get("profile") == "smoke",
    }
    # "</" inside a <script> would end it early; JSON allows the escaped form.
    payload = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    return PAGE_TEMPLATE.read_text(encoding="utf-8").replace("__SHEET_JSON__", payload).replace(
        "__TITLE__", html.escape(f"{sheet} · pairwise image evaluation")
    )


def _write_folder(out_dir: Path, key: dict[str, Any], pairs: dict[str, dict], images: dict, size: int) -> None:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (tmp / "images").mkdir()
        (tmp / "sheets").mkdir()
        done = set()
        for p in pairs.values():
            for side in ("a", "b"):
                k = (p[side]["sha256"], p[side]["degrade"])
                if k not in done:
                    # Checked here, once per file: a missing or altered image stops the export.
                    image = open_image(p[side]["src"], p[side]["sha256"])
                    (tmp / "images" / images[k]).write_bytes(_blinded_png(image, size, p[side]["degrade"]))
                    done.add(k)
        links = []
        for sheet in key["sheets"]:
            write_sheet_csv(tmp / "sheets" / f"{sheet}.csv", sheet_rows(key, sheet))
            (tmp / f"{sheet}.html").write_text(render_page(key, sheet), encoding="utf-8")
            links.append(f'<li><a href="{sheet}.html">{sheet}</a> ({len(key["sheets"][sheet])} pairs)</li>')
        smoke = ("<p><strong>Smoke profile: these images come from tiny random-weight models and say nothing "
                 "about image quality.</strong></p>") if key.get("profile") == "smoke" else ""
        (tmp / "index.html").write_text(
            f"<!doctype html><meta charset=utf-8><title>Pairwise evaluation {key['export_id']}</title>{smoke}"
            f"<h1>Pairwise image evaluation</h1><p>Export {key['export_id']}. Open your own page; answers are "
            f"saved in this browser as you go; press <em>Export CSV</em> at the end and send back the file.</p>"
            f"<ul>{''.join(links)}</ul>", encoding="utf-8")
        (tmp / "README.txt").write_text(
            f"Pairwise image evaluation, export {key['export_id']}\n\n"
            "Each annotator opens their own <annotator>.html in a browser (no server or internet needed),\n"
            "answers both questions for every pair, and exports the filled sheet as CSV. The same sheet\n"
            "can also be filled in a spreadsheet: sheets/<annotator>.csv, answers left / tie / right.\n"
            "Send back the filled CSV file unchanged apart from the two answer columns.\n", encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
