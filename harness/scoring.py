"""Score one (benchmark, system) manifest with one metric; per-image scores carry the scorer fingerprint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

from harness.errors import HarnessError
from harness.io import atomic_write_json, read_jsonl, sha256_file
from harness.runner import manifest_path, system_dir
from models.base import digest


def scores_path(results_dir, benchmark: str, system: str, metric: str) -> Path:
    return system_dir(results_dir, benchmark, system) / "scores" / f"{metric}.json"


def load_manifest_images(results_dir, benchmark: str, system: str) -> list[dict]:
    """Manifest rows, each image checked: a missing or altered image is an error, never skipped."""
    path = manifest_path(results_dir, benchmark, system)
    if not path.is_file():
        raise HarnessError(f"no manifest at {path}; generate {benchmark}/{system} first")
    rows = read_jsonl(path)
    base = system_dir(results_dir, benchmark, system)
    for row in rows:
        img = base / row["image"]
        if not img.is_file():
            raise HarnessError(f"image {img} listed in {path} is missing; rerun generation for {benchmark}/{system}")
    return rows


def _read_image(path: Path, sha256: str) -> Image.Image:
    if sha256_file(path) != sha256:
        raise HarnessError(f"image {path} does not match the sha256 in its manifest; delete it and regenerate")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError as err:
        raise HarnessError(f"image {path} cannot be read ({err}); delete it and regenerate") from err


def run_scoring(config: dict[str, Any], benchmark: str, system: str, metric: str, scorer=None) -> Path:
    """Write ``scores/<metric>.json``; images already scored by the same scorer version are reused."""
    from harness.scorers.registry import build_scorer

    results_dir = config["results_dir"]
    rows = load_manifest_images(results_dir, benchmark, system)
    if scorer is None:
        scorer = build_scorer(metric, config["weights"], config["device"], config["dtype"], config["batch_size"])
    fingerprint = scorer.fingerprint()
    fp_digest = digest(fingerprint)
    out = scores_path(results_dir, benchmark, system, metric)

    cached: dict[tuple[str, str], float] = {}
    if out.is_file():
        try:
            old = json.loads(out.read_text())
        except json.JSONDecodeError:
            old = {}
        if old.get("scorer_digest") == fp_digest:
            cached = {(r["sha256"], r["prompt"]): r["score"] for r in old.get("rows", [])}

    base = system_dir(results_dir, benchmark, system)
    todo = [r for r in rows if (r["sha256"], r["prompt"]) not in cached]
    if todo:
        from tqdm import tqdm

        bs = scorer.batch_size
        for i in tqdm(range(0, len(todo), bs), desc=f"{metric} {benchmark}/{system}", unit="batch"):
            chunk = todo[i : i + bs]
            images = [_read_image(base / r["image"], r["sha256"]) for r in chunk]
            for r, s in zip(chunk, scorer.score(images, [r["prompt"] for r in chunk])):
                cached[(r["sha256"], r["prompt"])] = float(s)

    out_rows = [
        {
            "prompt_id": r["prompt_id"],
            "sample": r["sample"],
            "category": r.get("category", ""),
            "prompt": r["prompt"],
            "sha256": r["sha256"],
            "score": cached[(r["sha256"], r["prompt"])],
        }
        for r in rows
    ]
    system_fps = {r["system_fingerprint"] for r in rows}
    atomic_write_json(
        out,
        {
            "metric": metric,
            "benchmark": benchmark,
            "system": system,
            "system_fingerprint": sorted(system_fps),
            "scorer_digest": fp_digest,
            "scorer_fingerprint": fingerprint,
            "n": len(out_rows),
            "rows": out_rows,
        },
    )
    return out
