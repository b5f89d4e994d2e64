"""Reading score files as the reports use them: per-image rows or a set metric's value."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.manifests import scores_path
from harness.stats import per_prompt_table


@dataclass
class ScoreSet:
    """One system's scores for one (benchmark, metric)."""

    set_metric: bool
    rows: list[dict] = field(default_factory=list)  # per image: prompt_id, score (image metrics)
    value: dict = field(default_factory=dict)  # set metrics: value, std, n

    def per_prompt(self) -> dict[str, float]:
        """Mean score per prompt (samples of a prompt averaged first)."""
        return per_prompt_table([r["prompt_id"] for r in self.rows], [r["score"] for r in self.rows])

    def aggregate(self) -> tuple[float, int]:
        """(value, N): a set metric's value over its images, or the mean over prompts."""
        if self.set_metric:
            return float(self.value["value"]), int(self.value["n"])
        by_prompt = self.per_prompt()
        return float(np.mean(list(by_prompt.values()))), len(by_prompt)


def load_scores(path: Path) -> tuple[ScoreSet, dict]:
    """A score file as a :class:`ScoreSet`, with the file's JSON."""
    data = json.loads(Path(path).read_text())
    if data.get("kind") == "set":
        return ScoreSet(True, value=data), data
    return ScoreSet(False, rows=data["rows"]), data


class ScoreReader:
    """Reads score files for a report: each must score exactly the images its manifest lists, which
    must be exactly the config's prompts (:mod:`harness.coverage`); scorer versions are not mixed
    within one (benchmark, metric) column."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.digests: dict[tuple[str, str], tuple[str, str]] = {}
        self.manifests: dict[tuple[str, str], list[dict]] = {}

    def read(self, benchmark: str, system: str, metric: str) -> ScoreSet:
        from harness.coverage import check_scores, checked_manifest

        path = scores_path(self.config["results_dir"], benchmark, system, metric)
        if not path.is_file():
            raise HarnessError(f"scores file {path} is missing; run `snakemake {path}` first")
        scores, data = load_scores(path)
        if (benchmark, system) not in self.manifests:
            self.manifests[(benchmark, system)] = checked_manifest(self.config, benchmark, system)
        check_scores(self.config, data, path, self.manifests[(benchmark, system)])
        prev = self.digests.setdefault((benchmark, metric), (data["scorer_digest"], system))
        if prev[0] != data["scorer_digest"]:
            raise HarnessError(
                f"{benchmark}/{metric}: systems {prev[1]!r} and {system!r} were scored by different scorer versions "
                f"({prev[0]} vs {data['scorer_digest']}); rescore both before putting them in one column"
            )
        return scores

    def fingerprint_note(self) -> str:
        return "Scorer fingerprints: " + ", ".join(f"{b}/{m} `{d}`" for (b, m), (d, _) in sorted(self.digests.items()))
