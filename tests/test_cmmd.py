"""CMMD (harness/scorers/cmmd.py): the MMD against a direct float64 computation, the embedding path against
transformers' CLIP on the same pixels, a real-layout folder (save_pretrained) loaded through the scorer, and the
COCO-5k set metric end to end against the same references as FID."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from harness.manifests import scores_path
from harness.scorers.cmmd import cmmd_preprocess, mmd, tiny_clip_vision
from harness.scorers.registry import build_scorer
from harness.scoring import run_scoring
from tests.conftest import smoke_config
from tests.helpers import generate
from tests.test_fid import coco_data_dir, smoke_weights


def direct_mmd(x: np.ndarray, y: np.ndarray, sigma: float = 10.0) -> float:
    """Gretton et al. 2012, eq. 5 (biased), written out over every pair in float64: x1000 as the CMMD paper."""
    def k(a, b):
        return np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * sigma**2))

    return 1000.0 * (k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())


def unit(n, d, seed, shift=0.0):
    v = np.random.default_rng(seed).normal(size=(n, d)) + shift
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_mmd_equals_a_direct_float64_computation():
    x, y = unit(40, 768, 0), unit(30, 768, 1, shift=0.3)
    assert mmd(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(direct_mmd(x, y), rel=1e-10)
    # float32 embeddings (what the extractor returns) are computed in float64 all the same
    assert mmd(torch.from_numpy(x).float(), torch.from_numpy(y).float()) == pytest.approx(
        direct_mmd(x.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64)), rel=1e-10)
    assert mmd(torch.from_numpy(x), torch.from_numpy(x)) == pytest.approx(0.0, abs=1e-9)
    # a set further away is further: the shifted set moves the distance up
    assert mmd(torch.from_numpy(x), torch.from_numpy(unit(30, 768, 1, shift=1.0))) > mmd(torch.from_numpy(x), torch.from_numpy(y))


def test_preprocessing_is_the_reference_center_crop_and_bicubic_resize():
    arr = np.random.default_rng(2).integers(0, 256, (90, 150, 3), dtype=np.uint8)
    out = cmmd_preprocess(Image.fromarray(arr), 56)
    expected = np.asarray(Image.fromarray(arr[:, 30:120]).resize((56, 56), Image.BICUBIC), np.float32) / 255.0
    assert out.shape == (56, 56, 3) and np.array_equal(out, expected)


def test_a_saved_clip_folder_loads_and_embeds_as_transformers_does(tmp_path):
    """The upstream layout (config.json, preprocessor_config.json, model.safetensors) written by save_pretrained from
    a tiny model: the scorer's embedding equals transformers' image_embeds on the processor's normalisation."""
    from transformers import CLIPImageProcessor

    folder = tmp_path / "clip-vit-large-patch14-336"
    model = tiny_clip_vision(seed=7)
    model.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}).save_pretrained(folder)
    scorer = build_scorer("cmmd", {"cmmd": str(folder)}, device="cpu", dtype="float32")
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (70, 64, 3), dtype=np.uint8)) for i in range(3)]
    feats = scorer.features(images)
    assert scorer.size == 56 and feats.shape == (3, 16)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(3), atol=1e-6)

    processor = CLIPImageProcessor.from_pretrained(folder)
    pixels = processor(images=[cmmd_preprocess(im, 56) for im in images], do_resize=False, do_center_crop=False,
                       do_rescale=False, do_normalize=True, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ref = model.eval()(pixel_values=pixels).image_embeds
    ref = ref / ref.norm(dim=-1, keepdim=True)
    assert torch.allclose(feats, ref, atol=1e-5)
    assert set(scorer.checkpoint_fingerprint()) == {"config.json", "preprocessor_config.json", "model.safetensors"}

    (folder / "model.safetensors").unlink()
    with pytest.raises(Exception, match="model.safetensors or pytorch_model.bin is missing"):
        build_scorer("cmmd", {"cmmd": str(folder)}, device="cpu").features(images)


def test_cmmd_of_a_system_on_coco5k_uses_fids_references(tmp_path, data_dir):
    n = 5
    cfg = smoke_config(tmp_path, data_dir=str(coco_data_dir(tmp_path, data_dir, n)), num_prompts=n,
                       benchmarks=["coco5k"], metrics=["cmmd"], weights={**smoke_weights(), "cmmd": "tiny"})
    cfg["systems"] = {"sdxl": dict(cfg["systems"]["sdxl"], steps=2)}
    generate(cfg, "sdxl", benchmark="coco5k")
    run_scoring(cfg, "coco5k", ["sdxl"], "cmmd")
    result = json.loads(scores_path(cfg["results_dir"], "coco5k", "sdxl", "cmmd").read_text())
    assert result["n"] == result["n_reference"] == n

    scorer = build_scorer("cmmd", {"cmmd": "tiny"}, device="cpu", dtype="float32")  # the same embedding, directly
    real = scorer.features(Image.open(p) for p in sorted((tmp_path / "data/coco/val2017").iterdir()))
    fake = scorer.features(Image.open(p) for p in sorted((tmp_path / "results/coco5k/sdxl/images").iterdir()))
    # float32 embeddings from other batches: equal to float32 rounding
    assert result["value"] == pytest.approx(direct_mmd(fake.double().numpy(), real.double().numpy()), rel=1e-5)
    assert result["value"] > 0
