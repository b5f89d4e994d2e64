"""Coverage: a manifest or a score file holds exactly the (prompt id, sample) set the config asks for.

Numbers are made in four places: scoring, the tables, the regression gate and the human-eval export.
Each reads its manifests through :func:`checked_manifest` and its score files through
:func:`check_scores`, so a short manifest (a row deleted), an extra row, a prompt text that differs
from the prompt set (or from the expansion the system generated from), or a score file computed from
other images than the manifest lists now, is an error naming the system, the ids and the command
that repairs it, never a mean over fewer prompts.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.manifests import HashCache, images_digest_of, read_manifest, repair_command, row_key, rows_by_key

#: how many ids a message lists before "and N more"
SHOWN = 5


def _prompt_texts(name: str, data_dir: str, num_prompts: int | None) -> tuple[tuple[str, str], ...]:
    from harness.prompts import benchmark

    # Keyed by the registered Benchmark itself: re-registering a custom set reads its file again.
    return _cached_prompt_texts(benchmark(name), data_dir, num_prompts)


@lru_cache(maxsize=32)
def _cached_prompt_texts(bench, data_dir: str, num_prompts: int | None) -> tuple[tuple[str, str], ...]:
    from harness.prompts import load_prompts

    return tuple((p.id, p.text) for p in load_prompts(bench.name, data_dir, num_prompts))


def expected_prompts(config: dict[str, Any], benchmark: str, system: str) -> dict[tuple[str, int], tuple[str, str | None]]:
    """(prompt id, sample) -> (the prompt set's text, the text the model must have seen; None where
    it cannot be known here: an expanded system whose expansion snapshot is not written yet)."""
    prompts = _prompt_texts(benchmark, str(config["data_dir"]), config["num_prompts"])
    seen: dict[str, str | None] = {pid: text for pid, text in prompts}
    if config["systems"][system].get("expand"):
        from harness.expansion import expansions_path, load_expansions

        if expansions_path(config["results_dir"], benchmark).is_file():
            expanded = load_expansions(config, benchmark)[0]
            seen = {pid: expanded.get(pid) for pid, _ in prompts}
        else:
            seen = {pid: None for pid, _ in prompts}
    return {(pid, s): (text, seen[pid]) for pid, text in prompts for s in range(config["samples_per_prompt"])}


def _ids(keys) -> str:
    keys = sorted(keys)
    shown = ", ".join(f"{pid}/{s}" for pid, s in keys[:SHOWN])
    return shown + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")


def coverage_problem(config: dict[str, Any], benchmark: str, system: str, rows: list[dict], path: Path,
                     what: str = "manifest", texts: bool = True) -> str | None:
    """Why ``rows`` (a manifest's, or a score file's) are not exactly the config's prompts, or None;
    with ``texts``, each row's prompt texts must also be the prompt set's (and the expansion's)."""
    want = expected_prompts(config, benchmark, system)
    have = {row_key(r) for r in rows}
    missing, extra = set(want) - have, have - set(want)
    if missing or extra:
        parts = ([f"{len(missing)} missing ({_ids(missing)})"] if missing else []) + (
            [f"{len(extra)} not in the config's prompts ({_ids(extra)})"] if extra else [])
        return (f"{what} {path} ({benchmark}/{system}) does not cover the config's {len(want)} (prompt id, sample) "
                f"pairs: {'; '.join(parts)} [ids as prompt/sample]")
    for r in rows if texts else ():
        original, seen = want[row_key(r)]
        text = r.get("original_prompt", r["prompt"])
        if text != original:
            return (f"{what} {path} ({benchmark}/{system}) row {r['prompt_id']}/{r['sample']} has the prompt {text!r}, "
                    f"but the prompt set has {original!r} (the {what} or the prompt file was edited)")
        if seen is not None and r["prompt"] != seen:
            return (f"{what} {path} ({benchmark}/{system}) row {r['prompt_id']}/{r['sample']} was made from the prompt "
                    f"{r['prompt']!r}, not from the {'expanded ' if config['systems'][system].get('expand') else ''}"
                    f"prompt the config gives now ({seen!r})")
    return None


def check_coverage(config: dict[str, Any], benchmark: str, system: str, rows: list[dict], path: Path,
                   what: str = "manifest") -> None:
    problem = coverage_problem(config, benchmark, system, rows, path, what)
    if problem:
        raise HarnessError(f"{problem}; repair it: {repair_command(config['results_dir'])}")


def checked_manifest(config: dict[str, Any], benchmark: str, system: str) -> list[dict]:
    """A manifest's rows (:func:`harness.manifests.read_manifest`), checked to be exactly the config's
    prompts, with every image's sha256 (through the hash cache)."""
    from harness.manifests import manifest_path

    from harness.manifests import system_dir

    rows = read_manifest(config["results_dir"], benchmark, system)
    path = manifest_path(config["results_dir"], benchmark, system)
    check_coverage(config, benchmark, system, rows, path)
    # Every image is what its row says (hashed again only if changed since last verified): a
    # truncated or overwritten image never gets into a number.
    folder = system_dir(config["results_dir"], benchmark, system)
    cache = HashCache(folder)
    for r in rows:
        if cache.sha256(folder / r["image"]) != r["sha256"]:
            raise HarnessError(f"image {folder / r['image']} ({benchmark}/{system}) was changed after generation (its "
                               f"sha256 differs from its sealed manifest row); regenerate exactly the damaged images: "
                               f"{repair_command(config['results_dir'])}")
    cache.save()
    return rows


def score_problem(config: dict[str, Any], data: dict, path: Path, manifest_rows: list[dict]) -> str | None:
    """Why a score file does not match the manifest it claims to score, or None.

    Image metrics: its rows must be the config's prompts with the manifest's image sha256 and prompt
    text. Set metrics (FID/KID): its image count and image digest must be the manifest's.
    """
    benchmark, system = data["benchmark"], data["system"]
    if data.get("kind") == "set":
        if data.get("images") != images_digest_of(manifest_rows) or data["n"] != len(manifest_rows):
            return (f"score file {path} was computed from other images than {benchmark}/{system}'s manifest lists now "
                    f"({data['n']} images then, {len(manifest_rows)} now): it is stale")
        return None
    # The score rows' texts are checked against the manifest's below; the manifest's against the prompt set.
    problem = coverage_problem(config, benchmark, system, data["rows"], path, "score file", texts=False)
    if problem:
        return problem
    by_key = rows_by_key(manifest_rows)
    stale = [row_key(r) for r in data["rows"]
             if (m := by_key.get(row_key(r))) is None or m["sha256"] != r["sha256"] or m["prompt"] != r["prompt"]]
    if stale:
        return (f"score file {path} scores {len(stale)} images that are not the ones {benchmark}/{system}'s manifest "
                f"lists now ({_ids(stale)}): it is stale")
    return None


def check_scores(config: dict[str, Any], data: dict, path: Path, manifest_rows: list[dict]) -> None:
    problem = score_problem(config, data, path, manifest_rows)
    if problem:
        raise HarnessError(f"{problem}; rescore it: rerun your snakemake command (its start check removes stale "
                           f"score files), or {repair_command(config['results_dir'])}")
