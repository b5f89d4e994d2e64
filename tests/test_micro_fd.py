"""micro_fd: the Fréchet distance on analytic world features (harness/scorers/micro_fd.py). The statistic is
checked against a direct float64 computation of the FID formula on the same features, and calibrated: ground
truth against other ground-truth scenes of the same captions is the floor, shuffled captions and blank
canvases are far above it."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg

from harness.micro.world import evaluation_prompts, evaluation_scene, render
from harness.prompts import load_prompts
from harness.scorers.micro_fd import REFERENCE_SAMPLES, world_features
from harness.scorers.registry import build_scorer, scorer_class


@pytest.fixture(scope="module")
def scorer():
    return build_scorer("micro_fd", {}, "cpu", "float32", 16)


@pytest.fixture(scope="module")
def references(scorer, tmp_path_factory):
    prompts = load_prompts("micro-drawbench", "data", None)
    feats, n = scorer.reference_set({}, "micro-drawbench", prompts, tmp_path_factory.mktemp("cache"))
    assert n == len(prompts) * REFERENCE_SAMPLES == feats.shape[0]
    return feats


def _features(scorer, captions, size, seed):
    return scorer.features(render(evaluation_scene(c, seed), size) for c in captions)


def direct_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) in float64 (Heusel et al. 2017, eq. 6)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * root))


def test_the_statistic_is_the_fid_formula_in_float64(scorer, references):
    captions = [c for _, c, _ in evaluation_prompts()]
    fake = _features(scorer, captions, 64, seed=7)
    ours = scorer.compute(fake, references)["value"]
    assert ours == pytest.approx(direct_frechet(fake.numpy(), references.numpy()), rel=1e-4, abs=1e-6)


def test_ground_truth_is_the_floor_and_wrong_images_are_far_above_it(scorer, references):
    captions = [c for _, c, _ in evaluation_prompts()]
    one_category = [c for _, c, cat in evaluation_prompts() if cat == evaluation_prompts()[0][2]] * 7
    truth = scorer.compute(_features(scorer, captions, 64, seed=REFERENCE_SAMPLES), references)["value"]
    truth_128 = scorer.compute(_features(scorer, captions, 128, seed=REFERENCE_SAMPLES), references)["value"]
    # a distribution metric cannot see which caption an image belongs to (shuffled captions score as ground
    # truth: the judge measures alignment); it sees a skewed set: one category's scenes only
    skewed = scorer.compute(_features(scorer, one_category, 64, seed=REFERENCE_SAMPLES), references)["value"]
    blank = scorer.compute(scorer.features(Image.new("RGB", (64, 64), (128, 128, 128)) for _ in captions),
                           references)["value"]
    print(f"micro_fd: ground truth {truth:.4f} (64 px), {truth_128:.4f} (128 px); one category {skewed:.4f}; "
          f"grey canvases {blank:.4f}")
    assert truth < 0.1 and truth_128 < 0.1
    assert skewed > 1.5 * truth
    assert blank > 10 * skewed


def test_features_see_colour_layout_and_objects():
    image = render(evaluation_scene("a red circle", 0), 64)
    f = world_features(image)
    assert f.shape == (62,) and np.isfinite(f).all()
    assert f[:9].sum() == pytest.approx(1.0)  # pixel fractions: palette, white, black, other
    assert f[-5] == 1 and f[-4] == 1 and f[-3:].sum() == 0  # one object, a circle


def test_it_applies_only_to_the_micro_world_and_loads_nothing():
    cls = scorer_class("micro_fd")
    assert cls.set_metric and not cls.higher_is_better and not cls.NEEDS_WEIGHTS
    assert cls.applies_to("micro-drawbench") and not cls.applies_to("drawbench") and not cls.applies_to("coco5k")
