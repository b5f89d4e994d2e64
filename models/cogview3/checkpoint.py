"""Official CogView3 weights: SAT checkpoints -> the diffusers UNet, and the SDXL VAE.

SAT layout (docs/reference.md §1)::

    <folder>/latest                              text file holding the iteration, e.g. "1"
    <folder>/<iteration>/mp_rank_00_model_states.pt   torch.load(...)["module"] is the state dict

UNet keys carry the prefix ``model.diffusion_model.`` and use sgm/LDM names (``input_blocks.{i}.{j}``,
``middle_block``, ``output_blocks``, ``time_embed``, ``label_emb``, ``out``, and ``w_proj`` in the
distilled models). T5 and VAE weights are not in the checkpoint; any other key under the prefix,
or any UNet key the checkpoint lacks, is an error that lists them.

The key correspondence is one table (:func:`sat_key_map`) derived from the UNet config, used in both
directions: loading (SAT -> diffusers) and writing (diffusers -> SAT, for tests and conversions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness.errors import HarnessError
from models.cogview3.unet import build_unet, unet_config
from models.layouts import SAT_STATE_FILE

SAT_PREFIX = "model.diffusion_model."

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def _module_prefixes(config: dict[str, Any]) -> dict[str, str]:
    """diffusers module prefix -> sgm module prefix (without the SAT prefix)."""
    has_attn = [t.startswith("CrossAttn") for t in config["down_block_types"]]
    levels = len(config["block_out_channels"])
    per_block = config["layers_per_block"]
    out: dict[str, str] = {
        "conv_in": "input_blocks.0.0",
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "time_embedding.cond_proj": "w_proj",
        "class_embedding.linear_1": "label_emb.0.0",
        "class_embedding.linear_2": "label_emb.0.2",
        "mid_block.resnets.0": "middle_block.0",
        "mid_block.attentions.0": "middle_block.1",
        "mid_block.resnets.1": "middle_block.2",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    n = 1
    for level in range(levels):
        for j in range(per_block):
            out[f"down_blocks.{level}.resnets.{j}"] = f"input_blocks.{n}.0"
            if has_attn[level]:
                out[f"down_blocks.{level}.attentions.{j}"] = f"input_blocks.{n}.1"
            n += 1
        if level < levels - 1:
            out[f"down_blocks.{level}.downsamplers.0.conv"] = f"input_blocks.{n}.0.op"
            n += 1
    n = 0
    for up in range(levels):
        level = levels - 1 - up
        for j in range(per_block + 1):
            out[f"up_blocks.{up}.resnets.{j}"] = f"output_blocks.{n}.0"
            if has_attn[level]:
                out[f"up_blocks.{up}.attentions.{j}"] = f"output_blocks.{n}.1"
            if j == per_block and level > 0:
                out[f"up_blocks.{up}.upsamplers.0.conv"] = f"output_blocks.{n}.{2 if has_attn[level] else 1}.conv"
            n += 1
    return out


def sat_key_map(config: dict[str, Any], diffusers_keys: list[str]) -> dict[str, str]:
    """diffusers state-dict key -> SAT key (with prefix), for every key of the diffusers UNet."""
    prefixes = _module_prefixes(config)
    mapping = {}
    for key in diffusers_keys:
        parts = key.split(".")
        for cut in range(len(parts) - 1, 0, -1):  # longest module prefix first
            head = ".".join(parts[:cut])
            if head in prefixes:
                rest = parts[cut:]
                if ".resnets." in f".{head}." and rest[0] in _RESNET:
                    rest = [_RESNET[rest[0]], *rest[1:]]
                mapping[key] = SAT_PREFIX + ".".join([prefixes[head], *rest])
                break
        else:
            raise KeyError(f"no SAT name for diffusers key {key}")
    return mapping


def sat_state_file(folder: Path) -> Path:
    """``<folder>/<iteration named by latest>/mp_rank_00_model_states.pt``, or an error saying what is missing."""
    from models.layouts import sat_folder

    files = sat_folder("", Path(folder)).require().files
    return files[-1]


def read_sat_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The ``module`` state dict of a SAT model-states file, memory-mapped (no copy in host RAM)."""
    from models.weights import load_checkpoint

    path = Path(path)
    blob = load_checkpoint(path)
    if not isinstance(blob, dict) or "module" not in blob:
        raise HarnessError(f"{path} has no 'module' entry; it is not a SAT model-states file")
    return blob["module"]


#: the official UNet's attention head width (``num_head_channels: 64`` in every CogView3 yaml); the
#: only width a checkpoint's tensor shapes cannot tell
HEAD_DIM = 64


def sat_unet_config(state: dict[str, torch.Tensor], path: Path | str = "checkpoint") -> dict[str, Any]:
    """The diffusers config of the UNet a SAT state dict holds, read off its tensor shapes.

    Widths (channels per level, transformer depths, cross-attention and guidance-embedding sizes)
    come from the checkpoint, so a small SAT file loads through the same code as the official
    2.9 B one; the topology (3 levels, attention on levels 2-3, 2 res blocks, 1536-d size vector,
    4 latent channels) must be CogView3's or the file is refused.
    """
    p = SAT_PREFIX

    def shape(key: str) -> tuple[int, ...] | None:
        t = state.get(p + key)
        return None if t is None else tuple(t.shape)

    def fail(what: str) -> HarnessError:
        return HarnessError(f"{path} is not a CogView3 UNet checkpoint: {what}")

    conv_in = shape("input_blocks.0.0.weight")
    adm = shape("label_emb.0.0.weight")
    if conv_in is None or adm is None:
        raise fail(f"it has no {p}input_blocks.0.0.weight or {p}label_emb.0.0.weight")
    if conv_in[1] != 4 or adm[1] != 1536:
        raise fail(f"{conv_in[1]} input channels and a {adm[1]}-d size vector (CogView3: 4 and 1536)")
    blocks = sorted({int(k[len(p):].split(".")[1]) for k in state if k.startswith(p + "input_blocks.")})
    downsamplers = [n for n in blocks if shape(f"input_blocks.{n}.0.op.weight")]
    per_block = downsamplers[0] - 1 if downsamplers else len(blocks) - 1
    levels = len(downsamplers) + 1
    channels, has_attn, depths = [], [], []
    for level in range(levels):
        n = 1 + level * (per_block + 1)
        out = shape(f"input_blocks.{n}.0.out_layers.3.weight")
        if out is None:
            raise fail(f"no resnet at {p}input_blocks.{n}.0")
        channels.append(out[0])
        has_attn.append(shape(f"input_blocks.{n}.1.proj_in.weight") is not None)
        depths.append(len({k for k in state if k.startswith(f"{p}input_blocks.{n}.1.transformer_blocks.")
                           for k in [k.split(".transformer_blocks.")[1].split(".")[0]]}) or 1)
    mid_depth = len({k.split(".transformer_blocks.")[1].split(".")[0] for k in state
                     if k.startswith(f"{p}middle_block.1.transformer_blocks.")})
    if levels != 3 or per_block != 2 or has_attn != [False, True, True] or depths[-1] != mid_depth:
        raise fail(f"{levels} levels, {per_block} res blocks per level, attention {has_attn}, middle depth "
                   f"{mid_depth} (CogView3: 3 levels, 2 res blocks, attention on levels 2 and 3, middle depth = last)")
    if any(c % HEAD_DIM for c in channels):
        raise fail(f"widths {channels} are not multiples of the official {HEAD_DIM}-d attention heads")
    context = shape("input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight")
    w_proj = shape("w_proj.weight")
    return unet_config(
        None if w_proj is None else w_proj[1], channels=tuple(channels), head_dim=HEAD_DIM, depths=tuple(depths),
        cross_attention_dim=context[1],
    )


def load_sat_unet(folder: Path, guidance_embed_dim: int | None, device="cpu", dtype=torch.float32):
    """The UNet of a SAT checkpoint folder, built on the meta device and filled tensor by tensor.

    Each tensor goes from the memory-mapped file straight to ``device`` in ``dtype``, so host RAM
    holds at most one copy of the model (none beyond one tensor when ``device`` is a GPU), never the
    fp32 model plus the checkpoint. ``guidance_embed_dim`` is what the system expects (None: not
    distilled); a checkpoint with or without ``w_proj`` against that is an error listing the key.
    Missing or unexpected keys are an error that lists them.
    """
    path = sat_state_file(folder)
    state = read_sat_state_dict(path)
    config = sat_unet_config(state, path)
    found_dim = config["time_cond_proj_dim"]
    config["time_cond_proj_dim"] = guidance_embed_dim
    with torch.device("meta"):
        unet = build_unet(config)
    target = unet.state_dict()
    mapping = sat_key_map(unet.config, list(target))
    sat_unet_keys = {k for k in state if k.startswith(SAT_PREFIX)}
    missing = sorted(v for v in mapping.values() if v not in state)
    unexpected = sorted(sat_unet_keys - set(mapping.values()))
    if missing or unexpected:
        raise HarnessError(
            f"SAT checkpoint {path} does not fit the CogView3 UNet (the system expects time_cond_proj_dim="
            f"{guidance_embed_dim}, the file has {found_dim}; set `distilled:` to match the checkpoint): "
            f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''} ({len(missing)}), "
            f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''} ({len(unexpected)})"
        )
    converted = {}
    for dkey, skey in mapping.items():
        tensor = state[skey]
        if tensor.shape != target[dkey].shape:
            raise HarnessError(f"SAT key {skey} has shape {tuple(tensor.shape)}, the UNet expects {tuple(target[dkey].shape)}")
        converted[dkey] = tensor.to(device=device, dtype=dtype)
    del state
    unet.load_state_dict(converted, strict=True, assign=True)
    return unet


def save_sat_unet(unet, folder: Path, iteration: int = 1) -> Path:
    """Write ``unet`` in the SAT layout (the inverse of :func:`load_sat_unet`)."""
    state = unet.state_dict()
    mapping = sat_key_map(unet.config, list(state))
    folder = Path(folder)
    (folder / str(iteration)).mkdir(parents=True, exist_ok=True)
    path = folder / str(iteration) / SAT_STATE_FILE
    torch.save({"module": {mapping[k]: v.clone() for k, v in state.items()}}, path)
    (folder / "latest").write_text(f"{iteration}\n")
    return path


# ---- VAE ---------------------------------------------------------------------------------------

SDXL_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
    sample_size=1024, scaling_factor=0.13025, force_upcast=True, act_fn="silu",
)


def ldm_vae_config(state: dict[str, torch.Tensor], path: Path | str) -> dict[str, Any]:
    """The diffusers AutoencoderKL config of an LDM-key VAE state dict, widths read off its shapes.

    For the official ``sdxl_vae.safetensors`` this is :data:`SDXL_VAE_CONFIG`; the LDM code's fixed
    facts (32 norm groups, SiLU, the SDXL scale 0.13025) are kept.
    """
    levels = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.down.")})
    if not levels or "post_quant_conv.weight" not in state:
        raise HarnessError(f"{path} is not an LDM-format VAE (no encoder.down.* / post_quant_conv keys); "
                           "give sdxl_vae.safetensors or a diffusers AutoencoderKL folder")
    channels = tuple(int(state[f"encoder.down.{i}.block.0.conv2.weight"].shape[0]) for i in levels)
    per_block = len({k.split(".")[4] for k in state if k.startswith("encoder.down.0.block.")})
    return dict(SDXL_VAE_CONFIG, block_out_channels=channels, layers_per_block=per_block,
                down_block_types=("DownEncoderBlock2D",) * len(channels),
                up_block_types=("UpDecoderBlock2D",) * len(channels),
                latent_channels=int(state["post_quant_conv.weight"].shape[0]))


def load_sdxl_vae(path: Path, dtype: torch.dtype):
    """The SDXL VAE from a diffusers folder (``config.json`` + weights) or the LDM-format ``sdxl_vae.safetensors``."""
    from diffusers import AutoencoderKL

    from models.layouts import model_folder, single_file

    path = Path(path)
    if path.is_dir():
        files = model_folder("vae", path, "diffusion_pytorch_model", "SDXL VAE",
                             "Give a diffusers AutoencoderKL folder or sdxl_vae.safetensors.").require()
        return AutoencoderKL.from_pretrained(path, local_files_only=True, torch_dtype=dtype, variant=files.variant)
    single_file("vae", path, "SDXL VAE weights", "Download sdxl_vae.safetensors (README 'Weights').").require()
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from safetensors.torch import load_file

    state = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    state = {k.removeprefix("first_stage_model."): v for k, v in state.items()}
    with torch.device("meta"):
        vae = AutoencoderKL(**ldm_vae_config(state, path))
    converted = convert_ldm_vae_checkpoint(state, vae.config)
    expected = set(vae.state_dict())
    missing, unexpected = sorted(expected - set(converted)), sorted(set(converted) - expected)
    if missing or unexpected:
        raise HarnessError(f"{path} is not an SDXL VAE checkpoint: missing keys {missing[:10]}, unexpected keys {unexpected[:10]}")
    vae.load_state_dict({k: v.to(dtype) for k, v in converted.items()}, strict=True, assign=True)
    return vae
