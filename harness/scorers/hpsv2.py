"""HPS v2 (Human Preference Score v2, Wu et al. 2023): v2.0 and v2.1, two checkpoints of one model.

An open_clip ViT-H-14 fine-tuned on human preferences; the score of (image, prompt) is the cosine
similarity of the L2-normalised image and text embeddings, as ``hpsv2.img_score.score`` computes it.
The checkpoint's ``state_dict`` loads into mainline open_clip's ViT-H-14 with no missing or
unexpected keys, so the hpsv2 package (which downloads weights at every call) is not needed at run
time; the tests compare against it.

Metric ``hpsv2`` reads ``HPS_v2_compressed.pt``, ``hpsv21`` reads ``HPS_v2.1_compressed.pt`` (the
version confusion users complain about cannot happen silently: the file name picks the version and
the fingerprint records it with the file's sha256).
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from harness.errors import HarnessError
from harness.scorers.base import Scorer
from harness.scorers.clip_models import tiny_open_clip
from models.weights import file_sha256

PREPROCESSING = ("to tensor, resize shortest side to 224 (bicubic, on the tensor, antialiased), center crop 224, "
                 "OpenAI CLIP mean/std (hpsv2's preprocess_val); open_clip tokenizer, 77 tokens")


def hps_transform(size: int = 224):
    """hpsv2's eval transform: ToTensor first, then Resize/CenterCrop on the tensor, then Normalize."""
    from torchvision import transforms as T

    import open_clip

    return T.Compose([
        lambda im: im.convert("RGB"),
        T.ToTensor(),
        T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(size),
        T.Normalize(open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD),
    ])


class HPSv2Scorer(Scorer):
    name = "hpsv2"
    VERSION = "v2.0"
    CHECKPOINT = "HPS_v2_compressed.pt"
    LIBRARIES = ("open_clip_torch", "torchvision")

    def __init__(self, *args, architecture: str = "ViT-H-14", **kwargs):
        super().__init__(*args, **kwargs)
        self.architecture = architecture

    def _build(self) -> None:
        import open_clip

        if self.weights.is_tiny:
            self.model = tiny_open_clip(64, seed=11 if self.VERSION == "v2.0" else 12, quick_gelu=False)
        else:
            path = self.weights.require_file(self.CHECKPOINT)
            self.model = open_clip.create_model(self.architecture, pretrained=None)
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
            if state is None:
                raise HarnessError(f"{path} holds no state_dict; expected the HPS {self.VERSION} checkpoint")
            missing, unexpected = self.model.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise HarnessError(
                    f"{path} does not fit open_clip {self.architecture}: missing keys {missing[:5]}, unexpected {unexpected[:5]}"
                )
        self.model = self.model.eval().to(self.device, self.dtype)
        self.tokenizer = open_clip.get_tokenizer("ViT-H-14")  # the BPE every CLIP here shares, 77 tokens
        self.transform = hps_transform(224)

    def _score_batch(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        x = torch.stack([self.transform(im) for im in images]).to(self.device, self.dtype)
        tokens = self.tokenizer(list(prompts)).to(self.device)
        img = self.model.encode_image(x, normalize=True).float()
        txt = self.model.encode_text(tokens, normalize=True).float()
        return (img * txt).sum(dim=-1).tolist()

    def checkpoint_fingerprint(self) -> dict[str, str]:
        if self.weights.is_tiny:
            return {"hps": "tiny", "version": self.VERSION}
        return {self.CHECKPOINT: file_sha256(self.weights.require_file(self.CHECKPOINT)), "version": self.VERSION,
                "architecture": self.architecture}

    def preprocessing(self) -> str:
        return PREPROCESSING


class HPSv21Scorer(HPSv2Scorer):
    name = "hpsv21"
    VERSION = "v2.1"
    CHECKPOINT = "HPS_v2.1_compressed.pt"
