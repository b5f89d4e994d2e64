"""Scoring a system's images (harness/scoring.py): missing images, the score cache, rescoring only new images."""

import json

import pytest

from harness.errors import HarnessError
from harness.manifests import system_dir
from harness.scoring import run_scoring
from tests.conftest import smoke_config
from tests.helpers import generate


def test_scoring_stops_on_a_missing_image(tmp_path):
    cfg = smoke_config(tmp_path, num_prompts=2)
    cfg["systems"]["sdxl"]["steps"] = 3
    generate(cfg, "sdxl")
    (system_dir(cfg["results_dir"], "smoke", "sdxl") / "images" / "s01_0.png").unlink()
    with pytest.raises(HarnessError, match=r"s01_0.png listed in .* is missing"):
        run_scoring(cfg, "smoke", "sdxl", "aesthetic")


class CountingScorer:
    """A real scorer that counts the images it is asked to score."""

    def __init__(self, inner):
        self.inner, self.batch_size, self.seen = inner, inner.batch_size, 0

    def fingerprint(self):
        return self.inner.fingerprint()

    def score(self, images, prompts):
        self.seen += len(images)
        return self.inner.score(images, prompts)


def test_rescoring_scores_only_new_images_and_survives_a_torn_cache(tmp_path):
    from harness.scorers.registry import build_scorer
    from harness.scoring import ScoreCache

    cfg = smoke_config(tmp_path, num_prompts=3, metrics=["aesthetic"])
    cfg["systems"] = {"a": dict(cfg["systems"]["sdxl"], steps=2), "b": dict(cfg["systems"]["sdxl"], steps=3)}
    for name in cfg["systems"]:
        generate(cfg, name)
    scorer = CountingScorer(build_scorer("aesthetic", cfg["weights"], "cpu", "float32", batch_size=2))
    first = [json.loads(p.read_text()) for p in run_scoring(cfg, "smoke", ["a", "b"], "aesthetic", scorer=scorer)]
    assert scorer.seen == 6 and [d["n"] for d in first] == [3, 3]

    cfg["systems"]["b"]["steps"] = 4  # system b changes; a does not
    generate(cfg, "b")
    run_scoring(cfg, "smoke", ["a", "b"], "aesthetic", scorer=scorer)
    assert scorer.seen == 9  # only b's three new images

    cache = ScoreCache(cfg["results_dir"], "aesthetic", first[0]["scorer_digest"], "smoke")
    with open(cache.path, "a") as f:
        f.write('{"sha256": "abc", "pro')  # a crash mid-append
    again = [json.loads(p.read_text()) for p in run_scoring(cfg, "smoke", ["a", "b"], "aesthetic", scorer=scorer)]
    assert scorer.seen == 9 and again[0]["rows"] == first[0]["rows"]
    (tmp_path / "results" / "smoke" / "a" / "images" / "s00_0.png").unlink()
    generate(cfg, "a")  # regenerated: same bytes, so still cached
    cache.add([("new", "prompt", 1.0)])  # appended after the torn line stays readable
    assert ScoreCache(cfg["results_dir"], "aesthetic", first[0]["scorer_digest"], "smoke").scores[("new", "prompt")] == 1.0
