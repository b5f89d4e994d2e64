"""The micro world (harness/micro): its caption grammar, the held-out benchmark, the training stream, and the
analytic judge's calibration: ground-truth renders score at the ceiling, shuffled captions at chance."""

import hashlib
import random
from collections import defaultdict
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from harness.micro import world
from harness.micro.judge import SMALLEST_EXACT_SIZE, classify_shape, colour_fidelity, detect, judge
from harness.micro.world import (
    CATEGORIES,
    CATEGORY_SAMPLERS,
    EVAL_PER_CATEGORY,
    CaptionError,
    caption_text,
    evaluation_prompts,
    evaluation_scene,
    parse,
    render,
    training_pair,
)

# The benchmark is its prompts: a change of grammar, seed or sampler that moves one caption makes old
# micro-drawbench images and scores incomparable, so it must be a deliberate edit here as well.
EVALUATION_SHA256 = "2e4147f17b44136f79af13a66ce7c4ec5e62a40923897b26a219e388fe8b94c9"


def test_the_evaluation_set_is_fixed_held_out_and_covers_every_category():
    rows = evaluation_prompts()
    assert len(rows) == EVAL_PER_CATEGORY * len(CATEGORIES) >= 200
    digest = hashlib.sha256("\n".join("\t".join(r) for r in rows).encode()).hexdigest()
    assert digest == EVALUATION_SHA256
    assert len({pid for pid, _, _ in rows}) == len({text for _, text, _ in rows}) == len(rows)
    per_category = defaultdict(int)
    for _, text, category in rows:
        per_category[category] += 1
        assert 1 <= parse(text).total <= world.MAX_OBJECTS
    assert per_category == {c: EVAL_PER_CATEGORY for c in CATEGORIES}


def test_micro_drawbench_is_a_benchmark_like_the_others():
    from harness.prompts import benchmark, load_prompts

    prompts = load_prompts("micro-drawbench", "no-data-dir-needed")
    assert [(p.id, p.text, p.category) for p in prompts] == list(evaluation_prompts())
    facts = benchmark("micro-drawbench")
    assert facts.category_fields == ("category",) and facts.caption_grammar == "micro" and not facts.has_references
    assert len(load_prompts("micro-drawbench", num_prompts=5)) == 5


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_caption_reads_back_as_what_it_was_written_from(category):
    rng = random.Random(category)
    for _ in range(200):
        spec, style = CATEGORY_SAMPLERS[category](rng)
        caption = caption_text(spec, rng, style)
        assert parse(caption) == spec, caption
        assert parse(caption.upper() + ".") == spec  # case and a final full stop are not meaning


def test_a_caption_outside_the_grammar_is_one_error_naming_it():
    for caption in ("a photo of a dog", "two red circle", "a red circle and a red circle",
                    "a red circle above a red circle", "five blue squares", ""):
        with pytest.raises(CaptionError, match="outside the micro-world grammar") as err:
            parse(caption)
        assert repr(caption) in str(err.value)


def test_the_training_stream_is_a_function_of_seed_and_index_and_never_an_evaluation_caption():
    held_out = {text for _, text, _ in evaluation_prompts()}
    first = [training_pair(7, i) for i in range(400)]
    assert first == [training_pair(7, i) for i in range(400)]  # any worker, any resume draws the same
    assert first != [training_pair(8, i) for i in range(400)]
    assert not held_out & {text for text, _ in first}
    # every category is drawn (the rare-word and description forms are recognisable by their words)
    texts = [text for text, _ in first]
    assert any(t.startswith("a picture containing exactly") for t in texts)
    assert any(w in t for t in texts for w in ("crimson", "orb", "quadrate", "trigon", "azure"))
    # the scene is the caption's: the judge finds every clause in its render
    assert all(judge(render(scene, 32), text).exact for text, scene in first[:100])


@pytest.mark.parametrize("size", [SMALLEST_EXACT_SIZE, 64, 128])
def test_ground_truth_renders_of_every_evaluation_caption_pass_the_judge(size):
    """Calibration, ceiling: the issue asks >= 0.98; measured 1.000 (both seeds, every category) at 32, 64
    and 128 px (and at 24; 0.92 at 16, where small triangles blur into circles)."""
    scores, exact = defaultdict(list), []
    for seed in (0, 1):
        for _, caption, category in evaluation_prompts():
            verdict = judge(render(evaluation_scene(caption, seed), size), caption)
            scores[category].append(verdict.score)
            exact.append(verdict.exact)
    assert min(np.mean(v) for v in scores.values()) >= 0.98, {c: np.mean(v) for c, v in scores.items()}
    assert np.mean(exact) >= 0.98


def test_renders_judged_against_shuffled_captions_score_near_chance():
    """Calibration, floor: real renders, wrong captions. Measured: mean clause score 0.199, exact 0.004."""
    rows = evaluation_prompts()
    captions = [text for _, text, _ in rows]
    shuffled = captions[:]
    random.Random(0).shuffle(shuffled)
    verdicts = [judge(render(evaluation_scene(a, 0), 64), b) for a, b in zip(captions, shuffled) if a != b]
    assert np.mean([v.score for v in verdicts]) < 0.3
    assert np.mean([v.exact for v in verdicts]) < 0.02


@pytest.mark.parametrize("size", [64, 128])
def test_colour_fidelity_is_one_on_ground_truth_and_near_its_chance_on_shuffled_captions(size):
    """micro_colour's calibration: every ground-truth render 1.0 (anti-aliased edges are read as their object's
    colour or as background, never as another palette colour); against shuffled captions 0.455 (measured; the
    38 captions that name no colour count 1.0 for any drawn colour)."""
    rows = evaluation_prompts()
    captions = [text for _, text, _ in rows]
    renders = [render(evaluation_scene(c, 0), size) for c in captions]
    assert [colour_fidelity(im, c) for im, c in zip(renders, captions)] == [1.0] * len(rows)
    shuffled = captions[:]
    random.Random(0).shuffle(shuffled)
    assert np.mean([colour_fidelity(im, c) for im, c in zip(renders, shuffled)]) == pytest.approx(0.4551, abs=5e-4)


def test_colour_fidelity_is_the_share_of_drawn_pixels_in_a_named_colour():
    red = world.SceneObject("square", "red", "large", 0.3, 0.25, 0.5)
    blue = world.SceneObject("square", "blue", "large", 0.3, 0.75, 0.5)
    both = render(world.Scene((red, blue)), 64)
    assert colour_fidelity(both, "a red square and a blue square") == 1.0
    assert colour_fidelity(both, "a red square") == pytest.approx(0.5, abs=0.02)  # equal areas, half named
    assert colour_fidelity(both, "a green square") == 0.0
    assert colour_fidelity(both, "two large squares") == 1.0  # no colour named: any drawn colour fits
    assert colour_fidelity(Image.new("RGB", (64, 64), (255, 255, 255)), "two large squares") == 0.0  # nothing drawn


def test_noise_and_blank_images_satisfy_nothing():
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    blank = Image.new("RGB", (64, 64), (255, 255, 255))
    for _, caption, _ in evaluation_prompts()[::16]:
        assert not judge(noise, caption).exact and not judge(blank, caption).exact
        assert judge(blank, caption).score == 0.0  # no object: no count (all >= 1) and no total holds


def _single(shape, colour="red", size="large", x=0.5, y=0.5, background="plain"):
    extent = np.mean(world.EXTENTS[size])
    return world.Scene((world.SceneObject(shape, colour, size, extent, x, y),), background, 3)


@pytest.mark.parametrize("pixels", [32, 48, 64, 96, 128])
@pytest.mark.parametrize("background", world.BACKGROUNDS)
def test_each_shape_colour_and_size_is_read_back(pixels, background):
    for shape in world.SHAPES:
        for colour in world.COLOURS:
            for size in world.SIZES:
                (found,) = detect(render(_single(shape, colour, size, background=background), pixels))
                assert (found.shape, found.colour, found.size) == (shape, colour, size), (pixels, background)


def test_the_judge_fails_the_clause_a_wrong_image_breaks():
    caption = "a red circle to the left of a blue square"
    right = world.Scene((world.SceneObject("circle", "red", "small", 0.2, 0.25, 0.5),
                         world.SceneObject("square", "blue", "small", 0.2, 0.75, 0.5)))
    assert judge(render(right, 64), caption).exact

    def failing(scene):
        return sorted(c.kind for c in judge(render(scene, 64), caption).clauses if not c.holds)

    red, blue = right.objects
    assert failing(replace(right, objects=(replace(red, x=0.75), replace(blue, x=0.25)))) == ["relation"]
    assert failing(replace(right, objects=(red,))) == ["count", "relation", "total"]
    assert failing(replace(right, objects=(replace(red, shape="triangle"), blue))) == ["count", "relation"]
    assert failing(replace(right, objects=(red, replace(blue, colour="green")))) == ["count", "relation"]
    extra = world.SceneObject("circle", "yellow", "small", 0.2, 0.5, 0.15)
    assert failing(replace(right, objects=(red, blue, extra))) == ["total"]


def test_shapes_are_told_apart_by_fill_and_row_skew():
    assert classify_shape(1.0, 0.0, 1.0) == "square"
    assert classify_shape(np.pi / 4, 0.0, 1.0) == "circle"
    assert classify_shape(0.5, -0.566, 1.0) == "triangle"
    assert classify_shape(0.5, 0.566, 1.0) == "unknown"  # apex down: no world shape
    assert classify_shape(0.8, 0.0, 2.0) == "unknown"  # two objects run together


def test_the_micro_scorers_are_registered_analytic_and_apply_only_to_micro_benchmarks(tmp_path):
    from harness.scorers.registry import build_scorer, metric_applies, scorer_class
    from tests.conftest import smoke_config

    rows = evaluation_prompts()[:: len(evaluation_prompts()) // 8]
    captions = [text for _, text, _ in rows]
    images = [render(evaluation_scene(c, 0), 64) for c in captions]
    wrong = captions[1:] + captions[:1]
    judge_scorer = build_scorer("micro_judge", {}, "cpu", "float32", batch_size=3)  # no weights entry needed
    exact_scorer = build_scorer("micro_exact", {}, "cpu", "float32", batch_size=3)
    assert judge_scorer.score(images, captions) == [1.0] * len(images)
    assert exact_scorer.score(images, captions) == [1.0] * len(images)
    assert judge_scorer.score(images, wrong) == [judge(im, c).score for im, c in zip(images, wrong)]
    assert exact_scorer.score(images, wrong) == [float(judge(im, c).exact) for im, c in zip(images, wrong)]
    colour_scorer = build_scorer("micro_colour", {}, "cpu", "float32", batch_size=3)
    assert colour_scorer.score(images, wrong) == [colour_fidelity(im, c) for im, c in zip(images, wrong)]
    for metric in ("micro_judge", "micro_exact", "micro_colour"):
        assert scorer_class(metric).higher_is_better and not scorer_class(metric).set_metric
        assert metric_applies(metric, "micro-drawbench") and not metric_applies(metric, "drawbench")
    cfg = smoke_config(tmp_path, benchmarks=["micro-drawbench"], metrics=["micro_judge", "micro_exact"])
    assert "micro_judge" not in cfg["weights"]


def test_the_text_encoder_is_a_word_level_t5_that_the_cogview3_loader_reads(tmp_path):
    from harness.micro.models import write_text_encoder
    from models.cogview3.conditioning import T5TextEncoder

    encoder = T5TextEncoder.from_folder(write_text_encoder(tmp_path / "t5"), torch.device("cpu"), torch.float32)
    captions = [text for _, text, _ in evaluation_prompts()]
    ids = encoder.tokenizer(captions).input_ids
    words = {w for c in captions for w in c.split()}
    pieces = {p.removeprefix("\u2581") for row in ids for p in encoder.tokenizer.convert_ids_to_tokens(row)}
    assert all(2 not in row for row in ids)  # no <unk>: every word of the evaluation set is in the vocabulary
    assert words <= pieces and all(len(row) == len(c.split()) + 1 for row, c in zip(ids, captions))  # a word a token, + </s>
    features = encoder(captions[:3] + captions[:1])
    assert features.shape == (4, 225, 64) and torch.equal(features[0], features[3])
    assert (features[0] - features[1]).abs().max() > 0.01

    # config/micro.yaml pads to fewer tokens (text_tokens): no caption of the evaluation set or the training
    # stream may lose a word to truncation
    from harness.config import load_config
    from tests.conftest import ROOT

    n = {spec["text_tokens"] for spec in load_config(ROOT / "config" / "micro.yaml")["systems"].values()}
    assert len(n) == 1
    n = n.pop()
    stream = [training_pair(seed, i)[0] for seed in (0, 1, 2) for i in range(3000)]
    assert max(len(row) for row in encoder.tokenizer(captions + stream).input_ids) <= n
    encoder.max_length = n
    assert encoder(captions[:2]).shape == (2, n, 64)


def test_the_autoencoder_loss_weights_object_pixels_over_every_background():
    from harness.micro.models import OBJECT_PIXEL_BELOW, OBJECT_WEIGHT, reconstruction_weights
    from harness.training.data import pixels

    for background in world.BACKGROUNDS:
        scene = _single("triangle", "yellow", "large", background=background)
        weights = reconstruction_weights(pixels([render(scene, 64)]))[0, 0]
        darkest = np.asarray(render(replace(scene, background="plain"), 64)).min(axis=2) / 255 * 2 - 1
        covered = darkest < OBJECT_PIXEL_BELOW  # the object's own pixels, found without the background
        ratio = weights.max() / weights.min()
        assert float(ratio) == pytest.approx(OBJECT_WEIGHT) and float(weights.mean()) == pytest.approx(1.0)
        assert np.array_equal((weights > weights.min()).numpy(), covered), background


def test_the_autoencoder_trains_through_the_loop_and_loads_back_as_an_sdxl_vae_folder(tmp_path):
    from harness.micro import models
    from harness.training.loop import LoopSettings
    from models.cogview3.checkpoint import load_sdxl_vae
    from models.cogview3.system import VAE_SCALE

    settings = LoopSettings(steps=3, batch_size=2, lr=1e-3, ema_decay=0.5, log_every=1)
    about = models.train_autoencoder(tmp_path / "vae", 32, settings, crop=16, progress=False)
    assert len(about["losses"]) == 3 and all(np.isfinite(about["losses"])) and about["objective"]["crop"] == 16
    with pytest.raises(ValueError, match="crop must be a multiple of 8 from 8 to the render size 32, got 20"):
        models.AutoencoderObjective(32, 20)
    vae = load_sdxl_vae(tmp_path / "vae" / "vae", torch.float32).eval()
    assert tuple(vae.config.block_out_channels) == models.AUTOENCODER_WIDTHS
    assert vae.config.norm_num_groups == models.AUTOENCODER_GROUPS and not list((tmp_path / "vae").glob(".vae*"))
    x = models.render_batch(range(64), 32, 0)
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
        assert z.shape == (64, 4, 4, 4)
        assert float((z * VAE_SCALE).std()) == pytest.approx(1.0, rel=0.15)  # calibrated on 256 other scenes
        # the scale moved into quant_conv / post_quant_conv leaves reconstructions as the trained weights made them
        raw = models.world_autoencoder(settings.seed)
        raw.load_state_dict(torch.load(tmp_path / "vae" / ".state" / "checkpoint.pt", weights_only=True)["ema"])
        raw.eval()
        torch.testing.assert_close(vae.decode(z).sample, raw.decode(raw.encode(x).latent_dist.mean).sample,
                                   atol=2e-4, rtol=1e-4)


def test_world_images_encode_like_a_manifest_and_are_cached(tmp_path):
    from harness.micro.models import world_images
    from harness.training.data import encode_data, pixels
    from harness.training.rounds import build_stage_system
    from tests.conftest import smoke_config

    cfg = smoke_config(tmp_path)
    system = build_stage_system(cfg, "relay", "tiny", False, 1, "relay-init").build()
    images = world_images(3, 64)
    assert [r["prompt"] for r in images.rows] == [training_pair(0, i)[0] for i in range(3)]
    assert images.rows == world_images(3, 64).rows and images.rows[0]["sha256"] != world_images(1, 128).rows[0]["sha256"]
    assert torch.equal(pixels([images.open(images.rows[2])]), pixels([render(training_pair(0, 2)[1], 64)]))
    data, about = encode_data(cfg, "relay", images, system, seed=0, batch_size=2, progress=False)
    assert data["z0"].shape == (3, 4, 8, 8) and data["z_lr"].shape == (3, 4, 8, 8) and data["context"].shape[0] == 3
    assert about["size"] == 64 and about["images"] == 3 and not about["cached"]
    again, about = encode_data(cfg, "relay", world_images(3, 64), system, seed=0, batch_size=3, progress=False)
    assert about["cached"] and all(torch.equal(data[k], again[k]) for k in data)


def test_a_stage_trains_from_scratch_on_world_images_and_generates_through_its_system(tmp_path):
    import json

    from harness.micro.models import world_images, write_initial_unet
    from harness.training.rounds import build_stage_system, run_train
    from tests.conftest import smoke_config

    cfg = smoke_config(tmp_path, distillation={"text_dropout": 0.5, "batch_size": 2})
    init = write_initial_unet(tmp_path / "init", seed=0, text_dim=32)  # the smoke systems' tiny T5 is 32 wide
    metrics = run_train(cfg, "base", out=tmp_path / "base", init=str(init), train_steps=2,
                        images=world_images(4, 64), progress=False)
    assert metrics["objective"] == {"name": "BaseObjective", "offset_noise": 0.05, "text_dropout": 0.5}
    assert metrics["data"]["world"] == world.WORLD_VERSION and metrics["data"]["images"] == 4
    assert json.loads((tmp_path / "base" / "metrics.json").read_text())["steps"] == 2
    system = build_stage_system(cfg, "base", str(tmp_path / "base"), False, 2, "trained").build()
    (image,) = system.generate([training_pair(0, 0)[0]], [0])
    assert image.size == (64, 64)
