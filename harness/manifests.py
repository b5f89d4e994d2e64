"""Where generated images and their manifests live, and how every reader reads them.

Layout under ``<results_dir>/<benchmark>/<system>/``::

    images/<prompt_id>_<sample>.png      lossless PNG, written atomically
    .state/shard-<i>-of-<n>.jsonl        the runner's working manifest (see harness.runner)
    manifest.shard-<i>-of-<n>.jsonl      one shard's finished manifest (only when shards > 1)
    manifest.jsonl                       the finished manifest: all images of the system
    system.json                          the system fingerprint the images were made with
    scores/<metric>.json                 per-image scores (or a set metric's value)

A manifest has one row per image: prompt id and text, sample, seed, image path and sha256, size,
the fingerprint digest of the system that made it, the generation wall time, for an image-to-image
stage the sha256 of the input image, and ``row_sha256``, a seal over the row's other fields (an
edited row is told apart from an altered image). The runner, the scoring, the tables, the
regression gate and the human-evaluation export all read manifests and open images through this
module, so a missing or altered image is the same error everywhere; :mod:`harness.coverage` checks
that a manifest holds exactly the config's prompts, and :mod:`harness.integrity` verifies a whole
results folder.

Imports nothing heavy: the merge job runs on it alone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

from harness.errors import HarnessError
from harness.io import atomic_write_json, atomic_write_jsonl, read_jsonl, sha256_file


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


#: the field that seals a manifest row (see :func:`seal_row`)
SEAL = "row_sha256"
#: how every message about damaged results says to repair them (the snapshot is the validated
#: config of the last Snakemake run; with a hand-run config use --config instead)
REPAIR_COMMAND = "python -m harness verify --repair --config-snapshot {results_dir}/.harness/config.json"


def repair_command(results_dir: str | Path) -> str:
    return REPAIR_COMMAND.format(results_dir=results_dir)


def _row_digest(row: dict) -> str:
    body = {k: v for k, v in row.items() if k != SEAL}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal_row(row: dict) -> dict:
    """The row with its seal: the sha256 of its other fields, so a hand edit is detected."""
    return {**{k: v for k, v in row.items() if k != SEAL}, SEAL: _row_digest(row)}


def seal_ok(row: dict) -> bool:
    return row.get(SEAL) == _row_digest(row)


def row_label(row: dict) -> str:
    return f"prompt {row.get('prompt_id')!r} sample {row.get('sample')}"


def check_rows(path: Path, rows: list[dict], results_dir: str | Path) -> None:
    """Every row sealed and intact, one system fingerprint, no (prompt id, sample) twice."""
    repair = repair_command(results_dir)
    for n, row in enumerate(rows, 1):
        if SEAL not in row:
            raise HarnessError(f"manifest {path} line {n} ({row_label(row)}) has no {SEAL} seal: it was written by an "
                               f"older harness or by hand; reseal it (images are kept where their sha256 matches): {repair}")
        if not seal_ok(row):
            raise HarnessError(f"manifest {path} line {n} ({row_label(row)}) was edited after generation (its fields no "
                               f"longer match its {SEAL}); the image is not at fault: restore the manifest, or regenerate "
                               f"that row: {repair}")
    keys = [row_key(r) for r in rows]
    if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise HarnessError(f"manifest {path} lists prompt {twice[0]!r} sample {twice[1]} more than once; {repair}")
    fingerprints = {r["system_fingerprint"] for r in rows}
    if len(fingerprints) > 1:
        raise HarnessError(f"manifest {path} mixes images from {len(fingerprints)} system fingerprints; {repair}")


def read_manifest(results_dir: str | Path, benchmark: str, system: str) -> list[dict]:
    """The rows of a finished manifest: sealed, made by one system fingerprint, every image present.
    (Whether they are the config's prompts is :func:`harness.coverage.checked_manifest`'s job.)"""
    path = manifest_path(results_dir, benchmark, system)
    if not path.is_file():
        raise HarnessError(f"no manifest at {path}; generate {benchmark}/{system} first "
                           f"(`snakemake --cores all {path}`)")
    rows = read_jsonl(path)
    check_rows(path, rows, results_dir)
    folder = system_dir(results_dir, benchmark, system)
    for row in rows:
        if not (folder / row["image"]).is_file():
            raise HarnessError(f"image {folder / row['image']} listed in {path} is missing; regenerate exactly the "
                               f"missing images: {repair_command(results_dir)}")
    return rows


def rows_by_key(rows: list[dict]) -> dict[tuple[str, int], dict]:
    return {row_key(r): r for r in rows}


def image_path(results_dir: str | Path, benchmark: str, system: str, row: dict) -> Path:
    return system_dir(results_dir, benchmark, system) / row["image"]


def results_root(path: Path) -> Path:
    """The results folder an image path lies in (``<results>/<benchmark>/<system>/images/x.png``)."""
    return path.parent.parent.parent.parent


class HashCache:
    """sha256 of one system's image files, trusted while size and mtime are unchanged.

    Files under ``<system dir>/.state/``: ``hashes.shard-<i>-of-<n>.json``, written by each
    generation job for the images it made or kept (so a check after generation hashes nothing), and
    ``hashes.json``, written by the checks; a cache reads them all. No two concurrent jobs write
    the same file; a lost update only costs hashing again.
    """

    def __init__(self, folder: str | Path, name: str = "hashes.json"):
        self.folder = Path(folder)
        self.path = self.folder / ".state" / name  # where this cache writes; it reads them all
        self.entries: dict[str, list] = {}
        for path in sorted(self.folder.glob(".state/hashes*.json")):
            try:
                self.entries.update(json.loads(path.read_text()))
            except (OSError, ValueError):
                pass  # a damaged cache only costs hashing again
        self.changed = False
        self.hashed = 0

    def record(self, path: Path, sha256: str) -> None:
        """Trust ``sha256`` for ``path`` as it is now (the runner just wrote or verified it)."""
        st = path.stat()
        self.entries[str(path.relative_to(self.folder))] = [st.st_size, st.st_mtime_ns, sha256]
        self.changed = True

    def sha256(self, path: Path, rehash: bool = False) -> str | None:
        """The file's sha256, or None when it does not exist."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        entry = self.entries.get(str(path.relative_to(self.folder)))
        if not rehash and entry and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            return entry[2]
        digest = sha256_file(path)
        self.hashed += 1
        self.record(path, digest)
        return digest

    def save(self) -> None:
        if self.changed:
            atomic_write_json(self.path, self.entries)
            self.changed = False


def open_image(path: Path, sha256: str):
    """An image a manifest lists, as RGB PIL image; missing, altered or unreadable files are errors."""
    from PIL import Image

    repair = repair_command(results_root(path))
    if not path.is_file():
        raise HarnessError(f"image {path} listed in its manifest is missing; regenerate exactly the missing images: {repair}")
    if sha256_file(path) != sha256:
        raise HarnessError(f"image {path} was changed after generation (its sha256 differs from its sealed manifest "
                           f"row); regenerate exactly the damaged images: {repair}")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError as err:
        raise HarnessError(f"image {path} cannot be read ({err}); regenerate exactly the damaged images: {repair}") from err


def open_row_image(results_dir: str | Path, benchmark: str, system: str, row: dict):
    return open_image(image_path(results_dir, benchmark, system, row), row["sha256"])


def merge_manifests(shard_paths: list[str | Path], out: str | Path) -> list[dict]:
    """Concatenate shard manifests into ``out``; refuses overlaps and mixed system fingerprints."""
    rows: list[dict] = []
    for p in shard_paths:
        part = read_jsonl(p)
        check_rows(Path(p), part, Path(out).parent.parent.parent)
        rows += part
    keys = [row_key(r) for r in rows]
    if len(set(keys)) != len(keys):
        raise HarnessError(f"shard manifests {', '.join(map(str, shard_paths))} overlap; rerun with one shard count")
    fingerprints = {r["system_fingerprint"] for r in rows}
    if len(fingerprints) > 1:
        raise HarnessError(f"shard manifests for {out} were made by {len(fingerprints)} different system versions; rerun them")
    rows = ordered(rows)
    atomic_write_jsonl(out, rows)
    return rows


def images_digest_of(rows: Iterable[dict]) -> str:
    """A digest of a manifest's image bytes (its sha256s by prompt id and sample)."""
    h = hashlib.sha256()
    for r in sorted(rows, key=row_key):
        h.update(f"{r['prompt_id']}_{r['sample']}={r['sha256']}\n".encode())
    return h.hexdigest()[:16]


def images_digest(results_dir: str | Path, benchmark: str, system: str) -> str:
    """:func:`images_digest_of` the system's manifest ("" when there is none): says whether images changed."""
    path = manifest_path(results_dir, benchmark, system)
    return images_digest_of(read_jsonl(path)) if path.is_file() else ""


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
