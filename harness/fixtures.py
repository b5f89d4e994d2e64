"""Tiny random-weight checkpoints in the upstream on-disk layouts, and a config that runs the paper profile on them.

    python -m harness fixtures --out DIR [--data-dir SRC]

writes, under ``DIR/weights/``, one tiny random-weight checkpoint for every ``weights:`` entry of
``config/paper.yaml``, each in the file layout the upstream release ships (what a user downloads,
not what is convenient), saved with the libraries' own writers (diffusers/transformers
``save_pretrained``, ``torch.save``, safetensors ``save_file``, sentencepiece's trainer). Next to them
``DIR/data/`` (the prompt files and COCO reference images) and ``DIR/paper-tiny.yaml``: the paper
profile pointed at those files, small and on the CPU. CI runs the paper DAG end to end on it, so every
real loader (no special case for fixtures) reads real layouts.

Each layout is one function below, named after the upstream repository it mimics;
:data:`EXPECTED_TREES` lists the files each one writes (the README prints them). Every build is seeded:
the same bytes on every run. Numbers computed on these weights say nothing about image quality.
"""

from __future__ import annotations

import copy
import io
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import yaml

from harness.errors import HarnessError

#: how config/paper.yaml spells the folder that holds the downloads
WEIGHTS_VAR = "${HARNESS_WEIGHTS}"
PAPER_CONFIG = Path(__file__).resolve().parent.parent / "config" / "paper.yaml"

#: COCO val2017 reference images written for the first N COCO-5k prompts (paper-tiny uses 2)
COCO_REFERENCE_IMAGES = 8
#: the tiny T5's width (= the CogView3 UNets' cross-attention width)
T5_D_MODEL = 64
#: the SentencePiece vocabulary trained on the prompt files (T5 v1.1: 32,000)
T5_SPM_VOCAB = 4000
T5_EXTRA_IDS = 100
#: THUDM/CogVideoX-2b tokenizer/tokenizer_config.json
T5_MODEL_MAX_LENGTH = 226

_SAT = ("latest", "1/mp_rank_00_model_states.pt")
_CLIP_TOKENIZER = ("merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json")

#: layout name (a path under DIR/weights) -> the files it holds, relative to DIR/weights
EXPECTED_TREES: dict[str, tuple[str, ...]] = {
    "stable-diffusion-xl-base-1.0": tuple(
        f"stable-diffusion-xl-base-1.0/{p}" for p in (
            "model_index.json", "scheduler/scheduler_config.json",
            "text_encoder/config.json", "text_encoder/model.safetensors",
            "text_encoder_2/config.json", "text_encoder_2/model.safetensors",
            *(f"tokenizer/{f}" for f in _CLIP_TOKENIZER), *(f"tokenizer_2/{f}" for f in _CLIP_TOKENIZER),
            "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
            "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
        )
    ),
    "lcm-sdxl": ("lcm-sdxl/config.json", "lcm-sdxl/diffusion_pytorch_model.fp16.safetensors"),
    "stable-cascade": tuple(
        f"stable-cascade/{p}" for p in (
            "stable-cascade-prior/model_index.json",
            "stable-cascade-prior/prior/config.json", "stable-cascade-prior/prior/diffusion_pytorch_model.safetensors",
            "stable-cascade-prior/scheduler/scheduler_config.json",
            "stable-cascade-prior/text_encoder/config.json", "stable-cascade-prior/text_encoder/model.safetensors",
            *(f"stable-cascade-prior/tokenizer/{f}" for f in _CLIP_TOKENIZER),
            "stable-cascade/decoder/config.json", "stable-cascade/decoder/diffusion_pytorch_model.safetensors",
            "stable-cascade/model_index.json",
            "stable-cascade/scheduler/scheduler_config.json",
            "stable-cascade/text_encoder/config.json", "stable-cascade/text_encoder/model.safetensors",
            *(f"stable-cascade/tokenizer/{f}" for f in _CLIP_TOKENIZER),
            "stable-cascade/vqgan/config.json", "stable-cascade/vqgan/diffusion_pytorch_model.safetensors",
        )
    ),
    **{name: tuple(f"{name}/{p}" for p in _SAT) for name in (
        "cogview3-base", "cogview3-relay", "cogview3-base-distill-4step", "cogview3-base-distill-8step",
        "cogview3-relay-distill-1step", "cogview3-relay-distill-2step")},
    "CogVideoX-2b": tuple(
        f"CogVideoX-2b/{p}" for p in (
            "text_encoder/config.json", "text_encoder/model-00001-of-00002.safetensors",
            "text_encoder/model-00002-of-00002.safetensors", "text_encoder/model.safetensors.index.json",
            "tokenizer/added_tokens.json", "tokenizer/special_tokens_map.json", "tokenizer/spiece.model",
            "tokenizer/tokenizer_config.json",
        )
    ),
    "sdxl_vae.safetensors": ("sdxl_vae.safetensors",),
    "sdxl-vae": ("sdxl-vae/config.json", "sdxl-vae/diffusion_pytorch_model.safetensors"),
    "aesthetic": ("aesthetic/ViT-L-14.pt", "aesthetic/sac+logos+ava1-l14-linearMSE.pth"),
    "hpsv2": ("hpsv2/HPS_v2.1_compressed.pt", "hpsv2/HPS_v2_compressed.pt"),
    "imagereward": ("imagereward/ImageReward.pt", "imagereward/bert-base-uncased/vocab.txt",
                    "imagereward/med_config.json"),
    "fid": ("fid/pt_inception-2015-12-05-6726825d.pth", "fid/weights-inception-2015-12-05-6726825d.pth"),
    "expander": ("expander/chat_template.jinja", "expander/config.json", "expander/generation_config.json",
                 "expander/model.safetensors", "expander/tokenizer.json", "expander/tokenizer_config.json"),
}

#: the data folder (paths under DIR/data), besides the COCO reference images data/coco/val2017/<file_name>
DATA_FILES = ("drawbench.csv", "parti_prompts.tsv", "coco/coco_captions_val2017.jsonl")


# ---- shared helpers ---------------------------------------------------------------------------------


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _added_token(content: str, normalized: bool, typed: bool = False) -> dict:
    """An ``AddedToken`` as transformers 4 serialised it (``__type`` only in tokenizer_config.json)."""
    out = {"content": content, "lstrip": False, "normalized": normalized, "rstrip": False, "single_word": False}
    return {"__type": "AddedToken", **out} if typed else out


def write_clip_tokenizer(folder: Path, pad_token: str = "<|endoftext|>") -> None:
    """A CLIP BPE tokenizer folder as the SDXL / Stable Cascade repos ship it (no tokenizer.json).

    ``vocab.json`` and ``merges.txt`` come from the ``tokenizers`` BPE model's own writer over the real
    49,408-token vocabulary (:func:`models.tokenizers.clip_tokenizer`); ``tokenizer_config.json`` and
    ``special_tokens_map.json`` hold what the upstream files hold (written by transformers 4, whose
    format transformers 5 still reads but no longer writes), so loading converts vocab + merges exactly
    as it does for a download.
    """
    from models.tokenizers import CLIP_MAX_LENGTH, clip_tokenizer

    if folder.exists():
        shutil.rmtree(folder)  # drop what save_pretrained put there (a tokenizer.json the repos do not have)
    folder.mkdir(parents=True)
    clip_tokenizer(pad_token=pad_token).backend_tokenizer.model.save(str(folder))
    bos, eos = "<|startoftext|>", "<|endoftext|>"
    _write_json(folder / "tokenizer_config.json", {
        "add_prefix_space": False, "bos_token": _added_token(bos, True, typed=True), "do_lower_case": True,
        "eos_token": _added_token(eos, True, typed=True), "errors": "replace", "model_max_length": CLIP_MAX_LENGTH,
        "pad_token": pad_token, "tokenizer_class": "CLIPTokenizer", "unk_token": _added_token(eos, True, typed=True),
    })
    _write_json(folder / "special_tokens_map.json", {
        "bos_token": _added_token(bos, True), "eos_token": _added_token(eos, True), "pad_token": pad_token,
        "unk_token": _added_token(eos, True),
    })


# ---- SDXL, LCM-SDXL, Stable Cascade --------------------------------------------------------------------


def _system(cls, name: str):
    """A tiny (random-weight) instance of a harness system, to reuse its ``_tiny_components``."""
    from models.base import WeightsSpec

    return cls(name, {"model": name}, WeightsSpec(name, "tiny"), device="cpu", dtype="float32")


def write_sdxl(folder: Path) -> None:
    """stabilityai/stable-diffusion-xl-base-1.0: the diffusers pipeline folder (model_index.json + 7 components).

    Components are :meth:`models.sdxl.SDXLSystem._tiny_components` (EulerDiscreteScheduler with the
    repo's scheduler config, two tiny CLIP text encoders, real CLIP BPE tokenizers; tokenizer_2 pads
    with "!" like OpenCLIP bigG's), saved by ``StableDiffusionXLPipeline.save_pretrained``.
    """
    from diffusers import StableDiffusionXLPipeline

    from models.sdxl import SDXLSystem

    pipe = StableDiffusionXLPipeline(**_system(SDXLSystem, "sdxl")._tiny_components(), add_watermarker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    write_clip_tokenizer(folder / "tokenizer")
    write_clip_tokenizer(folder / "tokenizer_2", pad_token="!")


def write_lcm_sdxl(folder: Path) -> None:
    """latent-consistency/lcm-sdxl: a bare UNet folder (config.json + weights at the root), fp16 variant only.

    The UNet is the tiny SDXL UNet (same shapes, same seed) with the 256-d guidance embedding
    (``time_cond_proj_dim``), as :class:`models.sdxl.LCMSDXLSystem` builds it; it is written only as
    ``diffusion_pytorch_model.fp16.safetensors`` (an fp16-only download), so loaders must take the
    ``variant="fp16"`` path.
    """
    from models.sdxl import LCMSDXLSystem

    unet = _system(LCMSDXLSystem, "lcm-sdxl")._tiny_components()["unet"]
    unet.half().save_pretrained(folder, variant="fp16", safe_serialization=True)


def write_stable_cascade(folder: Path) -> None:
    """stabilityai/stable-cascade-prior and stabilityai/stable-cascade as ``stable-cascade-prior/`` and
    ``stable-cascade/`` (the two diffusers repos side by side), from the TINY_* configs of
    :mod:`models.stable_cascade`, each saved by its pipeline's ``save_pretrained``.

    The upstream repos also hold components the harness never reads (prior: image_encoder/,
    feature_extractor/, prior_lite/; decoder: decoder_lite/); they are left out, so the prior's
    model_index.json names image_encoder/feature_extractor as null.
    """
    from diffusers import StableCascadeDecoderPipeline, StableCascadePriorPipeline

    from models.stable_cascade import StableCascadeSystem

    parts = _system(StableCascadeSystem, "stable-cascade")._tiny_components()
    prior = StableCascadePriorPipeline(prior=parts["prior"], text_encoder=parts["text_encoder"],
                                       tokenizer=parts["tokenizer"], scheduler=parts["prior_scheduler"])
    prior.save_pretrained(folder / "stable-cascade-prior", safe_serialization=True)
    decoder = StableCascadeDecoderPipeline(decoder=parts["decoder"], text_encoder=parts["text_encoder"],
                                           tokenizer=parts["tokenizer"], scheduler=parts["decoder_scheduler"],
                                           vqgan=parts["vqgan"])
    decoder.save_pretrained(folder / "stable-cascade", safe_serialization=True)
    for repo in ("stable-cascade-prior", "stable-cascade"):
        write_clip_tokenizer(folder / repo / "tokenizer")


# ---- CogView3 ----------------------------------------------------------------------------------------

#: folder -> (guidance-embedding width or None, seed): base-distill 512, relay-distill 256 (models/cogview3/unet.py)
COGVIEW3_SAT = {
    "cogview3-base": (None, 300),
    "cogview3-relay": (None, 301),
    "cogview3-base-distill-4step": ("base", 302),
    "cogview3-base-distill-8step": ("base", 303),
    "cogview3-relay-distill-1step": ("relay", 304),
    "cogview3-relay-distill-2step": ("relay", 305),
}


def cogview3_tiny_unet_config(guidance_embed_dim: int | None) -> dict:
    """CogView3's UNet topology at 64/64/128 channels with the official 64-d heads, over the tiny T5's states."""
    from models.cogview3.unet import unet_config

    return unet_config(guidance_embed_dim, channels=(64, 64, 128), head_dim=64, depths=(1, 1, 1),
                       cross_attention_dim=T5_D_MODEL)


def write_cogview3_sat(folder: Path) -> None:
    """An official CogView3 SAT checkpoint folder (THUDM/CogView3 sat/README.md, docs/reference.md §1):
    ``latest`` ("1") + ``1/mp_rank_00_model_states.pt`` whose ``module`` holds the UNet under
    ``model.diffusion_model.`` with sgm key names, written by :func:`models.cogview3.checkpoint.save_sat_unet`.

    Like the DeepSpeed files SAT writes, the pickle has more top-level entries than ``module``
    (here ``iteration``). Distilled folders carry ``w_proj`` (512-d base, 256-d relay).
    """
    import torch

    from models.cogview3.checkpoint import save_sat_unet
    from models.cogview3.unet import BASE_GUIDANCE_EMBED_DIM, RELAY_GUIDANCE_EMBED_DIM, build_unet

    kind, seed = COGVIEW3_SAT[folder.name]
    dim = {None: None, "base": BASE_GUIDANCE_EMBED_DIM, "relay": RELAY_GUIDANCE_EMBED_DIM}[kind]
    path = save_sat_unet(build_unet(cogview3_tiny_unet_config(dim), seed=seed), folder, iteration=1)
    blob = torch.load(path, map_location="cpu", weights_only=True)
    blob["iteration"] = 1
    torch.save(blob, path)


def training_corpus(data_dir: Path) -> list[str]:
    """The prompt texts the tokenizers are trained on: DrawBench, PartiPrompts and COCO-5k, in order."""
    from harness.prompts import load_prompts

    return [p.text for b in ("drawbench", "parti", "coco5k") for p in load_prompts(b, data_dir)]


def train_spiece(corpus: Sequence[str], word_level: bool = False) -> bytes:
    """A T5-style SentencePiece model (pad 0, eos 1, unk 2, no bos), trained deterministically: unigram with
    ``T5_SPM_VOCAB`` pieces, or with ``word_level`` one piece per distinct whitespace-separated word of the
    corpus (the micro world's small closed vocabulary)."""
    import sentencepiece as spm

    if word_level:
        kind, size = "word", len({w for line in corpus for w in line.split()}) + 3  # + pad, eos, unk
    else:
        kind, size = "unigram", T5_SPM_VOCAB
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=out, model_type=kind, vocab_size=size,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, num_threads=1,
        input_sentence_size=0, shuffle_input_sentence=False, seed_sentencepiece_size=1_000_000, minloglevel=2,
    )
    return out.getvalue()


def write_t5(folder: Path, corpus: Sequence[str], word_level: bool = False, seed: int = 400) -> None:
    """THUDM/CogVideoX-2b's T5 v1.1 XXL: ``tokenizer/`` and ``text_encoder/`` as that repo ships them.

    tokenizer/: ``spiece.model`` (trained here with sentencepiece on the prompt files, T5's special
    ids), ``tokenizer_config.json``, ``special_tokens_map.json``, ``added_tokens.json`` with the repo's
    content (T5Tokenizer, 100 ``<extra_id_N>`` sentinels, model_max_length 226) and no
    ``tokenizer.json``, so transformers 5 must convert spiece.model (which needs protobuf).
    text_encoder/: a 64-d fp16 ``T5EncoderModel`` (vocabulary = spiece + 100 sentinels) saved sharded
    like the repo's: two ``model-0000N-of-00002.safetensors`` and ``model.safetensors.index.json``, its
    random weights drawn from ``seed``. With ``word_level`` the spiece model has one piece per word of the
    corpus (:func:`train_spiece`).
    """
    import torch
    from transformers import T5Config, T5EncoderModel

    tok = folder / "tokenizer"
    tok.mkdir(parents=True, exist_ok=True)
    model = train_spiece(corpus, word_level)
    (tok / "spiece.model").write_bytes(model)
    import sentencepiece as spm

    vocab = spm.SentencePieceProcessor(model_proto=model).get_piece_size()
    extra = [f"<extra_id_{i}>" for i in range(T5_EXTRA_IDS)]
    extra_ids = {t: vocab + T5_EXTRA_IDS - 1 - i for i, t in enumerate(extra)}  # <extra_id_0> is the last id
    special = {0: "<pad>", 1: "</s>", 2: "<unk>", **{i: t for t, i in extra_ids.items()}}
    _write_json(tok / "tokenizer_config.json", {
        "add_prefix_space": True,
        "added_tokens_decoder": {str(i): {**_added_token(t, False), "special": True}
                                 for i, t in sorted(special.items())},
        "additional_special_tokens": extra, "clean_up_tokenization_spaces": True, "eos_token": "</s>",
        "extra_ids": T5_EXTRA_IDS, "legacy": True, "model_max_length": T5_MODEL_MAX_LENGTH, "pad_token": "<pad>",
        "sp_model_kwargs": {}, "tokenizer_class": "T5Tokenizer", "unk_token": "<unk>",
    })
    _write_json(tok / "special_tokens_map.json", {
        "additional_special_tokens": extra, "eos_token": _added_token("</s>", False),
        "pad_token": _added_token("<pad>", False), "unk_token": _added_token("<unk>", False),
    })
    _write_json(tok / "added_tokens.json", extra_ids)

    _seed(seed)
    config = T5Config(vocab_size=vocab + T5_EXTRA_IDS, d_model=T5_D_MODEL, d_kv=16, d_ff=128, num_layers=2,
                      num_decoder_layers=2, num_heads=4, relative_attention_num_buckets=32,
                      relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
                      tie_word_embeddings=False, architectures=["T5EncoderModel"])
    encoder = T5EncoderModel(config).to(torch.float16).eval()
    storages = {t.data_ptr(): t.numel() * t.element_size() for t in encoder.state_dict().values()}  # tied once
    total = sum(storages.values())
    # A limit of 60% of the weights: two shards plus model.safetensors.index.json, as the repo has.
    encoder.save_pretrained(folder / "text_encoder", max_shard_size=int(total * 0.6))


# ---- SDXL VAE ------------------------------------------------------------------------------------------


def tiny_sdxl_vae(seed: int = 500):
    """The SDXL VAE topology (4 levels, 32 norm groups, scale 0.13025) at 32/32/64/64 channels, 1 block per level."""
    from diffusers import AutoencoderKL

    from models.cogview3.checkpoint import SDXL_VAE_CONFIG

    _seed(seed)
    return AutoencoderKL(**dict(SDXL_VAE_CONFIG, block_out_channels=(32, 32, 64, 64), layers_per_block=1,
                                norm_num_groups=32, latent_channels=4, scaling_factor=0.13025)).eval()


def vae_diffusers_to_ldm(state: dict, num_blocks: int) -> dict:
    """diffusers ``AutoencoderKL`` keys -> the LDM names of ``sdxl_vae.safetensors`` (the inverse of
    diffusers' ``convert_ldm_vae_checkpoint``; attention projections become 1x1 conv weights again)."""
    renames = [("conv_norm_out", "norm_out"), ("mid_block.resnets.0", "mid.block_1"),
               ("mid_block.resnets.1", "mid.block_2"), ("mid_block.attentions.0", "mid.attn_1"),
               ("conv_shortcut", "nin_shortcut"), ("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"),
               ("to_v", "v"), ("to_out.0", "proj_out")]
    for i in range(num_blocks):
        renames += [(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."),
                    (f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."),
                    (f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{num_blocks - 1 - i}.block."),
                    (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{num_blocks - 1 - i}.upsample.")]
    out = {}
    for key, tensor in state.items():
        new = key
        for old, ldm in renames:
            new = new.replace(old, ldm)
        if ".mid.attn_1." in new and new.endswith(".weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # LDM's attention q/k/v/proj_out are 1x1 convolutions
        out[new] = tensor.detach().clone().contiguous()
    return out


def write_sdxl_vae_file(path: Path) -> None:
    """``sdxl_vae.safetensors`` (stabilityai/sdxl-vae, the file CogView3's configs name): the VAE in
    LDM key format (encoder.down.N.block.M..., quant_conv, post_quant_conv), safetensors ``save_file``."""
    from safetensors.torch import save_file

    vae = tiny_sdxl_vae()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(vae_diffusers_to_ldm(vae.state_dict(), len(vae.config.block_out_channels)), str(path))


def write_sdxl_vae_folder(folder: Path) -> None:
    """stabilityai/sdxl-vae as a diffusers folder (config.json + diffusion_pytorch_model.safetensors): the same VAE."""
    tiny_sdxl_vae().save_pretrained(folder, safe_serialization=True)


# ---- scorers -------------------------------------------------------------------------------------------


def openai_clip_torchscript(seed: int):
    """A tiny OpenAI-format CLIP traced to TorchScript like OpenAI's released ``*.pt`` archives:
    768-d embeddings (ViT-L/14's), 224 px, patch 14, 64-d towers with one 64-d head each (open_clip
    infers heads as width // 64), QuickGELU, context 77, vocabulary 49,408, fp16 weights, and the
    ``input_resolution`` / ``context_length`` / ``vocab_size`` entries the archives carry. The model
    class is open_clip's ``CLIP``, whose parameter names are OpenAI's (open_clip loads OpenAI's files
    into it)."""
    import warnings

    import open_clip
    import torch
    import torch.jit._state as jit_state
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    _seed(seed)
    model = open_clip.CLIP(
        embed_dim=768, quick_gelu=True,
        vision_cfg=CLIPVisionCfg(layers=1, width=64, head_width=64, patch_size=14, image_size=224),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1),
    )
    for name, value in (("input_resolution", 224), ("context_length", 77), ("vocab_size", 49408)):
        if hasattr(model, name):
            delattr(model, name)
        model.register_buffer(name, torch.tensor(value))
    # OpenAI's archives hold the causal text mask as a traced constant, not a state-dict entry.
    mask = model._buffers.pop("attn_mask")
    object.__setattr__(model, "attn_mask", mask)
    open_clip.convert_weights_to_lp(model, torch.float16)
    model.eval()
    image, text = torch.zeros(1, 3, 224, 224, dtype=torch.float16), torch.zeros(1, 77, dtype=torch.long)
    # TorchScript names each traced class after the ones already in its compilation unit
    # (``___torch_mangle_N``), so a second trace in one process would write other bytes: trace into a
    # fresh unit, which is where the JIT looks classes up (torch.jit._state._python_cu).
    shared_cu, jit_state._python_cu = jit_state._python_cu, torch._C.CompilationUnit()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated; the released files are TorchScript all the same
            return torch.jit.trace_module(model, {"forward": (image, text), "encode_image": (image,),
                                                  "encode_text": (text,)}, _compilation_unit=jit_state._python_cu)
    finally:
        jit_state._python_cu = shared_cu


def write_aesthetic(folder: Path) -> None:
    """christophschuhmann/improved-aesthetic-predictor: ``sac+logos+ava1-l14-linearMSE.pth`` (a plain
    state dict, layers.N.weight/bias) and OpenAI's ``ViT-L-14.pt`` (a TorchScript archive; here a tiny
    CLIP with ViT-L/14's 768-d image embedding, the MLP's input)."""
    import torch

    from harness.scorers.aesthetic import CLIP_FILE, MLP_FILE, AestheticMLP

    folder.mkdir(parents=True, exist_ok=True)
    _seed(600)
    torch.save(AestheticMLP().state_dict(), folder / MLP_FILE)
    save_torchscript(openai_clip_torchscript(601), folder / CLIP_FILE)


def save_torchscript(module, path: Path) -> None:
    """``torch.jit.save``, then the same records rewritten by torch's own archive writer without the
    ``*.debug_pkl`` tables. Those hold the Python stack of the trace (absolute paths of this install
    and of the caller) pickled with memo references that vary from process to process; the loader
    does not need them, and without them the archive has the same bytes on every run and machine."""
    import warnings

    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.save is deprecated
        torch.jit.save(module, buffer)
    buffer.seek(0)
    reader = torch._C.PyTorchFileReader(buffer)
    writer = torch._C.PyTorchFileWriter(str(path))  # the archive's folder is named after the file, as jit.save's
    for name in reader.get_all_records():
        if name.endswith(".debug_pkl") or name == ".data/serialization_id":  # the writer derives the id itself
            continue
        data = reader.get_record(name)
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()


def tiny_hps_clip(seed: int):
    """open_clip CLIP, non-quick-GELU, with ViT-H-14's head widths (vision 80, text 64), 224 px, patch 14,
    64-d embeddings, one layer per tower."""
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    _seed(seed)
    return open_clip.CLIP(
        embed_dim=64,
        vision_cfg=CLIPVisionCfg(layers=1, width=80, head_width=80, patch_size=14, image_size=224),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1),
        quick_gelu=False,
    ).eval()


def write_hpsv2(folder: Path) -> None:
    """xswu/HPSv2: ``HPS_v2_compressed.pt`` and ``HPS_v2.1_compressed.pt``, each
    ``{"state_dict": <open_clip CLIP state dict>}``, from different seeds."""
    import torch

    from harness.scorers.hpsv2 import HPSv21Scorer, HPSv2Scorer

    folder.mkdir(parents=True, exist_ok=True)
    for scorer, seed in ((HPSv2Scorer, 700), (HPSv21Scorer, 701)):
        torch.save({"state_dict": tiny_hps_clip(seed).state_dict()}, folder / scorer.CHECKPOINT)


def bert_vocab(corpus: Iterable[str], size: int = 30522) -> list[str]:
    """A WordPiece vocabulary laid out like bert-base-uncased's ``vocab.txt`` (30,522 lines: [PAD] 0,
    [unused0-98], [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103, single characters, words, ##pieces,
    padded with [unusedN]), its words taken from the prompt files so prompts tokenize into words."""
    from collections import Counter

    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    normalizer, splitter = BertNormalizer(lowercase=True), BertPreTokenizer()
    head = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    counts = Counter(w for text in corpus for w, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)))
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if len(w) > 1]
    tokens = list(dict.fromkeys(head + chars + words[: size // 2] + [f"##{c}" for c in chars]))
    n = 99
    while len(tokens) < size:
        tokens.append(f"[unused{n}]")
        n += 1
    return tokens[:size]


def write_imagereward(folder: Path, corpus: Sequence[str]) -> None:
    """THUDM/ImageReward v1.0: ``ImageReward.pt`` (state dict), ``med_config.json`` and
    ``bert-base-uncased/vocab.txt``, as :mod:`harness.scorers.imagereward` loads them.

    BLIP in image-reward hard-codes the ViT-L/16 visual encoder (``vit='large'``), so that part is full
    size (~300 M parameters; the file is saved in fp16, ~0.7 GB, which ``load_state_dict`` casts back);
    the BERT part is small through med_config.json (the real key set; 1 layer, 512-wide FFN). Its width
    stays 768: ImageReward's MLP reads 768-d states. ``vocab_size`` is the vocabulary plus the two
    tokens BLIP's ``init_tokenizer`` adds ([DEC], [ENC]), as the real 30,522 + 2 = 30,524. The reward
    MLP gets PyTorch's default Linear init: with ImageReward's own (std 1/769 per layer) the reward is
    ~1e-9 and every image would score the same after z-normalisation.
    """
    import torch

    from harness.scorers.imagereward import BLIP_MED_CONFIG, CKPT, MED_CONFIG, VOCAB
    from harness.scorers.imagereward_compat import bert_vocab as using_vocab
    from harness.scorers.imagereward_compat import import_imagereward

    vocab = bert_vocab(corpus)
    (folder / VOCAB).parent.mkdir(parents=True, exist_ok=True)
    (folder / VOCAB).write_text("\n".join(vocab) + "\n")
    med = dict(BLIP_MED_CONFIG, num_hidden_layers=1, intermediate_size=512, vocab_size=len(vocab) + 2)
    _write_json(folder / MED_CONFIG, med)
    IR = import_imagereward()
    _seed(800)
    with using_vocab((folder / VOCAB).parent):
        model = IR.ImageReward(med_config=str(folder / MED_CONFIG), device="cpu")
    for layer in model.mlp.layers:  # ImageReward's init (std 1/769) gives rewards ~1e-9: every image would tie
        if isinstance(layer, torch.nn.Linear):
            layer.reset_parameters()
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save(state, folder / CKPT)


def pytorch_fid_state_dict(state: dict) -> dict:
    """The FID Inception state dict as pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` is laid out.

    pytorch-fid loads its file into torchvision's ``Inception3(num_classes=1008, aux_logits=False)``
    with FID blocks swapped in (the blocks change ``forward`` only), so the key names and shapes are
    torchvision's, which are exactly torch-fidelity's: the state dict passes through unchanged and is
    checked against pytorch-fid's module layout here.
    """
    import torchvision

    model = torchvision.models.inception.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        differ = sorted(set(expected) ^ set(got))[:10]
        raise HarnessError(f"FID Inception keys differ from pytorch-fid's layout: {differ}")
    return dict(state)


def write_fid(folder: Path) -> None:
    """The FID Inception (TF inception-2015-12-05 port) under both names users have:
    torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` (toshas/torch-fidelity v0.2.0
    release) and pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (mseitzer/pytorch-fid
    fid_weights release). Both hold the same random weights, as the two real files hold one network.
    Both are written in torch.save's zip format: the release asset of pytorch-fid is probably a
    pre-1.6 (non-zip) pickle, but that format names storages by memory address, so it cannot give the
    same bytes twice.
    """
    import torch

    from harness.scorer_speed import random_inception_state_dict
    from harness.scorers.fid import INCEPTION_FILE, PYTORCH_FID_FILE

    folder.mkdir(parents=True, exist_ok=True)
    _seed(900)
    state = {k: v.detach().clone() for k, v in random_inception_state_dict().items()}
    # He-normal convolutions: with PyTorch's default init (and the identity BatchNorms) the signal shrinks
    # through ~90 layers to 2048-d features of ~1e-7, and every FID/KID would print 0.
    generator = torch.Generator().manual_seed(900)
    for key, tensor in state.items():
        if key.endswith(".conv.weight"):
            state[key] = torch.randn(tensor.shape, generator=generator) * (2.0 / tensor[0].numel()) ** 0.5
    torch.save(state, folder / INCEPTION_FILE)
    torch.save(pytorch_fid_state_dict(state), folder / PYTORCH_FID_FILE)



def write_expander(folder: Path, corpus: Sequence[str]) -> None:
    """A local chat LM for prompt expansion (``expansion.backend: transformers``): a one-layer GPT-2
    with a word-level tokenizer and a chat template, saved as a hub folder (model + tokenizer ``save_pretrained``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from harness.expansion import chat_messages

    words = sorted({w for text in corpus for m in chat_messages(text) for w in m["content"].lower().split()})
    vocab = {t: i for i, t in enumerate(["<unk>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>", *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] | lower }} <eos> {% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|> {% endif %}")
    _seed(1000)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_positions=2048, n_embd=16, n_layer=1, n_head=2,
                                       eos_token_id=1, bos_token_id=1, pad_token_id=1))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


# ---- data ----------------------------------------------------------------------------------------------


def write_data(dst: Path, src: Path, n_coco: int = COCO_REFERENCE_IMAGES) -> list[str]:
    """``dst``: copies of the pinned prompt files from ``src``, and one random-content JPEG per COCO-5k
    prompt among the first ``n_coco``, under the val2017 file name its caption row gives: the reference
    images FID/KID read from ``<data_dir>/coco/val2017/``. Sizes alternate 96x72 and 72x96 (COCO's
    images are not square, so the center crop is exercised)."""
    import numpy as np
    from PIL import Image

    from harness.prompts import load_prompts

    for rel in DATA_FILES:
        if not (src / rel).is_file():
            raise HarnessError(f"fixtures: prompt file {src / rel} is missing; pass --data-dir with the folder "
                               "that holds drawbench.csv, parti_prompts.tsv and coco/ (README 'Prompt data')")
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dst / rel)
    names = []
    shutil.rmtree(dst / "coco" / "val2017", ignore_errors=True)
    for i, prompt in enumerate(load_prompts("coco5k", dst, n_coco)):
        rng = np.random.RandomState(1100 + i)
        w, h = (96, 72) if i % 2 == 0 else (72, 96)
        pixels = rng.randint(0, 256, (h, w, 3), dtype=np.uint8)
        path = dst / "coco" / "val2017" / prompt.extra["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, format="JPEG", quality=90)
        names.append(f"coco/val2017/{path.name}")
    return names


# ---- the build -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    write: Callable[..., None]
    needs_corpus: bool = False


LAYOUTS: dict[str, Layout] = {
    "stable-diffusion-xl-base-1.0": Layout(write_sdxl),
    "lcm-sdxl": Layout(write_lcm_sdxl),
    "stable-cascade": Layout(write_stable_cascade),
    **{name: Layout(write_cogview3_sat) for name in COGVIEW3_SAT},
    "CogVideoX-2b": Layout(write_t5, needs_corpus=True),
    "sdxl_vae.safetensors": Layout(write_sdxl_vae_file),
    "sdxl-vae": Layout(write_sdxl_vae_folder),
    "aesthetic": Layout(write_aesthetic),
    "hpsv2": Layout(write_hpsv2),
    "imagereward": Layout(write_imagereward, needs_corpus=True),
    "fid": Layout(write_fid),
    "expander": Layout(write_expander, needs_corpus=True),
}


def load_paper_config(path: Path = PAPER_CONFIG) -> dict:
    return yaml.safe_load(Path(path).read_text())


def paper_layouts(paper: dict) -> dict[str, str]:
    """``weights:`` entry of paper.yaml -> the layout name it points at (its path under ${HARNESS_WEIGHTS})."""
    out = {}
    for key, value in paper["weights"].items():
        value = str(value)
        rel = value[len(WEIGHTS_VAR):].lstrip("/") if value.startswith(WEIGHTS_VAR) else None
        if rel not in LAYOUTS:
            raise HarnessError(
                f"fixtures: weights.{key} of config/paper.yaml is {value!r}, which names no fixture layout "
                f"(known under {WEIGHTS_VAR}/: {', '.join(sorted(LAYOUTS))}); add a writer to harness/fixtures.py"
            )
        out[key] = rel
    return out


def default_data_dir(paper: dict) -> Path:
    """paper.yaml's ``data_dir``, resolved from the current directory."""
    return Path(paper.get("data_dir", "data")).resolve()


def write_weights(weights_dir: Path, corpus: Sequence[str], only: Iterable[str] | None = None,
                  log: Callable[[str], None] = print) -> dict[str, float]:
    """Write the layouts (all, or ``only``) under ``weights_dir``; returns seconds per layout."""
    names = list(LAYOUTS) if only is None else list(only)
    unknown = [n for n in names if n not in LAYOUTS]
    if unknown:
        raise HarnessError(f"fixtures: unknown layouts {unknown}; known: {', '.join(LAYOUTS)}")
    times = {}
    for name in names:
        target = weights_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        layout = LAYOUTS[name]
        t0 = time.perf_counter()
        if layout.needs_corpus:
            layout.write(target, corpus)
        else:
            layout.write(target)
        times[name] = time.perf_counter() - t0
        files = EXPECTED_TREES[name]
        log(f"  {name:32s} {_size(weights_dir, files):>10s}  {times[name]:5.1f} s  ({len(files)} files)")
    return times


def paper_tiny_config(out: Path, paper: dict | None = None) -> dict:
    """config/paper.yaml (as it is now) pointed at the fixtures under ``out``, small and on the CPU."""
    from harness.config import ROOT

    cfg = copy.deepcopy(load_paper_config() if paper is None else paper)
    out = Path(out).resolve()
    weights_dir = out / "weights"
    # results/ and reports/ stay paper.yaml's (relative to where snakemake runs), so the documented
    # targets (reports/table1.md, ...) are the ones this config builds.
    cfg["profile"] = "fixtures"  # the paper profile's code paths; the label only changes the reports' banner
    cfg["data_dir"] = str(out / "data")
    cfg["weights"] = {key: str(weights_dir / rel) for key, rel in paper_layouts(cfg).items()}
    for metric in ("fid", "kid"):
        cfg["weights"].setdefault(metric, str(weights_dir / "fid"))
    cfg.update(device="cpu", dtype="float32", batch_size=2, num_prompts=2, benchmarks=["drawbench", "parti", "coco5k"])
    cfg["metrics"] = list(dict.fromkeys([*cfg.get("metrics", []), "fid", "kid"]))
    resolution = {"sdxl": 64, "lcm-sdxl": 64, "stable-cascade": 128, "cogview3-base": 64}
    for spec in cfg["systems"].values():
        if spec.get("model") in resolution:
            spec["resolution"] = resolution[spec["model"]]
    hv = cfg.setdefault("humaneval", {})
    hv.update(annotators=2, attention_checks=2, image_size=64, annotations_dir=str(out / "annotations" / "humaneval"))
    if hv.get("ratings_per_pair"):
        hv["ratings_per_pair"] = min(hv["ratings_per_pair"], hv["annotators"])
    exp = cfg.setdefault("expansion", {})
    for key in ("base_url", "model", "api_key_env"):
        exp.pop(key, None)
    exp.update(backend="transformers", model_path=str(weights_dir / "expander"), max_tokens=40)
    if cfg.get("thresholds") and not Path(cfg["thresholds"]).is_absolute():
        cfg["thresholds"] = str(ROOT / cfg["thresholds"])
    return cfg


HEADER = """\
# paper-tiny.yaml: config/paper.yaml on tiny random-weight checkpoints (CI's end-to-end paper DAG).
# Written by `python -m harness fixtures --out {out}`; regenerate it rather than edit it (it is derived
# from config/paper.yaml in code, so it follows that file's edits). Every weights: entry is a file or
# folder in the layout its upstream release ships (harness/fixtures.py EXPECTED_TREES), so the paper
# profile's real loaders run on it, on a CPU, in minutes. Changed from paper.yaml: profile `fixtures`
# (reports say their numbers mean nothing), data and weights paths, device cpu, float32, batch 2, 2 prompts per benchmark, coco5k with fid/kid, small
# resolutions, prompt expansion by a local tiny chat LM, a smaller human-evaluation export.
# The numbers these weights give say nothing about image quality.
#   snakemake --cores 2 reports/table1.md reports/table2.md reports/table3.md reports/humaneval/export reports/timecost.md --configfile {out}/paper-tiny.yaml
"""


class _ConfigDumper(yaml.SafeDumper):
    """Block-style mappings, lists of scalars on one line (as config/paper.yaml is written)."""


def _represent_list(dumper, data):
    flow = all(not isinstance(x, (dict, list)) for x in data) or all(
        isinstance(x, list) and all(not isinstance(y, (dict, list)) for y in x) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_ConfigDumper.add_representer(list, _represent_list)


def write_paper_tiny(out: Path, paper: dict | None = None) -> Path:
    """Write ``out/paper-tiny.yaml`` and check it with :func:`harness.config.load_config`."""
    from harness.config import load_config

    out = Path(out).resolve()
    path = out / "paper-tiny.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.dump(paper_tiny_config(out, paper), Dumper=_ConfigDumper, sort_keys=False, width=110)
    path.write_text(HEADER.format(out=out) + body)
    load_config(path)
    return path


def _size(root: Path, rel: Iterable[str]) -> str:
    return _human(sum((root / r).stat().st_size for r in rel if (root / r).is_file()))


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def tree(root: Path) -> list[str]:
    """Every file under ``root``, relative, sorted (for comparing against :data:`EXPECTED_TREES`)."""
    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def write_fixtures(out: Path, data_dir: Path | None = None, only: Iterable[str] | None = None,
                   log: Callable[[str], None] = print) -> Path:
    """The whole set under ``out``: weights/, data/ and paper-tiny.yaml. Returns the config's path."""
    t0 = time.perf_counter()
    out = Path(out).resolve()
    paper = load_paper_config()
    paper_layouts(paper)  # fail before writing anything if paper.yaml names an unknown layout
    src = Path(data_dir).resolve() if data_dir else default_data_dir(paper)
    log(f"fixtures -> {out}")
    log(f"data from {src}:")
    images = write_data(out / "data", src)
    size = _size(out / "data", tree(out / "data"))
    log(f"  {len(DATA_FILES)} prompt files + {len(images)} COCO reference images  {size}")
    corpus = training_corpus(out / "data")
    log("weights:")
    write_weights(out / "weights", corpus, only, log)
    config = write_paper_tiny(out, paper)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and "results" not in p.parts)
    log(f"config: {config} (validated)")
    log(f"done in {time.perf_counter() - t0:.1f} s, {_human(total)} on disk")
    return config
