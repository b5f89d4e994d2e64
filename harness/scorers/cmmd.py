"""CMMD (Jayasumana et al. 2024, "Rethinking FID", arXiv 2401.09603): the maximum mean discrepancy between the CLIP
image embeddings of a system's images and of the benchmark's reference images, reported x1000. Lower is better.

- **Embeddings**: CLIP ViT-L/14 at 336 px (``openai/clip-vit-large-patch14-336``), through transformers'
  ``CLIPVisionModelWithProjection`` from a local folder in the Hugging Face layout (``config.json``,
  ``preprocessor_config.json``, ``model.safetensors`` or ``pytorch_model.bin``); a full CLIPModel checkpoint loads,
  its text tower unused. Each embedding is L2-normalised.
- **Preprocessing**, as the reference code (google-research ``cmmd/io_util.py`` and ``embedding.py``): center crop
  to a square on the shorter side, PIL bicubic resize to the processor's crop size (336), values in [0, 1], the CLIP
  mean/std normalisation; no further resize or crop (the reference's second, tensor bicubic resize to the same size
  changes nothing).
- **Distance** (:func:`mmd`): the minimum-variance (biased) MMD^2 estimate of Gretton et al. 2012, eq. 5, with the
  Gaussian RBF kernel k(x, y) = exp(-||x - y||^2 / (2 sigma^2)), sigma = 10, times 1000, as the reference's
  ``distance.mmd``. Computed here in float64 (the reference: float32).
- **Reference set**: the same images as FID (COCO-5k: each caption's val2017 image), through the set-metric path
  FID uses, with its feature cache.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from harness.scorers.base import Scorer
from harness.scorers.fid import _SetScorer

#: the CMMD paper's kernel bandwidth and reporting scale (reference: cmmd/distance.py, _SIGMA and _SCALE)
SIGMA = 10.0
SCALE = 1000.0
CONFIG_FILE = "config.json"
PROCESSOR_FILE = "preprocessor_config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PREPROCESSING = ("center crop to square (shorter side), PIL bicubic resize to the CLIP crop size (336), [0, 1], "
                 "CLIP mean/std; CLIPVisionModelWithProjection image_embeds, L2-normalised")
#: the tiny build's input size (the real one reads it from preprocessor_config.json)
TINY_SIZE = 56


def mmd(x: torch.Tensor, y: torch.Tensor, sigma: float = SIGMA, scale: float = SCALE) -> float:
    """``scale`` x the biased MMD^2 between embedding sets ``x`` (n, d) and ``y`` (m, d), Gaussian RBF kernel of
    bandwidth ``sigma`` (Gretton et al. 2012, eq. 5; the kernel means include the diagonal)."""
    x, y = x.double(), y.double()
    gamma = 1.0 / (2.0 * sigma**2)

    def mean_kernel(a: torch.Tensor, b: torch.Tensor) -> float:
        # ||a - b||^2 = |a|^2 + |b|^2 - 2 a.b, one matrix at a time (5,000 x 5,000 float64: 200 MB)
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        return float(torch.exp(-gamma * sq).mean())

    return scale * (mean_kernel(x, x) + mean_kernel(y, y) - 2.0 * mean_kernel(x, y))


def cmmd_preprocess(image: Image.Image, size: int) -> np.ndarray:
    """(size, size, 3) float32 in [0, 1]: the reference's center crop and PIL bicubic resize."""
    image = image.convert("RGB")
    w, h = image.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    image = image.crop((left, top, left + s, top + s)).resize((size, size), Image.BICUBIC)
    return np.asarray(image, dtype=np.float32) / 255.0


def tiny_clip_vision(seed: int = 31):
    """A fixed random CLIP vision tower with projection, for the smoke profile (input 56 px, 16-d embeddings)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=TINY_SIZE, patch_size=14, projection_dim=16)
    return CLIPVisionModelWithProjection(config)


class CMMDScorer(_SetScorer):
    name = "cmmd"
    label = "CMMD"
    FILES = (CONFIG_FILE, PROCESSOR_FILE, WEIGHT_FILES)
    LIBRARIES = ("transformers",)
    PARAMETERS = 304_000_000  # CLIP ViT-L/14 vision tower and projection
    # every FILES entry by name (Scorer's default), not the Inception file _SetScorer fingerprints for FID and KID
    checkpoint_fingerprint = Scorer.checkpoint_fingerprint

    def _build(self) -> None:
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection
        from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

        if self.weights.is_tiny:
            self.extractor = tiny_clip_vision()
            self.size = TINY_SIZE
            self.mean, self.std = torch.tensor(OPENAI_CLIP_MEAN), torch.tensor(OPENAI_CLIP_STD)
        else:
            folder = self.file(CONFIG_FILE).parent
            processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
            self.extractor = CLIPVisionModelWithProjection.from_pretrained(folder, local_files_only=True)
            self.size = int(processor.crop_size["height"])
            self.mean, self.std = torch.tensor(processor.image_mean), torch.tensor(processor.image_std)
        self.extractor = self.extractor.eval().to(self.device, torch.float32)

    # features(): _SetScorer's batching loop over these two, giving L2-normalised CLIP image embeddings
    def _preprocess(self, image: Image.Image) -> np.ndarray:
        return cmmd_preprocess(image, self.size)

    def _extract(self, batch: list[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
        x = ((x - self.mean[:, None, None]) / self.std[:, None, None]).to(self.device)
        emb = self.extractor(pixel_values=x).image_embeds.float().cpu()
        return emb / torch.linalg.norm(emb, dim=-1, keepdim=True)

    def compute(self, fake: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
        return {"value": mmd(fake, real)}

    def preprocessing(self) -> str:
        return PREPROCESSING
