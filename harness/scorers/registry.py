"""The scorer registry: metric name (as in the config's ``metrics:`` list) -> class.

Adding a metric touches this table and its own module: the class declares its facts (label,
``higher_is_better``, ``set_metric``, its tiny build), and the tables, the scoring rules, the
regression gate and the tests read them from there. Entries are import strings so that validating
a config does not import open_clip or torchmetrics (scorer modules import them when they build).
"""

from __future__ import annotations

from harness.errors import ConfigError

SCORERS: dict[str, str] = {
    "aesthetic": "harness.scorers.aesthetic:AestheticScorer",
    "hpsv2": "harness.scorers.hpsv2:HPSv2Scorer",
    "hpsv21": "harness.scorers.hpsv2:HPSv21Scorer",
    "clip_score": "harness.scorers.clip_score:CLIPScorer",
    "pickscore": "harness.scorers.pickscore:PickScoreScorer",
    "imagereward": "harness.scorers.imagereward:ImageRewardScorer",
    "fid": "harness.scorers.fid:FIDScorer",
    "kid": "harness.scorers.fid:KIDScorer",
    "cmmd": "harness.scorers.cmmd:CMMDScorer",
    "vqascore": "harness.scorers.vqascore:VQAScoreScorer",
    "micro_judge": "harness.scorers.micro_judge:MicroJudgeScorer",
    "micro_exact": "harness.scorers.micro_judge:MicroExactScorer",
    "micro_colour": "harness.scorers.micro_judge:MicroColourScorer",
    "micro_fd": "harness.scorers.micro_fd:MicroFDScorer",
}


def scorer_class(metric: str):
    from models.registry import lookup

    return lookup(SCORERS, metric, "metric")


def metric_applies(metric: str, benchmark: str) -> bool:
    """Whether ``metric`` is computed on ``benchmark`` (set metrics only where references exist)."""
    return scorer_class(metric).applies_to(benchmark)


def metric_weights(metric: str, weights: dict[str, str]) -> str:
    """The ``weights:`` value ``metric`` is built from; an analytic scorer (``NEEDS_WEIGHTS`` false) is built in
    code and needs no entry (``tiny``)."""
    from models.base import TINY

    if not scorer_class(metric).NEEDS_WEIGHTS:
        return TINY
    if metric not in weights:
        raise ConfigError(f"config key 'weights.{metric}': missing; metric {metric!r} needs its checkpoint path or `tiny`")
    return str(weights[metric])


def build_scorer(metric: str, weights: dict[str, str], device: str = "auto", dtype: str = "auto", batch_size: int = 16):
    from models.base import WeightsSpec

    return scorer_class(metric)(WeightsSpec(metric, metric_weights(metric, weights)), device=device, dtype=dtype,
                                batch_size=batch_size)
