"""FID/KID: torchmetrics' statistic on our features, the reference cache, and clear errors."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from harness.errors import HarnessError
from harness.prompts import load_prompts
from harness.scorers.fid import FIDScorer, KIDScorer, TinyFeatures, fid_preprocess
from harness.scorers.registry import build_scorer
from harness.manifests import scores_path
from harness.scoring import run_scoring
from tests.conftest import smoke_config
from tests.helpers import generate


def smoke_weights():
    import yaml

    from tests.conftest import ROOT

    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["weights"]


def coco_data_dir(tmp_path, shared, n):
    """A data_dir with the real COCO captions and n synthetic val2017 'photos' named as COCO's."""
    d = tmp_path / "data"
    (d / "coco" / "val2017").mkdir(parents=True)
    os.symlink(shared / "coco" / "coco_captions_val2017.jsonl", d / "coco" / "coco_captions_val2017.jsonl")
    rng = np.random.RandomState(5)
    for p in load_prompts("coco5k", d, n):
        arr = rng.randint(0, 256, (120 + rng.randint(40), 160, 3), dtype=np.uint8)  # COCO-like, not square
        Image.fromarray(arr).save(d / "coco" / "val2017" / p.extra["file_name"], quality=95)
    return d


def test_preprocessing_center_crops_and_resizes_to_299():
    img = Image.fromarray(np.zeros((100, 300, 3), np.uint8))
    x = fid_preprocess(img)
    assert x.shape == (3, 299, 299) and x.dtype == torch.uint8


def test_fid_and_kid_of_a_system_match_torchmetrics_end_to_end(tmp_path, data_dir):
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    n = 6
    cfg = smoke_config(tmp_path, data_dir=str(coco_data_dir(tmp_path, data_dir, n)), num_prompts=n,
                       benchmarks=["coco5k"], metrics=["fid", "kid"],
                       weights={**smoke_weights(), "fid": "tiny", "kid": "tiny"})
    cfg["systems"] = {"sdxl": dict(cfg["systems"]["sdxl"], steps=2)}
    generate(cfg, "sdxl", benchmark="coco5k")
    run_scoring(cfg, "coco5k", ["sdxl"], "fid")
    run_scoring(cfg, "coco5k", ["sdxl"], "kid")
    fid = json.loads(scores_path(cfg["results_dir"], "coco5k", "sdxl", "fid").read_text())
    kid = json.loads(scores_path(cfg["results_dir"], "coco5k", "sdxl", "kid").read_text())
    assert fid["n"] == fid["n_reference"] == n and "bicubic" in fid["scorer_fingerprint"]["preprocessing"]

    # torchmetrics with the same extractor, fed the images directly
    real = torch.stack([fid_preprocess(Image.open(p)) for p in sorted((tmp_path / "data/coco/val2017").iterdir())])
    fake = torch.stack([fid_preprocess(Image.open(p)) for p in sorted((tmp_path / "results/coco5k/sdxl/images").iterdir())])
    ref = FrechetInceptionDistance(feature=TinyFeatures())
    ref.update(real, real=True)
    ref.update(fake, real=False)
    assert fid["value"] == pytest.approx(float(ref.compute()), rel=1e-6)
    torch.manual_seed(0)
    ref_kid = KernelInceptionDistance(feature=TinyFeatures(), subset_size=n)
    ref_kid.update(real, real=True)
    ref_kid.update(fake, real=False)
    assert kid["value"] == pytest.approx(float(ref_kid.compute()[0]), rel=1e-5, abs=1e-9)
    assert fid["value"] > 0

    from harness.render import BANNERS
    from harness.tables import write_table2

    cfg["metrics"] = ["fid", "kid"]
    t2 = write_table2(cfg, tmp_path / "reports" / "table2.md").read_text().splitlines()
    assert t2[0] == BANNERS["smoke"] and "| Model | Steps | UNet calls | Time cost (paper) | COCO-5k FID ↓ | COCO-5k KID ↓ |" == t2[4]
    row = next(line for line in t2 if line.startswith("| sdxl |")).split(" | ")
    # the paper's Table 2 FID of sdxl (26.29) is printed beside ours with the difference
    assert row[4] == f"{fid['value']:.4f} (N={n}) (paper 26.290, Δ {fid['value'] - 26.29:+.3f})"
    assert row[5].startswith(f"{kid['value']:.4f} ± ")

    cached = sorted(p.name.split("-")[2] for p in (tmp_path / "results" / ".cache" / "features").glob("features-*.pt"))
    assert len(cached) == 2 and cached[1] == "ref"  # one pass over the images and one over the references, for FID and KID
    os.remove(next((tmp_path / "data/coco/val2017").iterdir()))
    with pytest.raises(HarnessError, match="FID reference image .* is missing"):
        run_scoring(cfg, "coco5k", ["sdxl"], "fid")


def test_set_metrics_refuse_benchmarks_without_references(tmp_path):
    cfg = smoke_config(tmp_path, num_prompts=2, metrics=["fid"], weights={**smoke_weights(), "fid": "tiny"})
    cfg["systems"] = {"sdxl": dict(cfg["systems"]["sdxl"], steps=2)}
    generate(cfg, "sdxl")
    with pytest.raises(HarnessError, match="benchmark 'smoke' has no reference images.*coco5k"):
        run_scoring(cfg, "smoke", ["sdxl"], "fid")


def test_real_inception_weights_load_from_a_local_file(tmp_path):
    """The real extractor path: torchmetrics' Inception with weights from a local file (here a
    random-initialised state dict with the real keys and shapes; the real one cannot be downloaded)."""
    from harness.scorer_speed import random_inception_state_dict
    from harness.scorers.fid import INCEPTION_FILE, PYTORCH_FID_FILE

    captured = random_inception_state_dict()  # the real keys and shapes, random values
    torch.save(captured, tmp_path / INCEPTION_FILE)

    scorer = build_scorer("fid", {"fid": str(tmp_path)}, "cpu", batch_size=2)
    imgs = [Image.fromarray(np.random.RandomState(i).randint(0, 256, (64, 64, 3), dtype=np.uint8)) for i in range(3)]
    feats = scorer.features(imgs)
    assert feats.shape == (3, 2048) and torch.isfinite(feats).all()
    assert len(scorer.fingerprint()["checkpoints"][INCEPTION_FILE]) == 64
    with pytest.raises(HarnessError, match=INCEPTION_FILE + " or " + PYTORCH_FID_FILE + " is missing"):
        (tmp_path / "elsewhere").mkdir()
        build_scorer("kid", {"kid": str(tmp_path / "elsewhere")}, "cpu").build()
    # pytorch-fid's copy of the weights (same keys and shapes) is accepted under its own name.
    (tmp_path / INCEPTION_FILE).rename(tmp_path / "elsewhere" / PYTORCH_FID_FILE)
    other = build_scorer("fid", {"fid": str(tmp_path / "elsewhere")}, "cpu", batch_size=2)
    assert torch.equal(other.features(imgs), feats)
    assert list(other.fingerprint()["checkpoints"]) == [PYTORCH_FID_FILE]


def test_features_stream_one_batch_at_a_time_and_equal_the_whole_set_at_once():
    scorer = build_scorer("fid", {"fid": "tiny"}, "cpu", batch_size=4)
    imgs = [Image.fromarray(np.random.RandomState(i).randint(0, 256, (40, 48, 3), dtype=np.uint8)) for i in range(10)]
    yielded, seen_at_extract = [], []
    scorer.build()
    extract = scorer._extract
    scorer._extract = lambda batch: (seen_at_extract.append(len(yielded)), extract(batch))[1]

    def lazily():
        for im in imgs:
            yielded.append(im)
            yield im

    streamed = scorer.features(lazily())
    assert seen_at_extract == [4, 8, 10]  # at most one batch decoded ahead of the extractor
    scorer._extract = extract
    assert torch.equal(streamed, scorer.features(imgs))


def test_fid_and_kid_of_one_image_set_share_one_feature_pass(tmp_path):
    imgs = [Image.fromarray(np.random.RandomState(i).randint(0, 256, (40, 48, 3), dtype=np.uint8)) for i in range(6)]
    fid, kid = (build_scorer(m, {m: "tiny"}, "cpu", batch_size=4).build() for m in ("fid", "kid"))
    assert fid.extractor_digest() == kid.extractor_digest() and fid.fingerprint() != kid.fingerprint()
    first = fid.cached_features("set-a", iter(imgs), tmp_path)
    kid._extract = lambda batch: pytest.fail("KID ran a second feature pass")
    assert torch.equal(kid.cached_features("set-a", iter(imgs), tmp_path), first)
    assert [p.name for p in tmp_path.iterdir()] == [f"features-{fid.extractor_digest()}-set-a.pt"]
