"""One training loop for every objective: AdamW, an EMA of the weights, bf16 autocast on CUDA,
gradient accumulation, a fixed seed per step, atomic checkpoints and resume after a kill.

An *objective* is a callable ``objective(model, batch, generator) -> per-sample loss [B]``; ``batch``
is a dict of tensors (the rows of the data for this micro-batch, on the device) and ``generator`` a
CPU ``torch.Generator`` the objective draws all its randomness from (noise, timesteps, w). The
objectives of :mod:`models.cogview3.training` (relay loss, base loss, progressive distillation) all
have this form; the loop knows nothing else about them.

Determinism. Step ``s`` (counted from 0) draws its samples and its micro-batch generators from seeds
derived from ``(settings.seed, s)`` alone, so the step does not depend on what ran before it: a run
resumed from the checkpoint of step ``k`` does exactly what the uninterrupted run did from step ``k``
(the checkpoint holds the model, the EMA, the optimizer state, the step, the losses so far and the
global RNG states), and ends with the same weights (bit for bit on the CPU; on a GPU up to the
nondeterminism of its kernels).

Checkpoints are written every ``checkpoint_every`` steps and at the end, to a temporary file in the
same folder, fsynced, then renamed over the previous one (``os.replace``), so a kill at any moment
leaves either the old or the new checkpoint, never a torn one. A checkpoint made with other
settings, another teacher or other data (its ``fingerprint``) is not resumed from.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from harness.io import atomic_writer

log = logging.getLogger(__name__)

Objective = Callable[[torch.nn.Module, dict[str, torch.Tensor], torch.Generator], torch.Tensor]
CHECKPOINT_FORMAT = "harness-train/1"
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass(frozen=True)
class LoopSettings:
    """What one run of the loop does (config ``distillation``, README "Training and distillation")."""

    steps: int  # optimizer steps in all (a resumed run counts the steps already done)
    batch_size: int = 1  # samples per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step: the effective batch is batch_size * grad_accum
    lr: float = 1e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    warmup_steps: int = 0  # linear learning-rate warm-up from lr / warmup_steps
    max_grad_norm: float | None = 1.0  # gradient clipping (None: off)
    ema_decay: float = 0.999  # ema <- decay * ema + (1 - decay) * weights after every step
    checkpoint_every: int = 500
    seed: int = 0
    log_every: int = 10
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on the CPU; or "fp32", "bf16"

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.grad_accum

    def identity(self) -> dict[str, Any]:
        """The settings that change the weights (not how often the loop logs or checkpoints)."""
        out = asdict(self)
        for key in ("steps", "checkpoint_every", "log_every"):
            out.pop(key)
        return out


@dataclass
class LoopResult:
    ema: dict[str, torch.Tensor]  # the EMA weights (float32, on the CPU): what gets exported
    losses: list[float]  # per step, the mean per-sample loss of the effective batch
    steps: int
    resumed_from: int  # the step the run started at (0: from scratch)
    wall_s: float  # this run's time in the loop
    train_wall_s: float  # loop time of every run that led to these weights (resumes added up)
    precision: str
    device: str
    checkpoints: list[int] = field(default_factory=list)


# ---- seeds ---------------------------------------------------------------------------------------


def derived_seed(*parts: Any) -> int:
    """A 63-bit seed from the parts (run seed, step, micro-batch): the same on every machine."""
    key = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 1


def step_indices(n: int, batch: int, seed: int, step: int) -> torch.Tensor:
    """The data rows of step ``step``: ``batch`` distinct rows when there are enough, else drawn with
    replacement; a function of (seed, step) only."""
    g = torch.Generator().manual_seed(derived_seed(seed, "rows", step))
    if batch <= n:
        return torch.randperm(n, generator=g)[:batch]
    return torch.randint(n, (batch,), generator=g)


def micro_generator(seed: int, step: int, micro: int) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(seed, "objective", step, micro))


# ---- EMA -----------------------------------------------------------------------------------------


def ema_init(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The EMA's starting point: a float32 copy of the model's state (parameters and buffers)."""
    return {k: v.detach().float().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def ema_update(ema: dict[str, torch.Tensor], model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * weights, for every parameter; buffers are copied."""
    params = dict(model.named_parameters())
    for name, value in model.state_dict().items():
        target = ema[name]
        if name in params and params[name].requires_grad:
            target.mul_(decay).add_(value.detach().to(target.device, target.dtype), alpha=1.0 - decay)
        else:
            target.copy_(value.detach())


# ---- checkpoints ---------------------------------------------------------------------------------


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` crash-safely: a temporary file in the same folder, fsync, then ``os.replace``.

    :func:`harness.io.atomic_writer`, streamed: a checkpoint of the full-size model (weights, EMA,
    optimizer: about 46 GB) must not be built in memory first; the folder is synced too.
    """
    path = Path(path)
    with atomic_writer(path) as f:
        torch.save(obj, f)
    try:  # the rename itself survives a power cut once the folder is synced
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def read_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when there is none or it is not one of ours."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a file from elsewhere: never resume from it, never crash on it
        log.warning("cannot read the training checkpoint %s (%s); starting over", path, err)
        return None
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        log.warning("%s is not a training checkpoint of this harness; starting over", path)
        return None
    return blob


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- the loop ------------------------------------------------------------------------------------


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 autocast on CUDA (weights, gradients, optimizer and EMA stay float32), fp32 on
    the CPU. bf16 on the CPU is allowed (slow; for tests of the code path)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def _autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def learning_rate(settings: LoopSettings, step: int) -> float:
    if settings.warmup_steps and step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    return settings.lr


def make_optimizer(model: torch.nn.Module, settings: LoopSettings) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    # foreach=False: the same update order on every device and thread count (resume equality)
    return torch.optim.AdamW(params, lr=settings.lr, betas=tuple(settings.betas), eps=settings.adam_eps,
                             weight_decay=settings.weight_decay, foreach=False)


def train_loop(
    model: torch.nn.Module,
    objective: Objective,
    data: Mapping[str, torch.Tensor],
    settings: LoopSettings,
    state_dir: str | Path,
    *,
    fingerprint: str = "",
    device: str | torch.device | None = None,
    progress: bool = True,
    describe: str = "train",
    on_checkpoint: Callable[[int], None] | None = None,
) -> LoopResult:
    """Train ``model`` (in place) for ``settings.steps`` optimizer steps; return the EMA weights.

    ``data``: tensors with one row per training example (first dimension), kept where they are and
    moved to the device one micro-batch at a time. ``state_dir``: where the checkpoint lives
    (``checkpoint.pt``); a checkpoint there with the same ``fingerprint`` is resumed from.
    ``model`` must hold float32 weights (the master copy; autocast computes in bf16 on CUDA).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    precision = resolve_precision(settings.precision, device)
    n = _rows(data)
    state_dir = Path(state_dir)
    ckpt_path = state_dir / CHECKPOINT_NAME
    model.to(device).train()
    optimizer = make_optimizer(model, settings)
    ema = ema_init(model)
    identity = {"fingerprint": fingerprint, "settings": settings.identity()}
    losses: list[float] = []
    start, prior_wall = 0, 0.0

    blob = read_checkpoint(ckpt_path)
    if blob is not None and blob.get("identity") != identity:
        log.warning("the checkpoint %s was made with other settings, teacher or data; starting over", ckpt_path)
        blob = None
    if blob is not None and blob["step"] > settings.steps:
        log.warning("the checkpoint %s is at step %d, past the %d steps asked for; starting over", ckpt_path,
                    blob["step"], settings.steps)
        blob = None
    if blob is not None:
        model.load_state_dict(blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
        ema = {k: v.float().to(device) for k, v in blob["ema"].items()}
        losses = list(blob["losses"])
        start, prior_wall = int(blob["step"]), float(blob.get("train_wall_s", 0.0))
        _set_rng_state(blob["rng"])
        log.info("resuming from %s at step %d of %d", ckpt_path, start, settings.steps)
    del blob

    def save(step: int, wall: float) -> None:
        atomic_torch_save({
            "format": CHECKPOINT_FORMAT, "identity": identity, "step": step, "model": model.state_dict(),
            "ema": ema, "optimizer": optimizer.state_dict(), "rng": _rng_state(), "losses": losses,
            "train_wall_s": wall,
        }, ckpt_path)
        if on_checkpoint is not None:
            on_checkpoint(step)

    bar = None
    if progress and start < settings.steps:
        from tqdm import tqdm

        bar = tqdm(total=settings.steps, initial=start, desc=describe, unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    written: list[int] = []
    params = [p for p in model.parameters() if p.requires_grad]
    for step in range(start, settings.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(settings, step)
        rows = step_indices(n, settings.effective_batch, settings.seed, step)
        total = 0.0
        for micro in range(settings.grad_accum):
            idx = rows[micro * settings.batch_size:(micro + 1) * settings.batch_size]
            batch = {k: v[idx].to(device, non_blocking=True) for k, v in data.items()}
            with _autocast(precision, device):
                per_sample = objective(model, batch, micro_generator(settings.seed, step, micro))
            per_sample = per_sample.float()
            if per_sample.shape != (len(idx),):
                raise ValueError(f"the objective returned a loss of shape {tuple(per_sample.shape)}; one value per "
                                 f"sample ({len(idx)}) is expected")
            (per_sample.mean() / settings.grad_accum).backward()
            total += float(per_sample.detach().sum())
        loss = total / settings.effective_batch
        if not math.isfinite(loss):
            raise FloatingPointError(f"{describe}: the loss is {loss} at step {step + 1}; lower the learning rate "
                                     "(config distillation.lr) or check the data")
        if settings.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema_update(ema, model, settings.ema_decay)
        losses.append(loss)
        done = step + 1
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            bar.update(1)
        if done % settings.log_every == 0 or done == settings.steps:
            recent = losses[-settings.log_every:]
            log.info("%s: step %d/%d, loss %.5g (mean of the last %d: %.5g), lr %.3g", describe, done, settings.steps,
                     loss, len(recent), sum(recent) / len(recent), learning_rate(settings, step))
        if done % settings.checkpoint_every == 0 or done == settings.steps:
            save(done, prior_wall + time.perf_counter() - t0)
            written.append(done)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t0 if start < settings.steps else 0.0
    return LoopResult(ema={k: v.detach().cpu() for k, v in ema.items()}, losses=losses, steps=settings.steps,
                      resumed_from=start, wall_s=wall, train_wall_s=prior_wall + wall, precision=precision,
                      device=str(device), checkpoints=written)


def ema_model(model: torch.nn.Module, ema: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A float32 CPU copy of ``model`` holding the EMA weights (what is exported)."""
    out = copy.deepcopy(model).to("cpu", torch.float32)
    out.load_state_dict(ema)
    return out.eval()


def _rows(data: Mapping[str, torch.Tensor]) -> int:
    if not data:
        raise ValueError("no training data")
    sizes = {k: int(v.shape[0]) for k, v in data.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"the data tensors disagree on the number of rows: {sizes}")
    n = next(iter(sizes.values()))
    if n == 0:
        raise ValueError("no training data (0 rows)")
    return n
