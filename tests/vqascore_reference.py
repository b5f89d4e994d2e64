"""Scores images with t2v_metrics 3.0's own CLIP-FlanT5 code (``CLIPT5Model.forward``), for tests/test_vqascore.py.

Run by tests/reference_env.py with ``PYTHONPATH=.venv/reference`` (``make reference-env``: t2v-metrics and the
transformers 4.49 it was written for; torch is the project's)::

    python tests/vqascore_reference.py WEIGHTS_FOLDER REQUEST.json   ->  JSON list of scores on stdout

REQUEST.json is ``{"images": [png paths], "prompts": [...]}``. The package's top-level ``__init__`` needs ffmpeg,
OpenCV and a dozen model families, none of which the CLIP-FlanT5 path uses, so its packages are entered without
running those ``__init__`` files and OpenCV is an empty module; every line that scores is the package's own. Its
loader fetches from the Hub by name, so the model is loaded as its ``load_pretrained_model`` does, from the local
folders, in float32 (the package casts to bfloat16 for CUDA).
"""

import importlib
import json
import sys
import types
from pathlib import Path


def package_module(name: str):
    """Import ``t2v_metrics.<name>`` without running the ``__init__`` files of the packages above it."""
    root = Path(next(p for p in sys.path if (Path(p) / "t2v_metrics").is_dir())) / "t2v_metrics"
    parts = ["t2v_metrics", *name.split(".")]
    for i in range(1, len(parts)):
        pkg = ".".join(parts[:i])
        if pkg not in sys.modules:
            module = types.ModuleType(pkg)
            module.__path__ = [str(root.joinpath(*parts[1:i]))]
            sys.modules[pkg] = module
    return importlib.import_module(".".join(parts))


def main(weights: Path, request: Path) -> None:
    import torch
    from transformers import AutoTokenizer  # first, so that transformers sees no OpenCV

    sys.modules.setdefault("cv2", types.ModuleType("cv2"))  # imported by mm_utils for video frames only
    clip_t5 = package_module("models.vqascore_models.clip_t5_model")

    model_dir = next(weights / m for m in ("clip-flant5-xxl", "clip-flant5-xl") if (weights / m).is_dir())
    tokenizer_dir = weights / model_dir.name.replace("clip-flant5", "flan-t5")
    vision_dir = weights / "clip-vit-large-patch14-336"
    # the checkpoint names its vision tower by Hub id; offline, the package needs it to be the local folder
    local = Path(request).parent / "reference-model"
    local.mkdir(exist_ok=True)
    for f in model_dir.iterdir():
        if f.name != "config.json" and not (local / f.name).exists():
            (local / f.name).symlink_to(f.resolve())
    config = json.loads((model_dir / "config.json").read_text())
    config["mm_vision_tower"] = str(vision_dir)
    (local / "config.json").write_text(json.dumps(config))

    # as load_pretrained_model does (model_max_length from CLIP_T5_MODELS, the slow sentencepiece tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, use_fast=False, model_max_length=clip_t5.CONTEXT_LEN)
    model = clip_t5.CLIPT5ForConditionalGeneration.from_pretrained(local)
    model.requires_grad_(False)
    model = model.eval()

    scorer = clip_t5.CLIPT5Model.__new__(clip_t5.CLIPT5Model)
    scorer.model_name, scorer.device = "clip-flant5-xxl", "cpu"
    scorer.image_loader = package_module("models.model").image_loader
    scorer.tokenizer, scorer.model = tokenizer, model
    scorer.image_processor = model.get_vision_tower().image_processor
    scorer.image_aspect_ratio = clip_t5.CLIP_T5_MODELS["clip-flant5-xxl"]["model"]["image_aspect_ratio"]
    scorer.conversational_style = clip_t5.CLIP_T5_MODELS["clip-flant5-xxl"]["model"]["conversation"]
    scorer.context_len = clip_t5.CONTEXT_LEN
    job = json.loads(Path(request).read_text())
    with torch.no_grad():
        scores = scorer.forward(job["images"], job["prompts"])
    print(json.dumps([float(s) for s in scores]))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
