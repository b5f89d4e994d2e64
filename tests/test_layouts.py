"""Upstream layouts: which files a loader reads, variants, shards, and what fingerprints hash."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import HarnessError
from models.layouts import model_folder, named_files, pipeline_folder, sat_folder

ROOT = Path(__file__).resolve().parent.parent


def touch(path: Path, content: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def diffusers_component(folder: Path, stem: str, variant: str | None = None) -> None:
    touch(folder / "config.json", "{}")
    touch(folder / (f"{stem}.safetensors" if variant is None else f"{stem}.{variant}.safetensors"))


def sdxl_like(root: Path, variants: dict[str, list[str | None]]) -> None:
    touch(root / "model_index.json", "{}")
    for name, vs in variants.items():
        for v in vs:
            diffusers_component(root / name, "model" if name.startswith("text") else "diffusion_pytorch_model", v)
    touch(root / "scheduler" / "scheduler_config.json", "{}")
    for tok in ("tokenizer",):
        touch(root / tok / "vocab.json", "{}")
        touch(root / tok / "merges.txt")


COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def test_full_precision_pipeline_reads_only_its_component_files(tmp_path):
    sdxl_like(tmp_path, {"unet": [None, "fp16"], "vae": [None, "fp16"], "text_encoder": [None, "fp16"]})
    touch(tmp_path / "sd_xl_base_1.0.safetensors")  # the single-file checkpoint at the root: never read
    found = pipeline_folder("sdxl", tmp_path, COMPONENTS).require()
    assert found.variant is None
    names = sorted(str(p.relative_to(tmp_path)) for p in found.files)
    assert names == ["model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
                     "text_encoder/model.safetensors", "tokenizer/merges.txt", "tokenizer/vocab.json",
                     "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                     "vae/diffusion_pytorch_model.safetensors"]


def test_fp16_only_download_resolves_to_the_fp16_variant(tmp_path):
    sdxl_like(tmp_path, {"unet": ["fp16"], "vae": ["fp16"], "text_encoder": ["fp16"]})
    found = pipeline_folder("sdxl", tmp_path, COMPONENTS).require()
    assert found.variant == "fp16"
    assert all(".fp16." in p.name for p in found.files if p.suffix == ".safetensors")


def test_mixed_precisions_without_a_common_variant_are_named(tmp_path):
    sdxl_like(tmp_path, {"unet": ["fp16"], "vae": [None], "text_encoder": [None]})
    with pytest.raises(HarnessError, match=r"share no weights variant .*'unet': \['fp16'\]"):
        pipeline_folder("sdxl", tmp_path, COMPONENTS).require()


def test_sharded_weights_read_the_index_and_every_shard(tmp_path):
    folder = tmp_path / "text_encoder"
    touch(folder / "config.json", "{}")
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    touch(folder / "model.safetensors.index.json", json.dumps({"weight_map": {"a": shards[0], "b": shards[1]}}))
    touch(folder / shards[0])
    found = model_folder("t5", folder, "model", "text_encoder/")
    assert found.missing == [f"text_encoder/: shard {folder / shards[1]} named by model.safetensors.index.json is missing"]
    touch(folder / shards[1])
    assert [p.name for p in model_folder("t5", folder, "model", "").require().files] == [
        "config.json", "model.safetensors.index.json", *shards]


def test_every_missing_file_is_listed_at_once(tmp_path):
    found = named_files("imagereward", tmp_path, ("ImageReward.pt", "med_config.json", ("a.pth", "b.pth")))
    assert found.missing == [f"ImageReward.pt is missing in {tmp_path}", f"med_config.json is missing in {tmp_path}",
                             f"a.pth or b.pth is missing in {tmp_path}"]
    file = touch(tmp_path / "file")
    assert "is a file, expected a folder" in named_files("x", file, ("a",)).missing[0]
    assert "is a file, but a folder is expected here: give the folder that holds it" in sat_folder("x", file).missing[0]


def test_fingerprint_hashes_only_the_loaded_files_and_each_once(tmp_path, monkeypatch):
    """A full SDXL snapshot holds tens of GB the harness never reads; the digest ignores them."""
    import models.weights as weights
    from models.registry import build_system

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    sdxl_like(tmp_path / "sdxl", {"unet": [None], "vae": [None], "text_encoder": [None], "text_encoder_2": [None]})
    touch(tmp_path / "sdxl" / "tokenizer_2" / "vocab.json", "{}")
    touch(tmp_path / "sdxl" / "tokenizer_2" / "merges.txt")
    hashed = []
    real = weights.sha256_file
    monkeypatch.setattr(weights, "sha256_file", lambda p: hashed.append(str(p)) or real(p))
    system = build_system("sdxl", {"model": "sdxl"}, {"sdxl": str(tmp_path / "sdxl")}, "cpu", "float32")
    first = system.weights_fingerprint()
    touch(tmp_path / "sdxl" / "sd_xl_base_1.0.safetensors", "6.9 GB the pipeline never loads")
    touch(tmp_path / "sdxl" / "unet" / "diffusion_pytorch_model.fp16.safetensors", "another variant")
    assert system.weights_fingerprint() == first
    assert len(hashed) == len(set(hashed)) == 14  # every loaded file once, across both calls
    touch(tmp_path / "sdxl" / "unet" / "diffusion_pytorch_model.safetensors", "changed weights")
    assert system.weights_fingerprint() != first


def run_cli(*args, env=None, cwd=ROOT):
    import os

    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_preflight_lists_every_missing_file_and_fails(tmp_path, data_dir):
    import yaml

    cfg = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    cfg["data_dir"] = str(data_dir)
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = run_cli("preflight", "--config", str(path), env={"HARNESS_WEIGHTS": str(tmp_path / "nothing")})
    assert out.returncode == 2, out.stdout + out.stderr
    import re

    problems = [line for line in out.stdout.splitlines() if re.match(r"^\s+\d+\. ", line)]
    # every weights entry of the paper config, and the COCO reference images, in one report
    for key in cfg["weights"]:
        if key != "kid":  # shares fid's folder: one message for it
            assert any(f"weights.{key} " in p for p in problems), key
    assert any(p.split(". ", 1)[1].startswith("benchmark coco5k: ") and "reference images are missing in" in p
               and "val2017" in p for p in problems)
    assert "plan (estimates for one A100" in out.stdout

    unset = run_cli("validate", "--config", str(path), env={"HARNESS_WEIGHTS": ""})
    assert unset.returncode == 2
    assert "$HARNESS_WEIGHTS is not set" in unset.stderr or "weights." in unset.stderr


def test_a_transformers_folder_with_pickled_weights_is_found_by_their_name(tmp_path):
    """transformers writes .bin weights as pytorch_model*.bin (one file, or shards and an index), not model.bin."""
    single = tmp_path / "single"
    single.mkdir()
    (single / "config.json").write_text("{}")
    (single / "pytorch_model.bin").write_bytes(b"x")
    found = model_folder("k", single, "model", "single/")
    assert found.ok and [f.name for f in found.files] == ["config.json", "pytorch_model.bin"]

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text("{}")
    (sharded / "pytorch_model.bin.index.json").write_text(
        '{"weight_map": {"a": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin"}}')
    (sharded / "pytorch_model-00001-of-00002.bin").write_bytes(b"x")
    found = model_folder("k", sharded, "model", "sharded/")
    assert not found.ok and "pytorch_model-00002-of-00002.bin" in " ".join(found.missing)
