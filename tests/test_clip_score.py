"""CLIP score (harness/scorers/clip_score.py): 100 times the cosine, clamped at zero."""

import numpy as np
import torch

from harness.scorers.registry import build_scorer
from tests.helpers import GOLDEN_PROMPTS, golden_images


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
