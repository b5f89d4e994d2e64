"""The LAION aesthetic scorer: reference MLP layout, the real-file loading path, and its arithmetic."""

import numpy as np
import pytest
import torch
from PIL import Image

from harness.errors import HarnessError
from harness.scorers.aesthetic import CLIP_FILE, MLP_FILE, AestheticMLP
from harness.scorers.clip_models import openai_transform
from harness.scorers.registry import build_scorer


def images(n=3, size=80):
    rng = np.random.RandomState(0)
    return [Image.fromarray(rng.randint(0, 255, (size, size + 16, 3), dtype=np.uint8)) for _ in range(n)]


def test_mlp_has_the_reference_checkpoint_layout():
    keys = set(AestheticMLP().state_dict())
    assert keys == {f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")}
    shapes = {k: tuple(v.shape) for k, v in AestheticMLP().state_dict().items() if k.endswith("weight")}
    assert shapes == {"layers.0.weight": (1024, 768), "layers.2.weight": (128, 1024), "layers.4.weight": (64, 128),
                      "layers.6.weight": (16, 64), "layers.7.weight": (1, 16)}


def _openai_format_clip(seed=5):
    """A small CLIP whose state dict has the OpenAI layout (open_clip rebuilds the shape from it)."""
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    return open_clip.CLIP(
        embed_dim=768,
        vision_cfg=CLIPVisionCfg(layers=2, width=64, head_width=64, patch_size=32, image_size=224),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1),
        quick_gelu=True,
    ).eval()


def test_real_checkpoint_files_load_and_score_as_the_reference_recipe(tmp_path):
    clip = _openai_format_clip()
    torch.save(clip.state_dict(), tmp_path / CLIP_FILE)
    torch.manual_seed(7)
    mlp = AestheticMLP().eval()
    torch.save(mlp.state_dict(), tmp_path / MLP_FILE)

    scorer = build_scorer("aesthetic", {"aesthetic": str(tmp_path)}, "cpu", "float32", batch_size=2)
    got = scorer.score(images(), [""] * 3)

    # The reference recipe, written out: CLIP preprocess -> encode_image -> L2 normalise -> MLP.
    with torch.no_grad():
        x = torch.stack([openai_transform(224)(im) for im in images()])
        emb = clip.encode_image(x)
        emb = emb / emb.norm(dim=-1, keepdim=True)
        want = mlp(emb).squeeze(-1).tolist()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    fp = scorer.fingerprint()
    assert len(fp["checkpoints"][MLP_FILE]) == 64 and "bicubic" in fp["preprocessing"]


def test_missing_and_wrong_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(HarnessError, match=r"weights.aesthetic \(.*absent\): .*absent does not exist, expected a folder"):
        build_scorer("aesthetic", {"aesthetic": str(tmp_path / "absent")}, "cpu").build()
    torch.save({"fc.weight": torch.zeros(1, 768)}, tmp_path / MLP_FILE)
    with pytest.raises(HarnessError, match=r"ViT-L-14.pt is missing in"):
        build_scorer("aesthetic", {"aesthetic": str(tmp_path)}, "cpu").build()
    (tmp_path / "ViT-L-14.pt").write_bytes(b"")
    with pytest.raises(HarnessError, match=r"is not the LAION aesthetic MLP: missing keys"):
        build_scorer("aesthetic", {"aesthetic": str(tmp_path)}, "cpu").build()


def test_tiny_scorer_is_deterministic_and_batch_independent():
    a = build_scorer("aesthetic", {"aesthetic": "tiny"}, "cpu", batch_size=1).score(images(4), [""] * 4)
    b = build_scorer("aesthetic", {"aesthetic": "tiny"}, "cpu", batch_size=4).score(images(4), [""] * 4)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    assert len(set(np.round(a, 9))) == 4  # distinct images, distinct scores
