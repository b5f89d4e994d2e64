"""CogView3's UNet (models/cogview3/unet.py): full-size parameter count and forward shapes, on the meta device."""

import pytest
import torch

from models.cogview3.unet import FULL_PARAMETERS
from tests.helpers import meta_unet


@pytest.mark.parametrize("dim,extra", [(None, 0), (512, 163_840), (256, 81_920)])
def test_full_size_parameter_count(dim, extra):
    unet = meta_unet(dim)
    assert sum(p.numel() for p in unet.parameters()) == FULL_PARAMETERS + extra == 2_906_612_484 + extra
    assert unet.config.cross_attention_dim == 4096
    assert unet.class_embedding.linear_1.in_features == 1536 and unet.class_embedding.linear_2.out_features == 1280
    if dim:
        assert unet.time_embedding.cond_proj.weight.shape == (320, dim) and unet.time_embedding.cond_proj.bias is None


def test_full_size_forward_shapes_on_meta():
    unet = meta_unet(256)
    with torch.device("meta"):
        out = unet(torch.empty(2, 4, 128, 128), torch.tensor([499, 499]), encoder_hidden_states=torch.empty(2, 225, 4096),
                   class_labels=torch.empty(2, 1536), timestep_cond=torch.empty(2, 256)).sample
    assert out.shape == (2, 4, 128, 128)
