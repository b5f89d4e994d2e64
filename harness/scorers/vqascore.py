"""VQAScore (Lin et al. 2024, "Evaluating Text-to-Visual Generation with Image-to-Text Generation") with CLIP-FlanT5.

A vision-language model is asked whether the image shows the prompt, and the score is the probability of its answer
"Yes". This module computes it as the ``t2v_metrics`` package (3.0, ``CLIPT5Model.forward``) does; that package pins
torch 2.5.1 and transformers 4.49, so it cannot be installed beside this project, and its scoring path is
re-implemented here on transformers 5 (tested equal to the package's own code on a tiny checkpoint:
tests/test_vqascore.py and ``.ci/run``):

- the question is ``Does this figure show "{prompt}"? Please answer yes or no.`` in the package's ``t5_chat`` form:
  ``SYSTEM_MSG + " USER: <image>\\n" + question + " ASSISTANT: "``;
- the text on each side of ``<image>`` is tokenized separately (so each piece ends with ``</s>``, as the package's
  ``t5_tokenizer_image_token`` does), and the image's projected CLIP patch features replace ``<image>`` in the
  FlanT5 encoder's input embeddings;
- CLIP ViT-L/14@336: the image padded to a square with the processor's mean colour (``image_aspect_ratio: pad``),
  the CLIPImageProcessor of ``openai/clip-vit-large-patch14-336``, the hidden states of layer
  ``mm_vision_select_layer`` (-2) without the CLS token, then the ``mlp2x_gelu`` projector;
- the label is the tokenized answer ``"Yes"``, which is two tokens (``▁Yes``, ``</s>``), and the score is
  ``exp(-mean cross-entropy)`` over them: the geometric mean of P(Yes) and P(</s> | Yes), not P(Yes) alone. This
  follows the package's code, not the paper's text, which writes P("Yes").

``weights.vqascore`` is a folder holding three Hugging Face folders, as their repositories name them::

    vqascore/
      clip-flant5-xxl/              zhiqiulin/clip-flant5-xxl (or clip-flant5-xl/): config.json (model_type clip_t5),
                                    model*.safetensors or pytorch_model*.bin (single file or shards + index)
      flan-t5-xxl/                  google/flan-t5-xxl (or flan-t5-xl/): the tokenizer (spiece.model, tokenizer_config.json)
      clip-vit-large-patch14-336/   openai/clip-vit-large-patch14-336: config.json, preprocessor_config.json, and its
                                    weights when the CLIP-FlanT5 checkpoint does not hold the vision tower

The package loads the vision tower from the CLIP repository and then the CLIP-FlanT5 checkpoint over it, so vision
weights in the checkpoint (``vision_tower.vision_tower.*``) win; the same order is kept here.

The tiny build (golden tests) is a random 2-layer FlanT5 and 2-layer CLIP vision tower with a 336 px processor and a
SentencePiece unigram vocabulary written in code. The released model has 11 B parameters (XXL): score on a GPU, in
bfloat16 there as the package does (float16 overflows in T5).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from torch import nn

from harness.errors import HarnessError
from harness.scorers.base import Scorer
from models.layouts import WeightFiles, model_folder, named_files, tokenizer_folder

QUESTION = 'Does this figure show "{}"? Please answer yes or no.'
ANSWER = "Yes"
SYSTEM_MSG = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
              "detailed, and polite answers to the user's questions.")
IMAGE_TOKEN = "<image>"
IMAGE_TOKEN_INDEX = -200  # marks where the image features go (never embedded)
CONTEXT_LEN = 2048  # the package's model_max_length: longer inputs are cut there
#: (model folder, its tokenizer folder) in the order they are looked for
MODEL_DIRS = (("clip-flant5-xxl", "flan-t5-xxl"), ("clip-flant5-xl", "flan-t5-xl"))
VISION_DIR = "clip-vit-large-patch14-336"
VISION_PREFIX = "vision_tower.vision_tower."  # the checkpoint's CLIPVisionModel keys
PROJECTOR_PREFIX = "mm_projector."
PREPROCESSING = ("padded to a square with the CLIP mean colour, then the CLIPImageProcessor of "
                 "clip-vit-large-patch14-336: resize shortest side 336 (bicubic), center crop 336, CLIP mean/std")


def chat_prompt(prompt: str) -> str:
    """The encoder's text for one prompt (the package's ``t5_chat`` conversation style)."""
    return f"{SYSTEM_MSG} USER: {IMAGE_TOKEN}\n{QUESTION.format(prompt)} ASSISTANT: "


def input_ids_with_image(text: str, tokenizer) -> list[int]:
    """Each piece around ``<image>`` tokenized on its own (each ends with ``</s>``), joined by IMAGE_TOKEN_INDEX."""
    out: list[int] = []
    for i, piece in enumerate(text.split(IMAGE_TOKEN)):
        if i:
            out.append(IMAGE_TOKEN_INDEX)
        out += tokenizer(piece).input_ids
    return out


def pad_to_square(image: Image.Image, mean: Sequence[float]) -> Image.Image:
    """Centre ``image`` on a square canvas of the processor's mean colour (``image_aspect_ratio: pad``)."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), tuple(int(m * 255) for m in mean))
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def build_projector(kind: str, vision_width: int, text_width: int) -> nn.Module:
    """``linear`` or ``mlp{N}x_gelu`` (LLaVA's projector names, as the checkpoint's ``mm_projector_type`` says)."""
    if kind == "linear":
        return nn.Linear(vision_width, text_width)
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind)
    if not match:
        raise HarnessError(f"mm_projector_type {kind!r} is not supported (linear or mlpNx_gelu)")
    layers: list[nn.Module] = [nn.Linear(vision_width, text_width)]
    for _ in range(int(match.group(1)) - 1):
        layers += [nn.GELU(), nn.Linear(text_width, text_width)]
    return nn.Sequential(*layers)


class CLIPFlanT5(nn.Module):
    """CLIP vision tower -> projector -> FlanT5 encoder-decoder, as CLIP-FlanT5 wires them."""

    def __init__(self, t5, vision, projector: nn.Module, select_layer: int = -2, select_feature: str = "patch"):
        super().__init__()
        if select_feature not in ("patch", "cls_patch"):
            raise HarnessError(f"mm_vision_select_feature {select_feature!r} is not supported (patch or cls_patch)")
        self.t5, self.vision, self.projector = t5, vision, projector
        self.select_layer, self.select_feature = select_layer, select_feature

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        hidden = self.vision(pixels, output_hidden_states=True).hidden_states[self.select_layer]
        return self.projector(hidden[:, 1:] if self.select_feature == "patch" else hidden)

    def encoder_inputs(self, ids: list[list[int]], image_features: torch.Tensor):
        """Token embeddings with each sequence's image features in place of IMAGE_TOKEN_INDEX, right-padded and
        masked (T5's positions are relative, so what fills the padding does not matter)."""
        embed = self.t5.get_input_embeddings()
        rows = []
        for seq, feats in zip(ids, image_features):
            at = seq.index(IMAGE_TOKEN_INDEX)
            before = torch.tensor(seq[:at], device=feats.device)
            after = torch.tensor(seq[at + 1:], device=feats.device)
            rows.append(torch.cat([embed(before), feats.to(embed.weight.dtype), embed(after)]))
        width = max(len(r) for r in rows)
        embeds = torch.zeros(len(rows), width, rows[0].shape[-1], dtype=rows[0].dtype, device=rows[0].device)
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=rows[0].device)
        for i, r in enumerate(rows):
            embeds[i, :len(r)], mask[i, :len(r)] = r, 1
        return embeds, mask

    def answer_probability(self, pixels: torch.Tensor, ids: list[list[int]], answer: list[int],
                           decoder_start: int) -> torch.Tensor:
        """exp(-mean over the answer's tokens of -log p(token | image, question, earlier answer tokens))."""
        embeds, mask = self.encoder_inputs(ids, self.encode_images(pixels))
        labels = torch.tensor([answer] * len(ids), device=embeds.device)
        # teacher forcing: the decoder reads the answer shifted right behind the start token
        decoder_ids = torch.cat([torch.full_like(labels[:, :1], decoder_start), labels[:, :-1]], dim=1)
        logits = self.t5(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=decoder_ids).logits
        logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels[..., None])[..., 0]
        return logp.mean(dim=1).exp()


def t5_config(config: dict):
    """The T5 part of a CLIP-FlanT5 ``config.json`` (model_type ``clip_t5``, a T5Config plus ``mm_*`` keys)."""
    from transformers import T5Config

    return T5Config(**{k: v for k, v in config.items() if not k.startswith("mm_") and k not in
                       ("model_type", "architectures", "transformers_version", "_name_or_path")})


def read_state_dict(files: Sequence[Path], device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint's weight files (one file, or an index and its shards), each moved to ``device``
    and cast to ``dtype`` as it is read: host memory holds one tensor at a time, not the 11 B-parameter model."""
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    for f in files:
        if f.name.endswith(".index.json"):
            continue
        if f.suffix == ".safetensors":
            with safe_open(str(f), framework="pt") as tensors:
                for key in tensors.keys():
                    state[key] = tensors.get_tensor(key).to(device, dtype)
        else:
            for key, tensor in torch.load(f, map_location="cpu", weights_only=True, mmap=True).items():
                state[key] = tensor.to(device, dtype)
    return state


def load_clip_flant5(model_dir: Path, weight_files: Sequence[Path], vision_dir: Path,
                     device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32) -> CLIPFlanT5:
    """Build CLIP-FlanT5 from its folder on ``device`` in ``dtype``: T5 and projector from the checkpoint; the vision
    tower from the checkpoint where it holds one, else from the CLIP folder."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, T5ForConditionalGeneration

    config = json.loads((model_dir / "config.json").read_text())
    missing = [k for k in ("mm_hidden_size", "d_model") if k not in config]
    if missing:
        raise HarnessError(f"{model_dir / 'config.json'}: no {', '.join(missing)}; this is not a CLIP-FlanT5 "
                           "config (zhiqiulin/clip-flant5-xxl has model_type clip_t5 and mm_* keys)")
    state = read_state_dict(weight_files, device, dtype)
    vision_state = {k[len(VISION_PREFIX):]: state.pop(k) for k in list(state) if k.startswith(VISION_PREFIX)}
    projector_state = {k[len(PROJECTOR_PREFIX):]: state.pop(k) for k in list(state) if k.startswith(PROJECTOR_PREFIX)}
    state.pop("embed_tokens.weight", None)  # CLIP-FlanT5 registers the encoder's embedding a second time
    # meta-device construction: an 11 B model is not first allocated in float32 just to be overwritten
    with torch.device("meta"):
        t5 = T5ForConditionalGeneration(t5_config(config))
    _load(t5, state, model_dir, "the FlanT5 weights")
    if vision_state:
        # built in place (0.3 B parameters): its position_ids buffer is not in any file
        vision = CLIPVisionModel(CLIPVisionConfig.from_pretrained(vision_dir, local_files_only=True))
        # transformers 4 (which wrote the checkpoint) nested CLIPVisionModel's weights under vision_model.; 5 does not
        expected = set(vision.state_dict())
        vision_state = {k.removeprefix("vision_model.") if k not in expected else k: v for k, v in vision_state.items()}
        _load(vision, vision_state, model_dir, f"the vision tower ({VISION_PREFIX}*)")
        missing = sorted(set(vision.state_dict()) - set(vision_state))
        if missing:
            raise HarnessError(f"{model_dir}: the vision tower ({VISION_PREFIX}*) lacks {missing[:5]}; download the "
                               "checkpoint again")
    else:
        vision = CLIPVisionModel.from_pretrained(vision_dir, local_files_only=True)
    if vision.config.hidden_size != config["mm_hidden_size"]:
        raise HarnessError(f"{vision_dir}: vision width {vision.config.hidden_size}, but {model_dir / 'config.json'} "
                           f"says mm_hidden_size {config['mm_hidden_size']}: the CLIP folder is not the checkpoint's")
    projector = build_projector(config.get("mm_projector_type", "linear"), config["mm_hidden_size"], config["d_model"])
    if not projector_state:
        raise HarnessError(f"{model_dir}: the checkpoint has no {PROJECTOR_PREFIX}* weights")
    projector.load_state_dict(projector_state)
    return CLIPFlanT5(t5, vision, projector, config.get("mm_vision_select_layer", -2),
                      config.get("mm_vision_select_feature", "patch")).eval()


def _load(module: nn.Module, state: dict[str, torch.Tensor], where: Path, what: str) -> None:
    """load_state_dict with ``assign``: every parameter must come from ``state`` (tied ones excepted), which a module
    built on the meta device shows as a parameter left there."""
    result = module.load_state_dict(state, strict=False, assign=True)
    # a tied weight absent from the file takes its source's tensor; one present stays its own (FlanT5's lm_head is
    # not its input embedding, though transformers 5 ties T5's at construction)
    for target, source in (getattr(module, "_tied_weights_keys", None) or {}).items():
        if target not in state and source in state:
            owner, _, name = target.rpartition(".")
            setattr(module.get_submodule(owner), name, module.get_parameter(source))
    still_meta = [n for n, p in [*module.named_parameters(), *module.named_buffers()] if p.is_meta]
    if still_meta or result.unexpected_keys:
        raise HarnessError(f"{where}: {what} do not match the model its config.json describes "
                           f"(missing {still_meta[:5]}, unexpected {result.unexpected_keys[:5]}); download the "
                           "checkpoint again")


def tiny_spm_model() -> bytes:
    """A SentencePiece unigram model written in code: T5's specials (<pad> 0, </s> 1, <unk> 2), the question's words
    and every printable ASCII character, alone and word-initial."""
    import string

    from sentencepiece import sentencepiece_model_pb2 as spm

    proto = spm.ModelProto()
    piece = spm.ModelProto.SentencePiece
    for name, kind in (("<pad>", piece.CONTROL), ("</s>", piece.CONTROL), ("<unk>", piece.UNKNOWN)):
        proto.pieces.add(piece=name, score=0.0, type=kind)
    words = {w.strip('".?') for w in (SYSTEM_MSG + " USER ASSISTANT " + QUESTION + " " + ANSWER).split()} - {""}
    chars = [c for c in string.printable if not c.isspace()]
    scores = {"\u2581" + c: -6.0 for c in chars} | {c: -7.0 for c in ["\u2581", *chars]}
    scores |= {"\u2581" + w: -2.0 for w in words}  # a piece is defined once (SentencePiece refuses duplicates)
    for name, score in sorted(scores.items()):
        proto.pieces.add(piece=name, score=score, type=piece.NORMAL)
    proto.trainer_spec.model_type = spm.TrainerSpec.UNIGRAM
    proto.trainer_spec.vocab_size = len(proto.pieces)
    proto.trainer_spec.pad_id, proto.trainer_spec.eos_id, proto.trainer_spec.unk_id = 0, 1, 2
    proto.trainer_spec.bos_id = -1
    proto.normalizer_spec.name = "nmt_nfkc"  # T5's: among other things it turns the prompt's "\n" into a space
    proto.normalizer_spec.precompiled_charsmap = _nmt_nfkc_charsmap()
    proto.normalizer_spec.add_dummy_prefix = True
    proto.normalizer_spec.remove_extra_whitespaces = True
    proto.normalizer_spec.escape_whitespaces = True
    return proto.SerializeToString()


def _nmt_nfkc_charsmap() -> bytes:
    """SentencePiece's compiled ``nmt_nfkc`` normalization table, which it embeds in every model it trains with
    that rule (as T5's spiece.model was): taken from a throwaway model trained on one line."""
    import io

    import sentencepiece
    from sentencepiece import sentencepiece_model_pb2 as spm

    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(["a b c"] * 4), model_writer=out, vocab_size=7,
                                             model_type="char", normalization_rule_name="nmt_nfkc", num_threads=1,
                                             minloglevel=2)
    proto = spm.ModelProto()
    proto.ParseFromString(out.getvalue())
    return proto.normalizer_spec.precompiled_charsmap


def tiny_tokenizer(folder: Path):
    """The tiny build's T5 tokenizer, written to ``folder`` (spiece.model) and read back as a FlanT5 folder is."""
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(tiny_spm_model())
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "eos_token": "</s>", "unk_token": "<unk>",
         "pad_token": "<pad>", "model_max_length": CONTEXT_LEN}))
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def tiny_clip_flant5(vocab_size: int, seed: int = 61) -> CLIPFlanT5:
    """Random, 2 + 2 layers, 32-d, a 336 px / 48 px-patch vision tower (7 x 7 patches), gated-GELU as FlanT5."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    # initializer_factor > 1 spreads the random logits, so the tiny build tells images apart in the golden test
    t5 = T5ForConditionalGeneration(T5Config(
        vocab_size=vocab_size, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0,
        eos_token_id=1, initializer_factor=0.2))
    # FlanT5's output layer is its own matrix, not the input embedding (transformers 5 ties them at construction)
    t5.lm_head.weight = nn.Parameter(t5.lm_head.weight.detach().clone())
    vision = CLIPVisionModel(CLIPVisionConfig(hidden_size=24, intermediate_size=48, num_hidden_layers=2,
                                              num_attention_heads=2, image_size=336, patch_size=48))
    projector = build_projector("mlp2x_gelu", 24, 32)
    with torch.no_grad():  # louder image features and answer logits: the score then moves with the image
        projector[-1].weight.mul_(20.0)
        t5.lm_head.weight.mul_(3.0)
    return CLIPFlanT5(t5, vision, projector).eval()


class VQAScoreScorer(Scorer):
    name = "vqascore"
    label = "VQAScore"
    LIBRARIES = ("transformers", "sentencepiece")
    PARAMETERS = 11_300_000_000  # CLIP-FlanT5-XXL: FlanT5-XXL (11 B) + CLIP ViT-L/14 (0.3 B)
    GPU_DTYPE = torch.bfloat16  # the package's dtype; T5 overflows in float16

    @staticmethod
    def model_folders(root: Path) -> tuple[Path, Path]:
        """(CLIP-FlanT5 folder, its tokenizer folder): the first of MODEL_DIRS present, else the XXL names."""
        return next(((root / m, root / t) for m, t in MODEL_DIRS if (root / m).is_dir()),
                    (root / MODEL_DIRS[0][0], root / MODEL_DIRS[0][1]))

    @classmethod
    def entry_files(cls, key: str, path: Path) -> WeightFiles:
        hint = "See README 'Weights' for the vqascore folders."
        root = Path(path)
        model_dir, tokenizer_dir = cls.model_folders(root)
        found = WeightFiles(key, root, hint=hint)
        if not root.is_dir():
            found.missing.append(f"{root} is not a folder, expected one holding {MODEL_DIRS[0][0]}/, "
                                 f"{MODEL_DIRS[0][1]}/ and {VISION_DIR}/")
            return found
        found.merge(model_folder(key, model_dir, "model", f"{model_dir.name}/", hint))
        found.merge(tokenizer_folder(key, tokenizer_dir, f"{tokenizer_dir.name}/", hint))
        found.merge(named_files(key, root / VISION_DIR, ("config.json", "preprocessor_config.json"), hint))
        vision = model_folder(key, root / VISION_DIR, "model", f"{VISION_DIR}/", hint)
        if vision.ok:
            found.merge(vision)
        return found

    def _build(self) -> None:
        from transformers import AutoTokenizer
        # PIL's bicubic resize, as transformers 4's CLIPImageProcessor (the package's) did; transformers 5's default
        # class resizes with torchvision, which differs by up to 0.03 in normalised pixel values
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        if self.weights.is_tiny:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                self.tokenizer = tiny_tokenizer(Path(tmp))
            self.model = tiny_clip_flant5(len(self.tokenizer))
            self.processor = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
        else:
            found = self.entry_files(self.weights.key, self.weights.path).require()
            root = Path(self.weights.path)
            model_dir, tokenizer_dir = self.model_folders(root)
            weights = [f for f in found.files if f.parent == model_dir and f.name != "config.json"]
            self.model = load_clip_flant5(model_dir, weights, root / VISION_DIR, self.device, self.dtype)
            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
            self.processor = CLIPImageProcessorPil.from_pretrained(root / VISION_DIR, local_files_only=True)
        self.model = self.model.to(self.device, self.dtype)
        self.answer = self.tokenizer(ANSWER).input_ids
        self.decoder_start = self.model.t5.config.decoder_start_token_id

    def _score_batch(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        squares = [pad_to_square(im.convert("RGB"), self.processor.image_mean) for im in images]
        pixels = self.processor(images=squares, return_tensors="pt")["pixel_values"].to(self.device, self.dtype)
        ids = [input_ids_with_image(chat_prompt(p), self.tokenizer)[:CONTEXT_LEN] for p in prompts]
        return self.model.answer_probability(pixels, ids, self.answer, self.decoder_start).tolist()

    def preprocessing(self) -> str:
        return PREPROCESSING
