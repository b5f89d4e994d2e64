"""CogView3's denoiser (models/cogview3/denoiser.py): CFG with a zero negative, eps parametrisation, distilled guidance."""

import torch

from models.cogview3.denoiser import CogView3Denoiser
from models.cogview3.schedule import sigmas


class Recorder(torch.nn.Module):
    """Stands in for the UNet: eps = 0.1 * x_in + mean of the text states; records what it was fed."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, x, t, encoder_hidden_states, class_labels, timestep_cond=None):
        from types import SimpleNamespace

        self.calls.append(dict(x=x.clone(), t=t.clone(), ctx=encoder_hidden_states.clone(), cond=timestep_cond))
        eps = 0.1 * x + encoder_hidden_states.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)
        return SimpleNamespace(sample=eps)


def test_denoiser_cfg_zero_negative_and_eps_parametrisation():
    unet = Recorder()
    ctx = torch.ones(2, 225, 8)
    den = CogView3Denoiser(unet, ctx, torch.zeros(2, 1536), guidance=7.5)
    x = torch.randn(2, 4, 8, 8)
    out = den(x, 499)
    call = unet.calls[0]
    assert call["x"].shape[0] == 4 and call["t"].tolist() == [499] * 4
    assert torch.equal(call["ctx"][:2], torch.zeros(2, 225, 8)) and torch.equal(call["ctx"][2:], ctx)
    sigma = sigmas()[499].item()
    torch.testing.assert_close(call["x"][:2], x / (1 + sigma**2) ** 0.5)  # c_in = sqrt(abar)
    eps_u = 0.1 * x / (1 + sigma**2) ** 0.5
    eps_c = eps_u + 1.0
    d_u, d_c = x - sigma * eps_u, x - sigma * eps_c
    torch.testing.assert_close(out, d_u + 7.5 * (d_c - d_u))


def test_distilled_denoiser_has_no_cfg_batch_and_feeds_the_guidance_embedding():
    from models.cogview3.conditioning import guidance_embedding

    unet = Recorder()
    emb = guidance_embedding(7.5, 256, 2)
    den = CogView3Denoiser(unet, torch.ones(2, 225, 8), torch.zeros(2, 1536), guidance_embedding=emb)
    den(torch.randn(2, 4, 8, 8), 199)
    assert unet.calls[0]["x"].shape[0] == 2 and torch.equal(unet.calls[0]["cond"], emb)
