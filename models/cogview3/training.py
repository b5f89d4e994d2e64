"""CogView3 training objectives: the relay loss (eqs. 4-6), the base loss, progressive distillation (eqs. 8-9).

Functions of tensors first; the training loop (:mod:`harness.training.loop`) sees only the objectives.

API
===

Objectives, for the loop: ``objective(model, batch, generator) -> per-sample loss [B]`` (float, differentiable
in ``model``'s parameters). ``model`` is the network being trained (a diffusers ``UNet2DConditionModel`` or
anything with its call signature, see :func:`models.cogview3.denoiser.unet_eps`); ``batch`` a dict of
tensors on the model's device; ``generator`` a CPU ``torch.Generator`` that every random draw comes from
(timesteps, noise, offsets, w, grid positions, text dropout), so a step is a function of the seed alone.

- ``RelayObjective(t_r=500, offset_noise=0.05, text_dropout=0.0)``: eq. 6 as ``LinearRelayDiffusionLoss``.
  batch: ``z0`` [B,4,h,w] (the HR latent), ``z_lr`` [B,4,h,w] (z^L, :func:`relay_lr_latent`), ``context``
  [B,L,D] (T5 states), ``size_vec`` [B,1536].
- ``BaseObjective(offset_noise=0.05, text_dropout=0.0)``: the eps loss of the base stage. batch: ``z0``,
  ``context``, ``size_vec``.
- ``BaseDistillation(teacher, teacher_grid, *, w_range=(2.0, 14.0), teacher_guidance="auto",
  student_embed_dim=None, teacher_embed_dim=None, weighting="truncated_snr")``: one round of progressive
  distillation of the base sampler (``ddim_sample``); the student's grid is ``halve_grid(teacher_grid)``
  (``.student_grid``). batch: ``z0``, ``context``, ``size_vec``.
- ``RelayDistillation(teacher, teacher_grid, *, form="official", blending="step", t_r=None,
  w_range=(2.0, 14.0), teacher_guidance="auto", student_embed_dim=None, teacher_embed_dim=None)``: one round
  for the relay sampler (``relay_sample``). batch: ``z0``, ``z_lr``, ``context``, ``size_vec``.

  Guidance in distillation: w ~ U[w_range] per sample (``w_range=None``: no guidance anywhere). The
  teacher applies CFG with scale w when it has no guidance embedding (round 1: ``teacher_guidance="cfg"``)
  and is fed ``guidance_embedding(w)`` when it has one (later rounds: ``"embedding"``); ``"auto"`` picks by
  ``teacher.config.time_cond_proj_dim``. The student is fed ``guidance_embedding(w)`` through ``w_proj``
  (diffusers ``time_embedding.cond_proj``) when it has one; :func:`student_from_teacher` builds such a
  student from the teacher's weights with ``w_proj`` zero-initialised (spec §5).

Tensor functions (what the objectives are made of; a denoiser here is ``D(x, t) -> x0 prediction`` with
``t`` a LongTensor [B] of integer timesteps, e.g. a :class:`TrainingDenoiser`):

- ``TrainingDenoiser(unet, context, size_vec, *, guidance=None, w_embedding=None)``: CogView3Denoiser's
  D(x, sigma) = x - sigma eps_theta(x / sqrt(1 + sigma^2), t, c), differentiable, per-sample t;
- ``relay_lr_latent(images, encode)`` (``encode``: the VAE posterior sample x 0.13025);
- ``draw_training_noise(shape, generator, t_max) -> (t, noise, offset)``;
- ``relay_loss(denoiser, z0, z_lr, t, noise, offset, t_r=500, offset_noise=0.05) -> [B]``;
- ``base_loss(denoiser, z0, t, noise, offset, offset_noise=0.05) -> [B]``;
- ``ddim_step``, ``base_teacher_steps``, ``base_distillation_target``, ``base_distillation_loss``;
- ``relay_teacher_steps``, ``relay_student_step``, ``relay_distillation_loss`` (each relay step is
  :func:`models.cogview3.sampling.relay_step`, the sampler's own step, in either form);
- ``halve_grid(grid)``, ``distillation_grids(grid, final_steps)``, ``student_from_teacher(teacher, dim)``, ``with_guidance_projection(unet, dim)``.

Conventions (the official ``StandardDiffusionLoss.get_loss``, ``type="l2"``): a per-sample loss is the
**mean** over C, H, W of the weighted squared error, ``mean((w * (D - target) ** 2).reshape(B, -1), 1)``.
Timesteps are integer indices into :func:`models.cogview3.schedule.sigmas`; in a grid, the point after the
last one has sigma = 0.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from models.cogview3.conditioning import guidance_embedding
from models.cogview3.denoiser import c_in, cfg, unet_eps, x0_from_eps
from models.cogview3.sampling import relay_fractions, relay_step
from models.cogview3.schedule import NUM_TRAIN_TIMESTEPS, sampler_sigmas, sigmas

OFFSET_NOISE = 0.05  # offset_noise_level of the relay config (spec §4.4); the base config is not released
RELAY_T_R = 500  # partial_num_steps of the relay config: t ~ randint[0, 500)
W_RANGE = (2.0, 14.0)  # guidance scales drawn in distillation (raw CFG scale s, CogView3's convention)

TrainDenoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ---- the training denoiser -------------------------------------------------------------------------


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample values [B] as [B, 1, 1, 1] in ``like``'s dtype and device."""
    return v.to(like.device, like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def sigma_at(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """sigma_t of integer timesteps t [B] as [B,1,1,1] (the float32 training sigmas); t < 0 means sigma = 0."""
    t = t.detach().cpu().long()
    sig = torch.where(t >= 0, sigmas()[t.clamp(min=0)], torch.zeros(()))
    return _bcast(sig, like)


def eps_scaling(t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma, c_in) per sample as [B,1,1,1]: c_in formed in float64 from the float32 sigma, as CogView3Denoiser
    forms it from a Python float, then cast to ``like``'s dtype (the same numbers it multiplies by)."""
    t = t.detach().cpu().long()
    sig = sigmas()[t].double()
    return _bcast(sig, like), _bcast(c_in(sig), like)


class TrainingDenoiser:
    """D(x, t) = x - sigma_t eps_theta(x / sqrt(1 + sigma_t^2), t, c) for per-sample integer t [B], with autograd.

    The parametrisation of :class:`models.cogview3.denoiser.CogView3Denoiser` (EpsScaling, spec §3), from the
    same functions, without ``inference_mode`` and with one timestep per sample.

    - ``guidance``: None (one conditional pass), or the CFG scale per sample ([B] tensor or a float): the batch
      is doubled with zero text states as the unconditional half and D = D_u + w (D_c - D_u) (a teacher);
    - ``w_embedding``: [B, dim] guidance embeddings fed as ``timestep_cond`` (-> ``w_proj``) (a distilled model).
    """

    def __init__(self, unet, context: torch.Tensor, size_vec: torch.Tensor, *, guidance=None,
                 w_embedding: torch.Tensor | None = None):
        if guidance is not None and w_embedding is not None:
            raise ValueError("a denoiser takes CFG (guidance) or a guidance embedding, not both")
        self.unet, self.context, self.size_vec = unet, context, size_vec
        self.guidance, self.w_embedding = guidance, w_embedding
        self.dtype = next(unet.parameters()).dtype

    def eps(self, x_in, t, context, size_vec, cond) -> torch.Tensor:
        return unet_eps(self.unet, x_in, t.to(x_in.device), context, size_vec, cond, self.dtype)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sigma, scale_in = eps_scaling(t, x)
        if self.guidance is None:
            eps = self.eps(x * scale_in, t, self.context, self.size_vec, self.w_embedding).to(x.dtype)
            return x0_from_eps(x, sigma, eps)
        x2, sigma2, scale2 = torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([scale_in, scale_in])
        t2 = torch.cat([t, t])
        context = torch.cat([torch.zeros_like(self.context), self.context])  # zero uncond text, as inference
        size_vec = torch.cat([self.size_vec, self.size_vec])
        eps = self.eps(x2 * scale2, t2, context, size_vec, None).to(x.dtype)
        d_uncond, d_cond = x0_from_eps(x2, sigma2, eps).chunk(2)
        w = self.guidance if not torch.is_tensor(self.guidance) else _bcast(self.guidance, x)
        return cfg(d_uncond, d_cond, w)


def guidance_embeddings(w: torch.Tensor, dim: int) -> torch.Tensor:
    """[B, dim]: :func:`models.cogview3.conditioning.guidance_embedding` of each sample's w (float32 w)."""
    return torch.cat([guidance_embedding(float(v), dim, 1) for v in w.float().cpu()])


def embed_dim(unet) -> int | None:
    """The guidance-embedding width of a network (diffusers ``time_cond_proj_dim``), None without ``w_proj``."""
    return getattr(getattr(unet, "config", None), "time_cond_proj_dim", None)


def with_guidance_projection(unet, guidance_embed_dim: int | None):
    """``unet`` with a guidance embedding input of ``guidance_embed_dim`` (``w_proj``, diffusers
    ``time_embedding.cond_proj``, Linear(dim, 320, bias=False)), zero-initialised (spec §5), so the result is
    exactly ``unet``'s conditional model. A UNet that already has it (or ``None`` asked) is returned as is.

    The result takes over ``unet``'s parameters (built on the meta device, weights assigned, no copy in
    memory): do not use ``unet`` afterwards; :func:`student_from_teacher` keeps the teacher."""
    have = embed_dim(unet)
    if guidance_embed_dim is None or have == guidance_embed_dim:
        return unet
    if have is not None:
        raise ValueError(f"the UNet has a {have}-d guidance embedding, the student needs {guidance_embed_dim}")
    device = next(unet.parameters()).device
    config = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    with torch.device("meta"):
        out = type(unet)(**{**config, "time_cond_proj_dim": guidance_embed_dim})
    state = dict(unet.state_dict())
    state["time_embedding.cond_proj.weight"] = torch.zeros(out.time_embedding.cond_proj.weight.shape,
                                                           dtype=next(unet.parameters()).dtype, device=device)
    out.load_state_dict(state, strict=True, assign=True)
    return out


def student_from_teacher(teacher, guidance_embed_dim: int | None):
    """A student initialised from the teacher: a copy of its weights with a zero ``w_proj`` when
    ``guidance_embed_dim`` is given (:func:`with_guidance_projection`); the teacher is left untouched."""
    return with_guidance_projection(copy.deepcopy(teacher), guidance_embed_dim)


# ---- z^L and the noise draws -----------------------------------------------------------------------


def relay_lr_latent(images: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """z^L of the relay training (spec §4.4, ``SATDiffusionEngine.shared_step``): the HR image in [-1, 1]
    [B,3,H,W], bilinear x1/2 (``align_corners=False``, no antialias), bilinear x2 (same), then ``encode``:
    the VAE posterior *sample* times 0.13025 (as the relay system's ``encode_lr``)."""
    low = F.interpolate(images, scale_factor=0.5, mode="bilinear", align_corners=False, antialias=False)
    up = F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False, antialias=False)
    return encode(up)


def draw_training_noise(shape: Sequence[int], generator: torch.Generator, t_max: int = RELAY_T_R):
    """(t, noise, offset): t ~ U{0..t_max-1} [B] (``DiscreteSampling`` indexed by randint), unit noise of
    ``shape`` and one N(0, 1) offset scalar per sample [B]; drawn on the CPU in this order."""
    b = int(shape[0])
    t = torch.randint(0, t_max, (b,), generator=generator)
    noise = torch.randn(tuple(shape), generator=generator)
    offset = torch.randn(b, generator=generator)
    return t, noise, offset


# ---- eq. 6: the relay loss and the base loss -------------------------------------------------------


def relay_blur(z0: torch.Tensor, z_lr: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Eq. 4 (linear blurring): B_f(z0) = (1 - f) z0 + f z^L, f per sample [B] or [B,1,1,1]."""
    f = f if f.ndim == z0.ndim else _bcast(f, z0)
    return z0 * (1 - f) + z_lr * f


def _mse(d: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | float = 1.0) -> torch.Tensor:
    """The official get_loss (l2): per-sample mean over C, H, W of weight * (d - target)^2."""
    return torch.mean((weight * (d - target) ** 2).reshape(target.shape[0], -1), 1)


def relay_loss(denoiser: TrainDenoiser, z0: torch.Tensor, z_lr: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
               offset: torch.Tensor, t_r: int = RELAY_T_R, offset_noise: float = OFFSET_NOISE) -> torch.Tensor:
    """The relay super-resolution loss, eq. 6, as ``LinearRelayDiffusionLoss`` computes it (spec §4.4), per sample.

    With f = t / T_r (eq. 4, ``blurring_schedule='linear'``, T_r = ``partial_num_steps`` = 500):

        z0^t = (1 - t/T_r) z0 + (t/T_r) z^L                          (eq. 4)
        x    = z0^t + sigma_t (noise + offset_noise * offset)        (eq. 5; offset one scalar per sample)
        loss = mean_{C,H,W} sigma_t^-2 (D(x, t) - z0)^2              (eq. 6; EpsWeighting)

    The target is the clean z0, not z0^t. Following the code rather than the paper's text: offset noise
    (absent from the paper), the sigma^-2 (eps-MSE) weighting and the mean over C, H, W.
    """
    if bool(((t < 0) | (t >= t_r)).any()):
        raise ValueError(f"relay timesteps must lie in [0, {t_r}), got {t.min().item()}..{t.max().item()}")
    f = _bcast(t.double() / t_r, z0)
    blurred = relay_blur(z0, z_lr, f)
    sigma = sigma_at(t, z0)
    x = blurred + (noise.to(z0) + offset_noise * _bcast(offset, z0)) * sigma
    return _mse(denoiser(x, t.to(z0.device)), z0, sigma**-2)


def base_loss(denoiser: TrainDenoiser, z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, offset: torch.Tensor,
              offset_noise: float = OFFSET_NOISE) -> torch.Tensor:
    """The base stage's loss (``StandardDiffusionLoss``, EpsWeighting): x = z0 + sigma_t (noise + offset_noise *
    offset), loss = mean_{C,H,W} sigma_t^-2 (D(x, t) - z0)^2 = the eps-MSE. t ~ U{0..999}; the base training
    config is not released (spec §3), so the offset level is the relay config's 0.05."""
    sigma = sigma_at(t, z0)
    x = z0 + (noise.to(z0) + offset_noise * _bcast(offset, z0)) * sigma
    return _mse(denoiser(x, t.to(z0.device)), z0, sigma**-2)


def _drop_text(context: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Zero each sample's text states with probability p (the zero uncond of inference). Off by default: the
    released configs set no ucg rate (spec §2.2)."""
    if p <= 0:
        return context
    keep = (torch.rand(context.shape[0], generator=generator) >= p).to(context)
    return context * _bcast(keep, context)


class RelayObjective:
    """``objective(model, batch, generator)``: :func:`relay_loss` on a fresh draw of (t, noise, offset)."""

    def __init__(self, t_r: int = RELAY_T_R, offset_noise: float = OFFSET_NOISE, text_dropout: float = 0.0):
        self.t_r, self.offset_noise, self.text_dropout = t_r, offset_noise, text_dropout

    def __call__(self, model, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        z0 = batch["z0"]
        t, noise, offset = draw_training_noise(z0.shape, generator, self.t_r)
        context = _drop_text(batch["context"], self.text_dropout, generator)
        den = TrainingDenoiser(model, context, batch["size_vec"])
        return relay_loss(den, z0, batch["z_lr"], t, noise, offset, self.t_r, self.offset_noise)


class BaseObjective:
    """``objective(model, batch, generator)``: :func:`base_loss`, t uniform in [0, 1000)."""

    def __init__(self, offset_noise: float = OFFSET_NOISE, text_dropout: float = 0.0):
        self.offset_noise, self.text_dropout = offset_noise, text_dropout

    def __call__(self, model, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        z0 = batch["z0"]
        t, noise, offset = draw_training_noise(z0.shape, generator, NUM_TRAIN_TIMESTEPS)
        context = _drop_text(batch["context"], self.text_dropout, generator)
        return base_loss(TrainingDenoiser(model, context, batch["size_vec"]), z0, t, noise, offset, self.offset_noise)


# ---- distillation grids ------------------------------------------------------------------------------


def halve_grid(grid: Sequence[int]) -> list[int]:
    """The student's grid of one distillation round: every second teacher point, from the first, grid[::2].

    Student step i (from grid[2i]) replaces teacher steps 2i and 2i+1, so each student step lands where two
    teacher steps land (Salimans & Ho). Even counts halve exactly. An odd count n gives ceil(n/2) points:
    the student's last step spans the teacher's single last step (to sigma = 0; its target is that one step),
    so the grid stays nested in the teacher's (50 -> 25 -> 13 -> 7 -> 4; 10 -> 5 -> 3 -> 2 -> 1). With an
    odd count and ``blending="step"`` the relay's blur fractions of teacher and student differ at the shared
    points (k/N with different N), see :class:`RelayDistillation`.

    Halving the official floor-spaced grids gives the official grids again where the counts stay even:
    ``timesteps(64)`` -> 32 -> 16 -> ``timesteps(8)`` (999, 874, ..., 124) -> ``timesteps(4)`` (999, 749, 499,
    249, spec §5's 4-step base); ``relay_timesteps(200, 8)`` (199, 174, ..., 24) -> (199, 149, 99, 49) ->
    (199, 99) -> (199,) (spec §5's 1-step relay at tau = 199; (199, 99) its inferred 2-step grid). Starting from
    the 50-step base grid the 4-step student lands on 999, 679, 359, 39 instead.
    """
    grid = [int(t) for t in grid]
    if len(grid) < 2:
        raise ValueError(f"a grid of {len(grid)} step(s) cannot be halved")
    if any(a <= b for a, b in zip(grid, grid[1:])) or grid[-1] < 0:
        raise ValueError(f"a grid must be strictly descending non-negative timesteps, got {grid}")
    return grid[::2]


def distillation_grids(grid: Sequence[int], final_steps: int) -> list[list[int]]:
    """The grids of a distillation schedule: ``grid`` (the first teacher's), then halved round by round
    (:func:`halve_grid`) until ``final_steps`` points. Round r distils grids[r] into grids[r + 1]."""
    out = [[int(t) for t in grid]]
    while len(out[-1]) > final_steps:
        out.append(halve_grid(out[-1]))
    if len(out[-1]) != final_steps:
        counts = " -> ".join(str(len(g)) for g in out)
        raise ValueError(f"halving {len(grid)} steps does not reach {final_steps} ({counts})")
    return out


def _positions(teacher_grid: Sequence[int], i: torch.Tensor):
    """Per sample at student position i: teacher indices j = 2i, j + 1 and whether the span is a single step."""
    n = len(teacher_grid)
    j = 2 * i.detach().cpu().long()
    if bool(((j < 0) | (j >= n)).any()):
        raise ValueError(f"student positions must lie in [0, {(n + 1) // 2})")
    return j, j + 1, (j + 1) == n


# ---- base distillation (Salimans & Ho 2022 in the DDIM-in-sigma sampler) ---------------------------


def ddim_step(x: torch.Tensor, d: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """One step of :func:`models.cogview3.sampling.ddim_sample`, same arithmetic: x + (sigma' - sigma) (x - D) / sigma
    (= D + (sigma'/sigma)(x - D), DDIM eta = 0 in the VE variable)."""
    return x + (sigma_next - sigma) * ((x - d) / sigma)


def base_teacher_steps(teacher: TrainDenoiser, x: torch.Tensor, i: torch.Tensor, teacher_grid: Sequence[int]):
    """The teacher's two sampler steps from student position i: x_t -> x_t' -> x_t'' on the teacher grid
    (t = grid[2i], t' = grid[2i+1], t'' = grid[2i+2] or sigma = 0 past the end). Returns (x'', sigma, sigma'')
    with sigma [B,1,1,1]. An odd grid's last student position takes one teacher step (t' is then the end)."""
    j, j1, single = _positions(teacher_grid, i)
    grid = torch.tensor([int(t) for t in teacher_grid] + [-1, -1])  # -1: past the end, sigma = 0
    sig = torch.cat([sampler_sigmas(list(teacher_grid)), torch.zeros(1)])
    s0, s1, s2 = (_bcast(sig[k], x) for k in (j, j1, j1 + 1))
    t0, t1 = grid[j], grid[j1]
    x1 = ddim_step(x, teacher(x, t0.to(x.device)), s0, s1)
    safe = _bcast(single, x).bool()
    s1_safe = torch.where(safe, torch.ones_like(s1), s1)
    d1 = teacher(x1, t1.clamp(min=0).to(x.device))  # single-step samples: evaluated, discarded
    x2 = torch.where(safe, x1, ddim_step(x1, d1, s1_safe, s2))
    return x2, s0, torch.where(safe, s1, s2)


def base_distillation_target(x: torch.Tensor, x_next: torch.Tensor, sigma: torch.Tensor,
                             sigma_next: torch.Tensor) -> torch.Tensor:
    """The student's x0 target (Salimans & Ho 2022, Algorithm 2, in the VE variable alpha = 1):
    the D~ for which one student step D~ + (sigma''/sigma)(x - D~) lands on the teacher's x'',

        D~ = (x'' - (sigma''/sigma) x) / (1 - sigma''/sigma),

    which at sigma'' = 0 (the last step) is x'' itself (the formula needs no special case there)."""
    r = sigma_next / sigma
    return (x_next - r * x) / (1 - r)


def base_distillation_loss(student: TrainDenoiser, teacher: TrainDenoiser, x: torch.Tensor, i: torch.Tensor,
                           teacher_grid: Sequence[int], weighting: str = "truncated_snr") -> torch.Tensor:
    """Per-sample distillation loss at student position i: w(sigma) mean_{C,H,W} (D_student(x, t) - D~)^2.

    ``weighting``: ``"truncated_snr"`` (Salimans & Ho's choice for few steps: max(SNR, 1) with SNR = sigma^-2,
    so the eps-like sigma^-2 weight at low noise and the x0 error unweighted at high noise, where D =
    x - sigma eps amplifies eps errors), ``"eps"`` (sigma^-2, the training weighting) or ``"none"``.
    The teacher's steps run without gradients; the student's one step reproduces them iff D_student = D~.
    """
    with torch.no_grad():
        x2, s0, s2 = base_teacher_steps(teacher, x, i, teacher_grid)
        target = base_distillation_target(x, x2, s0, s2)
    weight = {"truncated_snr": torch.clamp(s0**-2, min=1.0), "eps": s0**-2, "none": torch.ones_like(s0)}.get(weighting)
    if weight is None:
        raise ValueError(f"weighting must be truncated_snr, eps or none, got {weighting!r}")
    t = torch.tensor([int(v) for v in teacher_grid])[2 * i.detach().cpu().long()]
    return _mse(student(x, t.to(x.device)), target, weight)


# ---- relay distillation (eqs. 8-9) ---------------------------------------------------------------------


def relay_teacher_steps(teacher: TrainDenoiser, x: torch.Tensor, z_lr: torch.Tensor, i: torch.Tensor,
                        teacher_grid: Sequence[int], *, form: str = "official", blending: str = "step",
                        t_r: int | None = None, z0_est: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 8 twice: the teacher's relay steps 2i and 2i+1 from x, each by :func:`models.cogview3.sampling.relay_step`
    (the sampler's own step) on the teacher grid; one step for an odd grid's last student position."""
    j, j1, single = _positions(teacher_grid, i)
    n = len(teacher_grid)
    grid = torch.tensor([int(t) for t in teacher_grid])
    j1 = j1.clamp(max=n - 1)  # single-step samples: a second step is taken and discarded
    kw = dict(form=form, blending=blending, t_r=t_r)
    x1, est1 = relay_step(x, teacher(x, grid[j].to(x.device)), z_lr, j, teacher_grid, state=z0_est, **kw)
    x2, _ = relay_step(x1, teacher(x1, grid[j1].to(x.device)), z_lr, j1, teacher_grid, state=est1, **kw)
    return torch.where(_bcast(single, x).bool(), x1, x2)


def relay_student_step(student: TrainDenoiser, x: torch.Tensor, z_lr: torch.Tensor, i: torch.Tensor,
                       student_grid: Sequence[int], *, form: str = "official", blending: str = "step",
                       t_r: int | None = None, z0_est: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 9: the student's one relay step from position i of its own grid (``relay_step``, the same form)."""
    i = i.detach().cpu().long()
    t = torch.tensor([int(v) for v in student_grid])[i]
    out, _ = relay_step(x, student(x, t.to(x.device)), z_lr, i, student_grid, form=form, state=z0_est,
                        blending=blending, t_r=t_r)
    return out


def relay_distillation_loss(student: TrainDenoiser, teacher: TrainDenoiser, x: torch.Tensor, z_lr: torch.Tensor,
                            i: torch.Tensor, teacher_grid: Sequence[int], *, form: str = "official",
                            blending: str = "step", t_r: int | None = None,
                            z0_est: torch.Tensor | None = None) -> torch.Tensor:
    """Per sample: mean_{C,H,W} (z~_{t-2} - z_{t-2})^2, the student's one step (eq. 9) against the teacher's two
    (eq. 8) from the same x (and, for ``form="paper"``, the same running estimate ``z0_est``)."""
    if form == "paper" and z0_est is None:
        raise ValueError("form='paper' needs the running estimate z0_est")
    with torch.no_grad():
        target = relay_teacher_steps(teacher, x, z_lr, i, teacher_grid, form=form, blending=blending, t_r=t_r,
                                     z0_est=z0_est)
    out = relay_student_step(student, x, z_lr, i, halve_grid(teacher_grid), form=form, blending=blending, t_r=t_r,
                             z0_est=z0_est)
    return _mse(out, target)


# ---- distillation objectives -------------------------------------------------------------------------


class _Distillation:
    def __init__(self, teacher, teacher_grid, *, w_range=W_RANGE, teacher_guidance: str = "auto",
                 student_embed_dim: int | None = None, teacher_embed_dim: int | None = None):
        self.teacher = teacher
        self.teacher_grid = [int(t) for t in teacher_grid]
        self.student_grid = halve_grid(self.teacher_grid)
        self.w_range = None if w_range is None else (float(w_range[0]), float(w_range[1]))
        self.teacher_embed_dim = teacher_embed_dim or embed_dim(teacher)
        if teacher_guidance == "auto":
            teacher_guidance = "embedding" if self.teacher_embed_dim else "cfg"
        if teacher_guidance not in ("cfg", "embedding", "none"):
            raise ValueError(f"teacher_guidance must be auto, cfg, embedding or none, got {teacher_guidance!r}")
        if teacher_guidance == "embedding" and not self.teacher_embed_dim:
            raise ValueError("teacher_guidance='embedding' needs a teacher with a guidance embedding")
        self.teacher_guidance = teacher_guidance
        self.student_embed_dim = student_embed_dim

    def _draw(self, batch, generator):
        """(positions i [B], w [B] or None) for this micro-batch."""
        b = batch["z0"].shape[0]
        i = torch.randint(0, len(self.student_grid), (b,), generator=generator)
        w = None
        if self.w_range is not None:
            lo, hi = self.w_range
            w = lo + (hi - lo) * torch.rand(b, generator=generator)
        return i, w

    def _denoisers(self, student, batch, w):
        ctx, vec = batch["context"], batch["size_vec"]
        if w is None or self.teacher_guidance == "none":
            teacher = TrainingDenoiser(self.teacher, ctx, vec)
        elif self.teacher_guidance == "cfg":
            teacher = TrainingDenoiser(self.teacher, ctx, vec, guidance=w)
        else:
            teacher = TrainingDenoiser(self.teacher, ctx, vec,
                                       w_embedding=guidance_embeddings(w, self.teacher_embed_dim).to(ctx.device))
        dim = self.student_embed_dim or embed_dim(student)
        emb = None if (w is None or not dim) else guidance_embeddings(w, dim).to(ctx.device)
        return TrainingDenoiser(student, ctx, vec, w_embedding=emb), teacher


class BaseDistillation(_Distillation):
    """One progressive-distillation round of the base sampler: ``objective(student, batch, generator)``.

    Per sample: a student position i (uniform over the student grid), w ~ U[w_range], x = z0 + sigma_t eps at
    t = student_grid[i] (the forward process, Salimans & Ho), the teacher's two DDIM steps and the target
    :func:`base_distillation_target`; loss :func:`base_distillation_loss`. Round 1 (teacher without w_proj)
    distils CFG: the teacher uses CFG with w, the student sees w through its guidance embedding.
    """

    def __init__(self, teacher, teacher_grid, *, weighting: str = "truncated_snr", **kw):
        super().__init__(teacher, teacher_grid, **kw)
        self.weighting = weighting

    def __call__(self, student, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        z0 = batch["z0"]
        i, w = self._draw(batch, generator)
        eps = torch.randn(z0.shape, generator=generator).to(z0)
        x = z0 + sigma_at(torch.tensor(self.student_grid)[i], z0) * eps
        s_den, t_den = self._denoisers(student, batch, w)
        return base_distillation_loss(s_den, t_den, x, i, self.teacher_grid, self.weighting)


class RelayDistillation(_Distillation):
    """One progressive-distillation round of the relay sampler (eqs. 8-9): ``objective(student, batch, generator)``.

    Per sample: a student position i, w ~ U[w_range], and the state of the sampler there from the forward
    process of the relay: x = B_f(z0) + sigma_t eps with f the sampler's blur fraction at that point
    (:func:`relay_fractions` of the student grid: f = 1 at i = 0, so x = z^L + sigma eps, the sampler's
    start); for ``form="paper"`` the running estimate starts at z0^k = B_f(z0) (= z^L at i = 0, Algorithm 1's
    start). The teacher runs two relay steps (eq. 8), the student one (eq. 9) on the halved grid, in the same
    ``form`` and ``blending``; loss: the MSE of the two results. No offset noise (the sampler draws none).

    With ``blending="step"`` (the official sampler) the fraction at a shared point is k/N of each grid, equal
    for teacher and student when the teacher's count is even; ``"time"`` (t/T_r) is grid-independent.

    ``form="paper"``: the teacher's two steps also move Algorithm 1's running estimate, which the student's
    network does not see; its exact target D is then a function of (x, z^L, running estimate), so a student
    can match the teacher exactly only where the estimate is determined by (x, z^L), e.g. at i = 0 (z^L).
    """

    def __init__(self, teacher, teacher_grid, *, form: str = "official", blending: str = "step",
                 t_r: int | None = None, **kw):
        super().__init__(teacher, teacher_grid, **kw)
        if form not in ("official", "paper"):
            raise ValueError(f"form must be 'official' or 'paper', got {form!r}")
        if form == "paper" and blending != "step":
            raise ValueError("form='paper' (Algorithm 1) presumes the step blending f = k/N")
        self.form, self.blending, self.t_r = form, blending, t_r
        self.fractions = torch.tensor(relay_fractions(self.student_grid, blending, t_r), dtype=torch.float64)

    def __call__(self, student, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        z0, z_lr = batch["z0"], batch["z_lr"]
        i, w = self._draw(batch, generator)
        eps = torch.randn(z0.shape, generator=generator).to(z0)
        blurred = relay_blur(z0, z_lr, self.fractions[i])
        x = blurred + sigma_at(torch.tensor(self.student_grid)[i], z0) * eps
        s_den, t_den = self._denoisers(student, batch, w)
        return relay_distillation_loss(s_den, t_den, x, z_lr, i, self.teacher_grid, form=self.form,
                                       blending=self.blending, t_r=self.t_r,
                                       z0_est=blurred if self.form == "paper" else None)
