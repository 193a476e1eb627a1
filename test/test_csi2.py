"""V4L2 RAW10 / RAW12 packing (pixfmt-srggb10p, pixfmt-srggb12p)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawdiff.raw import csi2
from rawdiff.raw.csi2 import pack, packed_line_bytes, packed_size, unpack


def reference_unpack(data, width, height, bits, stride):
    """Per-pixel transcription of the V4L2 tables, independent of the vectorised code."""
    out = np.zeros((height, width), dtype=np.uint16)
    for y in range(height):
        line = data[y * stride:(y + 1) * stride]
        for x in range(width):
            if bits == 10:
                group, i = divmod(x, 4)
                base = group * 5
                out[y, x] = (line[base + i] << 2) | ((line[base + 4] >> (2 * i)) & 0x3)
            else:
                group, i = divmod(x, 2)
                base = group * 3
                out[y, x] = (line[base + i] << 4) | ((line[base + 2] >> (4 * i)) & 0xF)
    return out


# --- exact layouts ----------------------------------------------------------------


def test_raw10_layout_one_group():
    # P0=0x001 (hi 0x00, lo 01), P1=0x302 (hi 0xC0, lo 10), P2=0x0FF (hi 0x3F, lo 11),
    # P3=0x3FC (hi 0xFF, lo 00); byte 4 = P3 P2 P1 P0 low bits from bit 7 down = 00 11 10 01
    pixels = np.array([[0x001, 0x302, 0x0FF, 0x3FC]], dtype=np.uint16)
    data = bytes([0x00, 0xC0, 0x3F, 0xFF, 0b00111001])
    assert pack(pixels, 10) == data
    np.testing.assert_array_equal(unpack(data, 4, 1, 10), pixels)


def test_raw10_low_bits_each_position():
    for i in range(4):
        pixels = np.zeros((1, 4), dtype=np.uint16)
        pixels[0, i] = 0b11
        assert pack(pixels, 10) == bytes([0, 0, 0, 0, 0b11 << (2 * i)])
        pixels[0, i] = 0x3FC
        expected = [0, 0, 0, 0, 0]
        expected[i] = 0xFF
        assert pack(pixels, 10) == bytes(expected)


def test_raw12_layout_one_group():
    # P0=0xABC, P1=0x123: bytes 0xAB, 0x12, then P1 low nibble (3) in 7..4, P0's (C) in 3..0
    pixels = np.array([[0xABC, 0x123]], dtype=np.uint16)
    data = bytes([0xAB, 0x12, 0x3C])
    assert pack(pixels, 12) == data
    np.testing.assert_array_equal(unpack(data, 2, 1, 12), pixels)


def test_groups_and_lines_in_order():
    pixels = np.array([[0x001, 0x002, 0x003, 0x004, 0x3FF, 0x000, 0x200, 0x100],
                       [0x004, 0x008, 0x00C, 0x010, 0x000, 0x3FF, 0x001, 0x002]], dtype=np.uint16)
    data = bytes([0x00, 0x00, 0x00, 0x01, 0b00_11_10_01, 0xFF, 0x00, 0x80, 0x40, 0b00_00_00_11,
                  0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0xFF, 0x00, 0x00, 0b10_01_11_00])
    assert pack(pixels, 10) == data
    np.testing.assert_array_equal(unpack(data, 8, 2, 10), pixels)

    pixels12 = np.array([[0x000, 0xFFF, 0x801, 0x010], [0x123, 0x456, 0x789, 0xABC]], dtype=np.uint16)
    data12 = bytes([0x00, 0xFF, 0xF0, 0x80, 0x01, 0x01,
                    0x12, 0x45, 0x63, 0x78, 0xAB, 0xC9])
    assert pack(pixels12, 12) == data12
    np.testing.assert_array_equal(unpack(data12, 4, 2, 12), pixels12)


def test_stride_padding_written_as_zeros_and_ignored():
    pixels = np.array([[0xABC, 0x123], [0x001, 0xFFF]], dtype=np.uint16)
    data = pack(pixels, 12, stride=5)
    assert data == bytes([0xAB, 0x12, 0x3C, 0, 0, 0x00, 0xFF, 0xF1, 0, 0])
    dirty = bytearray(data)
    dirty[3:5] = b"\xee\xee"
    dirty[8:10] = b"\x55\xaa"
    np.testing.assert_array_equal(unpack(bytes(dirty), 2, 2, 12, stride=5), pixels)


def test_unpack_output_and_input_types():
    data = bytes([0x00, 0xC0, 0x3F, 0xFF, 0b00111001])
    for buf in (data, bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        out = unpack(buf, 4, 1, "raw10p")
        assert out.dtype == np.uint16 and out.shape == (1, 4) and out.flags.c_contiguous
        assert out.flags.writeable
    with pytest.raises(TypeError, match="bytes-like"):
        unpack("abcde", 4, 1, 10)
    with pytest.raises(ValueError, match="uint16 array"):
        unpack(np.zeros(5, np.uint16), 4, 1, 10)


def test_pack_accepts_integer_dtypes():
    values = [[0xABC, 0x123]]
    for dtype in (np.uint16, np.int32, np.int64, np.uint32):
        assert pack(np.array(values, dtype=dtype), 12) == bytes([0xAB, 0x12, 0x3C])
    assert pack(np.array([[1, 2, 3, 4]], dtype=np.uint8), 10) == pack(np.array([[1, 2, 3, 4]]), 10)


def test_format_table_and_sizes():
    assert csi2.FORMATS == {"raw10p": 10, "raw12p": 12}
    assert csi2.format_bits("raw10p") == 10 and csi2.format_bits("RAW12P") == 12
    assert csi2.format_bits(np.int64(12)) == 12
    assert csi2.format_name(10) == "raw10p" and csi2.format_name("raw12p") == "raw12p"
    assert packed_line_bytes(1936, 10) == 2420
    assert packed_line_bytes(1936, 12) == 2904
    assert packed_line_bytes(3868, "raw12p") == 5802
    assert packed_size(8, 3, 10) == 30
    assert packed_size(8, 3, 12, stride=16) == 48


# --- round trips ------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    bits=st.sampled_from([10, 12]),
    groups=st.integers(1, 6),
    height=st.integers(1, 5),
    pad=st.integers(0, 7),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_random(bits, groups, height, pad, seed):
    rng = np.random.default_rng(seed)
    width = groups * (4 if bits == 10 else 2)
    stride = packed_line_bytes(width, bits) + pad
    mosaic = rng.integers(0, 1 << bits, size=(height, width), dtype=np.uint16)
    data = pack(mosaic, bits, stride=stride)
    assert len(data) == stride * height
    np.testing.assert_array_equal(unpack(data, width, height, bits, stride=stride), mosaic)
    np.testing.assert_array_equal(reference_unpack(data, width, height, bits, stride), mosaic)

    # every byte string is a valid frame: bytes -> pixels -> bytes is the identity
    raw = bytearray(rng.integers(0, 256, size=stride * height, dtype=np.uint8).tobytes())
    for y in range(height):
        raw[y * stride + stride - pad:(y + 1) * stride] = bytes(pad)
    raw = bytes(raw)
    pixels = unpack(raw, width, height, bits, stride=stride)
    np.testing.assert_array_equal(pixels, reference_unpack(raw, width, height, bits, stride))
    assert pack(pixels, bits, stride=stride) == raw


def test_round_trip_extremes():
    for bits in (10, 12):
        top = (1 << bits) - 1
        mosaic = np.array([[0, top, top, 0], [top, 0, 1, top - 1]], dtype=np.uint16)
        np.testing.assert_array_equal(unpack(pack(mosaic, bits), 4, 2, bits), mosaic)


# --- bad input --------------------------------------------------------------------


def test_wrong_byte_count_says_expected_and_got():
    with pytest.raises(ValueError, match=r"RAW12 data has 100 bytes, expected 150 for 10x10 \(stride 15\)"):
        unpack(bytes(100), 10, 10, 12)
    with pytest.raises(ValueError, match="has 31 bytes, expected 30"):
        unpack(bytes(31), 8, 3, 10)
    with pytest.raises(ValueError, match="has 30 bytes, expected 36"):
        unpack(bytes(30), 8, 3, 10, stride=12)
    with pytest.raises(ValueError, match="has 0 bytes"):
        unpack(b"", 4, 1, 10)


@pytest.mark.parametrize("bits,width", [(10, 6), (10, 2), (10, 5), (12, 3), (12, 1)])
def test_width_not_a_multiple(bits, width):
    multiple = 4 if bits == 10 else 2
    with pytest.raises(ValueError, match="width %d is not a multiple of %d" % (width, multiple)):
        unpack(bytes(64), width, 1, bits)
    with pytest.raises(ValueError, match="width %d is not a multiple" % width):
        pack(np.zeros((1, width), np.uint16), bits)
    with pytest.raises(ValueError, match="width %d" % width):
        packed_line_bytes(width, bits)


def test_stride_too_small_or_bad():
    with pytest.raises(ValueError, match="stride 9 is smaller than the 10 bytes"):
        unpack(bytes(18), 8, 2, 10, stride=9)
    with pytest.raises(ValueError, match="stride 2 is smaller than the 3 bytes"):
        pack(np.zeros((1, 2), np.uint16), 12, stride=2)
    for bad in (0, -5, 5.0, "5"):
        with pytest.raises(ValueError, match="stride"):
            unpack(bytes(5), 4, 1, 10, stride=bad)


@pytest.mark.parametrize("bits", [8, 14, 16, 0, True, 10.0, "raw14p", "raw10", None])
def test_unknown_bits_or_format(bits):
    with pytest.raises(ValueError, match=r"bits|format") as info:
        unpack(bytes(5), 4, 1, bits)
    assert repr(bits) in str(info.value)
    with pytest.raises(ValueError, match=r"bits|format"):
        pack(np.zeros((1, 4), np.uint16), bits)


def test_values_exceeding_bit_depth():
    message = r"value 1024 at \(row 1, col 2\) is outside the 10-bit range 0..1023"
    with pytest.raises(ValueError, match=message):
        pack(np.array([[0, 0, 0, 0], [0, 0, 1024, 0]]), 10)
    with pytest.raises(ValueError, match=r"value 4096 .* 12-bit range 0..4095"):
        pack(np.full((2, 2), 4096, np.uint16), 12)
    with pytest.raises(ValueError, match=r"value -1 at \(row 0, col 0\)"):
        pack(np.array([[-1, 0]]), 12)


@pytest.mark.parametrize("field,width,height", [("width", 0, 2), ("height", 4, 0), ("width", -4, 2),
                                                ("height", 4, -1), ("width", 4.0, 1), ("height", 4, None)])
def test_zero_or_bad_sizes(field, width, height):
    with pytest.raises(ValueError, match=field):
        unpack(bytes(5), width, height, 10)


def test_bad_mosaics_for_pack():
    with pytest.raises(ValueError, match="empty"):
        pack(np.zeros((0, 4), np.uint16), 10)
    with pytest.raises(ValueError, match="2-D"):
        pack(np.zeros(4, np.uint16), 10)
    with pytest.raises(ValueError, match="2-D"):
        pack(np.zeros((2, 4, 3), np.uint16), 10)
    with pytest.raises(ValueError, match="integer array, got float32"):
        pack(np.zeros((2, 4), np.float32), 10)
    with pytest.raises(ValueError, match="integer array, got bool"):
        pack(np.zeros((2, 4), bool), 10)
