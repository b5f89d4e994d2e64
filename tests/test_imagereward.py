"""ImageReward (harness/scorers/imagereward.py) against the image-reward package on the same checkpoint."""

import importlib.util

import numpy as np
import pytest
import torch

from harness.errors import HarnessError
from models.base import WeightsSpec
from tests.helpers import GOLDEN_PROMPTS, golden_images


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
