"""PickScore (Kirstain et al. 2023, Pick-a-Pic): a CLIP ViT-H/14 fine-tuned on human preferences.

As the reference code computes it (``yuvalkirstain/PickScore`` README): the processor of
``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` prepares image and text (``padding``, ``truncation``, 77 tokens), the model
``yuvalkirstain/PickScore_v1`` (a transformers ``CLIPModel``) embeds both, each embedding is L2-normalised, and the
score is ``logit_scale.exp()`` times their cosine similarity (about 100 x cos for the released model: scores near 20).

``weights.pickscore`` is a folder holding both, each in the Hugging Face layout::

    pickscore/
      PickScore_v1/                          config.json, model.safetensors (or pytorch_model.bin)
      CLIP-ViT-H-14-laion2B-s32B-b79K/       preprocessor_config.json (or processor_config.json), tokenizer.json
                                             (or vocab.json + merges.txt), tokenizer_config.json, ...

The tiny build (smoke profile) is a random 2-layer CLIPModel with a byte-level CLIP tokenizer of 514 tokens (every
byte, alone and word-final, no merges), made in code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from harness.scorers.base import Scorer

MODEL_DIR = "PickScore_v1"
PROCESSOR_DIR = "CLIP-ViT-H-14-laion2B-s32B-b79K"
FILES = (f"{MODEL_DIR}/config.json", (f"{MODEL_DIR}/model.safetensors", f"{MODEL_DIR}/pytorch_model.bin"),
         # the Hub folder has preprocessor_config.json; transformers 5's save_pretrained writes processor_config.json
         (f"{PROCESSOR_DIR}/preprocessor_config.json", f"{PROCESSOR_DIR}/processor_config.json"),
         (f"{PROCESSOR_DIR}/tokenizer.json", f"{PROCESSOR_DIR}/vocab.json"))
MAX_LENGTH = 77
PREPROCESSING = ("CLIPProcessor of CLIP-ViT-H-14-laion2B-s32B-b79K: resize shortest side 224 (PIL bicubic), center crop "
                 "224, CLIP mean/std; text padded and truncated to 77 tokens")


def byte_level_clip_vocab() -> dict[str, int]:
    """A CLIP BPE vocabulary with no merges: each byte's character alone and word-final (``</w>``), then
    ``<|startoftext|>`` and ``<|endoftext|>`` last, as CLIP orders them."""
    from tokenizers.pre_tokenizers import ByteLevel

    chars = sorted(ByteLevel.alphabet())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


def tiny_pickscore(seed: int = 51):
    """(CLIPModel, CLIPProcessor): random, 2 layers, 16-d embeddings, 224 px, the byte-level tokenizer."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = CLIPTokenizer(vocab=byte_level_clip_vocab(), merges=[])
    processor = CLIPProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=tokenizer)
    torch.manual_seed(seed)
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": MAX_LENGTH, "eos_token_id": eos,
                     "bos_token_id": eos - 1, "pad_token_id": eos},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 224, "patch_size": 32},
        projection_dim=16)
    return CLIPModel(config).eval(), processor


class PickScoreScorer(Scorer):
    name = "pickscore"
    label = "PickScore"
    FILES = FILES
    LIBRARIES = ("transformers",)
    PARAMETERS = 986_000_000  # CLIP ViT-H/14

    def _build(self) -> None:
        from transformers import AutoTokenizer, CLIPModel, CLIPProcessor
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        if self.weights.is_tiny:
            self.model, self.processor = tiny_pickscore()
        else:
            self.file(FILES[0])  # one error listing every missing file first
            root = Path(self.weights.path)
            # the two halves read explicitly (the Hub folder names no processor class); the image half with PIL's
            # bicubic resize, as the reference code's transformers 4 did, where transformers 5's default class
            # resizes with torchvision (up to 0.03 apart in normalised pixels)
            self.processor = CLIPProcessor(
                image_processor=CLIPImageProcessorPil.from_pretrained(root / PROCESSOR_DIR, local_files_only=True),
                tokenizer=AutoTokenizer.from_pretrained(root / PROCESSOR_DIR, local_files_only=True))
            self.model = CLIPModel.from_pretrained(root / MODEL_DIR, local_files_only=True)
        self.model = self.model.eval().to(self.device, self.dtype)

    def _score_batch(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        pixels = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        text = self.processor(text=list(prompts), padding=True, truncation=True, max_length=MAX_LENGTH,
                              return_tensors="pt")
        img = _features(self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype)))
        txt = _features(self.model.get_text_features(input_ids=text["input_ids"].to(self.device),
                                                     attention_mask=text["attention_mask"].to(self.device)))
        img = img / img.norm(dim=-1, keepdim=True)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        return (self.model.logit_scale.exp().float() * (img * txt).sum(dim=-1)).tolist()

    def preprocessing(self) -> str:
        return PREPROCESSING


def _features(out) -> torch.Tensor:
    """transformers 5 returns a model output from get_*_features where 4.x returned the tensor."""
    return (out if isinstance(out, torch.Tensor) else out.pooler_output).float()
