"""Time cost with the paper's protocol: one batch of 4 prompts, the whole call timed.

Per system: build (weights from the config; ``random`` gives the full-size architecture with random
weights, which times exactly like the real model), one warm-up call, then ``repeats`` timed calls,
each bracketed by device synchronisation and covering text encoding, every stage (a relay system
includes its base stage) and the VAE. Peak device memory is recorded (on CUDA: the allocator's peak
since the system was built, weights included). Ratios to SDXL come from the same run.

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


def render(config: dict[str, Any], rows: list[dict], device, dtypes: list[str], batch: int, repeats: int) -> str:
    weights = set(config["weights"].values())
    comparable = device is not None and device.type == "cuda" and "tiny" not in weights
    if comparable:
        gpu = torch.cuda.get_device_name(device)
        first = (f"> Time cost on {gpu} ({', '.join(dtypes)}, PyTorch SDPA), batch {batch}: comparable in kind to the "
                 "paper's A100 figures; compare ratios, since absolute times depend on the GPU.")
    else:
        why = "tiny random-weight models" if "tiny" in weights else "no GPU"
        first = (f"> **These figures are not comparable to the paper's** ({why}, device "
                 f"{device.type if device else '?'}): they show that the benchmark runs; run it on a GPU with "
                 "config/timecost.yaml for real figures.")
    sdxl = next((r["mean_s"] for r in rows if r["system"] == "sdxl"), None)
    lines = [first, "", "# Time cost (batch of 4)", "",
             "| System | Steps | s / batch (mean) | min | ratio to SDXL (this run) | paper (A100) | paper ratio | peak memory |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['mean_s'] / sdxl:.3f}" if sdxl else "–"
        paper, paper_sdxl = paper_time_cost(r["system"]), paper_time_cost("sdxl")
        paper_ratio = f"{paper / paper_sdxl:.3f}" if paper and paper_sdxl else "–"
        lines.append(f"| {r['system']} | {r['steps']} | {r['mean_s']:.3f} | {r['min_s']:.3f} | {ratio} | "
                     f"{f'{paper:.2f} s' if paper else '–'} | {paper_ratio} | {r['peak']} |")
    lines += ["", f"Protocol: 1 warm-up call, then {repeats} timed calls of the whole pipeline (text encoding, all "
              "stages, VAE), each between device synchronisations. Relay systems include their base stage."]
    return "\n".join(lines) + "\n"
