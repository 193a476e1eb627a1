"""The networks' GroupNorm: torch's on ordinary input, and groups of one value (a frame of one
cell through a narrow network) give the bias instead of torch's refusal."""

import numpy as np
import pytest
import torch
from torch import nn

from rawdiff.codec import Codec
from rawdiff.nn.blocks import GroupNorm, normalize
from rawdiff.raw import RawFrame


def _norm(groups, channels, seed=0):
    torch.manual_seed(seed)
    norm = GroupNorm(groups, channels, eps=1e-6)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    return norm


def test_it_is_torch_s_group_norm_on_ordinary_input():
    norm = _norm(4, 16)
    plain = nn.GroupNorm(4, 16, eps=1e-6)
    plain.load_state_dict(norm.state_dict())
    for shape in ((1, 16, 5, 7), (2, 16, 1, 1), (1, 16, 1, 2), (3, 16, 4)):
        x = torch.randn(shape)
        assert torch.equal(norm(x), plain(x)), shape
    assert isinstance(normalize(64), nn.GroupNorm) and set(normalize(8).state_dict()) == {"weight", "bias"}


def test_a_group_of_one_value_gives_the_bias():
    norm = _norm(8, 8)
    x = torch.randn(1, 8, 1, 1)
    with pytest.raises(ValueError):  # what torch itself says
        nn.functional.group_norm(x, 8, norm.weight, norm.bias, norm.eps)
    out = norm(x)
    assert out.shape == x.shape and torch.equal(out.flatten(), norm.bias.detach())
    # torch's own arithmetic for the same values in a batch of two: the same, within its rounding
    pair = torch.cat([x, torch.randn(1, 8, 1, 1)])
    ref = nn.functional.group_norm(pair, 8, norm.weight, norm.bias, norm.eps)
    assert torch.allclose(norm(pair), ref, atol=1e-3) and torch.allclose(out, ref[:1], atol=1e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert norm(x.bfloat16()).dtype == torch.bfloat16


@pytest.mark.parametrize("size", [(2, 2), (4, 6), (8, 8), (6, 10)])
def test_the_narrow_fixture_model_codes_frames_of_one_cell(fixture_model, size):
    codec = Codec.load(fixture_model)
    frame = RawFrame(np.random.default_rng(3).integers(64, 4095, size).astype(np.uint16), cfa="RGGB",
                     black_level=64, white_level=4095)
    for quality in range(1, codec.qualities + 1):
        data = codec.compress(frame, quality=quality)
        rgb = codec.decompress(data)
        assert rgb.shape == size + (3,) and rgb.dtype == np.uint8
        assert codec.decompress_raw(data).mosaic.shape == size
