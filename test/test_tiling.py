"""Tiled decoding: the plan covers the grid once, the halo covers the decoder's reach, the
whole-frame statistics make tiles one network (no seams), the exact mode is the whole-frame
decode at every quality (a prefix of the quantizer stages), and the networks never see more
than a tile."""

import numpy as np
import pytest
import torch
from synthetic import textured_photo

from rawdiff.codec import Codec, tiled_decode
from rawdiff.codec.tiling import EXACT, FrameNorms, Tile, halo_for, plan_tiles, receptive_radius, run_tiled
from rawdiff.raw.unprocess import unprocess


@pytest.fixture(scope="module")
def codec(fixture_model):
    return Codec.load(fixture_model, device="cpu", backend="torch", tile=0)


@pytest.fixture(scope="module")
def payload(codec):
    frame, _ = unprocess(textured_photo(150, 250, 4), seed=4)  # 19 x 32 codes, odd edges
    return codec.compress(frame)


@pytest.mark.parametrize("shape,tile,halo,align", [((19, 32), 8, 3, 1), ((278, 321), 160, 12, 1),
                                                   ((70, 100), 32, 8, 8), ((5, 7), 8, 4, 1)])
def test_tile_cores_cover_the_grid_once_and_halos_stay_inside(shape, tile, halo, align):
    tiles = plan_tiles(shape, tile, halo, align)
    count = np.zeros(shape, int)
    for t in tiles:
        (r0, r1), (c0, c1) = t.core
        (e0, e1), (f0, f1) = t.ext
        count[r0:r1, c0:c1] += 1
        assert r1 - r0 <= tile and c1 - c0 <= -(-tile // align) * align
        assert 0 <= e0 <= r0 < r1 <= e1 <= shape[0] and 0 <= f0 <= c0 < c1 <= f1 <= shape[1]
        assert e0 % align == 0 and f0 % align == 0 and r0 % align == 0 and c0 % align == 0
        if len(tiles) > 1:  # the halo is there wherever the grid goes on
            assert r0 - e0 == min(r0, -(-halo // align) * align) and e1 - r1 == min(shape[0] - r1, e1 - r1)
    assert (count == 1).all()


def test_tiles_are_balanced_and_a_grid_that_fits_is_one_tile_without_halo():
    sides = sorted({t.core[0][1] - t.core[0][0] for t in plan_tiles((272, 10), 256, 12)})
    assert sides == [136]
    assert plan_tiles((139, 242), 256, 12) == [Tile(((0, 139), (0, 242)), ((0, 139), (0, 242)))]


def test_receptive_radius_of_the_decoder_counts_each_convolution_at_its_resolution(codec):
    # conv_in 1 + 4 ResBlocks at the code grid (2 x 3x3 each) 8 + Upsample's conv 1/2
    # + 2 ResBlocks at twice the resolution 2 + conv_out 1/2
    assert receptive_radius(codec.embedder.decoder) == 12.0
    assert halo_for(codec.embedder.decoder) == 12


def _latent(codec, payload):
    header, codes = codec.parse(payload)
    with torch.inference_mode():
        return codec.embedder.lookup_codes([torch.from_numpy(g)[None] for g in codes], header.code_shape)


def _tiled(codec, z, tile, passes, halo=None):
    emb = codec.embedder
    tiles = plan_tiles(z.shape[-2:], tile, halo_for(emb.decoder) if halo is None else halo)
    out = torch.full((3, z.shape[-2] * 8, z.shape[-1] * 8), -1.0)
    norms = FrameNorms(emb.decoder)

    def sink(t, y):
        (r0, r1), (c0, c1) = t.core
        out[:, r0 * 8: r1 * 8, c0 * 8: c1 * 8] = y[0]

    with torch.inference_mode():
        run_tiled(emb.decode, [z], tiles, norms, sink, passes)
    return out, norms


def test_exact_statistics_and_a_full_halo_give_the_whole_frame_decode(codec, payload):
    z = _latent(codec, payload)
    with torch.inference_mode():
        whole = codec.embedder.decode(z)[0]
    out, _ = _tiled(codec, z, 8, EXACT)
    assert float((out - whole).abs().max()) < 1e-4
    short, _ = _tiled(codec, z, 8, EXACT, halo=halo_for(codec.embedder.decoder) - 4)  # the halo matters
    assert float((short - whole).abs().max()) > 1e-3


def test_tiles_normalised_with_the_frame_statistics_are_one_network_without_seams(codec, payload):
    """The default (one statistics pass) is not the whole-frame decode, but every tile is
    the whole frame's network with the same statistics: decoding the frame in one piece with
    those statistics gives the tiled output, so tiles cannot meet with a seam."""
    z = _latent(codec, payload)
    out, norms = _tiled(codec, z, 8, 1)
    h, w = z.shape[-2:]
    whole_tile = Tile(((0, h), (0, w)), ((0, h), (0, w)))
    with torch.inference_mode(), norms.active(), norms.tile(whole_tile, collect=False):
        one_piece = codec.embedder.decode(z)[0]
    assert float((out - one_piece).abs().max()) < 1e-4
    with torch.inference_mode():
        per_tile_norms = torch.zeros_like(out)
        for t in plan_tiles((h, w), 8, 12):  # each tile normalised on its own: seams
            (r0, r1), (c0, c1) = t.core
            top, bottom, left, right = t.core_in_ext()
            y = codec.embedder.decode(z[..., slice(*t.ext[0]), slice(*t.ext[1])])[0]
            per_tile_norms[:, r0 * 8: r1 * 8, c0 * 8: c1 * 8] = y[:, top * 8: bottom * 8, left * 8: right * 8]
    assert float((per_tile_norms - one_piece).abs().max()) > 1e-2


def test_the_decoder_never_sees_more_than_a_tile_and_its_halo(codec, payload):
    z = _latent(codec, payload)
    seen = []
    handle = codec.embedder.decoder.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    try:
        _tiled(codec, z, 8, 1)
    finally:
        handle.remove()
    largest = max(h * w for h, w in seen)
    assert largest <= (8 + 2 * 12) ** 2 and largest < z.shape[-2] * z.shape[-1]
    assert len(seen) == 2 * len(plan_tiles(z.shape[-2:], 8, 12))  # a statistics pass, then the decoding pass


def test_codec_decodes_large_grids_in_tiles_the_size_of_the_frame(codec, payload):
    whole = codec.decompress(payload)
    whole_raw = codec.decompress_raw(payload)
    tiled = Codec.load(codec.model_dir, device="cpu", backend="torch", tile=8)
    rgb, raw = tiled.decompress(payload), tiled.decompress_raw(payload)
    assert rgb.shape == whole.shape == (150, 250, 3) and rgb.dtype == np.uint8
    assert raw.mosaic.shape == (150, 250) and raw.cfa == whole_raw.cfa and raw.white_level == whole_raw.white_level
    tiled.tile_passes = EXACT
    assert np.abs(tiled.decompress(payload).astype(int) - whole).max() <= 1
    assert np.abs(tiled.decompress_raw(payload).mosaic.astype(int) - whole_raw.mosaic).max() <= 2
    tiled.tile = 256  # fits one tile: the whole-frame path, bit for bit
    assert np.array_equal(tiled.decompress(payload), whole)


def test_the_coarse_stages_decode_in_tiles_as_they_decode_whole(codec, payload):
    """A bitstream of the coarse stage only (a grid twice as coarse, cut at the odd edge:
    10 x 16 for 19 x 32 codes) decodes in tiles of the finest grid as it decodes whole."""
    from rawdiff.codec import bitstream

    coarse = bitstream.truncate(payload, 1)
    header, codes = codec.parse(coarse)
    assert [g.shape for g in codes] == [(10, 16)] and header.code_shape == (19, 32)
    z = _latent(codec, coarse)
    assert z.shape[-2:] == (19, 32)
    assert not torch.equal(z, _latent(codec, payload))
    tiled = Codec.load(codec.model_dir, device="cpu", backend="torch", tile=8)
    assert tiled.tiled(header.code_shape) and not codec.tiled(header.code_shape)
    tiled.tile_passes = EXACT
    whole = codec.decompress(coarse)
    rgb = tiled.decompress(coarse)
    assert rgb.shape == whole.shape == (150, 250, 3)
    assert np.abs(rgb.astype(int) - whole).max() <= 1


def test_tile_setting_is_checked(fixture_model):
    for bad in (-1, 3, 2.5, "many"):
        with pytest.raises(ValueError, match="tile must be"):
            Codec.load(fixture_model, device="cpu", tile=bad)


def test_diffusion_sampling_in_tiles_is_seeded_and_close_to_the_whole_grid(tiny_ldm):
    codec = Codec.load(tiny_ldm[0], device="cpu", tile=0)
    frame, _ = unprocess(textured_photo(150, 250, 6), seed=6)
    payload = codec.compress(frame)
    header, codes = codec.parse(payload)
    dec = codec.diffusion()
    unet = dec.denoiser.unet
    align = tiled_decode.unet_alignment(unet)
    assert align == unet.multiple * 4  # the tiny UNet halves once and attends in 4 x 4 windows
    idx = [torch.from_numpy(g)[None] for g in codes]
    shape = header.code_shape
    with torch.inference_mode():
        z_q = codec.embedder.lookup_codes(idx, shape)
        cond = codec.embedder.condition_indices(idx, shape)
        whole = dec.denoiser.sample(cond, z_q, 2, torch.Generator().manual_seed(3))
        seen = []
        handle = unet.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
        try:
            a = tiled_decode.sample_latent(dec, idx, z_q, 2, 3, tile=align)
        finally:
            handle.remove()
        b = tiled_decode.sample_latent(dec, idx, z_q, 2, 3, tile=align)
        one = tiled_decode.sample_latent(dec, idx, z_q, 2, 3, tile=64)  # one tile: the whole grid
        # the coarse stage alone (quality 1): the same conditioning, another latent
        z_q1 = codec.embedder.lookup_codes(idx[:1], shape)
        whole1 = dec.denoiser.sample(cond, z_q1, 2, torch.Generator().manual_seed(3))
        a1 = tiled_decode.sample_latent(dec, idx[:1], z_q1, 2, 3, tile=align)
    assert float((a1 - whole1).abs().max()) < 0.05 < float((whole1 - whole).abs().max())
    assert max(h * w for h, w in seen) <= (3 * align) ** 2 < shape[0] * shape[1]
    assert torch.equal(a, b)
    assert float((one - whole).abs().max()) < 1e-5
    assert float((a - whole).abs().max()) < 0.05  # unit vectors per code: close, not equal
    tiled = Codec.load(tiny_ldm[0], device="cpu", tile=align)
    rgb = tiled.decompress(payload, mode="diffusion", steps=2, seed=3)
    assert rgb.shape == (150, 250, 3) and np.array_equal(rgb, tiled.decompress(payload, mode="diffusion", steps=2,
                                                                                seed=3))


def test_a_second_decode_of_the_same_latent_reuses_the_statistics(codec, payload):
    """The colour pass of a colour-exact model decodes the latent once more to gather the
    output's statistics: that pass reuses the GroupNorm statistics, it does not collect them
    again."""
    from rawdiff.codec import bitstream

    tiled = Codec.load(codec.model_dir, device="cpu", backend="torch", tile=8)
    header = bitstream.read_header(payload)
    colour_pass = tiled.colour_exact and any(header.colour_stats)
    calls = []
    handle = tiled.embedder.decoder.register_forward_pre_hook(lambda m, args: calls.append(1))
    try:
        tiled.decompress(payload)
    finally:
        handle.remove()
    tiles = len(plan_tiles((header.code_height, header.code_width), 8, 12))
    assert len(calls) == tiles * (3 if colour_pass else 2)
    assert tiled._tile_norms is None  # nothing of the frame is kept
