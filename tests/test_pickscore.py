"""PickScore (harness/scorers/pickscore.py): a folder in the upstream layout (PickScore_v1 + the CLIP-ViT-H-14
processor, written by save_pretrained from the tiny build) scores as the reference code's formula computes it on the
same folders, and a missing file is one error naming it."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from harness.errors import HarnessError
from harness.scorers.pickscore import MODEL_DIR, PROCESSOR_DIR, tiny_pickscore
from harness.scorers.registry import build_scorer
from tests.reference_env import reference_scores

PROMPTS = ["a red cube on a table", "two cats", "an astronaut riding a horse, oil painting"]


def images():
    return [Image.fromarray(np.random.default_rng(i).integers(0, 256, (96, 128, 3), dtype=np.uint8)) for i in range(3)]


def write_processor_folder(processor, config, folder):
    """As the Hub's CLIP-ViT-H-14 folder holds it: its model's config.json, preprocessor_config.json naming
    CLIPImageProcessor, and the tokenizer files (transformers 5 would write one processor_config.json naming its PIL
    class)."""
    config.save_pretrained(folder)
    processor.image_processor.save_pretrained(folder)
    processor.tokenizer.save_pretrained(folder)
    config = folder / "preprocessor_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"image_processor_type": "CLIPImageProcessor"}))


def test_a_saved_pickscore_folder_scores_as_the_reference_formula(tmp_path):
    model, processor = tiny_pickscore(seed=3)
    with torch.no_grad():
        model.logit_scale.fill_(np.log(100.0))  # the released model's scale, so a wrong factor shows
    model.save_pretrained(tmp_path / MODEL_DIR)
    write_processor_folder(processor, model.config, tmp_path / PROCESSOR_DIR)
    scorer = build_scorer("pickscore", {"pickscore": str(tmp_path)}, "cpu", "float32", batch_size=2)
    got = scorer.score(images(), PROMPTS)
    want = reference_scores("pickscore_reference.py", tmp_path, tmp_path, images(), PROMPTS)
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
