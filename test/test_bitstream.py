"""The frame container: layout, the stage table, truncation, round trips, golden files,
clean errors on any input.

Golden files in test/golden/ pin format versions 8 to 4 and version 3 (still read, and
written when a version 3 file is cut); the version-2 files stay there to show that they still read
(as one stage) and the version-1 files to show that an old file fails with a clear error. Regenerate only on purpose:

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
    cases = {}
    for version in (3, 4):
        cases["frame_v%d_rggb_context" % version] = (
            make_header(stages=STAGES3, version=version), [payload_a[:96], payload_a[96:224], payload_a[224:]])
        cases["frame_v%d_gbrg_unigram" % version] = (
            make_header(model_id=make_model_id(b"rawdiff golden model B"), height=1876, width=2896,
                        cfa="GBRG", source_encoding="raw12p", black_level=(240.0, 256.0, 256.25, 240.5),
                        white_level=4095.0, code_height=118, code_width=181, codebook_size=256,
                        entropy_model="unigram", wb_gains=(1.8123, 1.0, 2.4567),
                        color_matrix=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), wb_source="gray_world",
                        matrix_source="default", tone_curve="none", colour_stats=(0.0,) * 9, version=version),
            [b"\x00\x01\x02\x03"],
        )
    # version 4 with integer levels (two bytes each) and a stage longer than 127 bytes
    cases["frame_v4_bggr_integer_levels"] = (
        make_header(cfa="BGGR", black_level=(64, 64, 64, 64), white_level=4095, stages=STAGES3[:2]),
        [payload_a[:200], payload_a[200:]])
    return cases


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

TABLE = 184  # version 3: the offset of the stage table after the 12 characters of "bayer_rggb16"


def test_round_trip_and_size():
    header = make_header()
    data = pack(header, b"payload!")
    # one stage: 23 bytes to the flags, 6 of sizes (1112, 1936, 70, 121 as varints), 10 of
    # integer levels, 12 of gains, 36 of the frame's matrix, 36 of colour statistics, 1 + 12
    # of source encoding, 1 + 4 of stage table, the payload and the CRC
    assert len(data) == 23 + 6 + 10 + 12 + 36 + 36 + 13 + 5 + 8 + 4 == 153
    assert len(pack(dataclasses.replace(header, version=3), b"payload!")) == 177 + 12 + 7 + 8
    got, payload = unpack(data)
    assert payload == b"payload!"
    assert got == dataclasses.replace(header, payload_length=8, stages=((1, 1024, 8),))
    assert got.quality == 1 and got.version == 4
    assert read_header(data) == got
    json.dumps(got.to_dict())  # JSON-able
    assert Header.from_dict(got.to_dict()) == got


def test_round_trip_of_three_stages():
    header = make_header(stages=STAGES3)
    chunks = [b"abcd", b"", b"0123456789"]
    data = pack(header, chunks)
    assert len(data) == 141 + 4 * 3 + 14
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
    header = make_header(black_level=(1.0, 2.0, 3.5, 4.0), cfa="GRBG", entropy_model="unigram",
                         stages=((4, 1024, 0), (1, 65536, 0)), tone_curve="none")
    data = pack(header, [b"xyz", b"uvw" * 50])
    assert data[0:4] == b"RDCF"
    assert struct.unpack_from("<H", data, 4) == (4,)
    assert data[6:22].hex() == MODEL_A
    assert data[22] == 2 | 1 << 2 | 0 << 4 | 0 << 5 | 1 << 6 | 0x80  # GRBG, unigram, as shot, frame, none, f64
    assert data[23:29] == bytes([0xD8, 0x08, 0x90, 0x0F, 70, 121])  # 1112, 1936 as varints, 70, 121
    assert struct.unpack_from("<5d", data, 29) == (1.0, 2.0, 3.5, 4.0, 1023.0)  # 3.5: float64 levels
    assert struct.unpack_from("<3f", data, 69) == (2.0, 1.0, 1.5)
    assert struct.unpack_from("<9f", data, 81) == tuple(v for row in CCM for v in row)
    assert struct.unpack_from("<9f", data, 117) == STATS
    assert data[153] == 12 and data[154:166] == b"bayer_rggb16"
    # the stage table: S, then per stage scale, K - 1, length as a varint
    assert data[166] == 2
    assert struct.unpack_from("<BHB", data, 167) == (4, 1023, 3)
    assert struct.unpack_from("<BH", data, 171) == (1, 65535) and data[174:176] == bytes([150, 1])  # 150
    assert bs.layout(data) == {"table": 166, "stages": [167, 171], "payload": 176, "crc": 329}
    assert data[176:329] == b"xyz" + b"uvw" * 50
    assert struct.unpack_from("<I", data, 329) == (zlib.crc32(data[:329]),)
    assert len(data) == 333
    # integer levels take 2 bytes each, and the default matrix none
    small = pack(dataclasses.replace(header, black_level=64, matrix_source="default", color_matrix=bs.IDENTITY_MATRIX),
                 [b"xyz", b"uvw" * 50])
    assert small[22] & 0xA0 == 0x20 and struct.unpack_from("<5H", small, 29) == (64, 64, 64, 64, 1023)
    assert len(small) == len(data) - 30 - 36


def test_version_3_layout_offsets_match_documentation():
    header = make_header(black_level=(1.0, 2.0, 3.0, 4.0), cfa="GRBG", entropy_model="unigram",
                         stages=((4, 1024, 0), (1, 65536, 0)), version=3)
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


def test_render_parameters_and_colour_statistics_cost_58_bytes_a_frame():
    assert bs.HEADER_FIXED_SIZE - 85 == 51 + 36  # version 1's fixed header was 85 bytes; version 3's
    header = make_header(matrix_source="default", color_matrix=bs.IDENTITY_MATRIX)
    no_colour = dataclasses.replace(header, wb_gains=(1.0, 1.0, 1.0), colour_stats=(0.0,) * 9)
    assert len(pack(header, b"")) == len(pack(no_colour, b""))  # fixed size: gains and statistics
    assert len(pack(header, b"")) - (4 + 2 + 16 + 1 + 6 + 1 + 12 + 1 + 4 + 4) == 10 + 12 + 36
    assert len(pack(make_header(), b"")) - len(pack(header, b"")) == 36  # the frame's own matrix


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
    with pytest.raises(BitstreamError,
                       match=r"cannot write format version 2 \(this build writes versions 9, 8, 7, 6, 5 and 4"):
        pack(make_header(version=2), b"")
    with pytest.raises(BitstreamError, match="cannot write format version 10"):
        pack(make_header(version=10), b"")
    with pytest.raises(BitstreamError, match="format version 9 is for streams with adaptive coding with aging"):
        make_header(version=9)
    with pytest.raises(BitstreamError, match="format version 8 is for streams with adaptive coding with a parent"):
        make_header(version=8)
    with pytest.raises(BitstreamError, match="format version 7 is for streams with adaptive coding"):
        make_header(version=7)
    with pytest.raises(BitstreamError, match="format version 6 is for streams with detail statistics"):
        make_header(version=6)
    with pytest.raises(BitstreamError, match="detail statistics need format version 6"):
        make_header(version=4, detail=(1, 2, 3))
    with pytest.raises(BitstreamError, match="detail values must be in 0..255"):
        make_header(detail=(1, 256))
    with pytest.raises(BitstreamError, match="detail holds 9 values"):
        make_header(detail=(0,) * 9)
    with pytest.raises(BitstreamError, match="format version 5 is for streams with mean layers"):
        make_header(version=5)
    with pytest.raises(BitstreamError, match="matrix_source 'default' is the identity matrix"):
        pack(make_header(matrix_source="default"), b"")
    assert unpack(pack(make_header(matrix_source="default", version=3), b""))[0].color_matrix == bs._flat_floats(
        CCM, "m", 9)  # version 3 stores the matrix whatever its source
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
    """A bitstream of three stages (table at 136, payload at 149)."""
    return pack(make_header(stages=STAGES3), VALID_CHUNKS)


@pytest.fixture(scope="module")
def valid3() -> bytes:
    """The same in version 3 (table at 184, payload at 206)."""
    return pack(make_header(stages=STAGES3, version=3), VALID_CHUNKS)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def raw_v4(flags=0x08, sizes=None, levels=None, gains=(2.0, 1.0, 1.5), matrix=CCM, stats=STATS,
           enc=b"bayer_rggb16", count=None, stages=((2, 1023, 4), (2, 511, 8), (1, 255, 4)), payload=None) -> bytes:
    """A version 4 bitstream written field by field from the documentation, without the
    writer's checks (``valid`` with no argument changed); lengths of stages as ints or raw bytes."""
    sizes = sizes if sizes is not None else b"".join(_varint(v) for v in (1112, 1936, 70, 121))
    levels = levels if levels is not None else struct.pack("<5H", 64, 64, 64, 64, 1023)
    body = b"RDCF" + struct.pack("<H", 4) + bytes.fromhex(MODEL_A) + bytes([flags]) + sizes + levels
    body += struct.pack("<3f", *gains)
    if matrix is not None:
        body += struct.pack("<9f", *[v for row in matrix for v in row])
    body += struct.pack("<9f", *stats) + bytes([len(enc)]) + enc + bytes([len(stages) if count is None else count])
    for scale, km1, n in stages:
        body += struct.pack("<BH", scale, km1) + (n if isinstance(n, bytes) else _varint(n))
    body += b"".join(VALID_CHUNKS) if payload is None else payload
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def test_raw_v4_writes_what_pack_writes(valid, valid3):
    assert raw_v4() == valid
    assert bs.layout(valid) == {"table": 136, "stages": [137, 141, 145], "payload": 149, "crc": 165}
    assert bs.layout(valid3) == {"table": 184, "stages": [185, 192, 199], "payload": 206, "crc": 222}
    with pytest.raises(BitstreamError, match="a version 2 bitstream has no stage table"):
        bs.layout((GOLDEN / "frame_v2_rggb_context.rdc").read_bytes())
    assert make_header(black_level=-0.0, white_level=-0.0 + 7).to_dict()["black_level"] == [0.0] * 4  # no -0.0


def test_bad_magic(valid):
    for data in (b"", b"PNG\x89" + valid[4:], b"\x00" * 200, b"X"):
        with pytest.raises(BitstreamError, match="not a rawdiff bitstream"):
            unpack(data)


def test_not_bytes():
    for data in ("RDCF", 12, None, 3.5):
        with pytest.raises(BitstreamError, match="bytes"):
            unpack(data)


def test_every_truncation_is_reported(valid, valid3):
    for data in (valid, valid3):
        for n in range(1, len(data)):
            with pytest.raises(BitstreamError, match="truncated") as info:
                unpack(data[:n])
            assert "got %d" % n in str(info.value)
        with pytest.raises(BitstreamError, match=r"expected %d bytes .*got %d" % (len(data), len(data) - 1)):
            unpack(data[:-1])
    for n in range(TABLE + 1, TABLE + 1 + 3 * 7):  # inside the stage table
        with pytest.raises(BitstreamError, match=r"expected at least 206 bytes \(the stage table\), got %d" % n):
            read_header(valid3[:n], verify=False)
    # version 4 names the part it was reading
    for n, what in ((23, "height"), (25, "width"), (27, "code_height"), (29, "the black and white levels"),
                    (39, "the white-balance gains"), (51, "the colour matrix"), (87, "the colour statistics"),
                    (123, "the source_encoding's length"), (124, "the source_encoding"), (136, "the stage table"),
                    (140, "stage 1's length"), (148, "stage 3's length")):
        with pytest.raises(BitstreamError, match=r"truncated bitstream: expected at least \d+ bytes \(%s\), got %d"
                           % (what, n)):
            read_header(valid[:n], verify=False)


def test_trailing_garbage(valid):
    with pytest.raises(BitstreamError, match="3 bytes of trailing garbage"):
        unpack(valid + b"abc")


def test_crc_mismatch(valid, valid3):
    for data in (valid, valid3):
        for at in (-10, -1, bs.layout(data)["table"] + 2, 22):  # the payload, the CRC, the stage table, flags
            buf = bytearray(data)
            buf[at] ^= 0x40
            with pytest.raises(BitstreamError, match="CRC mismatch"):
                unpack(bytes(buf))


def test_future_version_fails_cleanly(valid):
    future = with_field(valid, 4, "<H", 10)  # a well-formed file of a version this build does not know
    for reader in (unpack, read_header, lambda d: read_header(d, verify=False), lambda d: truncate(d, 1)):
        with pytest.raises(BitstreamError,
                           match=r"unsupported bitstream format version 10 .*reads versions 2, 3, 4, 5, 6, 7, 8, 9"):
            reader(future)
    with pytest.raises(BitstreamError, match="version 0"):
        unpack(with_field(valid, 4, "<H", 0))


@pytest.mark.parametrize("name", ["frame_v1_rggb_context", "frame_v1_gbrg_unigram"])
def test_version_1_golden_files_fail_naming_the_versions(name):
    data = (GOLDEN / (name + ".rdc")).read_bytes()
    assert struct.unpack_from("<H", data, 4) == (1,)
    for reader in (unpack, read_header, lambda d: read_header(d, verify=False), lambda d: truncate(d, 1)):
        with pytest.raises(BitstreamError,
                           match=r"format version 1 \(this build reads versions 2, 3, 4, 5, 6, 7, 8, 9\).*colour"):
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
def test_impossible_fields_of_version_3_with_valid_crc(valid3, offset, fmt, value, match):
    data = with_field(valid3, offset, fmt, value)
    if match is None:
        if offset == 167:
            with pytest.raises(BitstreamError, match="1 bytes of trailing garbage"):
                unpack(data)
        else:
            assert unpack(data)[0].stages == ((2, 1024, 4), (2, 512, 8), (2, 256, 4))
        return
    with pytest.raises(BitstreamError, match=match):
        unpack(data)


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(sizes=b"\x00" + _varint(1936) + b"\x46\x79"), "height must be in"),
        (dict(sizes=_varint(1112) + b"\x00\x46\x79"), "width must be in"),
        (dict(sizes=_varint(1112) + _varint(1936) + b"\x00\x79"), "code_height must be in"),
        (dict(sizes=_varint(1112) + _varint(1936) + b"\x46" + _varint(2000)), "inconsistent"),
        (dict(sizes=_varint(100000) + _varint(1936) + _varint(70000) + b"\x79"),
         r"code_height must be in \[1, 65535\]"),
        (dict(sizes=b"\xd8\x88\x00" + _varint(1936) + b"\x46\x79"), "height is not written in the shortest form"),
        (dict(sizes=b"\xff\xff\xff\xff\xff\x01"), "height runs over 5 bytes"),
        (dict(sizes=b"\xff\xff\xff\xff\x1f"), r"height 8589934591 is more than 2\*\*32 - 1"),
        (dict(flags=3 << 2), "unknown entropy model code 3"),
        (dict(flags=0x80, levels=struct.pack("<5d", float("nan"), 0, 0, 0, 1023)), "black_level must be finite"),
        (dict(levels=struct.pack("<5H", 64, 64, 64, 64, 10)), "must exceed the black level"),
        (dict(flags=0x88, levels=struct.pack("<5d", 64, 64, 64, 64, 1023)), "integers in 0..65535 written as float64"),
        (dict(flags=0x88, levels=struct.pack("<5d", -0.0, 0, 0, 0, 1)), "integers in 0..65535 written as float64"),
        (dict(flags=0x88, levels=struct.pack("<5d", -1, 0, 0, 0, 1)), None),  # a negative level: float64
        (dict(gains=(0.0, 1.0, 1.0)), "wb_gains must be positive"),
        (dict(gains=(1.0, float("inf"), 1.0)), "wb_gains must be finite"),
        (dict(matrix=((float("nan"), 0, 0), (0, 1, 0), (0, 0, 1))), "color_matrix must be finite"),
        (dict(matrix=((1, 2, 3), (2, 4, 6), (0, 0, 1))), "singular"),
        (dict(stats=(0.1, 0.1, 0.1, -1.0, 0, 0, 0.1, 0, 0.1)), "variances must be >= 0"),
        (dict(stats=(0.1, float("inf"), 0.1, 0, 0, 0, 0, 0, 0)), "colour_stats must be finite"),
        (dict(enc=b"x" * 65), "source_encoding length 65"),
        (dict(enc=b"bayer\xffrggb"), "not ASCII"),
        (dict(enc=b"bayer rggb"), "source_encoding must be"),
        (dict(count=0, stages=()), r"the stage table declares 0 stages \(1..16\)"),
        (dict(count=17), r"the stage table declares 17 stages \(1..16\)"),
        (dict(stages=((3, 1023, 4), (2, 511, 8), (1, 255, 4))), r"stage 1: scale 3 is not one of \(1, 2, 4\)"),
        (dict(stages=((2, 1023, 4), (4, 511, 8), (1, 255, 4))), "stage 2: scale 4 is coarser than the stage before"),
        (dict(stages=((2, 1023, 4), (2, 511, 8), (1, 0, 4))), r"stage 3: codebook_size 1 is not in \[2, 65536\]"),
        (dict(stages=((2, 1023, 4), (2, 511, b"\x88\x00"), (1, 255, 4))), "stage 2's length is not written in the"),
        (dict(stages=((2, 1023, 5), (2, 511, 8), (1, 255, 4))), r"truncated bitstream: expected 170 bytes"),
        (dict(stages=((2, 1023, 3), (2, 511, 8), (1, 255, 4))), r"1 bytes of trailing garbage"),
        (dict(stages=((2, 1023, 0xFFFFFFFF), (2, 511, 8), (1, 255, 4))), "truncated bitstream"),
        (dict(flags=0x08 | 1 | 1 << 4 | 1 << 6), None),  # BGGR, gray world, no tone curve: all fine
        (dict(stages=((2, 1023, 4), (2, 511, 8), (2, 255, 4))), None),  # stage 3 as coarse as stage 2: allowed
    ],
)
def test_impossible_fields_of_version_4_with_valid_crc(fields, match):
    data = raw_v4(**fields)
    if match is None:
        header, payload = unpack(data)
        assert payload == b"".join(VALID_CHUNKS)
        assert pack(header, VALID_CHUNKS) == data  # one form: the writer writes what was read
        return
    with pytest.raises(BitstreamError, match=match):
        unpack(data)


def test_a_stage_count_that_moves_the_payload_is_caught(valid, valid3):
    """S read as 2 or 4: the table and the payload shift, and the CRC (fixed up here) is all
    that would have caught it; the lengths and the total size still do."""
    for data in (valid, valid3):
        for count in (1, 2, 4, 16):
            with pytest.raises(BitstreamError,
                               match="lengths add up|truncated|trailing garbage|scale|codebook_size|"
                                     "is a mean layer, which version 4 does not have"):
                unpack(with_field(data, bs.layout(data)["table"], "<B", count))


def test_bad_source_encoding_bytes(valid3):
    valid = valid3
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
    prefix = valid[: bs.layout(valid)["payload"]]  # header, source encoding and stage table
    got = read_header(prefix, verify=False)
    assert got.payload_length == 16 and got.stages == ((2, 1024, 4), (2, 512, 8), (1, 256, 4))
    with pytest.raises(BitstreamError, match="truncated"):
        read_header(prefix)
    with pytest.raises(BitstreamError, match="truncated"):
        read_header(prefix[:-1], verify=False)
    with pytest.raises(BitstreamError, match="truncated"):
        read_header(valid[:bs.layout(valid)["table"]], verify=False)  # no stage count


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
        assert len(cut) == len(valid) - 4 * (3 - q) - sum(len(c) for c in VALID_CHUNKS[q:])
        # cutting again: the same as cutting once
        assert truncate(cut, q) == cut
        assert truncate(cut, 1) == truncate(valid, 1)
    assert truncate(bytearray(valid), 2) == truncate(valid, 2)
    assert truncate(pack(make_header(), b"abc"), 1) == pack(make_header(), b"abc")  # one stage


def test_a_version_3_file_is_cut_into_a_version_3_file(valid3):
    for q in (1, 2):
        cut = truncate(valid3, q)
        assert cut == pack(make_header(stages=STAGES3[:q], version=3), VALID_CHUNKS[:q])
        assert read_header(cut).version == 3
        assert len(cut) == bs.truncated_sizes(read_header(valid3), len(valid3))[q]


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


def test_truncate_checks_the_whole_input_first(valid, valid3):
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
        truncate(with_field(valid, bs.layout(valid)["table"], "<B", 0), 1)
    with pytest.raises(BitstreamError, match="truncated bitstream: expected 170 bytes"):
        truncate(with_field(valid, bs.layout(valid)["stages"][1] + 3, "<B", 9), 1)
    with pytest.raises(BitstreamError, match="stage 2: scale 4 is coarser"):
        truncate(with_field(valid, bs.layout(valid)["stages"][1], "<B", 4), 1)
    with pytest.raises(BitstreamError, match="lengths add up to 17 bytes, the payload has 16"):
        truncate(with_field(valid3, TABLE + 4 + 7, "<I", 9), 1)


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


@pytest.mark.parametrize("version", [3, 4])
def test_golden_three_stages_cut_to_each_quality(version):
    header, chunks = golden_cases()["frame_v%d_rggb_context" % version]
    data = (GOLDEN / ("frame_v%d_rggb_context.rdc" % version)).read_bytes()
    for q in (1, 2, 3):
        assert truncate(data, q) == pack(make_header(stages=STAGES3[:q], version=version), chunks[:q])


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
        color_matrix=(diag[0], 0.1, -0.1, 0.0, diag[1], 0.2, -0.3, 0.0, diag[2]) if ms == "frame"
        else bs.IDENTITY_MATRIX, wb_source=ws,
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
    v3 = pack(dataclasses.replace(header, version=3), chunks)
    assert len(v3) == 177 + len(header.source_encoding) + 7 * len(chunks) + len(got_payload)
    assert len(data) < len(v3) and unpack(v3)[0] == dataclasses.replace(got, version=3)
    assert Header.from_dict(json.loads(json.dumps(got.to_dict()))) == got
    sizes = bs.truncated_sizes(got, len(data))
    for q in range(1, len(chunks) + 1):
        prefix = dataclasses.replace(header, stages=header.stages[:q])
        assert truncate(data, q) == pack(prefix, chunks[:q])
        assert len(truncate(data, q)) == sizes[q]


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
            i = draw(st.integers(bs.layout(data)["table"], bs.layout(data)["payload"] - 1))
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


_VALID3 = pack(make_header(stages=STAGES3, version=3), [hashlib.sha256(b"%d" % i).digest()[: 8 + 8 * i]
                                                         for i in range(3)])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_mutations(_VALID3))
def test_mutations_of_version_3_never_crash(data):
    _unpack_or_error(data, _VALID3, _PAYLOAD)
    for fixed in (data, refresh_crc(data) if len(data) >= 4 else data):
        try:
            header, payload = unpack(fixed)
        except BitstreamError:
            continue
        if header.version >= 3:  # version 2 is read, not written
            assert pack(header, stage_payloads(header, payload)) == fixed


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
    for version in (b"\x02\x00", b"\x03\x00", b"\x04\x00", b"\x05\x00", b"\x06\x00"):
        for data in (b"RDCF" + tail, b"RDCF" + version + tail, refresh_crc(b"RDCF" + version + tail + b"\x00" * 4)):
            try:
                unpack(data)
            except BitstreamError:
                pass


# ------------------------------------------------------------------ version 5: mean layers

MEANS2 = ((2, 3, 0), (3, 4, 0))  # after stage 2 (exponent 3), after stage 3 (exponent 4)


def means_case():
    """A version 5 header of three stages and two mean layers, its stage and layer payloads."""
    body = b"".join(hashlib.sha256(b"golden means %d" % i).digest() for i in range(8))  # 256 bytes
    header = make_header(stages=STAGES3, means=MEANS2)
    return header, [body[:40], body[40:100], body[100:150]], [body[150:170], body[170:]]


def test_version_5_holds_mean_layers_in_table_order_and_cuts_with_them():
    header, chunks, means = means_case()
    data = pack(header, chunks, means)
    got, payload = unpack(data)
    assert got.version == 5 and got.quality == 3
    assert got.means == tuple((a, e, len(c)) for (a, e, _), c in zip(MEANS2, means))
    assert bs.table_order(got) == [("stage", 0), ("stage", 1), ("means", 0), ("stage", 2), ("means", 1)]
    # the payload in table order: stages 1 and 2, the first layer, stage 3, the second layer
    assert payload == chunks[0] + chunks[1] + means[0] + chunks[2] + means[1]
    assert bs.split_payload(got, payload) == (chunks, means)
    assert got.to_dict()["means"] == [{"after_stage": 2, "exponent": 3, "bytes": 20},
                                      {"after_stage": 3, "exponent": 4, "bytes": 86}]
    assert Header.from_dict(got.to_dict()) == got
    # cut: the layers after the stages kept go with them; none left is a version 4 stream
    assert truncate(data, 2) == pack(make_header(stages=STAGES3[:2], means=MEANS2[:1]), chunks[:2], means[:1])
    one = truncate(data, 1)
    assert one == pack(make_header(stages=STAGES3[:1]), chunks[:1])
    assert unpack(one)[0].version == 4
    sizes = bs.truncated_sizes(got, len(data))
    assert sizes == {q: len(truncate(data, q)) for q in (1, 2, 3)}
    lay = bs.layout(data)
    assert len(lay["stages"]) == 5 and lay["payload"] == len(data) - 4 - len(payload)


def test_mean_layer_fields_are_checked():
    header, chunks, means = means_case()
    for bad, match in [
        (((4, 3, 0),), "follows stage 4: the bitstream codes stages 1..3"),
        (((2, 3, 0), (1, 4, 0)), "layers follow the stages in order with increasing exponents"),
        (((2, 3, 0), (3, 3, 0)), "layers follow the stages in order with increasing exponents"),
        (((2, 11, 0),), r"exponent 11 is not in \[1, 10\]"),
        (((2, 3),), r"must be \(after_stage, exponent, length\)"),
    ]:
        with pytest.raises(BitstreamError, match=match):
            make_header(stages=STAGES3, means=bad)
    with pytest.raises(BitstreamError, match="mean layers need format version 5 or later, the header says 4"):
        make_header(stages=STAGES3, means=MEANS2, version=4)
    with pytest.raises(BitstreamError, match="format version 5 is for streams with mean layers"):
        make_header(stages=STAGES3, version=5)
    with pytest.raises(BitstreamError, match="1 mean layer payloads for a header of 2 mean layers"):
        pack(header, chunks, means[:1])


def test_a_mean_entry_in_a_version_4_stream_or_first_in_the_table_is_refused():
    header, chunks, means = means_case()
    data = pack(header, chunks, means)
    start = bs.layout(data)["stages"]
    v4 = refresh_crc(with_field(data, 4, "<H", 4))
    with pytest.raises(BitstreamError, match="stage table entry 3 is a mean layer, which version 4 does not have"):
        unpack(v4)
    # the first entry turned into a mean layer (its K - 1 bytes then read as the next entries)
    first = bytearray(data)
    first[start[0]] = 0x80 | 3
    with pytest.raises(BitstreamError, match="stage table entry 1 is a mean layer: the first entry is a stage"):
        unpack(refresh_crc(bytes(first)))


def check_golden_with_layers(name: str, header: Header, chunks, means) -> None:
    """The golden file ``name`` (.rdc and .json) is the bitstream of ``header``, ``chunks`` and
    ``means``, byte for byte, and reads back as the .json says (RAWDIFF_REGEN_GOLDEN=1 writes
    them)."""
    rdc, js = GOLDEN / (name + ".rdc"), GOLDEN / (name + ".json")
    if REGEN:
        data = pack(header, chunks, means)
        rdc.write_bytes(data)
        doc = {"header": unpack(data)[0].to_dict(), "size": len(data),
               "payload_sha256": hashlib.sha256(unpack(data)[1]).hexdigest()}
        js.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    data = rdc.read_bytes()
    expected = json.loads(js.read_text())
    got, payload = unpack(data)
    assert got.to_dict() == expected["header"]
    assert len(data) == expected["size"]
    assert hashlib.sha256(payload).hexdigest() == expected["payload_sha256"]
    assert pack(header, chunks, means) == data
    assert bs.split_payload(got, payload) == (chunks, means)


def test_golden_version_5():
    header, chunks, means = means_case()
    check_golden_with_layers("frame_v5_rggb_means", header, chunks, means)


DETAIL = (185, 170, 135)  # three detail statistics (rawdiff.codec.detail_stats)


def test_version_6_carries_detail_statistics_that_every_cut_keeps():
    header, chunks, means = means_case()
    data = pack(make_header(stages=STAGES3, means=MEANS2, detail=DETAIL), chunks, means)
    got, payload = unpack(data)
    assert got.version == 6 and got.detail == DETAIL and got.means == unpack(pack(header, chunks, means))[0].means
    assert got.to_dict()["detail"] == list(DETAIL) and Header.from_dict(got.to_dict()) == got
    # 1 + 3 bytes more than the same stream without them, before the stage table
    assert len(data) == len(pack(header, chunks, means)) + 4
    for q in (1, 2, 3):
        cut = truncate(data, q)
        assert unpack(cut)[0].detail == DETAIL and unpack(cut)[0].version == 6
        assert cut == pack(make_header(stages=STAGES3[:q], means=tuple(m for m in MEANS2 if m[0] <= q),
                                       detail=DETAIL), chunks[:q], means[: sum(m[0] <= q for m in MEANS2)])
    assert bs.truncated_sizes(got, len(data)) == {q: len(truncate(data, q)) for q in (1, 2, 3)}
    lay = bs.layout(data)
    assert data[lay["table"] - 4: lay["table"]] == bytes((3,) + DETAIL)
    assert unpack(pack(make_header(detail=DETAIL), b"xyz"))[0].detail == DETAIL  # no stages, no means


def test_a_version_6_header_with_a_bad_detail_count_is_refused():
    data = pack(make_header(stages=STAGES3, detail=DETAIL), [b"a", b"bc", b"def"])
    at = bs.layout(data)["table"] - 4  # the count
    for count, match in ((0, "declares 0 bytes of detail statistics"), (9, "declares 9 bytes of detail statistics"),
                         (255, "declares 255 bytes")):
        with pytest.raises(BitstreamError, match=match):
            unpack(refresh_crc(with_field(data, at, "<B", count)))
    with pytest.raises(BitstreamError, match="truncated"):
        read_header(data[: at + 2], verify=False)


def test_golden_version_6():
    _, chunks, means = means_case()
    check_golden_with_layers("frame_v6_rggb_detail", make_header(stages=STAGES3, means=MEANS2, detail=DETAIL), chunks,
                             means)


def test_every_truncation_of_a_version_6_stream_is_reported():
    data = pack(make_header(stages=STAGES3, means=MEANS2, detail=DETAIL), [b"a", b"bc", b"def"], [b"gh", b"ijk"])
    for n in range(1, len(data)):
        with pytest.raises(BitstreamError, match="truncated") as info:
            unpack(data[:n])
        assert "got %d" % n in str(info.value)
    at = bs.layout(data)["table"] - 4  # the detail statistics' count
    for n, what in ((at, "the detail statistics' count"), (at + 1, "the detail statistics"),
                    (at + 3, "the detail statistics"), (at + 4, "the stage table")):
        with pytest.raises(BitstreamError, match="truncated.*%s" % what):
            read_header(data[:n], verify=False)


def _three_stages(**fields) -> bytes:
    """A stream of STAGES3 with payloads of 8, 16 and 24 bytes and the header ``fields``."""
    return pack(make_header(stages=STAGES3, **fields), [hashlib.sha256(b"%d" % i).digest()[: 8 + 8 * i]
                                                        for i in range(3)])


def _mutation_never_crashes(data: bytes, valid: bytes, payload: bytes) -> None:
    """``data`` (a mutation of ``valid``) and its CRC refreshed: a clean error, or read, cut
    and written back the same."""
    _unpack_or_error(data, valid, payload)
    for fixed in (data, refresh_crc(data) if len(data) >= 4 else data):
        try:
            header, body = unpack(fixed)
            truncate(fixed, 1)
        except BitstreamError:
            continue
        assert pack(header, stage_payloads(header, body)) == fixed  # what is read is written back the same


_VALID6 = _three_stages(detail=DETAIL)
_PAYLOAD6 = unpack(_VALID6)[1]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_mutations(_VALID6))
def test_mutations_of_version_6_never_crash(data):
    _mutation_never_crashes(data, _VALID6, _PAYLOAD6)


@settings(max_examples=100, deadline=None)
@given(case=_staged(), detail=st.lists(st.integers(0, 255), min_size=1, max_size=bs.MAX_DETAIL))
def test_detail_round_trip_and_truncation_property(case, detail):
    header, chunks = case
    header = dataclasses.replace(header, detail=tuple(detail), version=None)
    data = pack(header, chunks)
    got, payload = unpack(data)
    assert got.version == 6 and got.detail == tuple(detail) and stage_payloads(got, payload) == chunks
    assert Header.from_dict(json.loads(json.dumps(got.to_dict()))) == got
    sizes = bs.truncated_sizes(got, len(data))
    for q in range(1, len(chunks) + 1):
        cut = truncate(data, q)
        assert read_header(cut).detail == tuple(detail) and len(cut) == sizes[q]


def test_a_header_dict_with_bad_detail_statistics_names_them():
    doc = make_header(detail=DETAIL).to_dict()
    for bad, match in ((5, "detail must be a sequence of integers"), ([1, 300], "detail values must be in 0..255"),
                       (["a"], "detail must be an integer")):
        with pytest.raises(BitstreamError, match=match):
            Header.from_dict(dict(doc, detail=bad))


# ------------------------------------------------------------------ version 7: adaptive coding

ADAPT3 = ((4, 0), (8, 3), (12, 7))  # each stage's adaptive coding: (strength, pool) (rawdiff.codec.adaptive)
ADAPT3_FULL = tuple(p + (0, 0) for p in ADAPT3)  # as a header holds them: no parent level, no aging


def _adaptive_stream(adapt):
    """A stream of STAGES3 with MEANS2, DETAIL and ``adapt``; its header read back; the chunks
    and mean layers it was packed from."""
    _, chunks, means = means_case()
    data = pack(make_header(stages=STAGES3, means=MEANS2, detail=DETAIL, adapt=adapt), chunks, means)
    return data, unpack(data)[0], chunks, means


def _cuts_are_encodings_at_their_quality(data, got, chunks, means, adapt, versions):
    """Each cut of ``data`` holds the first q stages' parameters in the version ``versions[q - 1]``,
    is what packing q stages writes, and has the size truncated_sizes predicts; each stage's
    entry carries its parameters after K - 1."""
    full = tuple(tuple(p) + (0,) * (4 - len(p)) for p in adapt)
    for q in (1, 2, 3):
        cut = truncate(data, q)
        assert unpack(cut)[0].adapt == full[:q] and unpack(cut)[0].version == versions[q - 1]
        assert cut == pack(make_header(stages=STAGES3[:q], means=tuple(m for m in MEANS2 if m[0] <= q),
                                       detail=DETAIL, adapt=adapt[:q]), chunks[:q],
                           means[: sum(m[0] <= q for m in MEANS2)])
    assert bs.truncated_sizes(got, len(data)) == {q: len(truncate(data, q)) for q in (1, 2, 3)}
    lay = bs.layout(data)
    entries = (lay["stages"][0], lay["stages"][1], lay["stages"][3])  # the stages' (not the layers') entries
    written = [p[:2] + (p[2] | p[3] << 4,) if len(p) == 4 else p for p in adapt]  # version 9: m and h share a byte
    assert [tuple(data[at + 3: at + 3 + len(written[0])]) for at in entries] == written


def test_version_7_carries_each_stages_adaptive_parameters_and_every_cut_keeps_them():
    data, got, chunks, means = _adaptive_stream(ADAPT3)
    assert got.version == 7 and got.adapt == ADAPT3_FULL and got.detail == DETAIL
    assert [st["adapt"] for st in got.to_dict()["stages"]] == [list(p) for p in ADAPT3]
    assert Header.from_dict(json.loads(json.dumps(got.to_dict()))) == got
    # two bytes a stage more than the version 6 stream
    assert len(data) == len(pack(make_header(stages=STAGES3, means=MEANS2, detail=DETAIL), chunks, means)) + 6
    _cuts_are_encodings_at_their_quality(data, got, chunks, means, ADAPT3, (7, 7, 7))
    # without detail statistics: a count of 0
    plain = pack(make_header(stages=STAGES3, adapt=ADAPT3), chunks)
    assert unpack(plain)[0].detail == () and unpack(plain)[0].version == 7
    assert plain[bs.layout(plain)["table"] - 1] == 0


def test_version_7_fields_are_checked():
    _, chunks, _ = means_case()
    for bad, match in ((ADAPT3[:2], "adapt holds 2 entries for 3 stages"),
                       (ADAPT3[:2] + ((25, 0),), r"\(strength 0..24, pool 0..9\[, parent level 0..9, not above a "
                                                 r"pool weight\[, aging 0..12\]\]\) per stage, got .*\[25, 0\]"),
                       (ADAPT3[:2] + ((4, 10),), r"pool 0..9\[, .* per stage"), (ADAPT3[:2] + ((4,),), "per stage"),
                       ((4, 8, 12), "adapt must be a \\(strength, pool, parent level, aging\\) tuple per stage"),
                       ("abc", "adapt must be an integer")):
        with pytest.raises(BitstreamError, match=match):
            make_header(stages=STAGES3, adapt=bad)
    with pytest.raises(BitstreamError, match="adaptive coding needs the stage table"):
        make_header(adapt=ADAPT3[:1])
    with pytest.raises(BitstreamError, match="adaptive coding needs format version 7, 8 or 9, the header says 6"):
        make_header(stages=STAGES3, detail=DETAIL, adapt=ADAPT3, version=6)
    data = pack(make_header(stages=STAGES3, adapt=ADAPT3), chunks)
    at = bs.layout(data)["stages"][1] + 3
    with pytest.raises(BitstreamError, match=r"per stage, got \[\[4, 0\], \[200, 3\], \[12, 7\]\]"):
        unpack(refresh_crc(with_field(data, at, "<B", 200)))
    with pytest.raises(BitstreamError, match=r"per stage, got \[\[4, 0\], \[8, 10\], \[12, 7\]\]"):
        unpack(refresh_crc(with_field(data, at + 1, "<B", 10)))
    with pytest.raises(BitstreamError, match="truncated.*the stage table"):
        read_header(data[: at], verify=False)
    # a version 6 reader's layout: the count of detail statistics may not be 0 there
    v6 = pack(make_header(stages=STAGES3, detail=DETAIL), chunks)
    with pytest.raises(BitstreamError, match=r"declares 0 bytes of detail statistics \(1..8\)"):
        unpack(refresh_crc(with_field(v6, bs.layout(v6)["table"] - 4, "<B", 0)))


# ------------------------------------------------------------------ version 8: the parent level

ADAPT8 = ((4, 0, 0), (8, 3, 1), (12, 7, 4))  # (strength, pool, parent level); the first stage has no parent


def test_version_8_carries_each_stages_parent_level_and_a_cut_takes_the_lowest_version():
    data, got, chunks, means = _adaptive_stream(ADAPT8)
    assert got.version == 8 and got.adapt == tuple(p + (0,) for p in ADAPT8) and got.detail == DETAIL
    assert [st["adapt"] for st in got.to_dict()["stages"]] == [list(p) for p in ADAPT8]
    assert Header.from_dict(json.loads(json.dumps(got.to_dict()))) == got
    # one byte a stage more than the version 7 stream
    v7 = pack(make_header(stages=STAGES3, means=MEANS2, detail=DETAIL, adapt=ADAPT3), chunks, means)
    assert len(data) == len(v7) + 3
    # what encoding at q writes: version 8 only where a stage kept uses the parent level
    _cuts_are_encodings_at_their_quality(data, got, chunks, means, ADAPT8, (7, 8, 8))


def test_version_8_fields_are_checked():
    _, chunks, _ = means_case()
    for bad, match in ((ADAPT8[:2] + ((4, 3, 4),), r"not above a pool weight\[, aging 0..12\]\]\) per stage, "
                                                   r"got .*\[4, 3, 4\]"),
                       (ADAPT8[:2] + ((4, 0, 10),), r"parent level 0..9"),
                       (((4, 0, 1),) + ADAPT8[1:], "stage 1 is coded with the parent level 1, but the first stage")):
        with pytest.raises(BitstreamError, match=match):
            make_header(stages=STAGES3, adapt=bad)
    with pytest.raises(BitstreamError, match="format version 7 is for streams with adaptive coding; this one is "
                                             "version 8"):
        make_header(stages=STAGES3, adapt=ADAPT8, version=7)
    data = pack(make_header(stages=STAGES3, adapt=ADAPT8), chunks)
    at = bs.layout(data)["stages"][1] + 5
    with pytest.raises(BitstreamError, match=r"per stage, got \[\[4, 0, 0\], \[8, 3, 10\], \[12, 7, 4\]\]"):
        unpack(refresh_crc(with_field(data, at, "<B", 10)))
    with pytest.raises(BitstreamError, match=r"not above a pool weight\[, aging 0..12\]\]\) per stage, "
                                             r"got .*\[8, 3, 5\]"):
        unpack(refresh_crc(with_field(data, at, "<B", 5)))
    first = bs.layout(data)["stages"][0] + 5
    with pytest.raises(BitstreamError, match="stage 1 is coded with the parent level 2"):
        unpack(refresh_crc(with_field(data, first, "<B", 2)))
    with pytest.raises(BitstreamError, match="truncated.*the stage table"):
        read_header(data[: at], verify=False)


# ------------------------------------------------------------------ version 9: aging

ADAPT9 = ((4, 0, 0, 5), (8, 3, 1, 5), (12, 7, 4, 12))  # (strength, pool, parent level, aging)


def test_version_9_carries_each_stages_aging_and_a_cut_takes_the_lowest_version():
    data, got, chunks, means = _adaptive_stream(ADAPT9)
    assert got.version == 9 and got.adapt == ADAPT9 and got.detail == DETAIL
    assert [st["adapt"] for st in got.to_dict()["stages"]] == [list(p) for p in ADAPT9]
    assert Header.from_dict(json.loads(json.dumps(got.to_dict()))) == got
    # the aging shares the parent level's byte: the size of the version 8 stream
    v8 = pack(make_header(stages=STAGES3, means=MEANS2, detail=DETAIL, adapt=ADAPT8), chunks, means)
    assert len(data) == len(v8)
    _cuts_are_encodings_at_their_quality(data, got, chunks, means, ADAPT9, (9, 9, 9))
    # what encoding at q writes: version 9 only where a stage kept ages its counts, else 8 or 7
    mixed = ((4, 0, 0, 0), (8, 3, 1, 0), (12, 7, 4, 3))
    _cuts_are_encodings_at_their_quality(*_adaptive_stream(mixed), mixed, (7, 8, 9))


def test_version_9_fields_are_checked():
    _, chunks, _ = means_case()
    with pytest.raises(BitstreamError, match=r"aging 0..12\]\]\) per stage, got .*\[12, 7, 4, 13\]"):
        make_header(stages=STAGES3, adapt=ADAPT9[:2] + ((12, 7, 4, 13),))
    with pytest.raises(BitstreamError, match="format version 8 is for streams with adaptive coding with a parent "
                                             "level; this one is version 9"):
        make_header(stages=STAGES3, adapt=ADAPT9, version=8)
    data = pack(make_header(stages=STAGES3, adapt=ADAPT9), chunks)
    at = bs.layout(data)["stages"][1] + 5
    assert data[at] == 1 | 5 << 4
    with pytest.raises(BitstreamError, match=r"per stage, got \[\[4, 0, 0, 5\], \[8, 3, 1, 13\], \[12, 7, 4, 12\]\]"):
        unpack(refresh_crc(with_field(data, at, "<B", 1 | 13 << 4)))
    with pytest.raises(BitstreamError, match=r"per stage, got \[\[4, 0, 0, 5\], \[8, 3, 10, 5\], \[12, 7, 4, 12\]\]"):
        unpack(refresh_crc(with_field(data, at, "<B", 10 | 5 << 4)))
    # aging 0 everywhere is a version 8 or 7 stream: a version 9 header that says so is refused
    assert unpack(refresh_crc(with_field(data, at, "<B", 1)))[0].adapt[1] == (8, 3, 1, 0)
    plain = pack(make_header(stages=STAGES3, adapt=ADAPT8), chunks)
    with pytest.raises(BitstreamError, match="format version 9 is for streams with adaptive coding with aging; "
                                             "this one is version 8"):
        unpack(refresh_crc(with_field(plain, 4, "<H", 9)))


# ------------------------------------------------------------------ versions 7 to 9: golden files, mutations


@pytest.mark.parametrize("name,adapt", [("frame_v7_rggb_adaptive", ADAPT3), ("frame_v8_rggb_levels", ADAPT8),
                                        ("frame_v9_rggb_aging", ADAPT9)])
def test_golden_adaptive_versions(name, adapt):
    _, chunks, means = means_case()
    check_golden_with_layers(name, make_header(stages=STAGES3, means=MEANS2, detail=DETAIL, adapt=adapt), chunks,
                             means)


_VALID_ADAPTIVE = {version: _three_stages(detail=DETAIL, adapt=adapt)
                   for version, adapt in ((7, ADAPT3), (8, ADAPT8), (9, ADAPT9))}


@pytest.mark.parametrize("version", [7, 8, 9])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutations_of_adaptive_versions_never_crash(version, data):
    valid = _VALID_ADAPTIVE[version]
    _mutation_never_crashes(data.draw(_mutations(valid)), valid, unpack(valid)[1])
