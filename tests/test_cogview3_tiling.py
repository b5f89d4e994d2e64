"""Tiled relay SR (Mixture of Diffusers): coverage, blending, and the system path."""

import numpy as np
import torch
from PIL import Image

from models.cogview3.tiling import TiledDenoiser, gaussian_weights, tile_starts
from models.registry import build_system


def test_tiles_cover_the_latent_with_the_requested_overlap():
    assert tile_starts(64, 128, 32) == [0]
    assert tile_starts(256, 128, 32) == [0, 96, 128]
    for size, tile, overlap in [(256, 128, 32), (300, 64, 16), (512, 128, 0)]:
        starts = tile_starts(size, tile, overlap)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s : s + tile] = True
        assert covered.all() and starts[-1] + tile == size
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_gaussian_weights_peak_at_the_centre():
    w = gaussian_weights(8, 8)
    assert w.shape == (8, 8) and torch.allclose(w, w.T)
    assert w[3:5, 3:5].min() > w[0, 0] and w[0, 0] > 0


def test_blending_is_exact_for_a_position_independent_denoiser():
    x = torch.randn(2, 4, 40, 56)
    tiled = TiledDenoiser(lambda top, left, h, w: (lambda xt, t: 0.5 * xt + t), 40, 56, 16, 6)
    assert len(tiled.tiles) == len(tile_starts(40, 16, 6)) * len(tile_starts(56, 16, 6))
    torch.testing.assert_close(tiled(x, 3), 0.5 * x + 3)


def test_tiles_see_their_own_crop_conditioning():
    seen = []
    tiled = TiledDenoiser(lambda top, left, h, w: (seen.append((top, left, h, w)) or (lambda xt, t: xt)), 24, 24, 16, 8)
    tiled(torch.zeros(1, 4, 24, 24), 0)
    assert seen == [(0, 0, 16, 16), (0, 8, 16, 16), (8, 0, 16, 16), (8, 8, 16, 16)]


def test_tiled_relay_system_runs_and_one_covering_tile_is_the_plain_relay():
    w = {k: "tiny" for k in ("cogview3-relay", "t5", "sdxl-vae")}
    spec = {"model": "cogview3-relay", "input": "b", "weights": "cogview3-relay", "t_r": 500, "steps": 2}
    img = Image.fromarray(np.random.RandomState(0).randint(0, 256, (64, 64, 3), dtype=np.uint8))
    tiled = build_system("t", {**spec, "tile_size": 8, "tile_overlap": 4}, w).build()
    assert "tiled, 8-latent tiles overlapping 4" in tiled.describe_grid(tiled.params)
    out = tiled.generate(["a lighthouse"], [0], [img])[0]
    assert out.size == (128, 128)
    assert tiled.vae.use_tiling
    one_tile = build_system("o", {**spec, "tile_size": 16}, w).build()  # tile >= latent: whole image
    one_tile.vae.disable_tiling()  # compare the denoising alone
    plain = build_system("p", spec, w).build()
    a = np.asarray(one_tile.generate(["a lighthouse"], [0], [img])[0])
    b = np.asarray(plain.generate(["a lighthouse"], [0], [img])[0])
    assert np.array_equal(a, b)
    assert np.abs(np.asarray(out, dtype=int) - b).mean() > 0.5  # tiling did change the computation
