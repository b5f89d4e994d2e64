"""Score one (benchmark, system) manifest with one metric; per-image scores carry the scorer fingerprint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.io import append_jsonl, atomic_write_json, digest, read_jsonl
from harness.coverage import checked_manifest
from harness.manifests import images_digest_of, open_row_image, scores_path

log = logging.getLogger(__name__)


class ScoreCache:
    """Scores already computed, keyed by (image sha256, prompt), for one scorer version.

    Kept outside Snakemake's outputs (which it deletes before rerunning a job), so rescoring after a
    change only scores new images. Appended after every batch; a line torn by a crash is dropped
    and recomputed.
    """

    def __init__(self, results_dir, metric: str, scorer_digest: str, benchmark: str):
        self.path = Path(results_dir) / ".cache" / "scores" / f"{metric}-{scorer_digest}-{benchmark}.jsonl"
        self.scores: dict[tuple[str, str], float] = {}
        if self.path.is_file():
            for r in read_jsonl(self.path, drop_damaged=True):
                self.scores[(r["sha256"], r["prompt"])] = r["score"]

    def add(self, items: list[tuple[str, str, float]]) -> None:
        for sha, prompt, score in items:
            self.scores[(sha, prompt)] = score
        append_jsonl(self.path, [{"sha256": sha, "prompt": prompt, "score": score} for sha, prompt, score in items])


def run_scoring(config: dict[str, Any], benchmark: str, systems: str | list[str], metric: str, scorer=None) -> list[Path]:
    """Write ``scores/<metric>.json`` for each system, loading the scorer once for all of them."""
    from tqdm import tqdm

    from harness.scorers.registry import build_scorer, scorer_class

    systems = [systems] if isinstance(systems, str) else list(systems)
    unknown = [s for s in systems if s not in config["systems"]]
    if unknown:
        raise HarnessError(f"system {unknown[0]!r} is not in the config's systems; known: {', '.join(config['systems'])}")
    results_dir = config["results_dir"]
    manifests = {s: checked_manifest(config, benchmark, s) for s in systems}  # exactly the config's prompts
    if scorer is None:
        scorer = build_scorer(metric, config["weights"], config["device"], config["dtype"], config["batch_size"])
    fingerprint = scorer.fingerprint()
    fp_digest = digest(fingerprint)
    if scorer_class(metric).set_metric:
        return _run_set_metric(config, benchmark, manifests, metric, scorer, fingerprint, fp_digest)
    cache = ScoreCache(results_dir, metric, fp_digest, benchmark)

    todo = [(s, r) for s in systems for r in manifests[s] if (r["sha256"], r["prompt"]) not in cache.scores]
    bs = scorer.batch_size
    for i in tqdm(range(0, len(todo), bs), desc=f"{metric} {benchmark}", unit="batch", disable=not todo):
        chunk = todo[i : i + bs]
        images = [open_row_image(results_dir, benchmark, s, r) for s, r in chunk]
        values = scorer.score(images, [r["prompt"] for _, r in chunk])
        cache.add([(r["sha256"], r["prompt"], float(v)) for (_, r), v in zip(chunk, values)])

    outs = []
    for system in systems:
        rows = manifests[system]
        out_rows = [
            {
                "prompt_id": r["prompt_id"],
                "sample": r["sample"],
                "category": r.get("category", ""),
                "prompt": r["prompt"],
                "sha256": r["sha256"],
                "score": cache.scores[(r["sha256"], r["prompt"])],
            }
            for r in rows
        ]
        out = scores_path(results_dir, benchmark, system, metric)
        atomic_write_json(
            out,
            {
                "metric": metric,
                "benchmark": benchmark,
                "system": system,
                "system_fingerprint": sorted({r["system_fingerprint"] for r in rows}),
                "scorer_digest": fp_digest,
                "scorer_fingerprint": fingerprint,
                "n": len(out_rows),
                "rows": out_rows,
            },
        )
        outs.append(out)
    return outs


def _run_set_metric(config, benchmark, manifests, metric, scorer, fingerprint, fp_digest) -> list[Path]:
    """FID/KID: each system's image set against the benchmark's reference images (features of both
    cached on disk by extractor and image bytes)."""
    from harness.prompts import load_prompts

    results_dir = config["results_dir"]
    prompts = load_prompts(benchmark, config["data_dir"], config["num_prompts"])
    real, n_reference = scorer.reference_set(config, benchmark, prompts, Path(results_dir) / ".cache" / "features")
    outs = []
    for system, rows in manifests.items():
        # Streamed (one batch of decoded images at a time) and cached by image bytes: FID and KID
        # of one image set share a single feature pass.
        images = (open_row_image(results_dir, benchmark, system, r) for r in rows)
        fake = scorer.cached_features(images_digest_of(rows), images, Path(results_dir) / ".cache" / "features")
        result = scorer.compute(fake, real)
        out = scores_path(results_dir, benchmark, system, metric)
        atomic_write_json(out, {
            "metric": metric, "benchmark": benchmark, "system": system, "kind": "set",
            "system_fingerprint": sorted({r["system_fingerprint"] for r in rows}),
            "scorer_digest": fp_digest, "scorer_fingerprint": fingerprint,
            "n": len(rows), "images": images_digest_of(rows), "n_reference": n_reference, **result,
        })
        outs.append(out)
    return outs
