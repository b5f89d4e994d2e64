"""Stable Cascade (models/stable_cascade.py) as diffusers runs it; full-size parameter counts and missing-weight errors."""

import numpy as np
import pytest

from models.registry import build_system
from tests.helpers import BASELINE_PROMPTS as PROMPTS, BASELINE_SEEDS as SEEDS, BASELINE_SPECS as SPECS
from tests.helpers import arrays, build_baselines, gens, meta_params


@pytest.fixture(scope="module")
def systems():
    return build_baselines(["stable-cascade"])


def test_stable_cascade_equals_diffusers_combined_pipeline(systems):
    """Our two-stage assembly = diffusers' own combined pipeline with the same parts and generators."""
    from diffusers import StableCascadeCombinedPipeline

    sc = systems["stable-cascade"]
    combined = StableCascadeCombinedPipeline(
        tokenizer=sc.decoder.tokenizer, text_encoder=sc.decoder.text_encoder, decoder=sc.decoder.decoder,
        scheduler=sc.decoder.scheduler, vqgan=sc.decoder.vqgan, prior_prior=sc.prior.prior,
        prior_text_encoder=sc.prior.text_encoder, prior_tokenizer=sc.prior.tokenizer, prior_scheduler=sc.prior.scheduler,
    )
    combined.set_progress_bar_config(disable=True)
    direct = combined(prompt=PROMPTS, height=128, width=128, prior_num_inference_steps=3, prior_guidance_scale=4.0,
                      num_inference_steps=2, decoder_guidance_scale=0.0, generator=gens(SEEDS)).images
    for a, b in zip(arrays(sc.generate(PROMPTS, SEEDS)), arrays(direct)):
        assert np.array_equal(a, b)


def test_full_size_parameter_counts_from_the_published_configs():
    from diffusers import StableCascadeUNet, UNet2DConditionModel

    from models.stable_cascade import DECODER_CONFIG, PRIOR_CONFIG, VQGAN_CONFIG, paella_vq_model
    from models.sdxl import SDXL_UNET_CONFIG

    assert meta_params(UNet2DConditionModel, SDXL_UNET_CONFIG) == 2_567_463_684
    assert meta_params(UNet2DConditionModel, dict(SDXL_UNET_CONFIG, time_cond_proj_dim=256)) == 2_567_463_684 + 81_920
    assert meta_params(StableCascadeUNet, PRIOR_CONFIG) == 3_589_103_632
    assert meta_params(StableCascadeUNet, DECODER_CONFIG) == 1_562_941_136
    assert meta_params(paella_vq_model(), VQGAN_CONFIG) == 18_406_894


def test_missing_weights_are_clear_errors(tmp_path):
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match=r"stable-cascade-prior does not exist.*stable-cascade does not exist"):
        build_system("sc", SPECS["stable-cascade"], {"stable-cascade": str(tmp_path)}, "cpu", "float32").build()
    (tmp_path / "stable-cascade-prior").mkdir()
    with pytest.raises(HarnessError, match=r"model_index.json is missing;.*prior/: folder .*stable-cascade-prior/prior does not exist"):
        build_system("sc", SPECS["stable-cascade"], {"stable-cascade": str(tmp_path)}, "cpu", "float32").build()
    with pytest.raises(HarnessError, match=r"weights.sdxl \(.*nothing\): .*nothing does not exist, expected a diffusers folder"):
        build_system("s", SPECS["sdxl"], {"sdxl": str(tmp_path / "nothing")}, "cpu", "float32").build()
    with pytest.raises(HarnessError, match="real LCM weights need a real SDXL base folder"):
        build_system("l", SPECS["lcm-sdxl"], {"lcm-sdxl": str(tmp_path), "sdxl": "tiny"}, "cpu", "float32").build()
