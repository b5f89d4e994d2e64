"""The scorer registry (harness/scorers/registry.py): every scorer's declared facts and the golden output of its tiny build."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.scorers.registry import SCORERS, build_scorer, scorer_class
from tests.helpers import GOLDEN_PROMPTS, golden_images


# Pinned outputs of the tiny (fixed random weight) builds on tests.helpers.golden_images(), one entry per
# registered scorer in tests/golden/scorers.json. A library upgrade that moves any of them
# (preprocessing, tokenizer, kernels) fails here; 1e-4 absolute plus 1e-5 relative covers float
# reassociation across CPUs. A new scorer gets its entry with `python -m tests.test_scorers --write-golden NAME`.
GOLDEN_FILE = Path(__file__).with_name("golden") / "scorers.json"


def golden() -> dict:
    return json.loads(GOLDEN_FILE.read_text())


def tiny_value(metric: str):
    """What the golden pins for ``metric``: its scores on the golden images, or a set metric's value
    for the golden images against their mirrored-and-rotated copies as "reference"."""
    from PIL import ImageOps

    scorer = build_scorer(metric, {metric: "tiny"}, "cpu", "float32", batch_size=3)
    if scorer.set_metric:
        fake = scorer.features(golden_images())
        real = scorer.features([ImageOps.mirror(im).rotate(90) for im in golden_images()])
        return scorer.compute(fake, real)["value"]
    return scorer.score(golden_images(), GOLDEN_PROMPTS)


# the analytic micro-world scorers read only micro-world captions and have no weights: tests/test_micro_world.py
@pytest.mark.parametrize("metric", sorted(m for m in SCORERS if scorer_class(m).NEEDS_WEIGHTS))
def test_golden_output_of_every_tiny_scorer(metric):
    kind = "set" if scorer_class(metric).set_metric else "image"
    want = golden()[kind].get(metric)
    assert want is not None, f"no golden for {metric!r}: run `python -m tests.test_scorers --write-golden {metric}`"
    got = tiny_value(metric)
    if kind == "set":
        assert got == pytest.approx(want, abs=1e-7, rel=1e-4)
    else:
        # absolute 1e-4; where every value is below 0.01 (VQAScore's tiny build: a probability near 1/vocabulary,
        # moving in its 4th significant digit with the image), relative 1e-5 alone
        small = np.abs(want).max() < 0.01
        np.testing.assert_allclose(got, want, atol=0.0 if small else 1e-4, rtol=1e-5)
        assert len({float(f"{g:.6g}") for g in got}) == 4  # the tiny build still tells the images apart


def test_every_scorer_declares_its_facts():
    for metric in SCORERS:
        cls = scorer_class(metric)
        assert cls.name == metric and cls.label and isinstance(cls.higher_is_better, bool), metric
    assert scorer_class("fid").set_metric and not scorer_class("fid").higher_is_better
    assert not scorer_class("hpsv2").set_metric and scorer_class("hpsv2").higher_is_better


if __name__ == "__main__":  # python -m tests.test_scorers --write-golden METRIC [METRIC ...]
    if sys.argv[1:2] != ["--write-golden"] or len(sys.argv) < 3:
        sys.exit("usage: python -m tests.test_scorers --write-golden METRIC [METRIC ...]")
    data = golden()
    for name in sys.argv[2:]:
        value = tiny_value(name)
        data["set" if scorer_class(name).set_metric else "image"][name] = value
        print(f"{name}: {value}")
    GOLDEN_FILE.write_text(json.dumps(data, indent=1) + "\n")
