"""The CogView3 denoiser D(x, t): eps-parametrised UNet in the sigma variable, with CFG (docs/reference.md §3).

    D(x, sigma) = x - sigma * eps_theta(x / sqrt(1 + sigma^2), t, c)

(c_skip = 1, c_out = -sigma, c_in = 1/sqrt(1+sigma^2) = sqrt(abar), c_noise = the integer timestep t).
Classifier-free guidance on the x0 prediction, unconditional = all-zero text states, same size vector:
D = D_u + s (D_c - D_u). Distilled models skip CFG and feed the guidance embedding instead.

The module-level functions are that math alone; the differentiable training denoiser
(:class:`models.cogview3.training.TrainingDenoiser`, per-sample timesteps) shares them.
"""

from __future__ import annotations

import torch

from models.cogview3.schedule import sigmas


def c_in(sigma):
    """EpsScaling's input scale 1 / sqrt(1 + sigma^2) (= sqrt(abar_t)): a float, or a tensor of sigmas."""
    return 1.0 / (1.0 + sigma**2) ** 0.5


def x0_from_eps(x: torch.Tensor, sigma, eps: torch.Tensor) -> torch.Tensor:
    """D = c_skip x + c_out eps with c_skip = 1, c_out = -sigma."""
    return x - sigma * eps


def cfg(d_uncond: torch.Tensor, d_cond: torch.Tensor, scale) -> torch.Tensor:
    """Classifier-free guidance on the x0 prediction (VanillaCFG): D_u + s (D_c - D_u)."""
    return d_uncond + scale * (d_cond - d_uncond)


def unet_eps(unet, x_in: torch.Tensor, ts: torch.Tensor, context, size_vec, cond, dtype) -> torch.Tensor:
    """eps_theta(x_in, t, c): the network's output for integer timesteps ``ts`` [B], inputs cast to ``dtype``."""
    return unet(
        x_in.to(dtype), ts, encoder_hidden_states=context.to(dtype),
        class_labels=size_vec.to(dtype), timestep_cond=None if cond is None else cond.to(dtype),
    ).sample


class CogView3Denoiser:
    def __init__(
        self,
        unet,
        context: torch.Tensor,
        size_vec: torch.Tensor,
        guidance: float = 7.5,
        guidance_embedding: torch.Tensor | None = None,
    ):
        self.unet = unet
        self.context = context
        self.size_vec = size_vec
        self.guidance = guidance
        self.guidance_embedding = guidance_embedding  # distilled: no CFG batch, w enters through w_proj
        self.dtype = next(unet.parameters()).dtype
        self._sigmas = sigmas()

    @property
    def uses_cfg(self) -> bool:
        return self.guidance_embedding is None and self.guidance != 1.0

    def eps(self, x_in: torch.Tensor, t: int, context, size_vec, cond) -> torch.Tensor:
        ts = torch.full((x_in.shape[0],), t, dtype=torch.long, device=x_in.device)
        return unet_eps(self.unet, x_in, ts, context, size_vec, cond, self.dtype).float()

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, t: int) -> torch.Tensor:
        sigma = float(self._sigmas[t])
        scale_in = c_in(sigma)
        if not self.uses_cfg:
            eps = self.eps(x * scale_in, t, self.context, self.size_vec, self.guidance_embedding)
            return x0_from_eps(x, sigma, eps)
        x2 = torch.cat([x, x])
        context = torch.cat([torch.zeros_like(self.context), self.context])  # zero, not ""-encoded, uncond
        size_vec = torch.cat([self.size_vec, self.size_vec])
        d_uncond, d_cond = x0_from_eps(x2, sigma, self.eps(x2 * scale_in, t, context, size_vec, None)).chunk(2)
        return cfg(d_uncond, d_cond, self.guidance)
