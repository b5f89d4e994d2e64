"""Plain helper functions and constants shared by several test files (no tests, no fixtures)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness.humaneval.export import build_export
from harness.io import atomic_write_jsonl, save_png
from harness.manifests import seal_row, system_dir
from harness.runner import run_generation
from models.cogview3.unet import unet_config
from models.registry import build_system
from tests.conftest import ROOT, smoke_config


# ---- Snakemake and generation -----------------------------------------------------------------
def snakemake(workdir, *args):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2", *args],
        capture_output=True, text=True, timeout=900,
    )
    return proc.returncode, proc.stdout + proc.stderr


def generate(cfg, system, benchmark="smoke"):
    """Generate one unsharded (benchmark, system): its final manifest, as the DAG does."""
    run_generation(cfg, benchmark, system, progress=False)


# ---- scorers: fixed images and prompts ---------------------------------------------------------
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


# ---- baselines (SDXL, LCM-SDXL, Stable Cascade) -------------------------------------------------
BASELINE_WEIGHTS = {"sdxl": "tiny", "lcm-sdxl": "tiny", "stable-cascade": "tiny"}
BASELINE_SPECS = {
    "sdxl": {"model": "sdxl", "steps": 3, "guidance": 5.0, "resolution": 64},
    "lcm-sdxl": {"model": "lcm-sdxl", "steps": 4, "guidance": 8.0, "resolution": 64},
    "stable-cascade": {"model": "stable-cascade", "prior_steps": 3, "decoder_steps": 2, "resolution": 128},
}
BASELINE_PROMPTS = ["a red car", "three cats on a sofa", 'a sign that says "OPEN"']
BASELINE_SEEDS = [11, 22, 33]


def build_baselines(names):
    """The tiny builds of the named baseline systems, on the CPU in float32."""
    return {name: build_system(name, BASELINE_SPECS[name], BASELINE_WEIGHTS, "cpu", "float32").build() for name in names}


def arrays(images):
    return [np.asarray(im) for im in images]


def gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def meta_params(cls, config):
    with torch.device("meta"):
        return sum(p.numel() for p in cls(**config).parameters())


# ---- CogView3 ----------------------------------------------------------------------------------
def meta_unet(dim=None):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**unet_config(dim))


# ---- human evaluation ----------------------------------------------------------------------------
HUMANEVAL_SYSTEMS = ("cogview3", "sdxl", "stable-cascade", "cogview3-expanded", "sdxl-expanded",
                     "stable-cascade-expanded")


def fake_results(cfg, n_prompts: int, systems=HUMANEVAL_SYSTEMS, sizes=None):
    """Manifests and PNGs as the runner writes them (sealed rows, exactly the config's prompts), with
    random pixels (no model needed), for a custom prompt set of ``n_prompts`` prompts "prompt i".

    Changes ``cfg`` in place to use that prompt set (a CSV under the results folder), as a user's
    config naming it under ``prompt_sets`` would; expanded systems read "prompt i expanded".
    """
    from harness.expansion import expansions_path
    from harness.prompts import register_prompt_sets

    rng = np.random.default_rng(0)
    bench = "fake"
    csv_path = Path(cfg["results_dir"]) / "fake_prompts.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path.write_text("id,prompt,category\n" + "".join(
        f"p{i:03d},prompt {i},{'Colors' if i % 2 else 'Text'}\n" for i in range(n_prompts)))
    cfg["prompt_sets"] = {bench: str(csv_path)}
    register_prompt_sets(cfg["prompt_sets"])
    cfg.update(benchmarks=[bench], num_prompts=None, samples_per_prompt=1)
    cfg["humaneval"]["benchmark"] = bench
    atomic_write_jsonl(expansions_path(cfg["results_dir"], bench), [
        {"prompt_id": f"p{i:03d}", "prompt": f"prompt {i}", "expanded": f"prompt {i} expanded", "expander": "x",
         "backend": "offline"} for i in range(n_prompts)])
    for s in systems:
        d = system_dir(cfg["results_dir"], bench, s)
        rows = []
        size = (sizes or {}).get(s, 32)
        for i in range(n_prompts):
            img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            sha = save_png(img, d / "images" / f"p{i:03d}_0.png")
            rows.append(seal_row({
                "prompt_index": i, "prompt_id": f"p{i:03d}", "sample": 0, "image": f"images/p{i:03d}_0.png",
                "sha256": sha, "prompt": f"prompt {i} expanded" if s.endswith("-expanded") else f"prompt {i}",
                "original_prompt": f"prompt {i}", "category": "Colors" if i % 2 else "Text", "challenge": "",
                "seed": i, "system": s, "system_fingerprint": "x", "width": size, "height": size, "wall_time_s": 0.5,
                "batch_size": 1}))
        atomic_write_jsonl(d / "manifest.jsonl", rows)


def fake_scores(cfg, systems, metric="aesthetic"):
    """Score files as scoring writes them for :func:`fake_results` (score = the row's position), with
    the digest of the scorer the config names (so ``verify`` finds them current)."""
    from harness.io import atomic_write_json, digest, read_jsonl
    from harness.manifests import manifest_path, scores_path
    from harness.scorers.registry import build_scorer

    bench = cfg["humaneval"]["benchmark"]
    scorer_digest = digest(build_scorer(metric, cfg["weights"], cfg["device"], cfg["dtype"]).fingerprint())
    for s in systems:
        rows = read_jsonl(manifest_path(cfg["results_dir"], bench, s))
        atomic_write_json(scores_path(cfg["results_dir"], bench, s, metric), {
            "metric": metric, "benchmark": bench, "system": s, "scorer_digest": scorer_digest, "n": len(rows),
            "rows": [{"prompt_id": r["prompt_id"], "sample": r["sample"], "prompt": r["prompt"], "sha256": r["sha256"],
                      "score": float(i)} for i, r in enumerate(rows)]})


def he_config(tmp_path, **humaneval):
    hv = {"benchmark": "smoke", "comparisons": [["cogview3", "sdxl"], ["cogview3", "stable-cascade"]],
          "prompts": ["original", "expanded"], "annotators": 3, "attention_checks": 2, "image_size": 24,
          "annotations_dir": str(tmp_path / "filled"), **humaneval}
    return smoke_config(tmp_path, humaneval=hv)


def export(tmp_path, cfg):
    return build_export(cfg, tmp_path / "reports" / "humaneval" / "export", tmp_path / "reports" / "humaneval" / "key.json")
