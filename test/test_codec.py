"""Codec: exact index round trips through bytes, any frame size, every operating point and
the truncation identity, clear errors."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic import textured_photo

from rawdiff.codec import Codec, bitstream
from rawdiff.codec.adaptive import AGING
from rawdiff.codec.modeldir import compute_model_id
from rawdiff.raw import RawFrame
from rawdiff.raw.unprocess import unprocess


@pytest.fixture(scope="module")
def codec(fixture_model):
    return Codec.load(fixture_model, device="auto")


def _frame(h, w, seed=0, cfa="RGGB"):
    frame, _ = unprocess(textured_photo(h, w, seed), seed=seed, cfa=cfa)
    return frame


@pytest.mark.parametrize("width,height", [(1936, 1112), (2896, 1876), (3868, 2176)])
def test_thesis_sensor_sizes_round_trip_exactly(codec, width, height):
    rng = np.random.default_rng(width)
    frame = RawFrame(rng.integers(256, 4096, (height, width)).astype(np.uint16), "GRBG", 256, 4095)
    codes = codec.encode_codes(frame)
    code_shape = (-(-height // codec.factor), -(-width // codec.factor))
    assert [g.shape for g in codes] == [(-(-code_shape[0] // sc), -(-code_shape[1] // sc)) for sc, _ in codec.stages]
    payload = codec.compress(frame)
    header, decoded = codec.parse(payload)
    assert len(decoded) == len(codes) == header.quality == codec.default_quality
    assert all(np.array_equal(a, b) for a, b in zip(decoded, codes))
    assert (header.height, header.width, header.cfa) == (height, width, "GRBG")
    assert header.code_shape == code_shape
    rgb = codec.decompress(payload)
    assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8


@pytest.mark.parametrize("cfa", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_every_cfa_phase_and_odd_multiples(codec, cfa):
    frame = _frame(70, 102, seed=3, cfa=cfa)  # not multiples of the factor: padded and cropped
    payload = codec.compress(frame)
    rgb = codec.decompress(payload)
    assert rgb.shape == (70, 102, 3)
    assert bitstream.read_header(payload).cfa == cfa


def test_decompress_equals_decoding_the_encoded_indices(codec):
    frame = _frame(96, 128, seed=1)
    payload = codec.compress(frame)
    header = bitstream.read_header(payload)
    expected = codec.render(codec.decode_indices(codec.encode_indices(frame)), header)
    assert expected.shape == (96, 128, 3)
    assert np.array_equal(codec.decompress(payload), expected)


def test_bitstream_is_smaller_than_the_raw_frame_and_records_the_source(codec):
    frame = _frame(96, 128, seed=2)
    payload = codec.compress(frame, source_encoding="raw12p")
    header = bitstream.read_header(payload)
    assert header.source_encoding == "raw12p" and header.model_id == codec.model_id
    assert header.codebook_size == codec.codebook_size and header.entropy_model == codec.prior.kind
    assert len(payload) < frame.mosaic.size * 12 / 8 / 10


def test_odd_frame_size_is_refused(codec):
    frame = RawFrame(np.zeros((33, 64), np.uint16), "RGGB", 0, 4095)
    with pytest.raises(ValueError, match="even"):
        codec.compress(frame)


def test_bad_mode_is_named(codec):
    payload = codec.compress(_frame(64, 64))
    with pytest.raises(ValueError, match="mode must be one of"):
        codec.decompress(payload, mode="slow")


def test_corrupted_truncated_and_foreign_payloads_fail_cleanly(codec):
    payload = codec.compress(_frame(64, 96))
    flipped = bytearray(payload)
    flipped[len(payload) // 2] ^= 0x10
    with pytest.raises(bitstream.BitstreamError, match="CRC"):
        codec.decompress(bytes(flipped))
    with pytest.raises(bitstream.BitstreamError, match="truncated|expected"):
        codec.decompress(payload[:-7])
    header, body = bitstream.unpack(payload)
    foreign = bitstream.pack(dataclasses.replace(header, model_id="ab" * 16), bitstream.stage_payloads(header, body))
    with pytest.raises(bitstream.ModelMismatchError) as err:
        codec.decompress(foreign)
    assert "ab" * 16 in str(err.value) and codec.model_id in str(err.value)


@pytest.fixture(scope="module")
def small_payload(codec):
    return codec.compress(_frame(64, 96, seed=4))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_fuzzed_payloads_with_a_valid_crc_never_crash(codec, small_payload, data):
    """Even past the CRC (recomputed here), a mutated payload, a stage boundary moved or a
    stage table that another model would have written gives a clear error or a frame of the
    declared size, never another exception."""
    header, body = bitstream.unpack(small_payload)
    chunks = [bytearray(c) for c in bitstream.stage_payloads(header, body)]
    for _ in range(data.draw(st.integers(1, 4))):
        chunk = chunks[data.draw(st.integers(0, len(chunks) - 1))]
        if chunk:
            chunk[data.draw(st.integers(0, len(chunk) - 1))] = data.draw(st.integers(0, 255))
    stages, adapt = list(header.stages), list(header.adapt)
    how = data.draw(st.sampled_from(["payload", "boundary", "table", "drop"]))
    if how == "boundary":  # move bytes from one stage to the next
        k = data.draw(st.integers(0, len(chunks) - 2))
        n = data.draw(st.integers(-4, 4))
        joined = chunks[k] + chunks[k + 1]
        cut = min(max(len(chunks[k]) + n, 0), len(joined))
        chunks[k], chunks[k + 1] = joined[:cut], joined[cut:]
    elif how == "table":  # another scale or codebook size for a stage
        k = data.draw(st.integers(1, len(stages) - 1))
        stages[k] = (data.draw(st.sampled_from([1, 2])), data.draw(st.sampled_from([2, 16, 32, 64])), 0)
        if stages[k][0] > stages[k - 1][0]:
            stages[k] = (stages[k - 1][0],) + stages[k][1:]
    elif how == "drop":  # stages left out of the middle
        k = data.draw(st.integers(1, len(stages) - 1))
        del stages[k], chunks[k], adapt[k]
    mutated = bitstream.pack(dataclasses.replace(header, stages=tuple(stages), payload_length=None,
                                                 adapt=tuple(adapt), version=None), [bytes(c) for c in chunks])
    try:
        rgb = codec.decompress(mutated)
    except ValueError as exc:
        assert str(exc)
        return
    assert rgb.shape == (64, 96, 3)


def test_model_directory_checks(fixture_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Codec.load(str(tmp_path / "nope"))
    broken = tmp_path / "broken"
    shutil.copytree(fixture_model, broken)
    os.remove(broken / "prior.safetensors")
    with pytest.raises(ValueError, match="no prior.safetensors"):
        Codec.load(str(broken))
    tampered = tmp_path / "tampered"
    shutil.copytree(fixture_model, tampered)
    with open(tampered / "embedder.safetensors", "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(ValueError, match="do not match model.json"):
        Codec.load(str(tampered))
    with pytest.raises(ValueError, match="backend"):
        Codec.load(fixture_model, backend="tensorflow")


def test_model_id_is_derived_from_the_weights(fixture_model):
    with open(os.path.join(fixture_model, "model.json")) as f:
        meta = json.load(f)
    assert meta["model_id"] == compute_model_id(fixture_model)
    assert len(meta["model_id"]) == 32


# ------------------------------------------------------------------ operating points


def test_the_fixture_model_has_operating_points(codec):
    assert codec.stages == [(2, 16), (2, 16), (1, 32)] and codec.qualities == 3
    assert codec.codebook_size == 16 and len(codec.prior) == 3
    assert codec.default_quality == 3  # no measured operating points: every stage
    assert codec.check_quality(None) == 3
    assert [codec.check_quality(q) for q in (1, 2, 3, np.int64(2))] == [1, 2, 3, 2]


@pytest.mark.parametrize("quality, match", [(0, "quality 0 is not one of this model's operating points 1..3"),
                                            (4, "quality 4 is not"), (-1, "quality -1"),
                                            (2.5, "quality must be an integer, got 2.5"),
                                            (2.0, "quality must be an integer, got 2.0"),
                                            (True, "quality must be an integer, got True"),
                                            ("2", "quality must be an integer, got '2'"),
                                            ("high", "quality must be an integer")])
def test_a_quality_outside_the_operating_points_is_named(codec, quality, match):
    with pytest.raises(ValueError, match=match):
        codec.check_quality(quality)
    with pytest.raises(ValueError, match=match):
        codec.compress(_frame(64, 64), quality=quality)


def test_compress_at_every_quality(codec):
    frame = _frame(70, 102, seed=5)  # a 9 x 13 code grid: the coarse stages are 5 x 7
    sizes, images = [], []
    for q in (1, 2, 3):
        payload = codec.compress(frame, quality=q)
        header, codes = codec.parse(payload)
        assert header.quality == q and [st[:2] for st in header.stages] == codec.stages[:q]
        assert header.code_shape == (9, 13) and header.codebook_size == 16
        assert [g.shape for g in codes] == [(5, 7), (5, 7), (9, 13)][:q]
        expected = codec.encode_codes(frame, quality=q)
        assert len(expected) == q and all(np.array_equal(a, b) for a, b in zip(codes, expected))
        rgb = codec.decompress(payload)
        assert rgb.shape == (70, 102, 3) and rgb.dtype == np.uint8
        # what the decoder gives for the codes of the first q stages
        assert np.array_equal(rgb, codec.render(codec.decode_indices(codes, shape=(9, 13)), header))
        sizes.append(len(payload))
        images.append(rgb)
    assert sizes[0] < sizes[1] < sizes[2]
    assert not np.array_equal(images[0], images[2])
    assert codec.compress(frame) == codec.compress(frame, quality=3)  # the default


def test_truncation_is_encoding_at_the_lower_quality_byte_for_byte(codec, corpus_frames):
    """The progressive bitstream (issue: cut a stream of quality Q to q < Q): on real frames
    of the corpus's test split (synthetic ones without the corpus)."""
    for name, frame in corpus_frames:
        top = codec.compress(frame, quality=codec.qualities)
        for q in range(1, codec.qualities + 1):
            direct = codec.compress(frame, quality=q)
            assert bitstream.truncate(top, q) == direct, "%s: quality %d" % (name, q)
            for lower in range(1, q):
                assert bitstream.truncate(direct, lower) == bitstream.truncate(top, lower)


def test_a_stage_mismatch_between_bitstream_and_model_is_named(codec):
    payload = codec.compress(_frame(64, 96, seed=6))
    header, body = bitstream.unpack(payload)
    chunks = bitstream.stage_payloads(header, body)

    def repacked(stages, parts):
        adapt = (header.adapt + ((8, 0),) * len(stages))[: len(stages)]
        return bitstream.pack(dataclasses.replace(header, stages=tuple(stages), payload_length=None, adapt=adapt),
                              parts)

    cases = [
        # stage 2 on the fine grid, stage 3 with another codebook, a stage more than the model has
        (repacked([(2, 16, 0), (1, 16, 0), (1, 32, 0)], chunks), r"bitstream stages \[\(2, 16\), \(1, 16\), "),
        (repacked([(2, 16, 0), (2, 16, 0), (1, 64, 0)], chunks), r"\(1, 64\)\] do not match model"),
        (repacked(list(header.stages) + [(1, 32, 0)], chunks + [b""]), "do not match model"),
        # one stage of scale 1, as a plain model (or a version 2 file) writes it
        (repacked([(1, 16, 0)], [b"".join(chunks)]), r"bitstream stages \[\(1, 16\)\] do not match model"),
    ]
    for data, match in cases:
        for call in (codec.parse, codec.decompress):
            with pytest.raises(bitstream.BitstreamError, match=match) as err:
                call(data)
            assert codec.model_id in str(err.value) and "[(2, 16), (2, 16), (1, 32)]" in str(err.value)


def test_a_version_2_bitstream_is_one_stage_the_staged_model_refuses(codec):
    """A version 2 file is read as one stage of scale 1; the fixture model has none such."""
    import struct
    import zlib

    codec.adaptive_coding = False  # a version 2 file codes with the tables as they are
    try:
        header, body = bitstream.unpack(codec.compress(_frame(64, 96, seed=7), quality=1))
    finally:
        codec.adaptive_coding = True
    data = bitstream.pack(dataclasses.replace(header, version=3), body)
    enc = len(header.source_encoding)
    # the same frame as version 2 wrote it: version 3's layout without the stage table
    v2 = bytearray(data[:4]) + struct.pack("<H", 2) + data[6: 172 + enc] + body
    v2 = bytes(v2) + struct.pack("<I", zlib.crc32(bytes(v2)) & 0xFFFFFFFF)
    got = bitstream.read_header(v2)
    assert got.version == 2 and got.stages == ((1, 16, len(body)),)
    with pytest.raises(bitstream.BitstreamError, match=r"bitstream stages \[\(1, 16\)\] do not match"):
        codec.decompress(v2)


def test_model_directories_whose_stages_disagree_are_refused(fixture_model, tmp_path):
    from rawdiff.codec.entropy import StagedPrior

    bad = tmp_path / "stages"
    shutil.copytree(fixture_model, bad)
    meta = json.loads((bad / "model.json").read_text())
    (bad / "model.json").write_text(json.dumps(dict(meta, stages=[[2, 32], [2, 16], [1, 32]])))
    with pytest.raises(ValueError, match=r"the first stage's codebook \(32\) is not codebook_size 16"):
        Codec.load(str(bad))
    two = tmp_path / "prior"
    shutil.copytree(fixture_model, two)
    prior = StagedPrior.load(str(two / "prior.safetensors"))
    StagedPrior(prior.stages[:2]).save(str(two / "prior.safetensors"))
    meta["model_id"] = compute_model_id(str(two))
    (two / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="the prior has 2 stages, the model 3"):
        Codec.load(str(two))


def test_adaptive_and_static_coding_decode_to_the_same_image(codec):
    """The default codes each stage with the tables adapted to the frame, its counts aged
    (format version 9);
    ``adaptive_coding = False`` writes the same codes with the tables as they are (a stream
    that version 6 readers read). Both decode to the same pixels, and each cuts to the
    stream of a lower quality."""
    frame = _frame(96, 128, seed=9)
    adaptive = codec.compress(frame)
    codec.adaptive_coding = False
    try:
        static = codec.compress(frame)
    finally:
        codec.adaptive_coding = True
    a, s = bitstream.read_header(adaptive), bitstream.read_header(static)
    assert a.version == 9 and len(a.adapt) == a.quality and s.version < 7 and s.adapt == ()
    assert {h for *_, h in a.adapt} == {AGING}  # the encoder ages every stage's counts
    np.testing.assert_array_equal(codec.decompress(adaptive), codec.decompress(static))
    for ca, cs in zip(codec.parse(adaptive)[1], codec.parse(static)[1]):
        np.testing.assert_array_equal(ca, cs)
    assert bitstream.truncate(adaptive, 1) == codec.compress(frame, quality=1)
