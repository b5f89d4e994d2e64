"""SDXL and LCM-SDXL (models/sdxl.py) run exactly as diffusers runs them, seeded per image."""

import numpy as np
import pytest

from tests.helpers import BASELINE_PROMPTS as PROMPTS, BASELINE_SEEDS as SEEDS, BASELINE_SPECS as SPECS
from tests.helpers import arrays, build_baselines, gens


@pytest.fixture(scope="module")
def systems():
    return build_baselines(["sdxl", "lcm-sdxl"])


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
