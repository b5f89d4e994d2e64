"""The generation runner: prompts x samples -> PNGs + a manifest, resumable and shardable.

Paths and the manifest format: :mod:`harness.manifests`. Each job generates one shard (prompts
``shard::shards``) and keeps a working manifest under ``.state/``, rewritten atomically after every
batch; at the end it writes the shard's manifest, which with one shard is the final
``manifest.jsonl`` (no merge job).

The working manifest is not a Snakemake output on purpose: Snakemake deletes a job's outputs before
running it, and resumption needs the rows of the run that was killed. A crash can lose at most the
batch in flight; images already listed are kept and checked against their sha256.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from harness.errors import HarnessError
from harness.io import atomic_write_json, atomic_write_jsonl, digest, exclusive_lock, read_jsonl, save_png, sha256_file
from harness.manifests import (SEAL, HashCache, image_name, manifest_path, open_row_image, ordered, read_manifest, repair_command,
                               row_key, rows_by_key, seal_ok, seal_row, shard_manifest_path, system_dir)
from harness.prompts import Prompt, load_prompts
from harness.seeds import sample_seed
from models.base import System

log = logging.getLogger(__name__)


@dataclass
class WorkItem:
    index: int  # position of the prompt in its set (manifest order)
    prompt: Prompt
    sample: int
    seed: int

    @property
    def key(self) -> tuple[str, int]:
        return (self.prompt.id, self.sample)


@dataclass
class GenerationSummary:
    total: int
    generated: int
    kept: int
    manifest: Path


def shard_items(prompts: list[Prompt], benchmark: str, run_seed: int, samples: int, shard: int, shards: int) -> list[WorkItem]:
    """The items of one shard: prompts ``shard::shards`` (all samples of a prompt stay together)."""
    if not 0 <= shard < shards:
        raise HarnessError(f"shard {shard} is out of range for {shards} shards")
    return [
        WorkItem(i, p, s, sample_seed(run_seed, benchmark, p.id, s))
        for i, p in enumerate(prompts)
        if i % shards == shard
        for s in range(samples)
    ]


def load_input_images(results_dir, benchmark: str, upstream: str) -> tuple[dict[tuple[str, int], dict], str]:
    """Rows of an upstream system's manifest by (prompt id, sample), and its fingerprint digest."""
    rows = read_manifest(results_dir, benchmark, upstream)
    return rows_by_key(rows), rows[0]["system_fingerprint"] if rows else ""


def resume_sources(out_dir: Path, state_path: Path) -> list[Path]:
    """Every record of a system's images, whatever shard count made them, best first: this shard's
    working manifest, the other working manifests (any shard count, and rows saved by the integrity
    check before it moved a manifest aside), the shard manifests, the final manifest."""
    return [p for p in (state_path, *sorted(q for q in out_dir.glob(".state/*.jsonl") if q != state_path),
                        *sorted(out_dir.glob("manifest.shard-*-of-*.jsonl")), out_dir / "manifest.jsonl")
            if p.is_file()]


def _resumable_rows(out_dir: Path, state_path: Path, wanted: set, fp_digest: str, prompt_text: dict[str, str],
                    upstream_rows: dict | None, results_dir) -> dict[tuple[str, int], dict]:
    """The rows of images this shard may keep: for each wanted item, the first record (best source
    first) that this system version made from this prompt (and input image), whose image is intact.
    So a run moved from 1 to 4 shards (or back), resumed or repaired makes no image twice."""
    records: dict[tuple[str, int], list[tuple[Path, dict]]] = {}
    for source in resume_sources(out_dir, state_path):
        for row in read_jsonl(source, drop_damaged=True):
            if row_key(row) in wanted:
                records.setdefault(row_key(row), []).append((source, row))
    done: dict[tuple[str, int], dict] = {}
    hashes: dict[Path, str] = {}
    for key, candidates in records.items():
        altered = None
        for source, row in candidates:
            if row["system_fingerprint"] != fp_digest:
                continue  # made by another version of the system: regenerate
            if row["prompt"] != prompt_text[row["prompt_id"]]:
                continue  # the prompt text changed (e.g. another prompt file version): regenerate
            if SEAL in row and not seal_ok(row):
                log.warning("row %s/%s of %s was edited after generation; not trusted", *key, source)
                continue
            if upstream_rows is not None:
                made_from = upstream_rows.get(key, {}).get("sha256")
                if "input_sha256" not in row:  # a row of an older harness: same input fingerprint, so the same input
                    row = {**row, "input_sha256": made_from}
                if row["input_sha256"] != made_from:
                    continue  # made from another version of its input image: regenerate
            path = out_dir / row["image"]
            if not path.is_file():
                continue  # regenerated below
            if path not in hashes:
                hashes[path] = sha256_file(path)
            if hashes[path] != row["sha256"]:
                altered = (path, source)
                continue
            done[key] = seal_row(row)  # rows of an older harness get their seal here
            break
        else:
            if altered:  # an image no record vouches for: never silently replaced
                raise HarnessError(f"image {altered[0]} does not match the sha256 in {altered[1]}; it was changed after "
                                   f"generation: regenerate exactly the damaged images: {repair_command(results_dir)}")
    return done


def run_generation(
    config: dict[str, Any],
    benchmark: str,
    system_name: str,
    shard: int = 0,
    shards: int = 1,
    system: System | None = None,
    progress: bool = True,
) -> GenerationSummary:
    """Generate (or resume) one shard of one (benchmark, system) and write its manifest."""
    from models.registry import build_system

    results_dir = Path(config["results_dir"])
    if system_name not in config["systems"]:
        raise HarnessError(f"system {system_name!r} is not in the config's systems; known: {', '.join(config['systems'])}")
    spec = config["systems"][system_name]
    if system is None:
        system = build_system(
            system_name, spec, config["weights"], config["device"], config["dtype"], config["batch_invariant"]
        )
    out_dir = system_dir(results_dir, benchmark, system_name)
    state_path = out_dir / ".state" / f"shard-{shard}-of-{shards}.jsonl"
    # One writer per shard: a job orphaned by a killed run (or a second run in the same folder) must
    # not write the same images and state file as this one.
    with exclusive_lock(state_path.with_suffix(".lock"), f"generation of {benchmark}/{system_name} shard {shard}"):
        return _generate_shard(config, benchmark, system_name, shard, shards, system, progress, spec, out_dir, state_path)


def _generate_shard(config, benchmark, system_name, shard, shards, system, progress, spec, out_dir, state_path):
    results_dir = Path(config["results_dir"])

    upstream_rows: dict[tuple[str, int], dict] = {}
    fingerprint = system.fingerprint()
    expanded: dict[str, str] = {}
    if spec.get("expand"):  # the prompt-expansion ablation: generate from the expanded prompts
        from harness.expansion import load_expansions

        expanded, fingerprint["expander"] = load_expansions(config, benchmark)
    if spec.get("input"):
        upstream_rows, fingerprint["input_fingerprint"] = load_input_images(results_dir, benchmark, spec["input"])
    fp_digest = digest(fingerprint)
    atomic_write_json(out_dir / "system.json", {"system": system_name, "digest": fp_digest, "fingerprint": fingerprint})

    prompts = load_prompts(benchmark, config["data_dir"], config["num_prompts"])
    items = shard_items(prompts, benchmark, config["seed"], config["samples_per_prompt"], shard, shards)
    if expanded:
        lacking = [p.id for p in prompts if p.id not in expanded]
        if lacking:
            raise HarnessError(f"expanded prompts for {benchmark} lack prompt {lacking[0]}; rerun the expansion")
    prompt_text = {p.id: expanded.get(p.id, p.text) for p in prompts}  # the text the model sees

    done = _resumable_rows(out_dir, state_path, {it.key for it in items}, fp_digest, prompt_text,
                           upstream_rows if spec.get("input") else None, results_dir)
    todo = [it for it in items if it.key not in done]

    batch_size = config["batch_size"]
    merged = manifest_path(results_dir, benchmark, system_name)
    if todo and shards > 1 and merged.is_file():
        # The merged manifest is about to list images this job rewrites: it is stale from the first
        # image on (the merge job writes it again), and must not outlive a kill looking finished.
        merged.unlink()
    if todo:
        system.build()  # load weights before the clock starts: wall times are generation only
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"{benchmark}/{system_name} shard {shard + 1}/{shards}", unit="img")
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        inputs = None
        if spec.get("input"):
            missing = [it.key for it in batch if it.key not in upstream_rows]
            if missing:
                raise HarnessError(f"input system {spec['input']!r} has no image for prompt {missing[0][0]} sample {missing[0][1]}")
            inputs = [open_row_image(results_dir, benchmark, spec["input"], upstream_rows[it.key]) for it in batch]
        texts = [prompt_text[it.prompt.id] for it in batch]
        t0 = time.perf_counter()
        images = system.generate(texts, [it.seed for it in batch], inputs)
        wall = time.perf_counter() - t0
        if len(images) != len(batch):
            raise RuntimeError(f"system {system_name} returned {len(images)} images for a batch of {len(batch)}")
        for it, text, image in zip(batch, texts, images):
            rel = f"images/{image_name(it.prompt.id, it.sample)}"
            sha = save_png(image, out_dir / rel)
            done[it.key] = seal_row({
                "prompt_index": it.index,
                "prompt_id": it.prompt.id,
                "sample": it.sample,
                "prompt": text,  # as the model saw it
                "original_prompt": it.prompt.text,
                "category": it.prompt.category,
                "challenge": it.prompt.challenge,
                "seed": it.seed,
                "system": system_name,
                "system_fingerprint": fp_digest,
                "image": rel,
                "sha256": sha,
                "width": image.width,
                "height": image.height,
                "wall_time_s": wall / len(batch),
                "batch_size": len(batch),
                **({"input_sha256": upstream_rows[it.key]["sha256"]} if spec.get("input") else {}),
            })
        # The state file is rewritten after every batch: a kill loses at most this batch.
        atomic_write_jsonl(state_path, ordered(done.values()))
        if bar:
            bar.update(len(batch))
    if bar:
        bar.close()

    rows = ordered(done.values())
    if len(rows) != len(items):
        raise RuntimeError(f"{len(items)} items expected, {len(rows)} present")
    atomic_write_jsonl(state_path, rows)
    hashes = HashCache(out_dir, f"hashes.shard-{shard}-of-{shards}.json")  # trusted by later checks
    for row in rows:
        hashes.record(out_dir / row["image"], row["sha256"])
    hashes.save()
    out = shard_manifest_path(results_dir, benchmark, system_name, shard, shards)
    atomic_write_jsonl(out, rows)
    return GenerationSummary(total=len(items), generated=len(todo), kept=len(items) - len(todo), manifest=out)
