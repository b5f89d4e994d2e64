"""ImageReward v1.0 (Xu et al. 2023): BLIP ViT-L/16 + BERT cross-attention + an MLP, z-normalised.

The score of (image, prompt) is exactly ``ImageReward.score(prompt, image)`` of the image-reward
package (tested equal): prompt tokens (35, padded) attend to the image patch embeddings, the [CLS]
state goes through the MLP, then (r - 0.16717) / 1.03334. The package scores one image per call;
this scorer runs the same modules on batches of (prompt, image) pairs.

Weights folder (``weights.imagereward``): ``ImageReward.pt``, ``med_config.json`` and
``bert-base-uncased/vocab.txt`` (all from THUDM/ImageReward and bert-base-uncased, local files only;
the package would otherwise fetch them, and offline its BERT tokenizer silently comes back empty).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from harness.errors import HarnessError
from harness.scorers.base import Scorer
from harness.scorers.imagereward_compat import bert_vocab, import_imagereward
from models.weights import file_sha256

CKPT, MED_CONFIG, VOCAB = "ImageReward.pt", "med_config.json", "bert-base-uncased/vocab.txt"
MAX_TOKENS = 35
# BLIP's med_config.json as ImageReward v1.0 ships it (BERT-base with cross-attention to ViT-L).
BLIP_MED_CONFIG = {
    "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
    "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
    "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 30524,
    "encoder_width": 768, "add_cross_attention": True,
}


def tiny_vocab_dir() -> Path:
    """A WordPiece vocabulary made in code: specials, common words, and every printable character
    alone and as a ``##`` continuation, so any text tokenizes."""
    chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    words = "a an the of on in with and photo picture painting red green blue cat dog car sign sky".split()
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + chars + ["##" + c for c in chars]
    folder = Path(tempfile.mkdtemp(prefix="tiny-bert-vocab-"))
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(tokens)) + "\n")
    return folder


class ImageRewardScorer(Scorer):
    name = "imagereward"
    label = "ImageReward"
    FILES = (CKPT, MED_CONFIG, VOCAB)
    LIBRARIES = ("image-reward", "transformers", "timm")
    # approximate (not counted here: BLIP needs its checkpoint to build): ViT-L/16 about 303 M, BERT-base
    # with cross-attention about 140 M, the MLP under 1 M
    PARAMETERS = 445_000_000

    def _build(self) -> None:
        IR = import_imagereward()
        if self.weights.is_tiny:
            self._build_tiny(IR)
        else:
            folder = self.weights.path
            ckpt, med = self.file(CKPT), self.file(MED_CONFIG)
            vocab = self.file(VOCAB).parent
            with bert_vocab(vocab):
                model = IR.ImageReward(med_config=str(med), device=str(self.device))
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
            missing, unexpected = model.load_state_dict(state, strict=False)  # the package ignores these; we do not
            if missing or unexpected:
                raise HarnessError(
                    f"{ckpt} does not fit ImageReward v1.0 ({folder}/{MED_CONFIG}): missing keys {missing[:5]}, "
                    f"unexpected keys {unexpected[:5]}"
                )
            self.visual, self.text, self.mlp = model.blip.visual_encoder, model.blip.text_encoder, model.mlp
            self.tokenizer, self.transform = model.blip.tokenizer, model.preprocess
            self.mean, self.std = model.mean, model.std
        for name in ("visual", "text", "mlp"):
            setattr(self, name, getattr(self, name).eval().to(self.device, self.dtype))

    def _build_tiny(self, IR) -> None:
        from ImageReward.ImageReward import MLP, _transform
        from ImageReward.models.BLIP.med import BertConfig, BertModel
        from ImageReward.models.BLIP.vit import VisionTransformer

        with bert_vocab(tiny_vocab_dir(), minimum=100):
            from ImageReward.models.BLIP import blip_pretrain

            self.tokenizer = blip_pretrain.init_tokenizer()
        torch.manual_seed(31)
        self.visual = VisionTransformer(img_size=224, patch_size=32, embed_dim=64, depth=2, num_heads=2)
        cfg = BertConfig(vocab_size=len(self.tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=128, max_position_embeddings=64)
        cfg.encoder_width, cfg.add_cross_attention = 64, True
        self.text = BertModel(config=cfg, add_pooling_layer=False)
        self.mlp = MLP(64)
        for param in self.mlp.parameters():  # ImageReward's init (std 1/769) would make tiny scores near-constant
            torch.nn.init.normal_(param, std=0.3)
        self.transform = _transform(224)
        self.mean, self.std = 0.16717362830052426, 1.0333394966054072  # ImageReward v1.0's constants

    def _score_batch(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        tokens = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=MAX_TOKENS,
                                return_tensors="pt").to(self.device)
        x = torch.stack([self.transform(im) for im in images]).to(self.device, self.dtype)
        image_embeds = self.visual(x)
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        out = self.text(tokens.input_ids, attention_mask=tokens.attention_mask, encoder_hidden_states=image_embeds,
                        encoder_attention_mask=image_atts, return_dict=True)
        rewards = self.mlp(out.last_hidden_state[:, 0, :].float().to(self.dtype)).float()
        return ((rewards - self.mean) / self.std).squeeze(-1).tolist()

    def checkpoint_fingerprint(self) -> dict[str, str]:
        if self.weights.is_tiny:
            return {"imagereward": "tiny"}
        return {f: file_sha256(self.file(f)) for f in (CKPT, MED_CONFIG, VOCAB)}

    def preprocessing(self) -> str:
        return ("resize shortest side to 224 (bicubic, PIL), center crop 224, RGB, OpenAI CLIP mean/std; "
                f"BERT uncased tokens padded/truncated to {MAX_TOKENS}")
