"""CogView3's SAT checkpoints (models/cogview3/checkpoint.py): key names, config from shapes, loading and errors."""

import pytest
import torch

from harness.errors import HarnessError
from models.cogview3.checkpoint import (SAT_PREFIX, load_sat_unet, sat_key_map, sat_state_file, sat_unet_config,
                                        save_sat_unet)
from models.cogview3.unet import build_unet, tiny_unet_config, unet_config
from tests.helpers import meta_unet


def test_sat_key_names_agree_with_diffusers_own_ldm_converter():
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet = meta_unet(512)
    mapping = sat_key_map(unet.config, list(unet.state_dict()))
    assert len(set(mapping.values())) == len(mapping) == 1681
    for key in ("input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight", "input_blocks.3.0.op.weight",
                "input_blocks.4.0.skip_connection.weight", "middle_block.1.proj_in.weight",
                "output_blocks.2.2.conv.weight", "output_blocks.5.2.conv.weight", "label_emb.0.0.weight",
                "time_embed.2.bias", "out.2.weight", "w_proj.weight"):
        assert SAT_PREFIX + key in mapping.values()
    # Feed diffusers' converter a state dict with a unique value per SAT key: it must route every
    # key where we do (w_proj is CogView3's own and unknown to it).
    sat = {sk: torch.full((1,), float(i)) for i, sk in enumerate(mapping.values())}
    converted = convert_ldm_unet_checkpoint(sat, dict(unet.config))
    ours = {dk: sat[sk] for dk, sk in mapping.items()}
    assert set(ours) - set(converted) == {"time_embedding.cond_proj.weight"}
    assert all(torch.equal(converted[k], ours[k]) for k in converted)


def _small_official(guidance_dim):
    """The official structure (depths 1/2/10, 2 res blocks, 64-d heads) at reduced width."""
    return unet_config(guidance_dim, channels=(64, 64, 128), depths=(1, 2, 10), cross_attention_dim=32)


def test_sat_checkpoint_round_trip_is_bit_exact(tmp_path):
    config = _small_official(256)
    src = build_unet(config, seed=0)
    save_sat_unet(src, tmp_path, iteration=7)
    assert sat_state_file(tmp_path) == tmp_path / "7" / "mp_rank_00_model_states.pt"
    dst = load_sat_unet(tmp_path, 256)
    assert dict(dst.config) == dict(src.config)
    for (k, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        assert torch.equal(a, b), k
    assert not any(t.is_meta for t in dst.state_dict().values())


@pytest.mark.parametrize("guidance_dim", [None, 512, 256])
def test_sat_config_is_read_off_the_official_shapes(guidance_dim):
    # The full-size UNet on the meta device: the shapes alone must give back the official config.
    with torch.device("meta"):
        unet = build_unet(unet_config(guidance_dim))
    mapping = sat_key_map(unet.config, list(unet.state_dict()))
    state = {mapping[k]: v for k, v in unet.state_dict().items()}
    assert sat_unet_config(state) == unet_config(guidance_dim)


def test_sat_loader_casts_to_the_target_dtype(tmp_path):
    save_sat_unet(build_unet(_small_official(None), seed=0).half(), tmp_path)  # the official files are fp16
    unet = load_sat_unet(tmp_path, None, "cpu", torch.bfloat16)
    assert {p.dtype for p in unet.parameters()} == {torch.bfloat16}


def test_sat_checkpoint_in_the_pre_zip_format_loads(tmp_path):
    # torch.save before 1.6 wrote no zip archive, which cannot be memory-mapped: it is read whole.
    src = build_unet(_small_official(None), seed=0)
    path = save_sat_unet(src, tmp_path)
    torch.save(torch.load(path, weights_only=True), path, _use_new_zipfile_serialization=False)
    dst = load_sat_unet(tmp_path, None)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


def test_sat_checkpoint_with_wrong_keys_lists_them(tmp_path):
    save_sat_unet(build_unet(_small_official(256), seed=0), tmp_path)
    with pytest.raises(HarnessError, match=r"unexpected keys \['model.diffusion_model.w_proj.weight'\]"):
        load_sat_unet(tmp_path, None)  # a distilled file read as a plain UNet
    save_sat_unet(build_unet(_small_official(None), seed=0), tmp_path)
    with pytest.raises(HarnessError, match=r"missing keys \['model.diffusion_model.w_proj.weight'\]"):
        load_sat_unet(tmp_path, 256)
    with pytest.raises(HarnessError, match="nowhere does not exist, expected a SAT checkpoint folder"):
        load_sat_unet(tmp_path / "nowhere", None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match="empty/latest is missing"):
        load_sat_unet(tmp_path / "empty", None)
    save_sat_unet(build_unet(tiny_unet_config(None), seed=0), tmp_path)  # 32-d heads: not CogView3's
    with pytest.raises(HarnessError, match="not multiples of the official 64-d attention heads"):
        load_sat_unet(tmp_path, None)
