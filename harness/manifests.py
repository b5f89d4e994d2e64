"""Where generated images and their manifests live, and how every reader reads them.

Layout under ``<results_dir>/<benchmark>/<system>/``::

    images/<prompt_id>_<sample>.png      lossless PNG, written atomically
    .state/shard-<i>-of-<n>.jsonl        the runner's working manifest (see harness.runner)
    manifest.shard-<i>-of-<n>.jsonl      one shard's finished manifest (only when shards > 1)
    manifest.jsonl                       the finished manifest: all images of the system
    system.json                          the system fingerprint the images were made with
    scores/<metric>.json                 per-image scores (or a set metric's value)

A manifest has one row per image: prompt id and text, sample, seed, image path and sha256, size,
the fingerprint digest of the system that made it, and the generation wall time. The runner, the
scoring, the tables, the regression gate and the human-evaluation export all read manifests and
open images through this module, so a missing or altered image is the same error everywhere.

Imports nothing heavy: the merge job runs on it alone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

from harness.errors import HarnessError
from harness.io import atomic_write_jsonl, read_jsonl, sha256_file


def system_dir(results_dir: str | Path, benchmark: str, system: str) -> Path:
    return Path(results_dir) / benchmark / system


def manifest_path(results_dir: str | Path, benchmark: str, system: str) -> Path:
    return system_dir(results_dir, benchmark, system) / "manifest.jsonl"


def shard_manifest_path(results_dir: str | Path, benchmark: str, system: str, shard: int, shards: int) -> Path:
    """Where one shard's manifest goes: the final manifest itself when there is one shard."""
    if shards == 1:
        return manifest_path(results_dir, benchmark, system)
    return system_dir(results_dir, benchmark, system) / f"manifest.shard-{shard}-of-{shards}.jsonl"


def scores_path(results_dir: str | Path, benchmark: str, system: str, metric: str) -> Path:
    return system_dir(results_dir, benchmark, system) / "scores" / f"{metric}.json"


def image_name(prompt_id: str, sample: int) -> str:
    return f"{prompt_id}_{sample}.png"


def row_key(row: dict) -> tuple[str, int]:
    """A manifest row's identity: (prompt id, sample)."""
    return (row["prompt_id"], row["sample"])


def ordered(rows: Iterable[dict]) -> list[dict]:
    """Manifest order: the prompt's position in its set, then the sample."""
    return sorted(rows, key=lambda r: (r["prompt_index"], r["sample"]))


def read_manifest(results_dir: str | Path, benchmark: str, system: str) -> list[dict]:
    """The rows of a finished manifest; all made by one system fingerprint, every image present."""
    path = manifest_path(results_dir, benchmark, system)
    if not path.is_file():
        raise HarnessError(f"no manifest at {path}; generate {benchmark}/{system} first")
    rows = read_jsonl(path)
    fingerprints = {r["system_fingerprint"] for r in rows}
    if len(fingerprints) > 1:
        raise HarnessError(f"{path} mixes images from {len(fingerprints)} system fingerprints; regenerate {system!r}")
    folder = system_dir(results_dir, benchmark, system)
    for row in rows:
        if not (folder / row["image"]).is_file():
            raise HarnessError(f"image {folder / row['image']} listed in {path} is missing; "
                               f"rerun generation for {benchmark}/{system}")
    return rows


def rows_by_key(rows: list[dict]) -> dict[tuple[str, int], dict]:
    return {row_key(r): r for r in rows}


def image_path(results_dir: str | Path, benchmark: str, system: str, row: dict) -> Path:
    return system_dir(results_dir, benchmark, system) / row["image"]


def open_image(path: Path, sha256: str):
    """An image a manifest lists, as RGB PIL image; missing, altered or unreadable files are errors."""
    from PIL import Image

    if not path.is_file():
        raise HarnessError(f"image {path} listed in its manifest is missing; rerun its generation job")
    if sha256_file(path) != sha256:
        raise HarnessError(f"image {path} does not match the sha256 in its manifest; delete it and rerun to regenerate")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError as err:
        raise HarnessError(f"image {path} cannot be read ({err}); delete it and rerun to regenerate") from err


def open_row_image(results_dir: str | Path, benchmark: str, system: str, row: dict):
    return open_image(image_path(results_dir, benchmark, system, row), row["sha256"])


def merge_manifests(shard_paths: list[str | Path], out: str | Path) -> list[dict]:
    """Concatenate shard manifests into ``out``; refuses overlaps and mixed system fingerprints."""
    rows: list[dict] = []
    for p in shard_paths:
        rows += read_jsonl(p)
    keys = [row_key(r) for r in rows]
    if len(set(keys)) != len(keys):
        raise HarnessError(f"shard manifests {', '.join(map(str, shard_paths))} overlap; rerun with one shard count")
    fingerprints = {r["system_fingerprint"] for r in rows}
    if len(fingerprints) > 1:
        raise HarnessError(f"shard manifests for {out} were made by {len(fingerprints)} different system versions; rerun them")
    rows = ordered(rows)
    atomic_write_jsonl(out, rows)
    return rows


def images_digest(results_dir: str | Path, benchmark: str, system: str) -> str:
    """A digest of the system's image bytes (the manifest's sha256s): says whether images changed."""
    path = manifest_path(results_dir, benchmark, system)
    if not path.is_file():
        return ""
    h = hashlib.sha256()
    for r in read_jsonl(path):
        h.update(f"{r['prompt_id']}_{r['sample']}={r['sha256']}\n".encode())
    return h.hexdigest()[:16]


def generation_seconds(results_dir: str | Path, benchmarks: list[str], stages: list[str]) -> tuple[float | None, str]:
    """Mean generation wall time per image summed over a chain of stages (the manifests'
    ``wall_time_s``), and the device the last stage ran on; None where a stage has no manifest."""
    total, device = 0.0, "?"
    for stage in stages:
        times = []
        for b in benchmarks:
            path = manifest_path(results_dir, b, stage)
            if path.is_file():
                times += [r["wall_time_s"] for r in read_jsonl(path)]
                record = system_dir(results_dir, b, stage) / "system.json"
                if record.is_file():
                    device = json.loads(record.read_text())["fingerprint"].get("device_type", "?")
        if not times:
            return None, device
        total += sum(times) / len(times)
    return total, device
