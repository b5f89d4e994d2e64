"""CLIP towers shared by the CLIP-based scorers (Aesthetic, CLIP score, HPS v2)."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.errors import HarnessError

OPENAI_PREPROCESSING = "resize shortest side to 224 (bicubic), center crop 224x224, RGB, OpenAI CLIP mean/std"


def openai_transform(size: int = 224):
    import open_clip

    return open_clip.image_transform(
        size, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD,
        resize_mode="shortest", interpolation="bicubic",
    )


def tiny_open_clip(embed_dim: int, seed: int = 0, quick_gelu: bool = True) -> torch.nn.Module:
    """An open_clip ``CLIP`` with ViT-L/14's interface (224 px input, ``embed_dim`` output), 2 tiny layers."""
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    model = open_clip.CLIP(
        embed_dim=embed_dim,
        vision_cfg=CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=32, image_size=224),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=2),
        quick_gelu=quick_gelu,
    )
    return model.eval()


def load_openai_clip(path: Path, device: torch.device) -> torch.nn.Module:
    """OpenAI CLIP from a local ``ViT-L-14.pt`` (the TorchScript archive or a plain state dict)."""
    import open_clip

    try:
        model = open_clip.load_openai_model(str(path), device="cpu")
    except Exception as err:  # open_clip raises a mix of RuntimeError/KeyError on bad files
        raise HarnessError(f"could not load OpenAI CLIP weights from {path} ({err}); expected the OpenAI ViT-L-14.pt file") from err
    return model.float().eval().to(device)
