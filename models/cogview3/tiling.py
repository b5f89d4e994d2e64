"""Tiled relay super-resolution (Mixture of Diffusers, Jiménez 2023), absent from the official code.

At every sampler step the latent is cut into overlapping tiles, each tile is denoised on its own,
and the x0 predictions are blended with Gaussian weights centred on each tile. Because the relay and
DDIM updates are linear in D, blending D is the same as blending the noise predictions. Only one
tile's UNet activations exist at a time, so peak memory stays flat as the output grows; the VAE is
tiled too (diffusers' ``enable_tiling``).

Each tile is conditioned like an SDXL crop: original size = the full image, crop = the tile's
top-left corner, target size = the tile (all in pixels).
"""

from __future__ import annotations

from typing import Callable

import torch

TileDenoiser = Callable[[torch.Tensor, int], torch.Tensor]


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, size) with tiles of ``tile`` overlapping by at least ``overlap``."""
    if tile >= size:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, tile), got {overlap} for tile {tile}")
    stride = tile - overlap
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return sorted(set(starts))


def gaussian_weights(height: int, width: int, var: float = 0.01) -> torch.Tensor:
    """Separable Gaussian centred on the tile, std = sqrt(var) of the tile size (the MoD default)."""

    def axis(n: int) -> torch.Tensor:
        pos = (torch.arange(n, dtype=torch.float32) + 0.5) / n - 0.5
        return torch.exp(-(pos**2) / (2 * var))

    return axis(height)[:, None] * axis(width)[None, :]


class TiledDenoiser:
    """D(x, t) assembled from per-tile denoisers ``make(top, left, h, w)`` (latent coordinates)."""

    def __init__(self, make: Callable[[int, int, int, int], TileDenoiser], height: int, width: int, tile: int, overlap: int):
        self.tiles = [
            (top, left, min(tile, height), min(tile, width))
            for top in tile_starts(height, tile, overlap)
            for left in tile_starts(width, tile, overlap)
        ]
        self.make = make
        self.weights = {(h, w): gaussian_weights(h, w) for _, _, h, w in self.tiles}

    def __call__(self, x: torch.Tensor, t: int) -> torch.Tensor:
        acc = torch.zeros_like(x, dtype=torch.float32)
        norm = torch.zeros(x.shape[-2:], dtype=torch.float32, device=x.device)
        for top, left, h, w in self.tiles:
            d = self.make(top, left, h, w)(x[..., top : top + h, left : left + w], t).float()
            wt = self.weights[(h, w)].to(x.device)
            acc[..., top : top + h, left : left + w] += d * wt
            norm[top : top + h, left : left + w] += wt
        return acc / norm
