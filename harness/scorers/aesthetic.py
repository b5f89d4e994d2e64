"""LAION "improved aesthetic predictor" (christophschuhmann/improved-aesthetic-predictor).

An MLP over L2-normalised OpenAI CLIP ViT-L/14 image embeddings, checkpoint
``sac+logos+ava1-l14-linearMSE.pth``. This is the "v2" predictor that ImageReward and most papers
report, not HEIM's v1 linear head.

Weights folder (``weights.aesthetic``): ``sac+logos+ava1-l14-linearMSE.pth`` and ``ViT-L-14.pt``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image
from torch import nn

from harness.errors import HarnessError
from harness.scorers.base import Scorer
from harness.scorers.clip_models import OPENAI_PREPROCESSING, load_openai_clip, openai_transform, tiny_open_clip
from models.weights import file_sha256

MLP_FILE = "sac+logos+ava1-l14-linearMSE.pth"
CLIP_FILE = "ViT-L-14.pt"
EMBED_DIM = 768


class AestheticMLP(nn.Module):
    """768 -> 1024 -> 128 -> 64 -> 16 -> 1, dropouts between, no activations (as the reference)."""

    def __init__(self, input_size: int = EMBED_DIM):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024), nn.Dropout(0.2),
            nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class AestheticScorer(Scorer):
    name = "aesthetic"
    label = "Aes"
    uses_prompt = False
    FILES = (MLP_FILE, CLIP_FILE)
    LIBRARIES = ("open_clip_torch",)
    PARAMETERS = 427_616_513 + 927_969  # OpenAI CLIP ViT-L/14 + the MLP

    def _build(self) -> None:
        self.mlp = AestheticMLP()
        if self.weights.is_tiny:
            self.clip = tiny_open_clip(EMBED_DIM, seed=0)
            torch.manual_seed(1)
            self.mlp = AestheticMLP()
        else:
            mlp_path = self.file(MLP_FILE)
            state = torch.load(mlp_path, map_location="cpu", weights_only=True)
            missing, unexpected = self.mlp.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise HarnessError(
                    f"{mlp_path} is not the LAION aesthetic MLP: missing keys {missing}, unexpected keys {unexpected}"
                )
            self.clip = load_openai_clip(self.file(CLIP_FILE), self.device)
        self.mlp = self.mlp.eval().to(self.device, self.dtype)
        self.clip = self.clip.to(self.device, self.dtype)
        self.transform = openai_transform(224)

    def _score_batch(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        x = torch.stack([self.transform(im.convert("RGB")) for im in images]).to(self.device, self.dtype)
        emb = self.clip.encode_image(x).float()
        emb = emb / emb.norm(dim=-1, keepdim=True)
        return self.mlp.float()(emb).squeeze(-1).tolist()

    def checkpoint_fingerprint(self) -> dict[str, str]:
        if self.weights.is_tiny:
            return {"mlp": "tiny", "clip": "tiny"}
        return {
            MLP_FILE: file_sha256(self.file(MLP_FILE)),
            CLIP_FILE: file_sha256(self.file(CLIP_FILE)),
        }

    def preprocessing(self) -> str:
        return OPENAI_PREPROCESSING + "; embedding L2-normalised in fp32"
