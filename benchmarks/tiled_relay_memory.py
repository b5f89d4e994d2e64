"""Peak memory of the relay SR stage, tiled vs whole-image, as the output grows (tiny random model, CPU).

    python benchmarks/tiled_relay_memory.py [--sizes 2048 4096] [--tile 128] [--steps 2]

Each configuration runs in a fresh subprocess; the figure is the growth of the process's peak RSS
during one relay call (after the model is built and the input image made), so import and build costs
cancel out. Only ratios between rows of one run mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from PIL import Image
torch.set_num_threads(2)
from models.registry import build_system
out_px, tile, steps, phase = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
W = {k: "tiny" for k in ("cogview3-relay", "t5", "sdxl-vae")}
spec = {"model": "cogview3-relay", "input": "base", "weights": "cogview3-relay", "t_r": 500, "steps": steps,
        "tile_size": None if tile == "none" else int(tile), "tile_overlap": 32}
relay = build_system("relay", spec, W, "cpu", "float32").build()
img = Image.fromarray(np.random.RandomState(0).randint(0, 256, (out_px // 2, out_px // 2, 3), dtype=np.uint8))
relay.generate(["a lighthouse"], [0], [img.resize((64, 64))])  # warm-up at a tiny size
from models.cogview3.sampling import relay_sample
lat = out_px // 8
z_lr, noise = torch.randn(1, 4, lat, lat), torch.randn(1, 4, lat, lat)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if phase == "sampler":  # the denoising loop alone: what tiling bounds
    relay_sample(relay.relay_denoiser(["a lighthouse"], out_px, (lat, lat)), z_lr, relay.grid(), noise)
else:  # the whole stage: PNG -> x2 -> VAE encode -> relay -> VAE decode -> uint8
    relay.generate(["a lighthouse"], [0], [img])
wall = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"out": out_px, "tile": tile, "phase": phase, "peak_rss_mb": peak / 1024,
                  "growth_mb": (peak - before) / 1024, "wall_s": wall}))
"""


def run(out_px: int, tile: str, steps: int, phase: str) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(out_px), tile, str(steps), phase], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"out": out_px, "tile": tile, "phase": phase, "error": proc.stderr.strip().splitlines()[-1][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    ap.add_argument("--tile", default="128", help="latent tile size, or 'none'")
    ap.add_argument("--untiled", type=int, nargs="*", default=[], help="sizes to also run whole-image (untiled)")
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args()
    rows = []
    jobs = [(size, args.tile) for size in args.sizes] + [(size, "none") for size in args.untiled]
    for size, tile in jobs:
        for phase in ("sampler", "stage"):
            t = time.perf_counter()
            rows.append(run(size, tile, args.steps, phase))
            print(f"  ran {size} px tile={tile} {phase} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    print("| output px | tile (latent) | measured | peak RSS (MB) | growth during the call (MB) | wall (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        what = "relay sampler loop" if r["phase"] == "sampler" else "whole relay stage (VAE tiled too)"
        if "error" in r:
            print(f"| {r['out']} | {r['tile']} | {what} | failed: {r['error']} | | |")
        else:
            print(f"| {r['out']} | {r['tile']} | {what} | {r['peak_rss_mb']:.0f} | {r['growth_mb']:.0f} | {r['wall_s']:.1f} |")


if __name__ == "__main__":
    main()
