"""Peak memory of a set-metric feature pass over N images, all decoded at once (the old scoring
code) against streamed one batch at a time (harness.scoring now), side by side.

    python benchmarks/scoring_memory.py [--images 500] [--size 1024]

Each mode runs in a fresh process (the tiny FID feature extractor, CPU) and reports its peak RSS
(ru_maxrss); the images are written once as PNGs, as generation writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_images(folder: Path, n: int, size: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size]
    paths = []
    for i in range(n):  # smooth gradients: cheap to encode, same decoded size as any image
        a = np.stack([(xx + i) % 256, (yy * 2 + i) % 256, (xx + yy) % 256], -1).astype(np.uint8)
        p = folder / f"{i:04d}.png"
        Image.fromarray(a).save(p)
        paths.append(p)
    return paths


def feature_pass(mode: str, paths: list[str]) -> dict:
    from PIL import Image

    from harness.scorers.registry import build_scorer

    scorer = build_scorer("fid", {"fid": "tiny"}, "cpu", "float32", 16)

    def opened():
        for p in paths:
            with Image.open(p) as im:
                yield im.convert("RGB")

    images = list(opened()) if mode == "all-at-once" else opened()
    feats = scorer.features(images)
    return {"mode": mode, "features": list(feats.shape),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--paths", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:  # the child
        print(json.dumps(feature_pass(args.mode, json.loads(Path(args.paths).read_text()))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(p) for p in write_images(Path(tmp), args.images, args.size)]
        listing = Path(tmp) / "paths.json"
        listing.write_text(json.dumps(paths))
        print(f"{args.images} images of {args.size}x{args.size} px, tiny FID extractor, batch 16, CPU")
        print("| mode | peak RSS (MiB) |\n|---|---:|")
        for mode in ("all-at-once", "streamed"):
            out = subprocess.run([sys.executable, __file__, "--mode", mode, "--paths", str(listing)], cwd=ROOT,
                                 capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                                                  "HF_HUB_OFFLINE": "1"})
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {mode} | {r['peak_rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
