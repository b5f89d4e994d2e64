"""CLIP score (Hessel et al. 2021, as torchmetrics defines it): 100 * max(cos(image, text), 0).

OpenAI CLIP ViT-L/14 through open_clip; ``weights.clip_score`` is a folder with ``ViT-L-14.pt`` (the
same file the aesthetic predictor uses). Prompts longer than 77 tokens are truncated by the
tokenizer, as in torchmetrics.
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from harness.scorers.base import Scorer
from harness.scorers.clip_models import OPENAI_PREPROCESSING, load_openai_clip, openai_transform, tiny_open_clip
from models.weights import file_sha256

CLIP_FILE = "ViT-L-14.pt"


class CLIPScorer(Scorer):
    name = "clip_score"
    label = "CLIP score"
    FILES = (CLIP_FILE,)
    LIBRARIES = ("open_clip_torch",)
    PARAMETERS = 427_616_513  # OpenAI CLIP ViT-L/14

    def _build(self) -> None:
        import open_clip

        if self.weights.is_tiny:
            self.model = tiny_open_clip(768, seed=21)
        else:
            self.model = load_openai_clip(self.file(CLIP_FILE), self.device)
        self.model = self.model.eval().to(self.device, self.dtype)
        self.tokenizer = open_clip.get_tokenizer("ViT-L-14")
        self.transform = openai_transform(224)

    def _score_batch(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        x = torch.stack([self.transform(im.convert("RGB")) for im in images]).to(self.device, self.dtype)
        img = self.model.encode_image(x, normalize=True).float()
        txt = self.model.encode_text(self.tokenizer(list(prompts)).to(self.device), normalize=True).float()
        return (100.0 * (img * txt).sum(dim=-1)).clamp(min=0).tolist()

    def checkpoint_fingerprint(self) -> dict[str, str]:
        if self.weights.is_tiny:
            return {"clip": "tiny"}
        return {CLIP_FILE: file_sha256(self.file(CLIP_FILE))}

    def preprocessing(self) -> str:
        return OPENAI_PREPROCESSING + "; open_clip tokenizer, 77 tokens (truncated)"
