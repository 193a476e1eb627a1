"""Codec: exact index round trips through bytes, any frame size, clear errors."""

import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic import textured_photo

from rawdiff.codec import Codec, bitstream
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
    grid = codec.encode_indices(frame)
    assert grid.shape == (-(-height // codec.factor), -(-width // codec.factor))
    payload = codec.compress(frame)
    header, decoded = codec.parse(payload)
    assert np.array_equal(decoded, grid)
    assert (header.height, header.width, header.cfa) == (height, width, "GRBG")
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
    fields = {k: getattr(header, k) for k in ("height", "width", "cfa", "source_encoding", "black_level",
                                              "white_level", "code_height", "code_width", "codebook_size",
                                              "entropy_model")}
    foreign = bitstream.pack(bitstream.Header(model_id="ab" * 16, **fields), body)
    with pytest.raises(bitstream.ModelMismatchError) as err:
        codec.decompress(foreign)
    assert "ab" * 16 in str(err.value) and codec.model_id in str(err.value)


@pytest.fixture(scope="module")
def small_payload(codec):
    return codec.compress(_frame(64, 96, seed=4))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_fuzzed_payloads_with_a_valid_crc_never_crash(codec, small_payload, data):
    """Even past the CRC (recomputed here), a mutated payload gives a clear error or a
    frame of the declared size, never another exception."""
    header, body = bitstream.unpack(small_payload)
    body = bytearray(body)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(body) - 1))
        body[pos] = data.draw(st.integers(0, 255))
    fields = {k: getattr(header, k) for k in ("model_id", "height", "width", "cfa", "source_encoding", "black_level",
                                              "white_level", "code_height", "code_width", "codebook_size",
                                              "entropy_model")}
    mutated = bitstream.pack(bitstream.Header(**fields), bytes(body))
    try:
        rgb = codec.decompress(mutated)
    except ValueError:
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
