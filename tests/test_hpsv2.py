"""HPS v2 (harness/scorers/hpsv2.py) against the hpsv2 package; its architecture and version from the checkpoint."""

import numpy as np
import pytest
import torch

from harness.errors import HarnessError
from harness.scorers.registry import build_scorer
from models.base import WeightsSpec
from tests.helpers import GOLDEN_PROMPTS, golden_images


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
