"""Scorer speed: our batched scorers against the reference packages' per-image APIs.

Both sides load the same checkpoint files and score the same images and prompts in one process,
so the ratios are measured side by side. For each metric the report gives seconds per image of

* the reference API as users call it, one image per call (``hpsv2.img_score.score``, which also
  re-reads the checkpoint on every call; ``ImageReward.score``; torchmetrics' FID ``update``; the
  LAION aesthetic script's per-image recipe, which has no package),
* our scorer with ``batch_size=1`` (separates the cost of loading from the gain of batching),
* our scorer batched,

and the largest difference between the two sides' numbers (the benchmark is also an equality check).

Weights: where the config points a metric at real files they are used; otherwise (``tiny``) the
published architecture is built with random weights and written to a temporary folder in the real
file layout (``scale="full"``), or a small stand-in architecture (``scale="small"``: HPS on ViT-B-32,
everything else as in ``full``; for quick runs and the tests).
"""

from __future__ import annotations

import gc
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from harness.errors import HarnessError
from harness.io import atomic_write_text

#: why a registered metric has no speed case (a metric missing here and from CASES is listed as
#: "no reference comparison written")
NOT_BENCHMARKED = {
    "hpsv21": "same code path as hpsv2 (another checkpoint file)",
    "clip_score": "no reference package that reads the same open_clip weights",
    "kid": "same features as fid; only the statistic differs",
    "micro_judge": "analytic (the micro-world judge), no reference package",
    "micro_exact": "analytic (the micro-world judge), no reference package",
}
ScoreFn = Callable[[Sequence[Image.Image], Sequence[str]], list[float]]


@dataclass
class SpeedCase:
    """One metric's two sides, built over the same files."""

    metric: str
    reference_api: str
    reference: ScoreFn  # called once per image, as users call it
    make_ours: Callable[[int], ScoreFn]  # batch size -> our scorer's score function
    weights: str  # what the files are
    per_call: bool = True  # False: the reference is a stateful metric, scored once per set


@dataclass
class SpeedRow:
    metric: str
    reference_api: str
    weights: str
    n: int
    reference_s: float
    ours_batch1_s: float
    ours_batched_s: float
    max_abs_diff: float

    @property
    def speedup(self) -> float:
        return self.reference_s / self.ours_batched_s


def benchmark_images(n: int, size: int, seed: int = 0) -> list[Image.Image]:
    """Deterministic ``size`` x ``size`` images with structure (gradients + blobs + noise)."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        f = rng.uniform(1, 6, 3)
        base = np.stack([np.sin(2 * np.pi * f[c] * (xx + rng.rand()) * (yy + 0.5)) for c in range(3)], -1)
        img = (base * 90 + 128 + rng.normal(0, 20, (size, size, 3))).clip(0, 255)
        out.append(Image.fromarray(img.astype(np.uint8)))
    return out


def _timed(fn: Callable[[], list[float]]) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def measure(case: SpeedCase, images: Sequence[Image.Image], prompts: Sequence[str], batch_size: int) -> SpeedRow:
    """Warm each side up on one image, then time it on all of them."""
    n = len(images)
    rows = {}
    sides: dict[str, ScoreFn] = {"ours_batch1": case.make_ours(1), "ours_batched": case.make_ours(batch_size)}
    for name, fn in sides.items():
        fn(images[:1], prompts[:1])
        rows[name] = _timed(lambda: fn(images, prompts))
    del sides
    gc.collect()
    if case.per_call:
        case.reference(images[:1], prompts[:1])
        rows["reference"] = _timed(lambda: [s for im, p in zip(images, prompts) for s in case.reference([im], [p])])
    else:
        rows["reference"] = _timed(lambda: case.reference(images, prompts))
    ref, ours = np.asarray(rows["reference"][1]), np.asarray(rows["ours_batched"][1])
    return SpeedRow(case.metric, case.reference_api, case.weights, n, rows["reference"][0] / n,
                    rows["ours_batch1"][0] / n, rows["ours_batched"][0] / n, float(np.abs(ref - ours).max()))


# --- the cases: each writes (or finds) the files, then builds both sides on them ---------------------


def _weights_folder(config: dict, metric: str, tmp: Path) -> tuple[Path, bool]:
    """The user's real weights folder for ``metric``, or a fresh temporary one to fill with random weights."""
    value = str(config.get("weights", {}).get(metric, "tiny"))
    if value not in ("tiny", "random"):
        folder = Path(value)
        if not folder.is_dir():
            raise HarnessError(f"config key 'weights.{metric}': {folder} is not a folder")
        return folder, True
    folder = tmp / metric
    folder.mkdir(parents=True, exist_ok=True)
    return folder, False


def hps_case(config: dict, tmp: Path, scale: str, device: str) -> SpeedCase:
    from harness.deps import require

    require("hpsv2", "scorer-speed's HPS reference")
    import hpsv2.img_score as ref
    from hpsv2.src.open_clip import create_model_and_transforms

    from harness.scorers.hpsv2 import HPSv2Scorer
    from models.base import WeightsSpec

    folder, real = _weights_folder(config, "hpsv2", tmp)
    arch = "ViT-H-14" if scale == "full" or real else "ViT-B-32"
    model, _, preprocess = create_model_and_transforms(
        arch, None, precision="fp32", device=device, jit=False, output_dict=True,
        with_score_predictor=False, with_region_predictor=False,
    )
    ckpt = folder / HPSv2Scorer.CHECKPOINT
    if not real:
        torch.manual_seed(0)
        torch.save({"state_dict": model.state_dict()}, ckpt)
    ref.model_dict.update(model=model, preprocess_val=preprocess)  # otherwise it downloads ViT-H-14 weights

    def reference(images, prompts):
        return [float(s) for im, p in zip(images, prompts) for s in ref.score([im], p, cp=str(ckpt))]

    def make_ours(bs):
        s = HPSv2Scorer(WeightsSpec("hpsv2", str(folder)), device=device, dtype="float32", batch_size=bs)
        return s.score

    what = "real checkpoint" if real else f"random {arch}"
    return SpeedCase("hpsv2", "hpsv2.img_score.score (reloads the checkpoint per call)", reference, make_ours, what)


def imagereward_case(config: dict, tmp: Path, scale: str, device: str) -> SpeedCase:
    import json

    from harness.scorers.imagereward import BLIP_MED_CONFIG, CKPT, MED_CONFIG, VOCAB, ImageRewardScorer
    from harness.scorers.imagereward_compat import MIN_BERT_VOCAB, bert_vocab, import_imagereward
    from models.base import WeightsSpec

    folder, real = _weights_folder(config, "imagereward", tmp)
    if not real:  # the published architecture (BLIP ViT-L + BERT-base), random weights, a synthetic full-size vocab
        (folder / MED_CONFIG).write_text(json.dumps(BLIP_MED_CONFIG))
        (folder / VOCAB).parent.mkdir(exist_ok=True)
        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [chr(c) for c in range(33, 127) if not chr(c).isupper()]
        words += [f"[unused{i}]" for i in range(MIN_BERT_VOCAB - len(words))]
        (folder / VOCAB).write_text("\n".join(words) + "\n")
    IR = import_imagereward()
    torch.manual_seed(0)
    with bert_vocab((folder / VOCAB).parent):
        model = IR.ImageReward(med_config=str(folder / MED_CONFIG), device=device).eval()
    if real:
        model.load_state_dict(torch.load(folder / CKPT, map_location="cpu", weights_only=True), strict=False)
    else:
        torch.save(model.state_dict(), folder / CKPT)

    def reference(images, prompts):
        with torch.no_grad():
            return [float(model.score(p, im)) for im, p in zip(images, prompts)]

    def make_ours(bs):
        return ImageRewardScorer(WeightsSpec("imagereward", str(folder)), device=device, dtype="float32",
                                 batch_size=bs).score

    what = "real checkpoint" if real else "random BLIP ViT-L/16 + BERT-base"
    return SpeedCase("imagereward", "ImageReward.score (one image per call)", reference, make_ours, what)


def aesthetic_case(config: dict, tmp: Path, scale: str, device: str) -> SpeedCase:
    import open_clip

    from harness.scorers.aesthetic import CLIP_FILE, MLP_FILE, AestheticMLP, AestheticScorer
    from harness.scorers.clip_models import load_openai_clip, openai_transform
    from models.base import WeightsSpec

    folder, real = _weights_folder(config, "aesthetic", tmp)
    if not real:
        torch.manual_seed(0)
        torch.save(open_clip.create_model("ViT-L-14", pretrained=None, force_quick_gelu=True).state_dict(),
                   folder / CLIP_FILE)
        torch.save(AestheticMLP().state_dict(), folder / MLP_FILE)
    clip = load_openai_clip(folder / CLIP_FILE, torch.device(device))
    mlp = AestheticMLP()
    mlp.load_state_dict(torch.load(folder / MLP_FILE, map_location="cpu", weights_only=True))
    mlp = mlp.eval().to(device)
    preprocess = openai_transform(224)

    def reference(images, prompts):  # simple_inference.py of improved-aesthetic-predictor, per image
        out = []
        with torch.no_grad():
            for im in images:
                emb = clip.encode_image(preprocess(im.convert("RGB")).unsqueeze(0).to(device)).float()
                out.append(float(mlp(emb / emb.norm(dim=-1, keepdim=True))))
        return out

    def make_ours(bs):
        return AestheticScorer(WeightsSpec("aesthetic", str(folder)), device=device, dtype="float32",
                               batch_size=bs).score

    what = "real checkpoints" if real else "random OpenAI ViT-L/14 + LAION MLP"
    return SpeedCase("aesthetic", "LAION simple_inference.py recipe (no package; one image per call)", reference,
                     make_ours, what)


def fid_case(config: dict, tmp: Path, scale: str, device: str) -> SpeedCase:
    """torchmetrics' FID fed one image per ``update`` vs our batched features + the same statistic.

    Both sides see the same 299 px uint8 tensors (our recorded resize recipe); "scores" compared
    are the FID values of the images against their mirrored copies.
    """
    from PIL import ImageOps
    from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3

    from harness.scorers.fid import INCEPTION_FILE, FIDScorer, fid_preprocess
    from models.base import WeightsSpec

    folder, real = _weights_folder(config, "fid", tmp)
    if not real:
        torch.save(random_inception_state_dict(), folder / INCEPTION_FILE)
    extractor = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                   feature_extractor_weights_path=str(folder / INCEPTION_FILE))

    def reference(images, prompts):
        metric = FrechetInceptionDistance(feature=extractor).to(device)
        for im in images:
            metric.update(fid_preprocess(ImageOps.mirror(im))[None].to(device), real=True)
            metric.update(fid_preprocess(im)[None].to(device), real=False)
        return [float(metric.compute())]

    def make_ours(bs):
        scorer = FIDScorer(WeightsSpec("fid", str(folder)), device=device, batch_size=bs)

        def score(images, prompts):
            if len(images) < 2:  # a covariance needs two images; the warm-up call only builds
                scorer.features(images)
                return [float("nan")]
            return [scorer.compute(scorer.features(images), scorer.features([ImageOps.mirror(i) for i in images]))["value"]]

        return score

    what = "real Inception weights" if real else "random FID Inception"
    return SpeedCase("fid", "torchmetrics FrechetInceptionDistance.update (one image per call)", reference, make_ours,
                     what, per_call=False)


def random_inception_state_dict() -> dict[str, torch.Tensor]:
    """A random-initialised state dict with the FID Inception's real keys and shapes."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    captured: dict[str, torch.Tensor] = {}
    cls = tf_inception.FeatureExtractorInceptionV3
    original_load, original_lsd = tf_inception.torch.load, cls.load_state_dict
    try:  # build once without a weights file to learn the keys and shapes
        tf_inception.torch.load = lambda *a, **k: {}
        cls.load_state_dict = lambda self, sd, strict=True: captured.update(self.state_dict())
        cls("inception-v3-compat", ["2048"], feature_extractor_weights_path="unused")
    finally:
        tf_inception.torch.load, cls.load_state_dict = original_load, original_lsd
    return captured


CASES = {"hpsv2": hps_case, "imagereward": imagereward_case, "aesthetic": aesthetic_case, "fid": fid_case}
#: the metrics the benchmark times by default (those with a reference to compare with)
SPEED_METRICS = tuple(CASES)


def run_scorer_speed(config: dict, out: str | Path, metrics: Sequence[str] = SPEED_METRICS, n_images: int = 16,
                     image_size: int = 512, batch_size: int = 16, scale: str = "full", device: str = "cpu") -> Path:
    from harness.prompts import load_prompts

    unknown = [m for m in metrics if m not in CASES]
    if unknown:
        raise HarnessError(f"scorer speed: no benchmark for {unknown}; choose from {sorted(CASES)}")
    if scale not in ("full", "small"):
        raise HarnessError(f"scorer speed: scale {scale!r}; use 'full' or 'small'")
    images = benchmark_images(n_images, image_size)
    prompts = [p.text for p in load_prompts("smoke", config.get("data_dir"))][:n_images]
    prompts = (prompts * (n_images // max(len(prompts), 1) + 1))[:n_images]
    rows = []
    for metric in metrics:
        with tempfile.TemporaryDirectory(prefix=f"scorer-speed-{metric}-") as tmp:
            case = CASES[metric](config, Path(tmp), scale, device)
            rows.append(measure(case, images, prompts, batch_size))
            del case
            gc.collect()
        print(f"{metric}: reference {rows[-1].reference_s:.3f} s/img, ours {rows[-1].ours_batched_s:.3f} s/img")
    return write_report(out, rows, device=device, image_size=image_size, batch_size=batch_size, scale=scale)


def write_report(out: str | Path, rows: Sequence[SpeedRow], device: str, image_size: int, batch_size: int,
                 scale: str) -> Path:
    lines = [
        "# Scorer speed: our batched scorers vs the reference packages' per-image APIs",
        "",
        f"Measured side by side in one process on {device} ({torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}); {image_size}x{image_size} images, "
        f"fp32, batch size {batch_size}, weights scale `{scale}`. Ratios are comparable across machines; "
        "absolute seconds are this machine's only. On a CPU the models' arithmetic dominates and batching "
        "gains little; on a GPU, where per-call overhead and small kernels dominate batch-1 scoring, the "
        "gain is larger (run this target there).",
        "",
        "| metric | reference API | weights | N | reference s/img | ours batch 1 s/img | ours batched s/img "
        "| speed-up (reference / ours batched) | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r.metric} | {r.reference_api} | {r.weights} | {r.n} | {r.reference_s:.4f} | "
                     f"{r.ours_batch1_s:.4f} | {r.ours_batched_s:.4f} | {r.speedup:.2f}x | {r.max_abs_diff:.2e} |")
    from harness.scorers.registry import SCORERS

    skipped = {m: NOT_BENCHMARKED.get(m, "no reference comparison written") for m in SCORERS if m not in CASES}
    lines += ["", "Not benchmarked: " + "; ".join(f"`{k}`: {v}" for k, v in skipped.items()) + "."]
    out = Path(out)
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out
