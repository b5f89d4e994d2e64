"""What a training or distillation job asks of the machine (Snakemake ``resources:``), estimated as
:mod:`harness.resources` estimates generation: from the full-size parameter counts, the batch and the
resolution. Estimates, not measurements.

Device memory of a round: the student's float32 weights, gradients, AdamW moments (2) and EMA (5 x 4
bytes per parameter), the teacher in the run's dtype, the VAE, and activations of one micro-batch
(forward and backward: a multiple of the generation activations; with ``gradient_checkpointing`` much
less). T5 encodes the data once and is freed before the training starts.
"""

from __future__ import annotations

import math
from typing import Any

from harness import resources as R

#: bytes per parameter of the trained model: weights, gradients, two AdamW moments, EMA (float32)
TRAINED_BYTES = 5 * 4
#: backward activations as a multiple of one generation forward's (without / with checkpointing)
BACKWARD_ACTIVATIONS = 12
CHECKPOINTED_ACTIVATIONS = 3
#: one training step of a sample costs about three network forwards (forward + backward) of the
#: student plus the teacher's evaluations (two steps, CFG doubling in a first round)
STUDENT_FORWARDS = 3


def training_resources(config: dict[str, Any], stage: str, student_steps: int | None = None,
                       runtime: bool = True) -> R.JobResources:
    """One distillation round (``student_steps``) or training job (None) of ``stage``."""
    from models.registry import model_class, system_weight_keys

    from harness.training.rounds import stage_system

    d = config["distillation"]
    name, spec = stage_system(config, stage)
    cls = model_class(spec["model"])
    keys = system_weight_keys(name, spec)
    tiny = all(R._is_tiny(config, k) for k in keys)
    unet = 0 if tiny else cls.PARAMETERS["unet"]
    text = 0 if tiny else cls.PARAMETERS.get("text_encoder", 0)
    vae = 0 if tiny else cls.PARAMETERS.get("vae", 0)
    resolution = R.output_resolution(config, name)
    per_param = R.bytes_per_parameter(config)
    # T5 encodes the data once and is freed before training: the peak is the training phase's
    weights_mb = (unet * (TRAINED_BYTES + per_param) + vae * 4) / 2**20
    factor = CHECKPOINTED_ACTIVATIONS if d["gradient_checkpointing"] else BACKWARD_ACTIVATIONS
    activations_mb = d["batch_size"] * factor * R.ACTIVATION_MB_PER_1024PX_IMAGE * (resolution / 1024) ** 2
    if R.uses_gpu(config):
        gpu, gpu_mem = 1, math.ceil(R.CUDA_CONTEXT_MB + weights_mb + activations_mb)
        # the largest single component passes through host memory on its way to the device
        mem = math.ceil(R.HOST_BASE_MB + max(unet, text) * 4 / 2**20)
    else:
        gpu, gpu_mem, mem = 0, 0, math.ceil(R.HOST_BASE_MB + weights_mb + activations_mb)
    minutes = 0
    if runtime:
        minutes = R.slurm_minutes(R.MODEL_LOAD_S + _train_seconds(config, stage, name, spec, student_steps, tiny))
    return R.JobResources(gpu, gpu_mem, mem, minutes)


def _train_seconds(config, stage, name, spec, student_steps, tiny) -> float:
    from harness.flops import network_flops
    from models.registry import model_class

    if tiny:
        return 0.0
    d = config["distillation"]
    cls = model_class(spec["model"])
    params = cls.resolve_params(spec, name)
    (network, latent, forwards), = cls.denoiser_stages({**params, "distilled": True, "tile_size": None},
                                                       _input_resolution(config, spec))
    if student_steps is None:
        teacher_evals = 0
    else:  # two teacher steps, each doubled by CFG while the teacher has no guidance embedding (round 1)
        from harness.training.rounds import find_round

        teacher_evals = 2 * (1 if find_round(config, stage, student_steps).teacher_distilled else 2)
    flops = network_flops(network, tuple(latent)) * (STUDENT_FORWARDS + teacher_evals)
    samples = d["steps_per_round"] * d["batch_size"] * d["grad_accum"]
    return samples * flops / R.PAPER_DENOISER_FLOPS_PER_S


def _input_resolution(config, spec) -> int | None:
    upstream = spec.get("input")
    if not upstream:
        return None
    return R.output_resolution(config, upstream)
