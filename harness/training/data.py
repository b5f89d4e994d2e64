"""Training data: latents of images, encoded with the system's own VAE and T5.

The data of a stage is a set of images with their prompts (:class:`TrainingImages`): one system's manifest
on one benchmark (config ``distillation.benchmark``, :func:`manifest_images`), or the micro world's training
stream (:func:`harness.micro.models.world_images`). Each row becomes

- ``z0``: the image in [-1, 1] -> VAE encode, posterior *sample* x 0.13025 (as the relay stage
  encodes its input, :meth:`models.cogview3.system.CogView3RelaySystem.encode_lr`);
- ``z_lr`` (relay only): z^L formed from the same high-resolution image exactly as spec §4.4 says
  (1/2 bilinear down without antialias, x2 bilinear up, VAE posterior sample x 0.13025:
  :func:`models.cogview3.training.relay_lr_latent`);
- ``context``: the T5 states of the prompt as the model saw it (225 tokens, no mask);
- ``size_vec``: the 1536-d size vector of the image's size (original = target = the image, crop 0).

Every posterior sample draws from a generator seeded by (seed, the image's sha256), so the data
does not depend on batching. The tensors are cached under ``<results>/.cache/train-latents/``,
keyed by the images, prompts, VAE and T5 weights, device type and dtype: every round of a schedule
and a rerun encode nothing again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from harness.errors import HarnessError
from harness.io import digest

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def pixels(images) -> torch.Tensor:
    """8-bit RGB images -> float32 [B, 3, H, W] in [-1, 1] (``ToTensor() * 2 - 1``)."""
    x = torch.stack([torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32)) for im in images])
    return (x.permute(0, 3, 1, 2) / 255.0) * 2.0 - 1.0


def image_generators(seed: int, rows: list[dict]) -> list[torch.Generator]:
    from harness.training.loop import derived_seed

    return [torch.Generator().manual_seed(derived_seed(seed, "encode", row["sha256"])) for row in rows]


@torch.no_grad()
def vae_encode(vae, x: torch.Tensor, gens: list[torch.Generator]) -> torch.Tensor:
    """VAE posterior sample x 0.13025 of pixels ``x`` in [-1, 1]; one draw per image from its generator."""
    from models.base import randn
    from models.cogview3.system import VAE_SCALE

    device = next(vae.parameters()).device
    dist = vae.encode(x.to(device, torch.float32)).latent_dist
    eps = randn(dist.mean.shape[1:], gens).to(device)
    return ((dist.mean + dist.std * eps) * VAE_SCALE).float().cpu()


@dataclass(frozen=True)
class TrainingImages:
    """A stage's training images: one row per image (``prompt``, and ``sha256`` naming its content, which keys
    the cache and seeds its posterior sample) and how to open one; ``about`` goes into the metrics file."""

    name: str  # for the progress bar and messages
    rows: list[dict]
    open: Callable[[dict], Any]  # row -> PIL image
    about: dict[str, Any]


def data_rows(config: dict[str, Any], benchmark: str, system: str) -> list[dict]:
    """The finished manifest's rows of ``system`` on ``benchmark`` (the error says how to make it)."""
    from harness.manifests import read_manifest

    return read_manifest(config["results_dir"], benchmark, system)


def manifest_images(config: dict[str, Any], benchmark: str, system: str) -> TrainingImages:
    """The images ``system`` made on ``benchmark`` (its finished manifest), with the prompts they were made from."""
    from harness.manifests import open_row_image

    rows = data_rows(config, benchmark, system)
    if not rows:
        raise HarnessError(f"the manifest of {benchmark}/{system} lists no images (config key "
                           "'distillation.benchmark'): nothing to train on")
    return TrainingImages(f"{benchmark}/{system}", rows,
                          lambda row: open_row_image(config["results_dir"], benchmark, system, row),
                          {"benchmark": benchmark, "system": system})


def cache_path(config: dict[str, Any], stage: str, key: str) -> Path:
    return Path(config["results_dir"]) / ".cache" / "train-latents" / f"{stage}-{key}.pt"


@torch.no_grad()
def encode_data(config: dict[str, Any], stage: str, images: TrainingImages, encoder, seed: int,
                batch_size: int = 4, progress: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The training tensors of ``stage`` from ``images``, and a description of them (for the metrics
    file). ``encoder``: a built CogView3 system whose VAE and T5 encode them (the stage's teacher system)."""
    from harness.training.loop import atomic_torch_save
    from models.cogview3.conditioning import size_vector

    rows = images.rows
    weights = encoder.weights_fingerprint()
    components = {p: weights[encoder.params[p]] for p in encoder.WEIGHT_PARAMS}  # T5 and VAE, not the UNet
    key = digest({"version": CACHE_VERSION, "stage": stage, "images": [r["sha256"] for r in rows],
                  "prompts": [r["prompt"] for r in rows], "weights": components, "seed": seed,
                  "device": encoder.device.type, "dtype": str(encoder.dtype)})
    path = cache_path(config, stage, key)
    about = {**images.about, "images": len(rows), "cache": str(path), "cache_key": key}
    if path.is_file():
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            log.info("training data: %d %s examples from the cache %s", len(rows), stage, path)
            return data, {**about, "cached": True}
        except Exception as err:  # a damaged cache file is rebuilt, never trusted
            log.warning("cannot read the latent cache %s (%s); encoding again", path, err)

    out: dict[str, list[torch.Tensor]] = {"z0": [], "context": [], "size_vec": []}
    if stage == "relay":
        out["z_lr"] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(rows), desc=f"encode {images.name}", unit="img")
    sizes = set()
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        opened = [images.open(r) for r in chunk]
        sizes |= {im.size for im in opened}
        if len(sizes) > 1:
            raise HarnessError(f"the images of {images.name} have different sizes {sorted(sizes)}; "
                               "one size per training set")
        x = pixels(opened)
        gens = image_generators(seed, chunk)
        out["z0"].append(vae_encode(encoder.vae, x, gens))
        if stage == "relay":
            out["z_lr"].append(relay_lr(encoder.vae, x, gens))
        context = encoder.text_encoder([r["prompt"] for r in chunk])
        out["context"].append(context.cpu())
        width, height = opened[0].size
        out["size_vec"].append(size_vector((height, width), (0, 0), (height, width), batch=len(chunk)))
        if bar:
            bar.update(len(chunk))
    if bar:
        bar.close()
    data = {k: torch.cat(v) for k, v in out.items()}
    atomic_torch_save(data, path)
    log.info("training data: %d %s examples encoded -> %s", len(rows), stage, path)
    return data, {**about, "cached": False, "image_size": list(next(iter(sizes)))}


def relay_lr(vae, x: torch.Tensor, gens: list[torch.Generator]) -> torch.Tensor:
    """z^L of high-resolution pixels ``x`` as spec §4.4 (the objectives' own function does the pixels)."""
    from models.cogview3.training import relay_lr_latent

    return relay_lr_latent(x, lambda pix: vae_encode(vae, pix, gens))
