"""SDXL, Stable Cascade and LCM-SDXL run exactly as diffusers runs them, seeded per image."""

import numpy as np
import pytest
import torch

from models.registry import build_system

W = {"sdxl": "tiny", "lcm-sdxl": "tiny", "stable-cascade": "tiny"}
SPECS = {
    "sdxl": {"model": "sdxl", "steps": 3, "guidance": 5.0, "resolution": 64},
    "lcm-sdxl": {"model": "lcm-sdxl", "steps": 4, "guidance": 8.0, "resolution": 64},
    "stable-cascade": {"model": "stable-cascade", "prior_steps": 3, "decoder_steps": 2, "resolution": 128},
}
PROMPTS = ["a red car", "three cats on a sofa", 'a sign that says "OPEN"']
SEEDS = [11, 22, 33]


def arrays(images):
    return [np.asarray(im) for im in images]


@pytest.fixture(scope="module")
def systems():
    return {name: build_system(name, spec, W, "cpu", "float32").build() for name, spec in SPECS.items()}


def gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("name", ["sdxl", "lcm-sdxl"])
def test_sdxl_family_equals_a_direct_diffusers_call(systems, name):
    from diffusers import StableDiffusionXLPipeline

    system = systems[name]
    pipe = StableDiffusionXLPipeline(**system.pipe.components)
    pipe.set_progress_bar_config(disable=True)
    spec = SPECS[name]
    direct = pipe(prompt=PROMPTS, generator=gens(SEEDS), num_inference_steps=spec["steps"],
                  guidance_scale=spec["guidance"], height=64, width=64).images
    ours = system.generate(PROMPTS, SEEDS)
    for a, b in zip(arrays(ours), arrays(direct)):
        assert np.array_equal(a, b)


def test_lcm_uses_the_guidance_embedding_and_no_cfg_batch(systems):
    system = systems["lcm-sdxl"]
    from diffusers import LCMScheduler

    assert isinstance(system.pipe.scheduler, LCMScheduler)
    assert system.pipe.unet.config.time_cond_proj_dim == 256
    batches = []
    hook = system.pipe.unet.register_forward_pre_hook(lambda m, args, kw: batches.append((args[0].shape[0], kw.get("timestep_cond"))),
                                                      with_kwargs=True)
    system.generate(PROMPTS[:2], SEEDS[:2])
    hook.remove()
    assert len(batches) == 4 and all(b == 2 and cond is not None for b, cond in batches)


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


@pytest.mark.parametrize("name", ["sdxl", "lcm-sdxl", "stable-cascade"])
def test_each_image_depends_on_its_seed_alone(systems, name):
    system = systems[name]
    torch.manual_seed(123)  # the global RNG must not matter (both Cascade stages are seeded)
    first = arrays(system.generate(PROMPTS, SEEDS))
    torch.manual_seed(456)
    again = arrays(system.generate(PROMPTS, SEEDS))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    other = arrays(system.generate(PROMPTS[:1], [SEEDS[0] + 1]))[0]
    assert np.abs(other.astype(int) - first[0].astype(int)).mean() > 1
    # batch size: per-sample noise; kernels may round differently by a step or two at most
    single = arrays(system.generate(PROMPTS[1:2], SEEDS[1:2]))[0]
    assert np.abs(single.astype(int) - first[1].astype(int)).max() <= 2


@pytest.mark.parametrize("name", ["sdxl", "lcm-sdxl", "stable-cascade"])
def test_batch_invariant_mode_gives_identical_bytes(name):
    system = build_system(name, SPECS[name], W, "cpu", "float32", batch_invariant=True)
    batched = arrays(system.generate(PROMPTS, SEEDS))
    for i in range(3):
        assert np.array_equal(arrays(system.generate(PROMPTS[i : i + 1], SEEDS[i : i + 1]))[0], batched[i])


def meta_params(cls, config):
    with torch.device("meta"):
        return sum(p.numel() for p in cls(**config).parameters())


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
