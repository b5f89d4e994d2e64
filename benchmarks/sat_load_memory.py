"""Peak host memory of loading a full-size CogView3 SAT checkpoint: the harness's loader against the
previous one (fp32 model materialised on the CPU, the whole checkpoint read into RAM, then copied).

    python benchmarks/sat_load_memory.py --checkpoint /tmp/sat-full [--dtype bfloat16]

Writes a random full-size fp16 checkpoint in the official layout first if the folder has none
(5.8 GB; the official files are fp16). Each loader runs in a fresh process; the script prints the
peak anonymous memory (process-private RAM, sampled every 20 ms) and the peak RSS (which also counts
file pages of the memory-mapped checkpoint, page cache the kernel can drop under pressure).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _measure(fn) -> dict[str, float]:
    peak = {"anon": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak["anon"] = max(peak["anon"], _status_kb("RssAnon"))
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    peak["anon"] = max(peak["anon"], _status_kb("RssAnon"))
    done.set()
    return {"peak_anon_gb": peak["anon"] / 2**20, "peak_rss_gb": _status_kb("VmHWM") / 2**20, "seconds": seconds}


def load_harness(folder: Path, dtype):
    from models.cogview3.checkpoint import load_sat_unet

    return load_sat_unet(folder, None, "cpu", dtype)


def load_previous(folder: Path, dtype):
    """The previous loader's steps: meta build, to_empty on the CPU in fp32, torch.load, copy, cast."""
    import torch

    from models.cogview3.checkpoint import SAT_PREFIX, sat_key_map, sat_state_file
    from models.cogview3.unet import build_unet, unet_config

    with torch.device("meta"):
        unet = build_unet(unet_config(None))
    unet = unet.to_empty(device="cpu")
    state = torch.load(sat_state_file(folder), map_location="cpu", weights_only=True)["module"]
    mapping = sat_key_map(unet.config, list(unet.state_dict()))
    unet.load_state_dict({d: state[s] for d, s in mapping.items() if s.startswith(SAT_PREFIX)}, strict=True)
    return unet.to(dtype)


def child(which: str, folder: str, dtype_name: str) -> None:
    import torch

    dtype = getattr(torch, dtype_name)
    fn = {"harness": load_harness, "previous": load_previous}[which]
    print(json.dumps(_measure(lambda: fn(Path(folder), dtype))))


def write_checkpoint(folder: Path) -> None:
    import torch

    from models.cogview3.checkpoint import save_sat_unet
    from models.cogview3.unet import build_unet, unet_config

    torch.manual_seed(0)
    with torch.device("cpu"):
        unet = build_unet(unet_config(None)).half()
    save_sat_unet(unet, folder)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="/tmp/sat-full")
    p.add_argument("--dtype", default="bfloat16", help="target dtype (bfloat16: as on a GPU; float32: the CPU default)")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(*args.child)
    folder = Path(args.checkpoint)
    if not (folder / "latest").is_file():
        print(f"writing a random full-size fp16 SAT checkpoint to {folder} ...", flush=True)
        write_checkpoint(folder)
    size = sum(f.stat().st_size for f in folder.rglob("*.pt")) / 2**30
    print(f"checkpoint {folder}: {size:.2f} GB; target dtype {args.dtype}; loading on the CPU\n")
    print("| loader | peak anonymous RAM (GB) | peak RSS (GB) | seconds |")
    print("|---|---:|---:|---:|")
    for which in ("harness", "previous"):
        out = subprocess.run([sys.executable, __file__, "--child", which, str(folder), args.dtype],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {which} | {r['peak_anon_gb']:.2f} | {r['peak_rss_gb']:.2f} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
