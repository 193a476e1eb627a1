"""The decoder's last steps in torch (rawdiff.codec.device_render) against the host's numpy."""

import hashlib

import numpy as np
import pytest
import torch

from rawdiff.codec import device_render
from rawdiff.codec.colour_stats import apply_map, rgb_statistics, transport_map
from rawdiff.codec.deblock import Deblock, deblock, filter_levels
from rawdiff.raw.isp import colour_stage


def _chw(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def _blocky(height, width, seed):
    """A ramp with a random offset on each 8 x 8 cell, noise, and a few scene edges."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width]
    img = 60 + 0.4 * x + 0.3 * y + rng.normal(0, 1.5, (height, width))
    img += np.kron(rng.uniform(-6, 6, (-(-height // 8), -(-width // 8))), np.ones((8, 8)))[:height, :width]
    img[:, width // 2:] += 90  # an edge of the scene
    rgb = np.stack([img, 0.8 * img + 10, 1.1 * img - 5], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


#: sha256 (first 16 hex digits) of the filtered _blocky(300, 70, seed=3): the bytes of the
#: filter as first written, in numpy, which the torch filter must keep on any machine
GOLDEN = {Deblock(1, 4.0, 16.0): "3fe66dde56261459", Deblock(3, 8.0, 32.0): "97e66c37c1f14220",
          Deblock(4, 16.0, 64.0): "dc035bd5409db5b1", Deblock(2, 5.5, 23.0): "026176141f52162b"}


@pytest.mark.parametrize("setting", sorted(GOLDEN))
def test_the_deblocking_filter_keeps_its_bytes(setting):
    img = _blocky(300, 70, seed=3)
    out = deblock(img, 8, setting)
    assert hashlib.sha256(out.tobytes()).hexdigest()[:16] == GOLDEN[setting]
    assert not np.array_equal(out, img)  # it filtered something


@pytest.mark.parametrize("shape", [(5, 7), (16, 16), (57, 83), (300, 70)])
@pytest.mark.parametrize("setting", [Deblock(1, 4.0, 16.0), Deblock(3, 8.0, 32.0), Deblock(4, 16.0, 64.0)])
def test_the_device_s_whole_frame_filter_is_the_host_s_strips(shape, setting):
    for img in (_blocky(*shape, seed=3), np.random.default_rng(4).integers(0, 256, shape + (3,), dtype=np.uint8)):
        expected = deblock(img, 8, setting, strip_rows=16)
        out = device_render.to_host(filter_levels(_chw(img).float(), 8, setting))
        assert np.array_equal(out, expected)


def test_no_setting_leaves_the_levels_and_bad_taps_are_refused():
    levels = _chw(_blocky(32, 32, seed=5)).float()
    assert filter_levels(levels, 8, None) is levels
    with pytest.raises(ValueError, match="taps must be in"):
        filter_levels(levels, 8, Deblock(5, 8.0, 32.0))


def test_cell_statistics_are_the_host_s():
    rgb = np.random.default_rng(6).random((61, 90, 3), dtype=np.float32)
    # pooled in float32 on the device, in float64 on the host
    assert np.allclose(device_render.cell_statistics(_chw(rgb), 8), rgb_statistics(rgb, 8), rtol=1e-5, atol=1e-8)
    small = rgb[:5, :6]  # smaller than a cell: the whole image is one
    assert np.allclose(device_render.cell_statistics(_chw(small), 8), rgb_statistics(small, 8), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("tone_curve", ["smoothstep", "none"])
def test_the_colour_stage_is_the_host_s_within_a_level(tone_curve):
    rng = np.random.default_rng(7)
    rgb = rng.random((120, 160, 3), dtype=np.float32)
    rgb[:20] *= 0.01  # the linear toe of the sRGB curve
    ccm = np.array([[1.6, -0.4, -0.2], [-0.3, 1.5, -0.2], [0.0, -0.5, 1.5]])
    source = rgb_statistics(np.clip(rgb * np.float32(1.1) + np.float32(0.02), 0, 1), 8)
    colour_map = transport_map(source, rgb_statistics(rgb, 8))
    host = np.round(colour_stage(apply_map(rgb, colour_map), ccm, tone_curve) * 255.0).astype(np.uint8)
    dev = device_render.to_host(device_render.to_levels(
        device_render.colour_stage(_chw(rgb), ccm, tone_curve, colour_map)))
    diff = np.abs(dev.astype(int) - host)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999
    # an sRGB decoder's output is only rounded
    plain = device_render.to_host(device_render.to_levels(device_render.colour_stage(_chw(rgb), None, tone_curve)))
    assert np.array_equal(plain, np.round(rgb * 255.0).astype(np.uint8))
    with pytest.raises(ValueError, match="tone_curve"):
        device_render.colour_stage(_chw(rgb), ccm, "filmic")


def test_a_bad_compile_mode_is_refused_by_name(fixture_model):
    from rawdiff.codec import Codec
    from rawdiff.device import compiled

    with pytest.raises(ValueError, match="compile mode must be one of none, default, reduce-overhead"):
        Codec.load(fixture_model, compile_mode="fastest")
    net = torch.nn.Conv2d(3, 3, 3)
    assert compiled(net, "none") is net and getattr(net, "_compiled_call_impl", None) is None
    assert compiled(net, "reduce-overhead") is net and net._compiled_call_impl is not None  # compiles when called


def test_compiled_networks_refuse_a_frame_decoded_in_tiles(fixture_model, frame):
    from rawdiff.codec import Codec

    codec = Codec.load(fixture_model, tile=8, compile_mode="default")
    data = codec.compress(frame, quality=1)
    assert codec.tiled(codec.parse(data)[0].code_shape)
    for render in (False, True):
        codec.render_on_device = render
        with pytest.raises(ValueError, match="compile_mode 'default' is for frames decoded whole"):
            codec.decompress(data)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_filter_gives_the_host_s_bytes_and_the_colour_stage_a_level():
    img = _blocky(300, 70, seed=3)
    for setting in GOLDEN:
        out = device_render.to_host(filter_levels(_chw(img).float().cuda(), 8, setting))
        assert np.array_equal(out, deblock(img, 8, setting))
    rgb = np.random.default_rng(8).random((120, 160, 3), dtype=np.float32)
    ccm = np.array([[1.6, -0.4, -0.2], [-0.3, 1.5, -0.2], [0.0, -0.5, 1.5]])
    decoded = device_render.cell_statistics(_chw(rgb).cuda(), 8)
    colour_map = transport_map(rgb_statistics(rgb * np.float32(0.9), 8), decoded)
    host = np.round(colour_stage(apply_map(rgb, colour_map), ccm, "smoothstep") * 255.0).astype(np.uint8)
    dev = device_render.to_host(device_render.to_levels(
        device_render.colour_stage(_chw(rgb).cuda(), ccm, "smoothstep", colour_map)))
    diff = np.abs(dev.astype(int) - host)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999
