"""VQAScore (harness/scorers/vqascore.py): a folder in the upstream layout (zhiqiulin/clip-flant5-xxl, the
google/flan-t5-xxl tokenizer and openai/clip-vit-large-patch14-336, written from the tiny build) scores as
t2v_metrics' own CLIP-FlanT5 code scores it, the score is transformers' cross-entropy of the answer, and a missing
file is one error naming it."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.errors import HarnessError
from harness.scorers.registry import build_scorer
from harness.scorers.vqascore import (ANSWER, CONTEXT_LEN, VISION_DIR, VISION_PREFIX, chat_prompt,
                                      input_ids_with_image, pad_to_square, tiny_clip_flant5, tiny_tokenizer)
from tests.reference_env import reference_scores
PROMPTS = ["a red cube on a table", "two cats", 'an astronaut riding a horse, "oil painting"']


def images():
    # one landscape and one portrait image: the package pads them to squares with the CLIP mean colour
    sizes = [(96, 128, 3), (128, 80, 3), (112, 112, 3)]
    return [Image.fromarray(np.random.default_rng(i).integers(0, 256, s, dtype=np.uint8)) for i, s in enumerate(sizes)]


def write_upstream_folders(folder: Path, vision_in_checkpoint: bool = True) -> Path:
    """The three Hub folders as their repositories lay them out, holding the tiny build's weights."""
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = tiny_tokenizer(folder / "flan-t5-xxl")
    model = tiny_clip_flant5(len(tokenizer), seed=5)
    # openai/clip-vit-large-patch14-336 is a whole CLIPModel (text tower too) with its image processor
    vision_config = model.vision.config.to_dict()
    clip = CLIPModel(CLIPConfig(text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                             "num_attention_heads": 2, "vocab_size": 64},
                                vision_config=vision_config, projection_dim=16))
    clip.vision_model.load_state_dict(model.vision.state_dict())
    clip.save_pretrained(folder / VISION_DIR)
    CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}).save_pretrained(
        folder / VISION_DIR)
    # zhiqiulin/clip-flant5-xxl: a T5 config with model_type clip_t5 and LLaVA's mm_* keys; one state dict
    # holding T5, the projector and (as LLaVA-style training saves it) the vision tower
    ckpt = folder / "clip-flant5-xxl"
    ckpt.mkdir()
    config = model.t5.config.to_dict()
    config.pop("scale_decoder_outputs", None)  # transformers 5's own key; the Hub config says tie_word_embeddings
    config.update(model_type="clip_t5", tie_word_embeddings=False, architectures=["CLIPT5ForConditionalGeneration"],
                  mm_vision_tower="openai/clip-vit-large-patch14-336", mm_hidden_size=vision_config["hidden_size"],
                  mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2, mm_vision_select_feature="patch",
                  use_mm_proj=True, image_aspect_ratio="pad")
    (ckpt / "config.json").write_text(json.dumps(config, indent=1))
    state = {k: v for k, v in model.t5.state_dict().items()
             if k not in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")}  # tied to shared.weight
    state |= {f"mm_projector.{k}": v for k, v in model.projector.state_dict().items()}
    if vision_in_checkpoint:
        # as transformers 4 named CLIPVisionModel's weights when the checkpoint was written
        state |= {f"{VISION_PREFIX}vision_model.{k}": v for k, v in model.vision.state_dict().items()}
    save_file({k: v.contiguous() for k, v in state.items()}, str(ckpt / "model.safetensors"),
              metadata={"format": "pt"})
    return folder


def test_a_saved_clip_flant5_folder_scores_as_t2v_metrics_does(tmp_path):
    folder = write_upstream_folders(tmp_path / "weights")
    scorer = build_scorer("vqascore", {"vqascore": str(folder)}, "cpu", "float32", batch_size=2)
    got = scorer.score(images(), PROMPTS)
    want = reference_scores("vqascore_reference.py", folder, tmp_path, images(), PROMPTS)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=0)
    assert np.diff(np.sort(np.log(got))).min() > 1e-4 and all(0.0 < g < 1.0 for g in got)  # 3 distinct scores
    assert "clip-flant5-xxl/model.safetensors" in scorer.checkpoint_fingerprint()


def test_the_score_is_exp_of_minus_the_mean_cross_entropy_of_the_answer(tmp_path):
    """Against transformers' own T5 loss on the same encoder input: exp(-CE mean over ``▁Yes </s>``)."""
    scorer = build_scorer("vqascore", {"vqascore": "tiny"}, "cpu", "float32").build()
    model, tok = scorer.model, scorer.tokenizer
    image = images()[2]
    got = scorer.score([image], [PROMPTS[0]])[0]
    pixels = scorer.processor(images=[image], return_tensors="pt")["pixel_values"]
    ids = input_ids_with_image(chat_prompt(PROMPTS[0]), tok)
    with torch.no_grad():
        embeds, mask = model.encoder_inputs([ids], model.encode_images(pixels))
        labels = torch.tensor([tok(ANSWER).input_ids])
        loss = model.t5(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
    assert tok.convert_ids_to_tokens(labels[0].tolist()) == ["\u2581Yes", "</s>"]
    assert got == pytest.approx(float(torch.exp(-loss)), rel=1e-5)
    # the question: the system message, the image between two pieces that each end with </s>, the question
    assert ids.count(-200) == 1 and ids[ids.index(-200) - 1] == tok.eos_token_id and ids[-1] == tok.eos_token_id
    assert CONTEXT_LEN == 2048


def test_a_checkpoint_without_the_vision_tower_takes_it_from_the_clip_folder(tmp_path):
    with_tower = build_scorer("vqascore", {"vqascore": str(write_upstream_folders(tmp_path / "a"))}, "cpu", "float32")
    without = build_scorer("vqascore", {"vqascore": str(write_upstream_folders(tmp_path / "b", False))}, "cpu",
                           "float32")
    np.testing.assert_allclose(without.score(images(), PROMPTS), with_tower.score(images(), PROMPTS), rtol=1e-6)
    assert any(k.startswith(f"{VISION_DIR}/model.") for k in without.checkpoint_fingerprint())


def test_missing_files_are_one_error_naming_them(tmp_path):
    folder = write_upstream_folders(tmp_path / "weights")
    (folder / "flan-t5-xxl" / "spiece.model").unlink()
    (folder / VISION_DIR / "preprocessor_config.json").unlink()
    with pytest.raises(HarnessError, match=r"flan-t5-xxl/.*holds no vocabulary.*preprocessor_config.json is missing"):
        build_scorer("vqascore", {"vqascore": str(folder)}, "cpu").score(images()[:1], PROMPTS[:1])
    with pytest.raises(HarnessError, match="clip-flant5-xxl"):
        build_scorer("vqascore", {"vqascore": str(tmp_path / "nowhere")}, "cpu").score(images()[:1], PROMPTS[:1])


def test_pad_to_square_centres_the_image_on_the_mean_colour():
    image = Image.new("RGB", (4, 2), (255, 255, 255))
    square = np.asarray(pad_to_square(image, (0.5, 0.25, 1.0)))
    assert square.shape == (4, 4, 3)
    assert square[0, 0].tolist() == [127, 63, 255] and square[1, 0].tolist() == [255, 255, 255]
    assert square[3, 3].tolist() == [127, 63, 255]
