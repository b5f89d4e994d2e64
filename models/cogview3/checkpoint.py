"""Official CogView3 weights: SAT checkpoints -> the diffusers UNet, and the SDXL VAE.

SAT layout (spec §1.1)::

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

SAT_PREFIX = "model.diffusion_model."
SAT_STATE_FILE = "mp_rank_00_model_states.pt"

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
    folder = Path(folder)
    latest = folder / "latest"
    if not latest.is_file():
        raise HarnessError(
            f"{folder} is not a SAT checkpoint folder: it has no 'latest' file (expected latest + "
            f"<iteration>/{SAT_STATE_FILE}, as the official CogView3 downloads unpack)"
        )
    iteration = latest.read_text().strip()
    path = folder / iteration / SAT_STATE_FILE
    if not path.is_file():
        raise HarnessError(f"{latest} names iteration {iteration!r}, but {path} does not exist")
    return path


def read_sat_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    path = sat_state_file(folder)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # SAT also pickles its argparse namespace; a local, user-given file
        blob = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(blob, dict) or "module" not in blob:
        raise HarnessError(f"{path} has no 'module' entry; it is not a SAT model-states file")
    return blob["module"]


def load_sat_unet(unet, folder: Path) -> None:
    """Copy a SAT checkpoint into ``unet`` (in place); missing or unexpected keys are an error."""
    state = read_sat_state_dict(folder)
    target = unet.state_dict()
    mapping = sat_key_map(unet.config, list(target))
    sat_unet_keys = {k for k in state if k.startswith(SAT_PREFIX)}
    missing = sorted(v for v in mapping.values() if v not in state)
    unexpected = sorted(sat_unet_keys - set(mapping.values()))
    if missing or unexpected:
        raise HarnessError(
            f"SAT checkpoint {sat_state_file(folder)} does not fit the CogView3 UNet "
            f"(time_cond_proj_dim={unet.config.time_cond_proj_dim}): missing keys {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''} ({len(missing)}), unexpected keys {unexpected[:10]}"
            f"{' ...' if len(unexpected) > 10 else ''} ({len(unexpected)})"
        )
    converted = {}
    for dkey, skey in mapping.items():
        tensor = state[skey]
        if tensor.shape != target[dkey].shape:
            raise HarnessError(f"SAT key {skey} has shape {tuple(tensor.shape)}, the UNet expects {tuple(target[dkey].shape)}")
        converted[dkey] = tensor
    unet.load_state_dict(converted, strict=True)


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


def load_sdxl_vae(path: Path, dtype: torch.dtype):
    """The SDXL VAE from a diffusers folder (``config.json`` + weights) or the LDM-format ``sdxl_vae.safetensors``."""
    from diffusers import AutoencoderKL

    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise HarnessError(f"VAE folder {path} has no config.json; give a diffusers AutoencoderKL folder or sdxl_vae.safetensors")
        return AutoencoderKL.from_pretrained(path, local_files_only=True, torch_dtype=dtype)
    if not path.is_file():
        raise HarnessError(f"VAE weights {path} do not exist; download sdxl_vae.safetensors (see README)")
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from safetensors.torch import load_file

    state = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    vae = AutoencoderKL(**SDXL_VAE_CONFIG)
    converted = convert_ldm_vae_checkpoint(state, vae.config)
    missing, unexpected = vae.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise HarnessError(f"{path} is not an SDXL VAE checkpoint: missing keys {missing[:10]}, unexpected keys {unexpected[:10]}")
    return vae.to(dtype)
