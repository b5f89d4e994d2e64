"""What a job that loads a model asks of the machine: a GPU, device memory, host memory, run time.

The rules declare these as Snakemake resources (``gpu``, ``gpu_mem_mb``, ``mem_mb``, ``runtime``),
computed here from the facts the registries declare: each system class's and scorer class's
full-size parameter counts (``PARAMETERS``; the models' are recounted on the meta device by
tests/test_resources.py, the scorers' come from open_clip counts or are stated as approximate), the run's dtype, device, batch size and resolution, and the prompt count.
They are **estimates**: they size SLURM requests and let Snakemake keep concurrent jobs within a
node; they are not measurements.

Run time (SLURM ``--time``) comes from a time model fitted to the paper's time costs
(:func:`seconds_per_image`): the paper's six Table 1 rows, batch 4 on one A100, against our FLOP
counts of the same configurations (:mod:`harness.flops`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

#: the device memory every CUDA process holds beyond its tensors (context, cuBLAS/cuDNN workspaces,
#: allocator slack), and the host memory of a job's Python with torch, diffusers and transformers
CUDA_CONTEXT_MB = 1536
HOST_BASE_MB = 3072
#: activations per image at 1024 px (the peak is the VAE decoder's last up block: 128-channel
#: 1024x1024 maps in half precision, several alive at once); scales with the pixel count
ACTIVATION_MB_PER_1024PX_IMAGE = 3072
#: half-precision runs (``auto`` on a GPU is fp16 or bf16 per model); float32 and the CPU use 4 bytes
BYTES_HALF, BYTES_FULL = 2, 4

#: The time model, fitted by least squares to the paper's Table 1 (seconds per image = time cost / 4):
#: t = overhead + denoiser FLOPs / rate. FLOPs per image from harness.flops for config/paper.yaml's
#: rows: SDXL 676.1 T, Stable Cascade 224.9 T, CogView3 327.4 T, LCM-SDXL 27.0 T, distill 4+1 14.5 T,
#: 8+2 29.0 T; paper seconds per image 4.918, 2.708, 2.583, 0.515, 0.368, 0.490. Fit: 0.442 s per
#: image outside the denoiser (text encoders, VAE, the rest) and 145.5 TFLOP/s (47 % of the A100's
#: 312 T bf16 peak). Residuals: +3 % SDXL, -27 % Stable Cascade, +4 % CogView3, +22 % LCM, +47 % and
#: +31 % for the distilled rows (their time is mostly T5 and the VAE). tests/test_resources.py refits.
PAPER_OVERHEAD_S = 0.442
PAPER_DENOISER_FLOPS_PER_S = 145.5e12
#: reading a job's weights from local disk and moving them to the GPU (T5-XXL alone is 9.5 GB in
#: bf16), once per generation job; a scorer's, once per scoring job
MODEL_LOAD_S = 120
SCORER_LOAD_S = 60
#: SLURM --time = margin x (loading + images x seconds per image), at least MIN_RUNTIME_MINUTES: a cold
#: shared filesystem and a GPU slower than the paper's A100 must not get a job killed before it is done
#: (a job stopped at its limit is resubmitted once by the profile and resumes; raise `shards` to make
#: jobs fit a partition's MaxTime: the estimate is per shard)
RUNTIME_MARGIN = 3.0
MIN_RUNTIME_MINUTES = 30
#: scoring: seconds per image on an A100 for the largest scorer (ViT-H-14 at batch 16), with margin
SCORE_SECONDS_PER_IMAGE = 0.05
SCORER_INPUT_BOUND_PX = 512


def slurm_minutes(seconds: float) -> int:
    """The run-time limit (minutes) of a job estimated at ``seconds`` on the paper's A100."""
    return max(MIN_RUNTIME_MINUTES, math.ceil(RUNTIME_MARGIN * seconds / 60))


@dataclass(frozen=True)
class JobResources:
    gpu: int  # GPUs the job needs (0: it runs on the CPU)
    gpu_mem_mb: int  # device memory
    mem_mb: int  # host memory
    runtime: int  # minutes (SLURM --time)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def uses_gpu(config: dict[str, Any]) -> bool:
    """Whether jobs that load a model run on a GPU: every device but ``cpu`` (``auto`` means the GPU
    the job is given; on a machine without one, ``gpu`` is not constrained and it runs on the CPU)."""
    return config["device"] != "cpu"


def bytes_per_parameter(config: dict[str, Any]) -> int:
    return BYTES_FULL if config["dtype"] == "float32" or not uses_gpu(config) else BYTES_HALF


def _memory(config: dict[str, Any], parameters: int, images_at_once: int, resolution: int) -> tuple[int, int, int]:
    """(gpu, gpu_mem_mb, mem_mb) of a job that holds ``parameters`` and works on ``images_at_once``."""
    weights_mb = parameters * bytes_per_parameter(config) / 2**20
    activations_mb = images_at_once * ACTIVATION_MB_PER_1024PX_IMAGE * (resolution / 1024) ** 2
    if uses_gpu(config):
        # weights are read into host memory before they move to the device (one component at a time
        # at most, but a safetensors file is mapped whole): the host holds them once at the peak
        return 1, math.ceil(CUDA_CONTEXT_MB + weights_mb + activations_mb), math.ceil(HOST_BASE_MB + weights_mb)
    return 0, 0, math.ceil(HOST_BASE_MB + weights_mb + activations_mb)


def _is_tiny(config: dict[str, Any], key: str) -> bool:
    from models.base import WeightsSpec

    return WeightsSpec(key, str(config["weights"].get(key, "tiny"))).is_tiny


def images_per_job(config: dict[str, Any], benchmark: str) -> int:
    from harness.prompts import load_prompts

    prompts = len(load_prompts(benchmark, config["data_dir"], config["num_prompts"]))
    return math.ceil(prompts * config["samples_per_prompt"] / config["shards"])


def generation_resources(config: dict[str, Any], benchmark: str, system: str, runtime: bool = True) -> JobResources:
    """One generation job (one shard) of ``system`` on ``benchmark``. ``runtime=False`` skips the
    time model (it counts FLOPs on full-size networks: seconds; local runs do not use it)."""
    from models.registry import model_class, system_weight_keys

    spec = config["systems"][system]
    cls = model_class(spec["model"])
    keys = system_weight_keys(system, spec)
    # tiny builds (the smoke profile) have a few million parameters: only the base figures count
    parameters = 0 if all(_is_tiny(config, k) for k in keys) else sum(cls.PARAMETERS.values())
    resolution = output_resolution(config, system)
    gpu, gpu_mem, mem = _memory(config, parameters, config["batch_size"], resolution)
    minutes = 0
    if runtime:
        seconds = images_per_job(config, benchmark) * seconds_per_image(config, system)
        minutes = slurm_minutes(MODEL_LOAD_S + seconds)
    return JobResources(gpu, gpu_mem, mem, minutes)


def scoring_resources(config: dict[str, Any], benchmark: str, metric: str, systems: list[str]) -> JobResources:
    """One scoring job: ``metric`` over the images of ``systems`` on ``benchmark``, in batches."""
    from harness.scorers.registry import scorer_class

    scorer = scorer_class(metric)
    if scorer.NEEDS_WEIGHTS:
        parameters = 0 if _is_tiny(config, metric) else scorer.PARAMETERS
        # scorers resize to their own input (224 px for CLIP, 299 for Inception, 384 for BLIP) before the
        # network sees an image; 512 px bounds those with room for the attention maps
        gpu, gpu_mem, mem = _memory(config, parameters, config["batch_size"], SCORER_INPUT_BOUND_PX)
    else:  # analytic (the micro-world judge): no model, never a GPU
        gpu, gpu_mem, mem = 0, 0, math.ceil(HOST_BASE_MB)
    images = images_per_job(config, benchmark) * config["shards"] * len(systems)
    minutes = slurm_minutes(SCORER_LOAD_S + images * SCORE_SECONDS_PER_IMAGE)
    return JobResources(gpu, gpu_mem, mem, minutes)


def output_resolution(config: dict[str, Any], system: str) -> int:
    """The resolution (px) of the images ``system`` writes (its last stage's)."""
    from harness.systems import stage_chain
    from models.registry import model_class

    resolution = None
    for stage in stage_chain(config, system):
        spec = config["systems"][stage]
        cls = model_class(spec["model"])
        resolution = cls.unet_calls(cls.resolve_params(spec, stage), resolution)[-1][1]
    return int(resolution)


# ---- the time model -----------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _own_flops(systems_key: str, name: str) -> int:
    import json

    from harness.flops import stage_costs

    config = json.loads(systems_key)
    return sum(cost.flops for cost in stage_costs(config, name) if cost.system == name)


def seconds_per_image(config: dict[str, Any], system: str) -> float:
    """Estimated seconds one image of ``system``'s own stages takes on the paper's A100 (batch 4),
    from the paper-fitted time model. A relay job's base images are made by another job, and each
    job pays the overhead (text encoder, VAE) itself, so base + relay jobs cost one overhead more
    than the paper's single process (CogView3: 3.13 s against the paper's 2.58 s per image)."""
    import json

    key = json.dumps({"systems": config["systems"]}, sort_keys=True)
    return PAPER_OVERHEAD_S + _own_flops(key, system) / PAPER_DENOISER_FLOPS_PER_S


def fit_paper_time_model(config: dict[str, Any], paper_rows: dict[str, float]) -> tuple[float, float]:
    """Least-squares (overhead s, FLOP/s) of t = overhead + flops / rate over the paper's rows
    (system name -> seconds per batch of 4), with each row's FLOPs over all its stages."""
    import numpy as np

    from harness.flops import unet_flops_per_image

    flops = np.array([unet_flops_per_image(config, name) for name in paper_rows], dtype=float)
    seconds = np.array([paper_rows[name] / 4 for name in paper_rows])
    (overhead, per_flop), *_ = np.linalg.lstsq(np.stack([np.ones_like(flops), flops], 1), seconds, rcond=None)
    return float(overhead), float(1 / per_flop)


def largest(jobs: list[JobResources], runtime: int) -> JobResources:
    """A job that runs these one after another (the benchmarks): the largest memory, ``runtime`` minutes."""
    return JobResources(max((j.gpu for j in jobs), default=0), max((j.gpu_mem_mb for j in jobs), default=0),
                        max((j.mem_mb for j in jobs), default=HOST_BASE_MB), runtime)


def timecost_resources(config: dict[str, Any]) -> JobResources:
    """The time-cost benchmark: each table row in turn, all its stages built at once (a relay's base
    UNet beside its own), one batch each (its config has full-size models)."""
    from harness.systems import final_systems, stage_chain

    benchmark = config["benchmarks"][0]
    rows = []
    for row in final_systems(config):
        stages = [generation_resources(config, benchmark, s, runtime=False) for s in stage_chain(config, row)]
        extra = [s.gpu_mem_mb - CUDA_CONTEXT_MB for s in stages[:-1]]  # one CUDA context per process
        rows.append(JobResources(stages[-1].gpu, stages[-1].gpu_mem_mb + sum(extra),
                                 stages[-1].mem_mb + sum(s.mem_mb - HOST_BASE_MB for s in stages[:-1]), 0))
    return largest(rows, slurm_minutes(len(rows) * (MODEL_LOAD_S + 300)))  # a few warm-up and timed batches each


def scorer_speed_resources(config: dict[str, Any], metrics: list[str]) -> JobResources:
    """The scorer-speed benchmark: each full-size scorer and its reference package in turn, on the CPU
    in float32 (the rule passes no --device; the CLI's default is cpu)."""
    from harness.scorers.registry import scorer_class

    largest_scorer = max(scorer_class(m).PARAMETERS for m in metrics)
    _, _, mem = _memory(config | {"device": "cpu", "dtype": "float32"}, 2 * largest_scorer,  # ours + the reference
                        config["batch_size"], SCORER_INPUT_BOUND_PX)
    return JobResources(0, 0, mem, slurm_minutes(2 * len(metrics) * (SCORER_LOAD_S + 300)))


# ---- wall time of a table on G GPUs (README "Running on a GPU node") ------------------------------
@dataclass(frozen=True)
class PlannedJob:
    name: str
    seconds: float
    after: tuple[str, ...] = ()


def table_jobs(config: dict[str, Any], table: str) -> list[PlannedJob]:
    """The generation and scoring jobs behind one table, as the DAG makes them (one per shard;
    a relay's shards wait for all of its base's), with their estimated A100 seconds."""
    from harness.ablations import tr_sweep_points
    from harness.scorers.registry import metric_applies
    from harness.systems import final_systems, stage_chain
    from harness.tables import (table1_benchmarks, table1_metrics, table2_benchmarks, table2_metrics,
                                table3_benchmark, table3_metrics)

    if table == "table1":
        benchmarks, rows, metrics = table1_benchmarks(config), final_systems(config), table1_metrics(config)
    elif table == "table2":
        benchmarks, rows, metrics = table2_benchmarks(config), final_systems(config), table2_metrics(config)
    elif table == "table3":
        benchmarks, rows, metrics = [table3_benchmark(config)], [s for _, s in tr_sweep_points(config)], table3_metrics(config)
    else:
        raise ValueError(f"no estimate for {table!r}; known: table1, table2, table3")
    benchmarks = [b for b in benchmarks if b in config["benchmarks"]]
    shards = config["shards"]
    jobs: list[PlannedJob] = []
    for b in benchmarks:
        per_job = images_per_job(config, b)
        systems = list(dict.fromkeys(s for row in rows for s in stage_chain(config, row)))
        for s in systems:
            upstream = config["systems"][s].get("input")
            after = tuple(f"generate {b}/{upstream} {i}" for i in range(shards)) if upstream else ()
            jobs += [PlannedJob(f"generate {b}/{s} {i}", MODEL_LOAD_S + per_job * seconds_per_image(config, s), after)
                     for i in range(shards)]
        generated = tuple(f"generate {b}/{s} {i}" for s in rows for i in range(shards))
        images = per_job * shards * len(rows)
        jobs += [PlannedJob(f"score {b}/{m}", SCORER_LOAD_S + images * SCORE_SECONDS_PER_IMAGE, generated)
                 for m in metrics if metric_applies(m, b)]
    return jobs


def makespan(jobs: list[PlannedJob], gpus: int) -> float:
    """Seconds until the last job ends when ``gpus`` GPUs run one job each, a ready job starting on
    the first free GPU, longest first (as Snakemake's greedy scheduler with `gpu` resources)."""
    done: dict[str, float] = {}
    pending = list(jobs)
    free = [0.0] * gpus
    while pending:
        ready = [j for j in pending if all(a in done for a in j.after)]
        if not ready:
            raise ValueError(f"jobs wait on jobs that do not exist: {pending[0].after}")
        first_free = min(free)

        def start_of(j: PlannedJob) -> float:
            return max([first_free] + [done[a] for a in j.after])

        job = min(ready, key=lambda j: (start_of(j), -j.seconds))  # the next to start; longest first
        start = start_of(job)
        gpu = free.index(first_free)
        free[gpu] = done[job.name] = start + job.seconds
        pending.remove(job)
    return max(done.values(), default=0.0)


def wall_time_table(config: dict[str, Any], gpu_counts: list[int], tables: tuple[str, ...] = ("table1", "table2", "table3")) -> str:
    """Markdown: per table, images generated, GPU-hours, and hours of wall time on each GPU count
    (with `shards: 1`, and with `shards` = the GPU count), all estimates on A100s."""
    head = ["target", "images", "GPU-hours"]
    for g in gpu_counts:
        head += [f"{g} GPU{'s' if g > 1 else ''}, shards 1"] + ([f"{g} GPUs, shards {g}"] if g > 1 else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for table in tables:
        jobs = table_jobs(config, table)
        if not jobs:
            continue
        images = sum(images_per_job(config, j.name.split()[1].split("/")[0]) for j in jobs if j.name.startswith("generate"))
        cells = [table, f"{images:,}", f"{sum(j.seconds for j in jobs) / 3600:.1f}"]
        for g in gpu_counts:
            cells.append(f"{makespan(jobs, g) / 3600:.1f} h")
            if g > 1:
                cells.append(f"{makespan(table_jobs(config | {'shards': g}, table), g) / 3600:.1f} h")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
