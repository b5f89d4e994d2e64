"""PickScore (harness/scorers/pickscore.py): a folder in the upstream layout (PickScore_v1 + the CLIP-ViT-H-14
processor, written by save_pretrained from the tiny build) scores as the reference code's formula computes it on the
same folders, and a missing file is one error naming it."""

import numpy as np
import pytest
import torch
from PIL import Image

from harness.errors import HarnessError
from harness.scorers.pickscore import MODEL_DIR, PROCESSOR_DIR, tiny_pickscore
from harness.scorers.registry import build_scorer

PROMPTS = ["a red cube on a table", "two cats", "an astronaut riding a horse, oil painting"]


def images():
    return [Image.fromarray(np.random.default_rng(i).integers(0, 256, (96, 128, 3), dtype=np.uint8)) for i in range(3)]


def reference_scores(folder, imgs, prompts):
    """The PickScore README's computation, one prompt against its image at a time."""
    from transformers import AutoModel, AutoProcessor

    processor = AutoProcessor.from_pretrained(folder / PROCESSOR_DIR)
    model = AutoModel.from_pretrained(folder / MODEL_DIR).eval()
    out = []
    with torch.no_grad():
        for image, prompt in zip(imgs, prompts):
            image_inputs = processor(images=[image], padding=True, truncation=True, max_length=77, return_tensors="pt")
            text_inputs = processor(text=prompt, padding=True, truncation=True, max_length=77, return_tensors="pt")
            image_embs = model.get_image_features(**image_inputs).pooler_output
            image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
            text_embs = model.get_text_features(**text_inputs).pooler_output
            text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
            out.append(float((model.logit_scale.exp() * (text_embs @ image_embs.T))[0, 0]))
    return out


def test_a_saved_pickscore_folder_scores_as_the_reference_formula(tmp_path):
    model, processor = tiny_pickscore(seed=3)
    with torch.no_grad():
        model.logit_scale.fill_(np.log(100.0))  # the released model's scale, so a wrong factor shows
    model.save_pretrained(tmp_path / MODEL_DIR)
    processor.save_pretrained(tmp_path / PROCESSOR_DIR)
    scorer = build_scorer("pickscore", {"pickscore": str(tmp_path)}, "cpu", "float32", batch_size=2)
    got = scorer.score(images(), PROMPTS)
    want = reference_scores(tmp_path, images(), PROMPTS)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert len(set(np.round(got, 4))) == 3 and max(abs(g) for g in got) <= 100.0
    assert any(k.startswith(f"{MODEL_DIR}/model.") for k in scorer.checkpoint_fingerprint())

    (tmp_path / MODEL_DIR / "config.json").unlink()
    with pytest.raises(HarnessError, match="PickScore_v1/config.json is missing"):
        build_scorer("pickscore", {"pickscore": str(tmp_path)}, "cpu").score(images()[:1], PROMPTS[:1])


def test_long_prompts_are_truncated_to_77_tokens_not_refused():
    scorer = build_scorer("pickscore", {"pickscore": "tiny"}, "cpu", "float32")
    long = " ".join(["word"] * 200)
    assert np.isfinite(scorer.score(images()[:1], [long])[0])
