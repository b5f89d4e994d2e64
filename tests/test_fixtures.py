"""The fixture builder (harness/fixtures.py): upstream layouts, same bytes every run, a valid paper-tiny config.

Loading the fixtures through the harness's own loaders is the end-to-end DAG test's job; here the
layouts themselves are checked: their file trees, their determinism, the LDM VAE key mapping, and
the generated config.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import fixtures
from harness.scorers.fid import PYTORCH_FID_FILE

ROOT = Path(__file__).resolve().parent.parent

#: layouts cheap enough to build twice in the fast suite (ImageReward's full-size ViT-L is not)
SMALL = [name for name in fixtures.LAYOUTS if name != "imagereward"]


def _sha256(path: Path) -> str:
    from harness.io import sha256_file

    return sha256_file(path)


def _digests(root: Path) -> dict[str, str]:
    return {rel: _sha256(root / rel) for rel in fixtures.tree(root)}


def _quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def small_twice(tmp_path_factory, data_dir):
    """The small layouts, built twice into separate folders."""
    corpus = fixtures.training_corpus(data_dir)
    roots = []
    for run in ("a", "b"):
        root = tmp_path_factory.mktemp(f"weights-{run}")
        fixtures.write_weights(root, corpus, only=SMALL, log=_quiet)
        roots.append(root)
    return roots


@pytest.fixture(scope="module")
def full_build(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("fixtures")
    fixtures.write_fixtures(out, data_dir, log=_quiet)
    return out


def test_expected_trees_cover_every_layout_and_every_paper_weights_entry():
    assert set(fixtures.EXPECTED_TREES) == set(fixtures.LAYOUTS)
    for name, files in fixtures.EXPECTED_TREES.items():
        assert files and all(f == name or f.startswith(name + "/") for f in files), name
    used = set(fixtures.paper_layouts(fixtures.load_paper_config()).values())
    assert used <= set(fixtures.LAYOUTS)


def test_small_layouts_have_the_documented_trees(small_twice):
    files = fixtures.tree(small_twice[0])
    for name in SMALL:
        got = [p for p in files if p == name or p.startswith(name + "/")]
        assert got == sorted(fixtures.EXPECTED_TREES[name]), name
    assert files == sorted(p for n in SMALL for p in fixtures.EXPECTED_TREES[n])


def test_small_layouts_are_byte_identical_across_builds(small_twice):
    a, b = (_digests(root) for root in small_twice)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_spiece_training_is_deterministic(data_dir):
    corpus = fixtures.training_corpus(data_dir)
    first = fixtures.train_spiece(corpus)
    assert fixtures.train_spiece(corpus) == first
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=first)
    assert sp.get_piece_size() == fixtures.T5_SPM_VOCAB
    assert [sp.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"] and sp.bos_id() == -1


def test_layout_details_match_the_upstream_files(small_twice):
    """The properties loaders depend on: fp16-only LCM, sharded T5 without tokenizer.json, SAT's pickle."""
    import json

    import torch

    root = small_twice[0]
    lcm = json.loads((root / "lcm-sdxl" / "config.json").read_text())
    assert lcm["time_cond_proj_dim"] == 256
    sdxl = json.loads((root / "stable-diffusion-xl-base-1.0" / "unet" / "config.json").read_text())
    assert {k: v for k, v in lcm.items() if k not in ("time_cond_proj_dim", "_diffusers_version")} == {
        k: v for k, v in sdxl.items() if k not in ("time_cond_proj_dim", "_diffusers_version")}

    index = json.loads((root / "CogVideoX-2b" / "text_encoder" / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == ["model-00001-of-00002.safetensors",
                                                         "model-00002-of-00002.safetensors"]
    tok = json.loads((root / "CogVideoX-2b" / "tokenizer" / "tokenizer_config.json").read_text())
    assert (tok["tokenizer_class"], tok["extra_ids"], tok["model_max_length"]) == ("T5Tokenizer", 100, 226)
    added = json.loads((root / "CogVideoX-2b" / "tokenizer" / "added_tokens.json").read_text())
    assert added["<extra_id_0>"] == fixtures.T5_SPM_VOCAB + 99 and added["<extra_id_99>"] == fixtures.T5_SPM_VOCAB

    for name, (kind, _) in fixtures.COGVIEW3_SAT.items():
        assert (root / name / "latest").read_text() == "1\n"
        blob = torch.load(root / name / "1" / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=True)
        assert set(blob) == {"module", "iteration"}
        state = blob["module"]
        assert all(k.startswith("model.diffusion_model.") for k in state)
        w_proj = state.get("model.diffusion_model.w_proj.weight")
        assert (None if w_proj is None else w_proj.shape[1]) == {None: None, "base": 512, "relay": 256}[kind]
        attn = state["model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"]
        assert attn.shape[1] == fixtures.T5_D_MODEL

    from transformers import CLIPTokenizer

    from models.tokenizers import clip_tokenizer

    prompts = ["A photo of an astronaut riding a horse!", "naïve café, 3 dogs & a CAT"]
    for sub, pad in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):
        folder = root / "stable-diffusion-xl-base-1.0" / sub
        loaded = CLIPTokenizer.from_pretrained(folder, local_files_only=True)  # converted from vocab.json + merges.txt
        built = clip_tokenizer(pad_token=pad)
        assert len(loaded) == 49408 and loaded.pad_token == pad and loaded.model_max_length == 77
        kw = dict(padding="max_length", max_length=77, truncation=True)
        assert loaded(prompts, **kw).input_ids == built(prompts, **kw).input_ids

    hps = torch.load(root / "hpsv2" / "HPS_v2_compressed.pt", map_location="cpu", weights_only=True)
    assert list(hps) == ["state_dict"] and hps["state_dict"]["visual.conv1.weight"].shape[:2] == (80, 3)


def test_openai_clip_archive_is_torchscript_with_vit_l_embeddings(small_twice):
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        archive = torch.jit.load(str(small_twice[0] / "aesthetic" / "ViT-L-14.pt"), map_location="cpu")
    state = archive.state_dict()
    assert state["visual.proj"].shape == (64, 768) and state["visual.conv1.weight"].shape[-1] == 14
    assert int(state["input_resolution"]) == 224 and state["token_embedding.weight"].shape[0] == 49408


def test_fid_files_hold_the_same_network_under_both_names(small_twice):
    import torch

    folder = small_twice[0] / "fid"
    a = torch.load(folder / "weights-inception-2015-12-05-6726825d.pth", map_location="cpu", weights_only=True)
    b = torch.load(folder / PYTORCH_FID_FILE, map_location="cpu", weights_only=True)
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_random_scorer_weights_still_tell_images_apart(small_twice):
    """Degenerate random weights (features ~0, tied rewards) would let a broken pipeline pass the DAG test."""
    from harness.scorer_speed import benchmark_images
    from harness.scorers.registry import build_scorer

    weights = {m: str(small_twice[0] / folder) for m, folder in
               (("fid", "fid"), ("kid", "fid"), ("hpsv2", "hpsv2"), ("aesthetic", "aesthetic"))}
    fid = build_scorer("fid", weights, device="cpu", dtype="float32", batch_size=4)
    a, b = (fid.features(benchmark_images(4, 96, seed=s)) for s in (0, 1))
    assert float(a.abs().max()) > 0.1 and float(a.std(dim=0).mean()) > 1e-3  # features, not ~0 or constant
    assert fid.compute(a, b)["value"] > 0.1
    images = benchmark_images(2, 96, seed=2)
    for metric in ("hpsv2", "aesthetic"):
        scores = build_scorer(metric, weights, device="cpu", dtype="float32").score(images, ["a cat", "a dog"])
        assert abs(scores[0] - scores[1]) > 1e-4, metric


def test_ldm_vae_round_trips_through_diffusers_converter(tmp_path):
    import torch
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from safetensors.torch import load_file

    vae = fixtures.tiny_sdxl_vae()
    state = vae.state_dict()
    ldm = fixtures.vae_diffusers_to_ldm(state, len(vae.config.block_out_channels))
    assert "encoder.down.0.block.0.conv1.weight" in ldm and "decoder.up.3.upsample.conv.weight" in ldm
    assert ldm["encoder.mid.attn_1.q.weight"].ndim == 4  # LDM keeps attention as 1x1 convolutions
    assert not any("down_blocks" in k or "up_blocks" in k or "mid_block" in k for k in ldm)

    fixtures.write_sdxl_vae_file(tmp_path / "sdxl_vae.safetensors")
    on_disk = load_file(str(tmp_path / "sdxl_vae.safetensors"))
    for source in (ldm, on_disk):
        back = convert_ldm_vae_checkpoint(dict(source), vae.config)
        assert back.keys() == state.keys()
        assert all(back[k].shape == state[k].shape and torch.equal(back[k], state[k]) for k in state)


def test_paper_tiny_config_validates_and_points_at_the_fixtures(tmp_path):
    import yaml

    from harness.config import load_config

    path = fixtures.write_paper_tiny(tmp_path)
    text = path.read_text()
    assert text.startswith("# paper-tiny.yaml") and "random-weight" in text
    cfg = load_config(path)
    paper = fixtures.load_paper_config()
    weights = tmp_path.resolve() / "weights"
    assert set(paper["weights"]) <= set(cfg["weights"]) and {"fid", "kid"} <= set(cfg["weights"])
    for key, rel in fixtures.paper_layouts(paper).items():
        assert cfg["weights"][key] == str(weights / rel)
    assert cfg["weights"]["fid"] == str(weights / "fid")
    assert (cfg["device"], cfg["dtype"], cfg["batch_size"], cfg["num_prompts"]) == ("cpu", "float32", 2, 2)
    assert cfg["benchmarks"] == ["drawbench", "parti", "coco5k"]
    assert cfg["metrics"][: len(paper["metrics"])] == paper["metrics"] and {"fid", "kid"} <= set(cfg["metrics"])
    assert cfg["data_dir"] == str(tmp_path.resolve() / "data")
    assert cfg["expansion"]["backend"] == "transformers" and cfg["expansion"]["model_path"] == str(weights / "expander")
    sizes = {spec["model"]: spec.get("resolution") for spec in yaml.safe_load(text)["systems"].values()}
    assert sizes["sdxl"] == sizes["lcm-sdxl"] == sizes["cogview3-base"] == 64 and sizes["stable-cascade"] == 128
    hv = cfg["humaneval"]
    assert (hv["annotators"], hv["attention_checks"], hv["image_size"]) == (2, 2, 64)


def test_missing_prompt_files_are_an_error_naming_the_option(tmp_path):
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="drawbench.csv is missing; pass --data-dir"):
        fixtures.write_data(tmp_path / "data", tmp_path / "nowhere")


def test_unknown_paper_weights_entry_is_an_error():
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="weights.new-model.*names no fixture layout"):
        fixtures.paper_layouts({"weights": {"new-model": "${HARNESS_WEIGHTS}/new-model"}})


@pytest.mark.slow
def test_full_build_tree_data_and_config(full_build, data_dir):
    from harness.config import load_config
    from harness.prompts import load_prompts

    weights = fixtures.tree(full_build / "weights")
    assert weights == sorted(p for files in fixtures.EXPECTED_TREES.values() for p in files)
    coco = [f"coco/val2017/{p.extra['file_name']}"
            for p in load_prompts("coco5k", data_dir, fixtures.COCO_REFERENCE_IMAGES)]
    assert fixtures.tree(full_build / "data") == sorted([*fixtures.DATA_FILES, *coco])
    for rel in fixtures.DATA_FILES:
        assert (full_build / "data" / rel).read_bytes() == (data_dir / rel).read_bytes()
    cfg = load_config(full_build / "paper-tiny.yaml")
    assert all(Path(v).exists() for v in cfg["weights"].values())


@pytest.mark.slow
def test_cli_build_in_a_fresh_process_gives_the_same_bytes(full_build, data_dir, tmp_path):
    """Every file, ImageReward's included, from `python -m harness fixtures` in another process."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    run = subprocess.run([sys.executable, "-m", "harness", "fixtures", "--out", str(tmp_path / "fx"),
                          "--data-dir", str(data_dir)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "done in" in run.stdout and "on disk" in run.stdout
    a, b = _digests(full_build / "weights"), _digests(tmp_path / "fx" / "weights")
    assert a.keys() == b.keys() and [k for k in a if a[k] != b[k]] == []
    assert _digests(full_build / "data") == _digests(tmp_path / "fx" / "data")
