"""The frame container: layout, the stage table, truncation, round trips, golden files,
clean errors on any input.

Golden files in test/golden/ pin format version 3; the version-2 files stay there to show
that they still read (as one stage) and the version-1 files to show that an old file fails
with a clear error. Regenerate only on purpose:

    RAWDIFF_REGEN_GOLDEN=1 pytest test/test_bitstream.py test/test_entropy.py -k golden
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawdiff.codec import bitstream as bs
from rawdiff.codec.bitstream import (
    BitstreamError,
    Header,
    ModelMismatchError,
    check_model,
    make_model_id,
    pack,
    read_header,
    stage_payloads,
    truncate,
    unpack,
)

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("RAWDIFF_REGEN_GOLDEN") == "1"
MODEL_A = make_model_id(b"rawdiff golden model A")


CCM = ((1.5, -0.375, -0.125), (-0.25, 1.5, -0.25), (0.0625, -0.5625, 1.5))
STATS = (0.25, 0.3125, 0.1875, 0.03125, 0.015625, -0.0078125, 0.046875, 0.0, 0.0234375)


def make_header(**changes) -> Header:
    fields = dict(model_id=MODEL_A, height=1112, width=1936, cfa="RGGB", source_encoding="bayer_rggb16",
                  black_level=64.0, white_level=1023.0, code_height=70, code_width=121,
                  codebook_size=1024, entropy_model="context", wb_gains=(2.0, 1.0, 1.5),
                  color_matrix=CCM, wb_source="as_shot", matrix_source="frame", colour_stats=STATS)
    fields.update(changes)
    return Header(**fields)


# three stages: two on the grid twice as coarse as the code grid, then the code grid
STAGES3 = ((2, 1024, 0), (2, 512, 0), (1, 256, 0))


def golden_cases():
    """name -> (header, one payload per stage)."""
    payload_a = b"".join(hashlib.sha256(b"golden payload %d" % i).digest() for i in range(10))  # 320 bytes
    return {
        "frame_v3_rggb_context": (make_header(stages=STAGES3), [payload_a[:96], payload_a[96:224], payload_a[224:]]),
        "frame_v3_gbrg_unigram": (
            make_header(model_id=make_model_id(b"rawdiff golden model B"), height=1876, width=2896,
                        cfa="GBRG", source_encoding="raw12p", black_level=(240.0, 256.0, 256.25, 240.5),
                        white_level=4095.0, code_height=118, code_width=181, codebook_size=256,
                        entropy_model="unigram", wb_gains=(1.8123, 1.0, 2.4567),
                        color_matrix=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), wb_source="gray_world",
                        matrix_source="default", tone_curve="none", colour_stats=(0.0,) * 9),
            [b"\x00\x01\x02\x03"],
        ),
    }


def stages_of(header: Header, chunks) -> tuple:
    """``header.stages`` (or one stage of scale 1) with the lengths of ``chunks``."""
    layout = header.stages or ((1, header.codebook_size, 0),)
    return tuple((sc, k, len(c)) for (sc, k, _), c in zip(layout, chunks))


def as_read(header: Header, chunks) -> Header:
    """What unpack() gives for ``pack(header, chunks)``."""
    return dataclasses.replace(header, stages=stages_of(header, chunks), payload_length=sum(len(c) for c in chunks))


def refresh_crc(body_and_crc: bytes) -> bytes:
    """Replace the trailing CRC so that a modified bitstream passes the CRC check."""
    body = body_and_crc[:-4]
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def with_field(data: bytes, offset: int, fmt: str, value) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, value)
    return refresh_crc(bytes(buf))


# ------------------------------------------------------------------ round trips and layout

TABLE = 184  # offset of the stage table after the 12 characters of "bayer_rggb16"


def test_round_trip_and_size():
    header = make_header()
    data = pack(header, b"payload!")
    # one stage: the container costs 177 + n + 7 bytes
    assert len(data) == bs.HEADER_FIXED_SIZE + len("bayer_rggb16") + 1 + 7 + 8 + 4 == 177 + 12 + 7 + 8
    got, payload = unpack(data)
    assert payload == b"payload!"
    assert got == dataclasses.replace(header, payload_length=8, stages=((1, 1024, 8),))
    assert got.quality == 1 and got.version == 3
    assert read_header(data) == got
    json.dumps(got.to_dict())  # JSON-able
    assert Header.from_dict(got.to_dict()) == got


def test_round_trip_of_three_stages():
    header = make_header(stages=STAGES3)
    chunks = [b"abcd", b"", b"0123456789"]
    data = pack(header, chunks)
    assert len(data) == 177 + 12 + 7 * 3 + 14
    got, payload = unpack(data)
    assert payload == b"abcd0123456789"
    assert got == as_read(header, chunks)
    assert got.stages == ((2, 1024, 4), (2, 512, 0), (1, 256, 10)) and got.quality == 3
    assert stage_payloads(got, payload) == chunks
    assert got.stage_shapes() == [(35, 61), (35, 61), (70, 121)]  # 70 x 121 divided by 2, rounded up
    d = got.to_dict()
    assert d["quality"] == 3 and d["stages"][1] == {"scale": 2, "codebook_size": 512, "bytes": 0}
    assert Header.from_dict(json.loads(json.dumps(d))) == got
    assert pack(got, chunks) == data


def test_layout_offsets_match_documentation():
    header = make_header(black_level=(1.0, 2.0, 3.0, 4.0), cfa="GRBG", entropy_model="unigram",
                         stages=((4, 1024, 0), (1, 65536, 0)))
    data = pack(header, [b"xyz", b"uvwxyz"])
    assert data[0:4] == b"RDCF"
    assert struct.unpack_from("<H", data, 4) == (3,)
    assert data[6:22].hex() == MODEL_A
    assert struct.unpack_from("<IIBBHHI", data, 22) == (1112, 1936, 2, 1, 70, 121, 1024)
    assert struct.unpack_from("<4dd", data, 40) == (1.0, 2.0, 3.0, 4.0, 1023.0)
    assert struct.unpack_from("<3f", data, 80) == (2.0, 1.0, 1.5)
    assert struct.unpack_from("<9f", data, 92) == tuple(v for row in CCM for v in row)
    assert struct.unpack_from("<BBB", data, 128) == (0, 0, 0)  # as shot, the frame's matrix, smoothstep
    assert struct.unpack_from("<9f", data, 131) == STATS
    assert struct.unpack_from("<IB", data, 167) == (9, 12)
    assert data[172:184] == b"bayer_rggb16"
    # the stage table: S, then per stage scale, K - 1, length
    assert data[184] == 2
    assert struct.unpack_from("<BHI", data, 185) == (4, 1023, 3)
    assert struct.unpack_from("<BHI", data, 192) == (1, 65535, 6)
    assert data[199:208] == b"xyzuvwxyz"
    assert struct.unpack_from("<I", data, 208) == (zlib.crc32(data[:208]),)
    assert len(data) == 212 == 177 + 12 + 7 * 2 + 9


def test_render_parameters_and_colour_statistics_cost_87_bytes_a_frame():
    assert bs.HEADER_FIXED_SIZE - 85 == 51 + 36  # version 1's fixed header was 85 bytes


def test_render_parameters_read_back_as_float32_values():
    h = make_header(wb_gains=(2.1, 1.0, 1.7), color_matrix=[[1.1, -0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.2, 0.8]])
    assert h.wb_gains[0] == struct.unpack("<f", struct.pack("<f", 2.1))[0]
    got = unpack(pack(h, b""))[0]
    assert got.wb_gains == h.wb_gains and got.color_matrix == h.color_matrix
    assert got.to_dict()["color_matrix"][2] == list(h.color_matrix[6:9])


def test_header_normalises_inputs():
    h = make_header(model_id=MODEL_A.upper(), cfa="bggr", black_level=[10])
    assert h.model_id == MODEL_A and h.cfa == "BGGR" and h.black_level == (10.0,) * 4
    assert make_header(model_id=bytes.fromhex(MODEL_A)).model_id == MODEL_A
    assert h.index_bits == 10 and make_header(codebook_size=1025).index_bits == 11
    assert make_header(codebook_size=2).index_bits == 1
    assert h.code_shape == (70, 121)
    assert h.stages is None and h.quality == 1 and h.stage_shapes() == [(70, 121)]
    staged = make_header(stages=[[2, 1024, 0], (1, 16, 0)])
    assert staged.stages == ((2, 1024, 0), (1, 16, 0)) and staged.quality == 2
    assert make_header(code_height=7, code_width=9, stages=((4, 1024, 0),)).stage_shapes() == [(2, 3)]
    empty = make_header(source_encoding="")  # unknown source encoding
    assert unpack(pack(empty, b""))[0].source_encoding == ""


def test_cfa_codes_match_rawframe():
    try:
        from rawdiff.raw.frame import CFA_PATTERNS
    except ImportError:  # rawdiff.raw not importable yet in this checkout
        pytest.skip("rawdiff.raw.frame not importable")
    assert set(bs.CFA_CODES) == set(CFA_PATTERNS)


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(model_id="abc"), "32 hex"),
        (dict(model_id=b"short"), "16 bytes"),
        (dict(height=0), "height"),
        (dict(width=-3), "width"),
        (dict(width=2.5), "integer"),
        (dict(code_height=0), "code_height"),
        (dict(code_width=70000), "code_width"),
        (dict(height=64, code_height=70), "inconsistent"),
        (dict(cfa="RGBG"), "cfa"),
        (dict(source_encoding="bayer\nrggb"), "source_encoding"),
        (dict(source_encoding="bayer rggb"), "source_encoding"),
        (dict(source_encoding="x" * 65), "source_encoding"),
        (dict(black_level=(1, 2, 3)), "black_level"),
        (dict(black_level=float("nan")), "finite"),
        (dict(white_level=float("inf")), "finite"),
        (dict(white_level=64.0), "must exceed"),
        (dict(codebook_size=1), "codebook_size"),
        (dict(codebook_size=65537), "codebook_size"),
        (dict(entropy_model="gpt"), "entropy_model"),
        (dict(height=True), "integer"),
        (dict(wb_gains=(1.0, 0.0, 1.0)), "wb_gains must be positive"),
        (dict(wb_gains=(1.0, -2.0, 1.0)), "wb_gains must be positive"),
        (dict(wb_gains=(1.0, float("nan"), 1.0)), "wb_gains must be finite"),
        (dict(wb_gains=(1.0, 1.0)), "wb_gains must be 3 numbers"),
        (dict(wb_gains=(1.0, 1e39, 1.0)), "float32"),
        (dict(color_matrix=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0)), "color_matrix must be 9 numbers"),
        (dict(color_matrix=((1, 2, 3), (2, 4, 6), (0, 0, 1))), "singular"),
        (dict(color_matrix=((0, 0, 0),) * 3), "singular"),
        (dict(color_matrix="eye"), "color_matrix"),
        (dict(wb_source="guess"), "wb_source"),
        (dict(matrix_source="camera"), "matrix_source"),
        (dict(tone_curve="filmic"), "tone_curve"),
        (dict(colour_stats=(0.0,) * 8), "colour_stats must be 9 numbers"),
        (dict(colour_stats=(0.1, 0.1, 0.1, -0.01, 0, 0, 0.01, 0, 0.01)), "variances must be >= 0"),
        (dict(colour_stats=(0.1, float("nan"), 0.1, 0, 0, 0, 0, 0, 0)), "colour_stats must be finite"),
        # the stage table
        (dict(stages=()), "1 to 16 stages, got 0"),
        (dict(stages=((1, 1024, 0),) * 17), "1 to 16 stages, got 17"),
        (dict(stages=5), "stages must be"),
        (dict(stages=((1, 1024),)), r"stage 1 must be \(scale, codebook_size, length\)"),
        (dict(stages=((3, 1024, 0),)), r"stage 1: scale 3 is not one of \(1, 2, 4\)"),
        (dict(stages=((1, 1024, 0), (2, 64, 0))), "stage 2: scale 2 is coarser than the stage before it"),
        (dict(stages=((2, 1024, 0), (1, 1, 0))), r"stage 2: codebook_size 1 is not in \[2, 65536\]"),
        (dict(stages=((2, 1024, 0), (1, 65537, 0))), "stage 2: codebook_size 65537"),
        (dict(stages=((1, 1024, -1),)), r"stage 1: length -1 is not in \[0, 2\*\*32\)"),
        (dict(stages=((1, 1024, 1.5),)), "stages must be an integer"),
        (dict(stages=((2, 512, 0),)), r"codebook_size 1024 is not the first stage's \(512\)"),
        (dict(stages=((2, 1024, 3), (1, 64, 4)), payload_length=8), "lengths add up to 7 bytes, the payload has 8"),
    ],
)
def test_header_rejects_impossible_fields(changes, match):
    with pytest.raises(BitstreamError, match=match):
        make_header(**changes)


def test_pack_rejects_bad_arguments():
    with pytest.raises(BitstreamError, match="payload_length"):
        pack(make_header(payload_length=3), b"ab")
    with pytest.raises(BitstreamError, match=r"cannot write format version 2 \(this build writes version 3\)"):
        pack(make_header(version=2), b"")
    with pytest.raises(BitstreamError, match="version 4"):
        pack(make_header(version=4), b"")
    with pytest.raises(BitstreamError, match="Header"):
        pack({"model_id": MODEL_A}, b"")
    with pytest.raises(BitstreamError, match="str"):
        pack(make_header(), "text")
    with pytest.raises(BitstreamError, match="2 stage payloads for a header of 3 stages"):
        pack(make_header(stages=STAGES3), [b"a", b"b"])
    with pytest.raises(BitstreamError, match="1 stage payloads for a header of 3 stages"):
        pack(make_header(stages=STAGES3), b"abc")
    with pytest.raises(BitstreamError, match="2 stage payloads for a header of 1 stages"):
        pack(make_header(), [b"a", b"b"])
    with pytest.raises(BitstreamError, match="payload_length is 5 but the payload has 3"):
        pack(make_header(stages=((2, 1024, 2), (1, 8, 3)), payload_length=5), [b"ab", b"c"])
    # the lengths of the header's table are replaced by those of the payloads
    data = pack(make_header(stages=((2, 1024, 7), (1, 8, 9))), [b"ab", b"c"])
    assert unpack(data)[0].stages == ((2, 1024, 2), (1, 8, 1))
    # bytearray / memoryview payloads are fine
    assert unpack(pack(make_header(), bytearray(b"ab")))[1] == b"ab"
    assert unpack(pack(make_header(stages=STAGES3), [memoryview(b"a"), bytearray(b"b"), b"c"]))[1] == b"abc"


# ------------------------------------------------------------------ errors when reading

VALID_CHUNKS = [b"0123", b"456789ab", b"cdef"]


@pytest.fixture(scope="module")
def valid() -> bytes:
    """A bitstream of three stages (table at 184, payload at 206)."""
    return pack(make_header(stages=STAGES3), VALID_CHUNKS)


def test_bad_magic(valid):
    for data in (b"", b"PNG\x89" + valid[4:], b"\x00" * 200, b"X"):
        with pytest.raises(BitstreamError, match="not a rawdiff bitstream"):
            unpack(data)


def test_not_bytes():
    for data in ("RDCF", 12, None, 3.5):
        with pytest.raises(BitstreamError, match="bytes"):
            unpack(data)


def test_every_truncation_is_reported(valid):
    for n in range(1, len(valid)):
        with pytest.raises(BitstreamError, match="truncated") as info:
            unpack(valid[:n])
        assert "got %d" % n in str(info.value)
    with pytest.raises(BitstreamError, match=r"expected %d bytes .*got %d" % (len(valid), len(valid) - 1)):
        unpack(valid[:-1])
    for n in range(TABLE + 1, TABLE + 1 + 3 * 7):  # inside the stage table
        with pytest.raises(BitstreamError, match=r"expected at least 206 bytes \(the stage table\), got %d" % n):
            read_header(valid[:n], verify=False)


def test_trailing_garbage(valid):
    with pytest.raises(BitstreamError, match="3 bytes of trailing garbage"):
        unpack(valid + b"abc")


def test_crc_mismatch(valid):
    for at in (-10, -1, TABLE + 3):  # the payload, the CRC, the stage table
        buf = bytearray(valid)
        buf[at] ^= 0x40
        with pytest.raises(BitstreamError, match="CRC mismatch"):
            unpack(bytes(buf))


def test_future_version_fails_cleanly(valid):
    v4 = with_field(valid, 4, "<H", 4)  # a well-formed file of a version this build does not know
    for reader in (unpack, read_header, lambda d: read_header(d, verify=False), lambda d: truncate(d, 1)):
        with pytest.raises(BitstreamError, match=r"unsupported bitstream format version 4 .*reads versions 2, 3"):
            reader(v4)
    with pytest.raises(BitstreamError, match="version 0"):
        unpack(with_field(valid, 4, "<H", 0))


@pytest.mark.parametrize("name", ["frame_v1_rggb_context", "frame_v1_gbrg_unigram"])
def test_version_1_golden_files_fail_naming_the_versions(name):
    data = (GOLDEN / (name + ".rdc")).read_bytes()
    assert struct.unpack_from("<H", data, 4) == (1,)
    for reader in (unpack, read_header, lambda d: read_header(d, verify=False), lambda d: truncate(d, 1)):
        with pytest.raises(BitstreamError, match=r"format version 1 \(this build reads versions 2, 3\).*colour"):
            reader(data)


@pytest.mark.parametrize(
    "offset, fmt, value, match",
    [
        (22, "<I", 0, "height"),
        (26, "<I", 0, "width"),
        (30, "<B", 7, "unknown cfa code 7"),
        (31, "<B", 9, "unknown entropy model code 9"),
        (32, "<H", 0, "code_height"),
        (34, "<H", 2000, "inconsistent"),
        (36, "<I", 1, "codebook_size"),
        (36, "<I", 1 << 20, "codebook_size"),
        (36, "<I", 512, r"codebook_size 512 is not the first stage's \(1024\)"),
        (40, "<d", float("nan"), "finite"),
        (72, "<d", 10.0, "must exceed"),
        (80, "<f", 0.0, "wb_gains must be positive"),
        (84, "<f", float("inf"), "wb_gains must be finite"),
        (92, "<f", float("nan"), "color_matrix must be finite"),
        (128, "<B", 2, "unknown wb_source code 2"),
        (129, "<B", 5, "unknown matrix_source code 5"),
        (130, "<B", 9, "unknown tone_curve code 9"),
        (143, "<f", -1.0, "variances must be >= 0"),
        (135, "<f", float("inf"), "colour_stats must be finite"),
        # the stage table (184: S; 185, 192, 199: scale, K - 1, length of stages 1 to 3)
        (TABLE, "<B", 0, r"the stage table declares 0 stages \(1..16\)"),
        (TABLE, "<B", 17, r"the stage table declares 17 stages \(1..16\)"),
        (TABLE, "<B", 255, "declares 255 stages"),
        (TABLE + 1, "<B", 3, r"stage 1: scale 3 is not one of \(1, 2, 4\)"),
        (TABLE + 1, "<B", 0, "stage 1: scale 0"),
        (TABLE + 8, "<B", 4, r"stage 2: scale 4 is coarser than the stage before it \(2\)"),
        (TABLE + 15, "<B", 2, None),  # stage 3 as coarse as stage 2: allowed
        (TABLE + 2, "<H", 1022, r"codebook_size 1024 is not the first stage's \(1023\)"),
        (TABLE + 16, "<H", 0, r"stage 3: codebook_size 1 is not in \[2, 65536\]"),
        (TABLE + 4 + 7, "<I", 9, "the stages' lengths add up to 17 bytes, the payload has 16"),
        (TABLE + 4 + 14, "<I", 0, "the stages' lengths add up to 12 bytes, the payload has 16"),
        (TABLE + 4, "<I", 0xFFFFFFFF, "the stages' lengths add up to"),
        (167, "<I", 15, None),  # payload_length: now the file is a byte too long
    ],
)
def test_impossible_fields_with_valid_crc(valid, offset, fmt, value, match):
    data = with_field(valid, offset, fmt, value)
    if match is None:
        if offset == 167:
            with pytest.raises(BitstreamError, match="1 bytes of trailing garbage"):
                unpack(data)
        else:
            assert unpack(data)[0].stages == ((2, 1024, 4), (2, 512, 8), (2, 256, 4))
        return
    with pytest.raises(BitstreamError, match=match):
        unpack(data)


def test_a_stage_count_that_moves_the_payload_is_caught(valid):
    """S read as 2 or 4: the table and the payload shift, and the CRC (fixed up here) is all
    that would have caught it; the lengths and the total size still do."""
    for count in (1, 2, 4, 16):
        with pytest.raises(BitstreamError, match="lengths add up|truncated|trailing garbage|scale|codebook_size"):
            unpack(with_field(valid, TABLE, "<B", count))


def test_bad_source_encoding_bytes(valid):
    bad = bytearray(valid)
    bad[172] = 0xFF  # not ASCII
    with pytest.raises(BitstreamError, match="not ASCII"):
        unpack(refresh_crc(bytes(bad)))
    bad[172] = ord(" ")  # ASCII but not allowed
    with pytest.raises(BitstreamError, match="source_encoding"):
        unpack(refresh_crc(bytes(bad)))
    with pytest.raises(BitstreamError, match="source_encoding length 65"):
        unpack(with_field(valid, 171, "<B", 65))


def test_read_header_without_verification(valid):
    prefix = valid[: TABLE + 1 + 3 * 7]  # header, source encoding and stage table
    got = read_header(prefix, verify=False)
    assert got.payload_length == 16 and got.stages == ((2, 1024, 4), (2, 512, 8), (1, 256, 4))
    with pytest.raises(BitstreamError, match="truncated"):
        read_header(prefix)
    with pytest.raises(BitstreamError, match="truncated"):
        read_header(prefix[:-1], verify=False)
    with pytest.raises(BitstreamError, match="truncated"):
        read_header(valid[:TABLE], verify=False)  # no stage count


def test_check_model():
    header = make_header()
    check_model(header, MODEL_A.upper())
    other = make_model_id(b"another model")
    with pytest.raises(ModelMismatchError) as info:
        check_model(header, other)
    assert MODEL_A in str(info.value) and other in str(info.value)
    assert info.value.found == MODEL_A and info.value.expected == other
    assert isinstance(info.value, BitstreamError) and isinstance(info.value, ValueError)
    with pytest.raises(BitstreamError, match="32 hex"):
        check_model(header, "not-an-id")


def test_make_model_id():
    assert make_model_id(b"abc") == hashlib.sha256(b"abc").hexdigest()[:32]


# ------------------------------------------------------------------ truncation


def test_truncate_is_the_bitstream_of_the_first_stages(valid):
    header, payload = unpack(valid)
    assert truncate(valid, 3) == valid  # all stages: the same bytes
    for q in (1, 2):
        cut = truncate(valid, q)
        # byte for byte what packing the first q stages gives
        assert cut == pack(make_header(stages=STAGES3[:q]), VALID_CHUNKS[:q])
        got, got_payload = unpack(cut)
        assert got.quality == q and got_payload == b"".join(VALID_CHUNKS[:q])
        assert got == dataclasses.replace(header, stages=header.stages[:q], payload_length=len(got_payload))
        assert len(cut) == len(valid) - 7 * (3 - q) - sum(len(c) for c in VALID_CHUNKS[q:])
        # cutting again: the same as cutting once
        assert truncate(cut, q) == cut
        assert truncate(cut, 1) == truncate(valid, 1)
    assert truncate(bytearray(valid), 2) == truncate(valid, 2)
    assert truncate(pack(make_header(), b"abc"), 1) == pack(make_header(), b"abc")  # one stage of version 3


@pytest.mark.parametrize(
    "quality, match",
    [
        (0, r"quality 0 is not in \[1, 3\]: the bitstream has 3 stages"),
        (4, r"quality 4 is not in \[1, 3\]"),
        (-1, "quality -1"),
        (2.0, "quality must be an integer, got 2.0"),
        ("2", "quality must be an integer"),
        (True, "quality must be an integer, got True"),
        (None, "quality must be an integer"),
    ],
)
def test_truncate_rejects_a_bad_quality(valid, quality, match):
    with pytest.raises(BitstreamError, match=match):
        truncate(valid, quality)


def test_truncate_checks_the_whole_input_first(valid):
    buf = bytearray(valid)
    buf[-6] ^= 0x01  # in the last stage, which a cut to one stage would drop
    with pytest.raises(BitstreamError, match="CRC mismatch"):
        truncate(bytes(buf), 1)
    with pytest.raises(BitstreamError, match="truncated"):
        truncate(valid[:-1], 1)
    with pytest.raises(BitstreamError, match="trailing garbage"):
        truncate(valid + b"\x00", 1)
    with pytest.raises(BitstreamError, match="not a rawdiff bitstream"):
        truncate(b"PNG\x89" + valid[4:], 1)
    with pytest.raises(BitstreamError, match="bytes, got str"):
        truncate("RDCF", 1)
    # a corrupted stage table with a valid CRC
    with pytest.raises(BitstreamError, match="the stage table declares 0 stages"):
        truncate(with_field(valid, TABLE, "<B", 0), 1)
    with pytest.raises(BitstreamError, match="lengths add up to 17 bytes, the payload has 16"):
        truncate(with_field(valid, TABLE + 4 + 7, "<I", 9), 1)
    with pytest.raises(BitstreamError, match="stage 2: scale 4 is coarser"):
        truncate(with_field(valid, TABLE + 8, "<B", 4), 1)


def test_stage_payloads_needs_lengths_that_add_up(valid):
    header, payload = unpack(valid)
    assert stage_payloads(header, payload) == VALID_CHUNKS
    with pytest.raises(BitstreamError, match="lengths add up to 16 bytes, the payload has 17"):
        stage_payloads(header, payload + b"x")
    with pytest.raises(BitstreamError, match="lengths add up to 16 bytes, the payload has 15"):
        stage_payloads(header, payload[:-1])
    # a header without a table: one stage holds the whole payload
    assert stage_payloads(make_header(), b"abc") == [b"abc"]


# ------------------------------------------------------------------ golden files


@pytest.mark.parametrize("name", sorted(golden_cases()))
def test_golden(name):
    header, chunks = golden_cases()[name]
    payload = b"".join(chunks)
    rdc, js = GOLDEN / (name + ".rdc"), GOLDEN / (name + ".json")
    if REGEN:
        GOLDEN.mkdir(exist_ok=True)
        data = pack(header, chunks)
        rdc.write_bytes(data)
        doc = {"header": unpack(data)[0].to_dict(), "payload_sha256": hashlib.sha256(payload).hexdigest(),
               "stage_sha256": [hashlib.sha256(c).hexdigest() for c in chunks], "size": len(data)}
        js.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    data = rdc.read_bytes()
    expected = json.loads(js.read_text())
    got, got_payload = unpack(data)
    assert got.to_dict() == expected["header"]
    assert hashlib.sha256(got_payload).hexdigest() == expected["payload_sha256"]
    assert [hashlib.sha256(c).hexdigest() for c in stage_payloads(got, got_payload)] == expected["stage_sha256"]
    assert len(data) == expected["size"]
    assert got == as_read(header, chunks)
    assert got_payload == payload
    assert pack(got, stage_payloads(got, got_payload)) == data  # the writer still produces the pinned bytes
    assert pack(header, chunks) == data


def test_golden_three_stages_cut_to_each_quality():
    header, chunks = golden_cases()["frame_v3_rggb_context"]
    data = (GOLDEN / "frame_v3_rggb_context.rdc").read_bytes()
    for q in (1, 2, 3):
        assert truncate(data, q) == pack(make_header(stages=STAGES3[:q]), chunks[:q])


@pytest.mark.parametrize("name", ["frame_v2_rggb_context", "frame_v2_gbrg_unigram"])
def test_version_2_golden_files_read_as_one_stage(name):
    data = (GOLDEN / (name + ".rdc")).read_bytes()
    expected = json.loads((GOLDEN / (name + ".json")).read_text())
    assert struct.unpack_from("<H", data, 4) == (2,)
    got, payload = unpack(data)
    d = got.to_dict()
    assert {k: d[k] for k in expected["header"]} == expected["header"]  # every field version 2 had
    n = expected["header"]["payload_length"]
    assert got.version == 2 and got.quality == 1 and d["quality"] == 1
    assert got.stages == ((1, expected["header"]["codebook_size"], n),)
    assert got.stage_shapes() == [got.code_shape]
    assert stage_payloads(got, payload) == [payload] and len(payload) == n
    assert hashlib.sha256(payload).hexdigest() == expected["payload_sha256"]
    assert read_header(data, verify=False) == got
    with pytest.raises(BitstreamError, match="a version 2 bitstream has one stage; it cannot be cut"):
        truncate(data, 1)
    with pytest.raises(BitstreamError, match=r"quality 2 is not in \[1, 1\]: the bitstream has 1 stage$"):
        truncate(data, 2)
    # its content re-packs as version 3 (one stage in the table), the fields unchanged
    v3 = pack(dataclasses.replace(got, version=3), payload)
    assert len(v3) == len(data) + 1 + 7
    again = unpack(v3)[0]
    assert dataclasses.replace(again, version=2) == got


# ------------------------------------------------------------------ property-based robustness

_headers = st.builds(
    lambda mid, h, w, fh, fw, cfa, enc, black, dwhite, k, em, gains, diag, ws, ms, tc: Header(
        model_id=mid, height=h, width=w, cfa=cfa, source_encoding=enc, black_level=black,
        white_level=max(black) + dwhite, code_height=min(fh, h), code_width=min(fw, w),
        codebook_size=k, entropy_model=em, wb_gains=gains,
        color_matrix=(diag[0], 0.1, -0.1, 0.0, diag[1], 0.2, -0.3, 0.0, diag[2]), wb_source=ws,
        matrix_source=ms, tone_curve=tc, colour_stats=tuple(diag) + (0.01, 0.0, -0.002, 0.02, 0.001, 0.03)),
    st.binary(min_size=16, max_size=16),
    st.integers(1, 2 ** 32 - 1), st.integers(1, 2 ** 32 - 1),
    st.integers(1, 65535), st.integers(1, 65535),
    st.sampled_from(bs.CFA_CODES),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.+-", min_size=0,
            max_size=64),
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=4, max_size=4),
    st.floats(1e-3, 1e6, allow_nan=False),
    st.integers(2, 65536),
    st.sampled_from(bs.ENTROPY_MODELS),
    st.lists(st.floats(1e-3, 64.0), min_size=3, max_size=3),
    st.lists(st.floats(1.0, 4.0), min_size=3, max_size=3),
    st.sampled_from(bs.WB_SOURCES), st.sampled_from(bs.MATRIX_SOURCES), st.sampled_from(bs.TONE_CURVES),
)


@st.composite
def _staged(draw):
    """A header with a stage table of 1 to 16 stages (scales coarse to fine) and a payload
    per stage."""
    header = draw(_headers)
    n = draw(st.integers(1, bs.MAX_STAGES))
    scales = sorted(draw(st.lists(st.sampled_from(bs.STAGE_SCALES), min_size=n, max_size=n)), reverse=True)
    sizes = [header.codebook_size] + draw(st.lists(st.integers(2, 65536), min_size=n - 1, max_size=n - 1))
    header = dataclasses.replace(header, stages=tuple((sc, k, 0) for sc, k in zip(scales, sizes)))
    chunks = draw(st.lists(st.binary(max_size=40), min_size=n, max_size=n))
    return header, chunks


@settings(max_examples=150, deadline=None)
@given(header=_headers, payload=st.binary(max_size=300))
def test_round_trip_property(header, payload):
    data = pack(header, payload)
    got, got_payload = unpack(data)
    assert got_payload == payload
    assert got == dataclasses.replace(header, payload_length=len(payload), stages=((1, header.codebook_size,
                                                                                    len(payload)),))
    assert Header.from_dict(json.loads(json.dumps(got.to_dict()))) == got


@settings(max_examples=150, deadline=None)
@given(case=_staged())
def test_staged_round_trip_and_truncation_property(case):
    header, chunks = case
    data = pack(header, chunks)
    got, got_payload = unpack(data)
    assert got == as_read(header, chunks) and stage_payloads(got, got_payload) == chunks
    assert len(data) == 177 + len(header.source_encoding) + 7 * len(chunks) + len(got_payload)
    assert Header.from_dict(json.loads(json.dumps(got.to_dict()))) == got
    for q in range(1, len(chunks) + 1):
        prefix = dataclasses.replace(header, stages=header.stages[:q])
        assert truncate(data, q) == pack(prefix, chunks[:q])


@st.composite
def _mutations(draw, data: bytes):
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "replace", "delete", "random", "append", "table"]))
    buf = bytearray(data)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        buf = buf[: draw(st.integers(0, len(buf) - 1))]
    elif kind == "insert":
        i = draw(st.integers(0, len(buf)))
        buf[i:i] = draw(st.binary(min_size=1, max_size=8))
    elif kind == "replace":
        i = draw(st.integers(0, len(buf) - 1))
        chunk = draw(st.binary(min_size=1, max_size=16))
        buf[i: i + len(chunk)] = chunk
    elif kind == "delete":
        i = draw(st.integers(0, len(buf) - 1))
        del buf[i: i + draw(st.integers(1, 8))]
    elif kind == "append":
        buf += draw(st.binary(min_size=1, max_size=8))
    elif kind == "table":  # bytes of the stage table: its count, a scale, a K - 1, a length
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(TABLE, TABLE + 3 * 7))
            buf[i] = draw(st.integers(0, 255))
    else:
        buf = bytearray(draw(st.binary(max_size=200)))
    return bytes(buf)


def _unpack_or_error(data: bytes, original: bytes, payload: bytes):
    try:
        header, got = unpack(data)
    except BitstreamError as exc:
        assert str(exc)
        return None
    # anything accepted must be the original bytes (a no-op mutation)
    assert data == original and got == payload
    return header


_VALID = pack(make_header(stages=STAGES3), [hashlib.sha256(b"%d" % i).digest()[: 8 + 8 * i] for i in range(3)])
_PAYLOAD = unpack(_VALID)[1]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_mutations(_VALID))
def test_mutations_never_crash(data):
    _unpack_or_error(data, _VALID, _PAYLOAD)
    try:
        read_header(data, verify=False)
    except BitstreamError:
        pass
    try:
        truncate(data, 1)
    except BitstreamError:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_mutations(_VALID))
def test_mutations_past_the_crc_never_crash(data):
    """The same mutations with a fixed-up CRC reach the field checks: still no crash."""
    if len(data) < 4:
        return
    fixed = refresh_crc(data)
    try:
        header, payload = unpack(fixed)
    except BitstreamError as exc:
        assert str(exc)
        return
    # accepted: then it must be self-consistent and re-pack to the same bytes
    chunks = stage_payloads(header, payload)
    assert pack(header, chunks) == fixed
    for q in range(1, header.quality + 1):
        assert truncate(fixed, q) == pack(dataclasses.replace(header, stages=header.stages[:q],
                                                              payload_length=None), chunks[:q])


@settings(max_examples=200, deadline=None)
@given(tail=st.binary(max_size=120))
def test_random_bytes_after_a_valid_prefix(tail):
    for version in (b"\x02\x00", b"\x03\x00"):
        for data in (b"RDCF" + tail, b"RDCF" + version + tail, refresh_crc(b"RDCF" + version + tail + b"\x00" * 4)):
            try:
                unpack(data)
            except BitstreamError:
                pass
