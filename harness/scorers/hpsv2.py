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


#: attention head widths for a checkpoint that matches no open_clip model config: ViT-H-14's
#: (the HPS architecture). Head counts are the one fact that tensor shapes cannot tell.
VISION_HEAD_WIDTH, TEXT_HEAD_WIDTH = 80, 64


def open_clip_config(state: dict[str, torch.Tensor], path) -> dict:
    """The open_clip ``CLIP`` config of a state dict, read off its shapes.

    Head counts come from the open_clip model config with exactly these shapes (the official HPS
    files give ``get_model_config("ViT-H-14")``, tested), or from ViT-H-14's head widths when no
    config matches, so a small checkpoint of the same family loads through the same code.
    """
    import open_clip

    def layers(prefix: str) -> int:
        return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})

    try:
        width, _, _, patch = state["visual.conv1.weight"].shape
        grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision = {"image_size": grid * patch, "layers": layers("visual.transformer.resblocks."), "width": width,
                  "patch_size": patch, "mlp_ratio": state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width}
        vocab, text_width = state["token_embedding.weight"].shape
        text = {"context_length": state["positional_embedding"].shape[0], "vocab_size": vocab, "width": text_width,
                "layers": layers("transformer.resblocks.")}
        embed_dim = state["visual.proj"].shape[1]
    except KeyError as err:
        raise HarnessError(f"{path} is not an open_clip CLIP checkpoint (no key {err}); expected an HPS v2 file") from err
    for name in open_clip.list_models():
        cfg = open_clip.get_model_config(name)
        v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
        if (set(cfg) == {"embed_dim", "vision_cfg", "text_cfg"} and cfg["embed_dim"] == embed_dim
                and set(v) <= {*vision, "head_width"} and set(t) <= {*text, "heads"}
                and all(v.get(k, 4.0 if k == "mlp_ratio" else None) == x for k, x in vision.items())
                and all(t.get(k) == x for k, x in text.items())):
            return cfg
    vision["head_width"] = VISION_HEAD_WIDTH
    text["heads"] = text_width // TEXT_HEAD_WIDTH
    return {"embed_dim": embed_dim, "vision_cfg": vision, "text_cfg": text}


def load_hps_model(path, device, dtype) -> torch.nn.Module:
    """The HPS open_clip model from its checkpoint, built on the meta device and filled in ``dtype``."""
    import open_clip

    from models.weights import load_checkpoint

    ckpt = load_checkpoint(path)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if state is None:
        raise HarnessError(f"{path} holds no state_dict; expected an HPS v2 checkpoint")
    with torch.device("meta"):
        model = open_clip.CLIP(**open_clip_config(state, path), quick_gelu=False)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise HarnessError(f"{path} does not fit open_clip's CLIP: missing keys {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict({k: v.to(device, dtype) for k, v in state.items()}, strict=True, assign=True)
    # The causal text mask is a non-persistent buffer (not in the file): rebuilt as open_clip builds it.
    model.attn_mask = torch.full((model.context_length,) * 2, float("-inf"), device=device).triu_(1)
    return model


class HPSv2Scorer(Scorer):
    name = "hpsv2"
    label = "HPS v2.0"  # the version in every header, v2.1 being its own column; the paper's "HPS v2" is compared with v2.0
    VERSION = "v2.0"
    CHECKPOINT = "HPS_v2_compressed.pt"
    FILES = (CHECKPOINT,)
    LIBRARIES = ("open_clip_torch", "torchvision")
    PARAMETERS = 986_109_441  # open_clip ViT-H-14

    def _build(self) -> None:
        import open_clip

        if self.weights.is_tiny:
            self.model = tiny_open_clip(64, seed=11 if self.VERSION == "v2.0" else 12, quick_gelu=False)
        else:
            self.model = load_hps_model(self.file(self.CHECKPOINT), self.device, self.dtype)
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
        return {self.CHECKPOINT: file_sha256(self.file(self.CHECKPOINT)), "version": self.VERSION}

    def preprocessing(self) -> str:
        return PREPROCESSING


class HPSv21Scorer(HPSv2Scorer):
    name = "hpsv21"
    label = "HPS v2.1"
    VERSION = "v2.1"
    CHECKPOINT = "HPS_v2.1_compressed.pt"
    FILES = (CHECKPOINT,)
