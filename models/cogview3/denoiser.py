"""The CogView3 denoiser D(x, t): eps-parametrised UNet in the sigma variable, with CFG (docs/reference.md §3).

    D(x, sigma) = x - sigma * eps_theta(x / sqrt(1 + sigma^2), t, c)

(c_skip = 1, c_out = -sigma, c_in = 1/sqrt(1+sigma^2) = sqrt(abar), c_noise = the integer timestep t).
Classifier-free guidance on the x0 prediction, unconditional = all-zero text states, same size vector:
D = D_u + s (D_c - D_u). Distilled models skip CFG and feed the guidance embedding instead.
"""

from __future__ import annotations

import torch

from models.cogview3.schedule import sigmas


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
        out = self.unet(
            x_in.to(self.dtype), ts, encoder_hidden_states=context.to(self.dtype),
            class_labels=size_vec.to(self.dtype), timestep_cond=None if cond is None else cond.to(self.dtype),
        ).sample
        return out.float()

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, t: int) -> torch.Tensor:
        sigma = float(self._sigmas[t])
        c_in = 1.0 / (1.0 + sigma**2) ** 0.5
        if not self.uses_cfg:
            eps = self.eps(x * c_in, t, self.context, self.size_vec, self.guidance_embedding)
            return x - sigma * eps
        x2 = torch.cat([x, x])
        context = torch.cat([torch.zeros_like(self.context), self.context])  # zero, not ""-encoded, uncond
        size_vec = torch.cat([self.size_vec, self.size_vec])
        d_uncond, d_cond = (x2 - sigma * self.eps(x2 * c_in, t, context, size_vec, None)).chunk(2)
        return d_uncond + self.guidance * (d_cond - d_uncond)
