"""HPS v2 against the hpsv2 package, CLIP score's recipe, and golden scores of every tiny scorer."""

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from harness.errors import HarnessError
from harness.scorers.registry import SCORERS, build_scorer
from models.base import WeightsSpec


def golden_images():
    """Four fixed 96x128 images: gradients, stripes and noise (deterministic, no files)."""
    rng = np.random.RandomState(2024)
    yy, xx = np.mgrid[0:96, 0:128]
    imgs = [
        np.stack([xx * 2, yy * 2, (xx + yy)], -1) % 256,
        np.stack([(xx // 8 % 2) * 255, (yy // 8 % 2) * 200, np.full_like(xx, 90)], -1),
        rng.randint(0, 256, (96, 128, 3)),
        np.stack([np.full_like(xx, 220), np.full_like(xx, 40), yy * 2], -1),
    ]
    return [Image.fromarray(a.astype(np.uint8)) for a in imgs]


GOLDEN_PROMPTS = ["a colourful gradient", "a striped flag", "television static", "a red sky at dusk"]

# Pinned outputs of the tiny (fixed random weight) builds on the images above. A library upgrade
# that moves any of them (preprocessing, tokenizer, kernels) fails here; 1e-4 absolute plus 1e-5
# relative covers float reassociation across CPUs.
GOLDEN = {
    "aesthetic": [0.047051933, 0.046308786, 0.047888298, 0.044361584],
    "hpsv2": [-0.116703026, -0.182689726, -0.215927452, -0.214473560],
    "hpsv21": [-0.019441461, -0.173121840, -0.125894308, -0.229699075],
    "clip_score": [4.635764122, 1.483420610, 0.0, 6.679977417],
    "imagereward": [68.141853333, 66.877700806, 65.367126465, 66.428665161],
}


@pytest.mark.parametrize("metric", sorted(GOLDEN))
def test_golden_scores_of_tiny_scorers(metric):
    scores = build_scorer(metric, {metric: "tiny"}, "cpu", "float32", batch_size=3).score(golden_images(), GOLDEN_PROMPTS)
    assert GOLDEN[metric] is not None, f"pin {metric}: {scores}"
    np.testing.assert_allclose(scores, GOLDEN[metric], atol=1e-4, rtol=1e-5)
    assert len(set(np.round(scores, 6))) == 4


# Set metrics: the golden images against their mirrored-and-rotated copies as "reference".
GOLDEN_SET = {"fid": 0.0018847455503, "kid": -0.0003445148468}


@pytest.mark.parametrize("metric", sorted(GOLDEN_SET))
def test_golden_values_of_tiny_set_metrics(metric):
    from PIL import ImageOps

    scorer = build_scorer(metric, {metric: "tiny"}, "cpu", "float32", batch_size=4)
    fake = scorer.features(golden_images())
    real = scorer.features([ImageOps.mirror(im).rotate(90) for im in golden_images()])
    assert scorer.compute(fake, real)["value"] == pytest.approx(GOLDEN_SET[metric], abs=1e-7, rel=1e-4)


def test_every_registered_scorer_has_a_golden():
    assert set(GOLDEN) | set(GOLDEN_SET) == set(SCORERS)


@pytest.mark.skipif(importlib.util.find_spec("hpsv2") is None, reason="hpsv2x is not installed")
def test_hps_equals_the_hpsv2_package_on_the_same_checkpoint(tmp_path):
    """hpsv2.img_score.score (per image) vs our batched scorer, same random checkpoint and images.

    ViT-B-32 stands in for ViT-H-14 to keep the test fast: the scoring code path is the same.
    """
    import hpsv2.img_score as ref
    from hpsv2.src.open_clip import create_model_and_transforms

    from harness.scorers.hpsv2 import HPSv2Scorer, HPSv21Scorer

    torch.manual_seed(0)
    model, _, preprocess = create_model_and_transforms(
        "ViT-B-32", None, precision="fp32", device="cpu", jit=False, output_dict=True,
        with_score_predictor=False, with_region_predictor=False,
    )
    for cls in (HPSv2Scorer, HPSv21Scorer):
        ckpt = tmp_path / cls.CHECKPOINT
        torch.save({"state_dict": model.state_dict()}, ckpt)
        ref.model_dict.update(model=model, preprocess_val=preprocess)  # keeps it from downloading ViT-H-14
        want = [float(ref.score([im], p, cp=str(ckpt))[0]) for im, p in zip(golden_images(), GOLDEN_PROMPTS)]
        ours = cls(WeightsSpec(cls.name, str(tmp_path)), device="cpu", dtype="float32", batch_size=4)
        np.testing.assert_allclose(ours.score(golden_images(), GOLDEN_PROMPTS), want, atol=2e-6)
        assert ours.fingerprint()["checkpoints"]["version"] == cls.VERSION


@pytest.mark.parametrize("name", ["ViT-H-14", "ViT-B-32"])
def test_hps_architecture_is_read_off_the_checkpoint(name):
    import open_clip

    from harness.scorers.hpsv2 import open_clip_config

    with torch.device("meta"):
        state = open_clip.CLIP(**open_clip.get_model_config(name)).state_dict()
    assert open_clip_config(state, "x") == open_clip.get_model_config(name)


def test_hps_version_files_are_not_interchangeable(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "HPS_v2.1_compressed.pt")
    with pytest.raises(HarnessError, match=r"HPS_v2_compressed.pt is missing"):
        build_scorer("hpsv2", {"hpsv2": str(tmp_path)}, "cpu").build()


def test_clip_score_is_100_times_clamped_cosine():
    scorer = build_scorer("clip_score", {"clip_score": "tiny"}, "cpu", "float32").build()
    images = golden_images()[:2]
    with torch.no_grad():
        x = torch.stack([scorer.transform(im) for im in images])
        img = torch.nn.functional.normalize(scorer.model.encode_image(x), dim=-1)
        txt = torch.nn.functional.normalize(scorer.model.encode_text(scorer.tokenizer(GOLDEN_PROMPTS[:2])), dim=-1)
    want = (100 * (img * txt).sum(-1)).clamp(min=0).tolist()
    np.testing.assert_allclose(scorer.score(images, GOLDEN_PROMPTS[:2]), want, rtol=1e-5)
    assert all(s >= 0 for s in scorer.score(golden_images(), ["x"] * 4))


@pytest.mark.skipif(importlib.util.find_spec("ImageReward") is None, reason="image-reward is not installed")
def test_imagereward_equals_the_package_score_on_the_same_checkpoint(tmp_path, monkeypatch):
    """The package's per-image ``ImageReward.score`` vs our batched scorer: full-size random weights."""
    import json

    from harness.scorers.imagereward import BLIP_MED_CONFIG, CKPT, MED_CONFIG, ImageRewardScorer
    from harness.scorers.imagereward_compat import bert_vocab, import_imagereward

    words = "[PAD] [UNK] [CLS] [SEP] [MASK] a the colourful gradient striped flag television static red sky at dusk".split()
    (tmp_path / "bert-base-uncased").mkdir()
    (tmp_path / "bert-base-uncased" / "vocab.txt").write_text("\n".join(words) + "\n")
    (tmp_path / MED_CONFIG).write_text(json.dumps(BLIP_MED_CONFIG))
    IR = import_imagereward()
    torch.manual_seed(0)
    with bert_vocab(tmp_path / "bert-base-uncased", minimum=10):
        ref = IR.ImageReward(med_config=str(tmp_path / MED_CONFIG), device="cpu").eval()
    torch.save(ref.state_dict(), tmp_path / CKPT)
    with torch.no_grad():
        want = [ref.score(p, im) for im, p in zip(golden_images(), GOLDEN_PROMPTS)]

    monkeypatch.setattr("harness.scorers.imagereward_compat.MIN_BERT_VOCAB", 10)
    import harness.scorers.imagereward_compat as compat

    original = compat.bert_vocab
    monkeypatch.setattr("harness.scorers.imagereward.bert_vocab", lambda folder: original(folder, minimum=10))
    ours = ImageRewardScorer(WeightsSpec("imagereward", str(tmp_path)), device="cpu", dtype="float32", batch_size=4)
    np.testing.assert_allclose(ours.score(golden_images(), GOLDEN_PROMPTS), want, atol=2e-5)

    torch.save({k: v for k, v in ref.state_dict().items() if not k.startswith("mlp.")}, tmp_path / CKPT)
    with pytest.raises(HarnessError, match="missing keys"):
        ImageRewardScorer(WeightsSpec("imagereward", str(tmp_path)), device="cpu", dtype="float32").build()
