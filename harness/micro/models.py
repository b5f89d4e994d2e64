"""The micro world's models in the real systems' on-disk layouts, trained by the project's own training code.

This module holds what is particular to the world:

- its text encoder: a frozen random T5 v1.1 with a word-level SentencePiece vocabulary, in THUDM/CogVideoX-2b's
  ``tokenizer/`` + ``text_encoder/`` layout, so the CogView3 systems load it unchanged through
  :class:`models.cogview3.conditioning.T5TextEncoder`;
- its autoencoder: SDXL's VAE topology at small widths, trained by :func:`harness.training.loop.train_loop` on
  crops of scenes rendered on the fly from the training stream, its latent space rescaled to CogView3's
  0.13025, and written as a diffusers ``AutoencoderKL`` folder, which
  :func:`models.cogview3.checkpoint.load_sdxl_vae` reads;
- its training images (:func:`world_images`) and the fresh UNet a stage trains from (:func:`write_initial_unet`);
  the stages themselves train through :func:`harness.training.rounds.run_train` like any other.
"""

from __future__ import annotations

from pathlib import Path

import torch

from harness.micro.world import WORLD_VERSION, render, training_pair

#: the tokenizer's vocabulary is read off this many captions of the training stream (seed 0): every word
#: of the grammar occurs in them (tests/test_micro_world.py checks the evaluation set encodes without <unk>)
TOKENIZER_CORPUS = 3000
#: the frozen text encoder's random weights come from this seed
TEXT_ENCODER_SEED = 0


def text_corpus(n: int = TOKENIZER_CORPUS) -> list[str]:
    """The captions the word-level tokenizer is built from: the first ``n`` of training stream 0."""
    return [training_pair(0, i)[0] for i in range(n)]


def write_text_encoder(folder: str | Path, seed: int = TEXT_ENCODER_SEED) -> Path:
    """The world's T5 (word-level vocabulary, random frozen weights) as ``folder/tokenizer`` and
    ``folder/text_encoder`` in CogVideoX-2b's layout; the config's ``weights.t5`` points at ``folder``."""
    from harness.fixtures import write_t5

    folder = Path(folder)
    write_t5(folder, text_corpus(), word_level=True, seed=seed)
    return folder


# ---- the autoencoder (the world's "VAE") -----------------------------------------------------------------

#: SDXL's VAE topology (4 levels, 8x down, 4 latent channels) at small widths, one block per level, with 8
#: norm groups: at these widths SDXL's 32 groups are one channel each (instance norm), which measured worse
#: (1,500 steps, judge on 128 px reconstructions 0.74 with 32 groups, 0.97 with 8). The LDM single file
#: cannot state the groups, so the world VAE is written in the diffusers folder layout of stabilityai/sdxl-vae
AUTOENCODER_WIDTHS = (32, 32, 64, 64)
AUTOENCODER_GROUPS = 8
#: the objective: L1 + MSE of the reconstruction (per pixel, object pixels weighted OBJECT_WEIGHT) + KL_WEIGHT x
#: KL per latent element. Objects cover about a tenth of a scene: unweighted, the background wins the loss and
#: colours drift (measured, 1,000 steps of 16 crops: judge on reconstructions 0.51; weighted x10, 1,500 steps: 0.80)
KL_WEIGHT = 1e-6
OBJECT_WEIGHT = 10.0
#: a pixel whose darkest channel is below this (in [-1, 1]; about 191 of 255) is an object's: backgrounds stay
#: at 228 and above in every channel, palette colours have a channel at 0
OBJECT_PIXEL_BELOW = 0.5
#: the training stream is this many examples long (rows of the loop's data; each step draws a batch of them)
STREAM_EXAMPLES = 100_000


def world_autoencoder(seed: int = 0):
    """A fresh world VAE: SDXL's topology at :data:`AUTOENCODER_WIDTHS` with :data:`AUTOENCODER_GROUPS` norm groups."""
    from diffusers import AutoencoderKL

    from models.cogview3.checkpoint import SDXL_VAE_CONFIG

    torch.manual_seed(seed)
    return AutoencoderKL(**dict(SDXL_VAE_CONFIG, block_out_channels=AUTOENCODER_WIDTHS, layers_per_block=1,
                                norm_num_groups=AUTOENCODER_GROUPS))


def render_batch(indices, size: int, seed: int):
    """Pixels in [-1, 1], [B, 3, size, size], of training examples ``indices`` of stream ``seed``."""
    from harness.training.data import pixels

    return pixels([render(training_pair(seed, int(i))[1], size) for i in indices])


def reconstruction_weights(x: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] pixel weights of pixels ``x`` in [-1, 1]: ``OBJECT_WEIGHT`` on object pixels, 1 elsewhere,
    scaled to mean 1 per sample (so the loss keeps its scale whatever a scene's object area)."""
    weight = 1.0 + (OBJECT_WEIGHT - 1.0) * (x.min(dim=1, keepdim=True).values < OBJECT_PIXEL_BELOW).to(x)
    return weight / weight.mean(dim=(1, 2, 3), keepdim=True)


class AutoencoderObjective:
    """``objective(vae, batch, generator)`` of :func:`harness.training.loop.train_loop`: render the batch's
    training scenes at ``size``, cut a random ``crop`` x ``crop`` window of each (the VAE is convolutional:
    a window at the target scale teaches it that scale at a fraction of the cost; measured 4x cheaper per
    sample at 32 of 64 px), encode, draw a posterior sample from ``generator``, decode; per sample L1 + MSE
    over pixels (object pixels weighted ``OBJECT_WEIGHT``) + ``KL_WEIGHT`` x KL over latent elements."""

    def __init__(self, size: int, crop: int | None = None, stream_seed: int = 0, kl_weight: float = KL_WEIGHT):
        crop = size if crop is None else crop
        if crop % 8 or not 8 <= crop <= size:
            raise ValueError(f"crop must be a multiple of 8 from 8 to the render size {size}, got {crop}")
        self.size, self.crop, self.stream_seed, self.kl_weight = size, crop, stream_seed, kl_weight

    def __call__(self, vae, batch, generator):
        x = render_batch(batch["index"].tolist(), self.size, self.stream_seed)
        if self.crop < self.size:
            corners = torch.randint(0, self.size - self.crop + 1, (len(x), 2), generator=generator).tolist()
            x = torch.stack([xi[:, y:y + self.crop, x0:x0 + self.crop] for xi, (y, x0) in zip(x, corners)])
        x = x.to(batch["index"].device)
        posterior = vae.encode(x).latent_dist
        eps = torch.randn(posterior.mean.shape, generator=generator).to(x.device)
        recon = vae.decode(posterior.mean + posterior.std * eps).sample
        diff = recon - x
        weight = reconstruction_weights(x)
        per_pixel = (weight * diff.abs()).mean(dim=(1, 2, 3)) + (weight * diff.pow(2)).mean(dim=(1, 2, 3))
        kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).mean(dim=(1, 2, 3))
        return per_pixel + self.kl_weight * kl

    def about(self) -> dict:
        return {"name": "AutoencoderObjective", "size": self.size, "crop": self.crop, "stream_seed": self.stream_seed,
                "kl_weight": self.kl_weight, "object_weight": OBJECT_WEIGHT, "widths": list(AUTOENCODER_WIDTHS)}


def calibrate_latent_scale(vae, size: int, stream_seed: int = 0, examples: int = 256) -> float:
    """Rescale the latent space so that posterior means x 0.13025 (the scale CogView3's system applies) have
    unit standard deviation over ``examples`` training scenes, as the diffusion schedule assumes: the encoder's
    ``quant_conv`` mean rows are multiplied by s (log-variance rows shifted by 2 log s) and the decoder's
    ``post_quant_conv`` input divided by s, so reconstructions do not change. Returns s."""
    import math

    from models.cogview3.system import VAE_SCALE

    with torch.no_grad():
        x = render_batch(range(examples), size, stream_seed)
        std = float(torch.cat([vae.encode(x[i:i + 32]).latent_dist.mean for i in range(0, examples, 32)]).std())
        s = 1.0 / (std * VAE_SCALE)
        channels = vae.config.latent_channels
        q = vae.quant_conv
        q.weight[:channels] *= s
        q.bias[:channels] *= s
        q.bias[channels:] += 2 * math.log(s)
        vae.post_quant_conv.weight /= s
    return s


def write_autoencoder(vae, folder: str | Path) -> Path:
    """``vae`` as a diffusers ``AutoencoderKL`` folder (``config.json`` + ``diffusion_pytorch_model.safetensors``,
    stabilityai/sdxl-vae's diffusers layout), written beside and renamed into place: a crash leaves the old
    folder or the new one."""
    import os
    import shutil

    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    vae.save_pretrained(tmp, safe_serialization=True)
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, folder)
    return folder


def train_autoencoder(out: str | Path, size: int, settings, *, crop: int | None = None, stream_seed: int = 0,
                      progress: bool = True) -> dict:
    """Train the world VAE on ``crop`` px windows of ``size`` px renders with ``settings`` (a
    :class:`harness.training.loop.LoopSettings`; resumable from ``out/.state``), calibrate its latent scale from
    the EMA weights and write it to ``out/vae`` (the config's ``weights.sdxl-vae``). Returns what the run did
    (losses, wall time, the scale)."""
    from harness.training.loop import ema_model, train_loop

    out = Path(out)
    vae = world_autoencoder(settings.seed)
    objective = AutoencoderObjective(size, crop, stream_seed)
    data = {"index": torch.arange(STREAM_EXAMPLES)}
    result = train_loop(vae, objective, data, settings, out / ".state", fingerprint=str(objective.about()),
                        device="cpu", progress=progress, describe=f"world VAE {size}px")
    trained = ema_model(vae, result.ema)
    scale = calibrate_latent_scale(trained, size, stream_seed)
    write_autoencoder(trained, out / "vae")
    return {"objective": objective.about(), "steps": result.steps, "losses": result.losses, "latent_scale": scale,
            "train_wall_s": result.train_wall_s}


# ---- training images for the diffusion stages ------------------------------------------------------------

def world_images(examples: int, size: int, stream_seed: int = 0):
    """The first ``examples`` pairs of training stream ``stream_seed`` rendered at ``size`` px, as training images
    (:class:`harness.training.data.TrainingImages`) for :func:`harness.training.data.encode_data`. A row's
    ``sha256`` names its content (world version, stream, index, size), not a file: nothing is written."""
    import hashlib

    from harness.training.data import TrainingImages

    rows = []
    for index in range(examples):
        caption, _scene = training_pair(stream_seed, index)
        content = f"{WORLD_VERSION}|{stream_seed}|{index}|{size}"
        rows.append({"index": index, "prompt": caption, "sha256": hashlib.sha256(content.encode()).hexdigest()})
    return TrainingImages(f"micro-world stream {stream_seed} at {size}px", rows,
                          lambda row: render(training_pair(stream_seed, row["index"])[1], size),
                          {"world": WORLD_VERSION, "stream_seed": stream_seed, "size": size})


# ---- the diffusion stages ----------------------------------------------------------------------------------


def write_initial_unet(folder: str | Path, seed: int, text_dim: int) -> Path:
    """A freshly initialised UNet in CogView3's topology at the scale the training jobs use for tiny teachers
    (:func:`harness.training.rounds.tiny_sat_unet_config`: 64/64/128 channels, the official 64-d heads, cross-
    attention over ``text_dim``-wide T5 states), written as a SAT folder: the ``init`` a micro-world stage
    trains from (:func:`harness.training.rounds.run_train` with ``images=world_images(...)``)."""
    from harness.training.rounds import export_sat, tiny_sat_unet_config
    from models.cogview3.unet import build_unet

    unet = build_unet(tiny_sat_unet_config(None, text_dim), seed=seed)
    export_sat(unet, unet.state_dict(), Path(folder))
    return Path(folder)
