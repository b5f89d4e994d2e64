"""Time cost with the paper's protocol: one batch of 4 prompts, the whole call timed.

Per system: build (weights from the config; ``random`` gives the full-size architecture with random
weights, which times exactly like the real model), one warm-up call, then ``repeats`` timed calls,
each bracketed by device synchronisation and covering text encoding, every stage (a relay system
includes its base stage) and the VAE. Peak device memory is recorded (on CUDA: the allocator's peak
since the system was built, weights included). Ratios to SDXL come from the same run. Beside every
timing, the performance model of :mod:`harness.flops`: the full-size denoisers' FLOPs per image, their
ratio to SDXL, the floor time at the GPU's dense bf16 peak and the measured time's MFU against it.

    python -m harness timecost --config config/timecost.yaml --out reports/timecost.md   # GPU, full size
    snakemake --cores all reports/timecost.md                                            # smoke: tiny, CPU
"""

from __future__ import annotations

import gc
import resource
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from harness.io import atomic_write_text
from harness.paper import paper_time_cost
from harness.prompts import load_prompts
from harness.seeds import sample_seed
from harness.systems import final_systems, stage_chain, steps_label


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_chain(config: dict[str, Any], name: str, cache: dict) -> list:
    """The built systems of a row, first stage first (e.g. CogView3 base then relay)."""
    from models.registry import build_system

    out = []
    for stage in stage_chain(config, name):
        if stage not in cache:
            spec = config["systems"][stage]
            cache[stage] = build_system(stage, spec, config["weights"], config["device"], config["dtype"]).build()
        out.append(cache[stage])
    return out


def chain_call(chain: list, prompts: list[str], seeds: list[int]) -> Callable[[], list]:
    def call():
        images = None
        for system in chain:
            images = system.generate(prompts, seeds, images)
        return images

    return call


def measure(call: Callable[[], Any], device: torch.device, warmup: int = 1, repeats: int = 3) -> dict[str, Any]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        call()
        _sync(device)
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        peak_label = f"{peak:.1f} GiB"
    else:
        peak_label = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB RSS (process)"
    return {"mean_s": statistics.mean(times), "min_s": min(times), "times": times, "peak": peak_label}


def run_timecost(config: dict[str, Any], out: str | Path, batch: int = 4, warmup: int = 1, repeats: int = 3) -> Path:
    # Prompt content does not change the cost (T5 and CLIP always see padded sequences).
    prompts = [p.text for p in load_prompts("smoke")[:batch]]
    seeds = [sample_seed(config["seed"], "timecost", str(i), 0) for i in range(batch)]
    rows, device, dtypes = [], None, set()
    for name in final_systems(config):
        cache: dict = {}
        chain = build_chain(config, name, cache)
        device = chain[-1].device
        dtypes.update(str(s.dtype).removeprefix("torch.") for s in chain)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        result = measure(chain_call(chain, prompts, seeds), device, warmup, repeats)
        rows.append({"system": name, "steps": steps_label(config, name), **result})
        print(f"{name}: {result['mean_s']:.3f} s per batch of {batch}")
        del chain, cache
        gc.collect()
        if device is not None and device.type == "cuda":
            torch.cuda.empty_cache()
    atomic_write_text(out, render(config, rows, device, sorted(dtypes), batch, repeats))
    return Path(out)


def _unet_flops(config: dict[str, Any], name: str) -> int | None:
    from harness.flops import unet_flops_per_image

    try:
        return unet_flops_per_image(config, name)
    except NotImplementedError:  # a model that states no full-size denoiser
        return None


def render(config: dict[str, Any], rows: list[dict], device, dtypes: list[str], batch: int, repeats: int) -> str:
    from harness.flops import A100_PEAK, dense_bf16_peak

    weights = set(config["weights"].values())
    comparable = device is not None and device.type == "cuda" and "tiny" not in weights
    peak = None
    if comparable:
        gpu = torch.cuda.get_device_name(device)
        peak = dense_bf16_peak(gpu)
        first = (f"> Time cost on {gpu} ({', '.join(dtypes)}, PyTorch SDPA), batch {batch}: comparable in kind to the "
                 "paper's A100 figures; compare ratios, since absolute times depend on the GPU.")
        no_floor = f"n/a ({gpu}: its dense bf16 peak is not in harness/flops.py)"
    else:
        why = "tiny random-weight models" if "tiny" in weights else "no GPU"
        first = (f"> **These figures are not comparable to the paper's** ({why}, device "
                 f"{device.type if device else '?'}): they show that the benchmark runs; run it on a GPU with "
                 "config/timecost.yaml for real figures.")
        no_floor = f"n/a ({device.type if device else '?'}{', tiny models' if 'tiny' in weights else ''}: timings not comparable)"
    sdxl = next((r["mean_s"] for r in rows if r["system"] == "sdxl"), None)
    flops = {r["system"]: _unet_flops(config, r["system"]) for r in rows}
    sdxl_flops = flops.get("sdxl")
    floor_head = f"UNet floor at {peak / 1e12:.0f} TFLOP/s (s / batch)" if peak else "UNet floor (s / batch)"
    lines = [first, "", f"# Time cost (batch of {batch})", "",
             "| System | Steps | s / batch (mean) | min | ratio to SDXL (this run) | paper (A100) | paper ratio | peak memory "
             f"| UNet TFLOP / image | FLOP ratio to SDXL | {floor_head} | MFU | paper MFU (A100) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['mean_s'] / sdxl:.3f}" if sdxl else "–"
        paper, paper_sdxl = paper_time_cost(r["system"]), paper_time_cost("sdxl")
        paper_ratio = f"{paper / paper_sdxl:.3f}" if paper and paper_sdxl else "–"
        f = flops[r["system"]]
        tflop = f"{f / 1e12:.2f}" if f is not None else "–"
        flop_ratio = f"{f / sdxl_flops:.3f}" if f is not None and sdxl_flops else "–"
        floor = f * batch / peak if f is not None and peak else None
        floor_cell = f"{floor:.3f}" if floor is not None else ("–" if f is None else "n/a")
        mfu = f"{floor / r['mean_s']:.1%}" if floor is not None else ("–" if f is None else "n/a")
        # The paper's times are at its settings: against a tiny (smoke) config's FLOPs they mean nothing.
        paper_mfu = f"{f * 4 / A100_PEAK / paper:.1%}" if f is not None and paper and "tiny" not in weights else "–"
        lines.append(f"| {r['system']} | {r['steps']} | {r['mean_s']:.3f} | {r['min_s']:.3f} | {ratio} | "
                     f"{f'{paper:.2f} s' if paper else '–'} | {paper_ratio} | {r['peak']} | "
                     f"{tflop} | {flop_ratio} | {floor_cell} | {mfu} | {paper_mfu} |")
    lines += ["", f"Protocol: 1 warm-up call, then {repeats} timed calls of the whole pipeline (text encoding, all "
              "stages, VAE), each between device synchronisations. Relay systems include their base stage.",
              "",
              "Performance model (harness/flops.py): *UNet TFLOP / image* counts the denoiser networks only, "
              "for the full-size architectures (the paper's models, whatever weights this run built) at this "
              "config's resolutions, steps and guidance: every evaluation (x2 under classifier-free guidance; "
              "LCM-SDXL and the distilled CogView3 embed their guidance and run none), every stage (a relay row "
              "includes its base stage; Stable Cascade counts its prior at 1/42.67 and its decoder at 10.67x that "
              "latent side). One forward at batch 1 is counted by torch.utils.flop_counter on the meta device "
              "(matrix products, convolutions and attention, a multiply-add being 2 FLOPs; norms and elementwise "
              "work are not counted). Text encoders (T5-XXL, CLIP), the VAE / VQGAN and the sampler are "
              "excluded, which is why a distilled system's time ratio is larger than its FLOP ratio: its few UNet "
              "calls leave the encoders and the VAE to dominate.",
              "",
              f"*UNet floor* = FLOPs x {batch} images / the GPU's dense bf16 tensor peak: no run can be faster; "
              "*MFU* = floor / measured mean time. *paper MFU (A100)* = the same floor at the A100's 312 TFLOP/s "
              "over the paper's time (batch 4; shown for full-size configs, whose settings should be the paper's)."
              + (f" Floor and MFU: {no_floor}." if not peak else
                 " float32 parts of this run cannot reach the bf16 peak." if "float32" in dtypes else "")]
    return "\n".join(lines) + "\n"
