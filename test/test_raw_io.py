"""read_raw / write_raw / write_csi2 and the JSON sidecar."""

import json
import sys
import types

import cv2
import numpy as np
import pytest
import tifffile

from rawdiff.raw import RawFrame, csi2, read_raw
from rawdiff.raw.io import (
    frame_from_metadata,
    frame_metadata,
    sidecar_path,
    write_csi2,
    write_raw,
)

CCM = [[1.6, -0.4, -0.2], [-0.3, 1.5, -0.2], [0.0, -0.5, 1.5]]


def make_frame(bits=12, shape=(6, 8), seed=0, **changes):
    rng = np.random.default_rng(seed)
    fields = dict(
        mosaic=rng.integers(0, 1 << bits, size=shape, dtype=np.uint16),
        cfa="GRBG",
        black_level=(60, 64, 62, 66),
        white_level=(1 << bits) - 1,
        wb_gains=[2.1, 1.0, 1.6],
        color_matrix=CCM,
        timestamp=1712345678.25,
        frame_id="front_camera",
    )
    fields.update(changes)
    return RawFrame(**fields)


def assert_same_frame(a, b):
    np.testing.assert_array_equal(a.mosaic, b.mosaic)
    assert a.mosaic.dtype == b.mosaic.dtype == np.uint16
    assert a.cfa == b.cfa
    assert a.black_level == b.black_level
    assert a.white_level == b.white_level
    for x, y in ((a.wb_gains, b.wb_gains), (a.color_matrix, b.color_matrix)):
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(x, y)
    assert a.timestamp == b.timestamp
    assert a.frame_id == b.frame_id
    assert a.extra == b.extra


# --- round trips --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["f.npy", "f.png", "f.tif", "f.tiff", "F.PNG"])
def test_mosaic_round_trip(tmp_path, name):
    frame = make_frame(bits=16, extra={"sensor": "imx490", "gain": 2})
    path = write_raw(frame, tmp_path / name)
    assert path == tmp_path / name
    assert sidecar_path(path) == tmp_path / ("%s.json" % path.stem)
    assert_same_frame(read_raw(path), frame)
    assert_same_frame(read_raw(str(path)), frame)


@pytest.mark.parametrize("name", ["v.npy", "v.png", "v.tiff", "v.raw12"])
def test_write_non_contiguous_views(tmp_path, name):
    big = make_frame(bits=12, shape=(12, 20))
    view = big.copy(mosaic=big.mosaic[2:8:1, 16:0:-2])
    assert not view.mosaic.flags.c_contiguous
    path = tmp_path / name
    if name.endswith(".raw12"):
        write_csi2(view, path, 12)
    else:
        write_raw(view, path)
    assert_same_frame(read_raw(path), view)


def test_png_is_a_16bit_grayscale_file(tmp_path):
    frame = make_frame(bits=16)
    write_raw(frame, tmp_path / "f.png")
    image = cv2.imread(str(tmp_path / "f.png"), cv2.IMREAD_UNCHANGED)
    assert image.dtype == np.uint16 and image.shape == frame.shape
    np.testing.assert_array_equal(image, frame.mosaic)


def test_scalar_black_level_and_no_optional_fields(tmp_path):
    frame = RawFrame(np.arange(16, dtype=np.uint16).reshape(4, 4), cfa="BGGR", black_level=64,
                     white_level=1023)
    write_raw(frame, tmp_path / "f.npy")
    meta = json.loads((tmp_path / "f.json").read_text())
    assert meta == {"cfa": "BGGR", "black_level": 64, "white_level": 1023, "wb_gains": None,
                    "color_matrix": None, "timestamp": None, "frame_id": None}
    assert_same_frame(read_raw(tmp_path / "f.npy"), frame)


def test_sidecar_content(tmp_path):
    write_raw(make_frame(), tmp_path / "f.tiff")
    meta = json.loads((tmp_path / "f.json").read_text())
    assert meta["cfa"] == "GRBG"
    assert meta["black_level"] == [60, 64, 62, 66]
    assert meta["white_level"] == 4095
    assert meta["wb_gains"] == [2.1, 1.0, 1.6]
    assert meta["color_matrix"] == CCM
    assert meta["timestamp"] == 1712345678.25
    assert meta["frame_id"] == "front_camera"


def test_metadata_helpers_round_trip():
    frame = make_frame(extra={"iso": 400})
    meta = frame_metadata(frame)
    json.dumps(meta, allow_nan=False)
    assert_same_frame(frame_from_metadata(frame.mosaic, meta), frame)
    other = frame_from_metadata(frame.mosaic, meta, cfa="rggb", black_level=10, frame_id=None)
    assert other.cfa == "RGGB" and other.black_level == 10.0 and other.frame_id == "front_camera"
    bare = frame_from_metadata(frame.mosaic, None, cfa="BGGR", white_level=4095)
    assert bare.black_level == 0.0 and bare.wb_gains is None and bare.timestamp is None


@pytest.mark.parametrize("bits,suffix", [(10, ".raw10"), (12, ".raw12")])
def test_packed_round_trip_by_suffix(tmp_path, bits, suffix):
    frame = make_frame(bits=bits)
    path = write_csi2(frame, tmp_path / ("f" + suffix), bits)
    data = path.read_bytes()
    assert data == csi2.pack(frame.mosaic, bits)
    meta = json.loads(sidecar_path(path).read_text())
    assert (meta["format"], meta["width"], meta["height"]) == (csi2.format_name(bits), 8, 6)
    assert "stride" not in meta  # only padded lines record it
    assert_same_frame(read_raw(path), frame)


def test_packed_with_stride_and_other_suffix(tmp_path):
    frame = make_frame(bits=10)
    path = write_csi2(frame, tmp_path / "f.bin", "raw10p", stride=16)
    assert len(path.read_bytes()) == 16 * 6
    assert json.loads(sidecar_path(path).read_text())["stride"] == 16
    assert_same_frame(read_raw(path), frame)  # format found in the sidecar
    sidecar_path(path).unlink()
    got = read_raw(path, format="raw10p", width=8, height=6, stride=16, cfa="GRBG")
    np.testing.assert_array_equal(got.mosaic, frame.mosaic)
    assert got.white_level == 1023 and got.black_level == 0.0 and got.cfa == "GRBG"


def test_packed_without_sidecar_defaults(tmp_path):
    mosaic = np.arange(48, dtype=np.uint16).reshape(6, 8) * 80
    (tmp_path / "a.raw12").write_bytes(csi2.pack(mosaic, 12))
    frame = read_raw(tmp_path / "a.raw12", width=8, height=6, cfa="RGGB", black_level=[1, 2, 3, 4])
    np.testing.assert_array_equal(frame.mosaic, mosaic)
    assert frame.white_level == 4095 and frame.black_level == (1.0, 2.0, 3.0, 4.0)
    (tmp_path / "b.dat").write_bytes(csi2.pack(mosaic, 12))
    frame = read_raw(tmp_path / "b.dat", format="RAW12P", width=8, height=6, cfa="RGGB", white_level=4000)
    assert frame.white_level == 4000
    np.testing.assert_array_equal(frame.mosaic, mosaic)


def test_packed_needs_cfa(tmp_path):
    (tmp_path / "a.raw10").write_bytes(bytes(10))
    with pytest.raises(ValueError, match=r"a\.raw10.*missing cfa.*--cfa RGGB \(read_raw: cfa='RGGB'\)"):
        read_raw(tmp_path / "a.raw10", width=4, height=2)


# --- overrides --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["f.npy", "f.png", "f.tiff"])
def test_overrides_beat_sidecar(tmp_path, name):
    frame = make_frame(bits=16)
    write_raw(frame, tmp_path / name)
    got = read_raw(tmp_path / name, cfa="BGGR", black_level=[1, 2, 3, 4], white_level=60000,
                   wb_gains=[1.5, 1, 1.5], timestamp=3.0, frame_id="other", color_matrix=np.eye(3))
    assert got.cfa == "BGGR"
    assert got.black_level == (1.0, 2.0, 3.0, 4.0)
    assert got.white_level == 60000.0
    np.testing.assert_array_equal(got.wb_gains, [1.5, 1, 1.5])
    np.testing.assert_array_equal(got.color_matrix, np.eye(3))
    assert (got.timestamp, got.frame_id) == (3.0, "other")
    # None overrides are "not given": the sidecar stays
    assert_same_frame(read_raw(tmp_path / name, cfa=None, black_level=None), frame)


def test_overrides_beat_packed_sidecar(tmp_path):
    frame = make_frame(bits=12)
    path = write_csi2(frame, tmp_path / "f.raw12", 12)
    got = read_raw(path, cfa="RGGB", white_level=4000, black_level=16)
    assert (got.cfa, got.white_level, got.black_level) == ("RGGB", 4000.0, 16.0)
    with pytest.raises(ValueError, match=r"RAW12 data has 72 bytes, expected 144 for 16x6 \(stride 24\)"):
        read_raw(path, width=16, height=6)


def test_overrides_without_sidecar(tmp_path):
    mosaic = np.full((4, 6), 300, np.uint16)
    np.save(tmp_path / "m.npy", mosaic)
    frame = read_raw(tmp_path / "m.npy", cfa="gbrg", white_level=1023, black_level=64)
    assert frame.cfa == "GBRG" and frame.white_level == 1023 and frame.black_level == 64.0
    assert frame.wb_gains is None and frame.frame_id is None


def test_npy_other_integer_dtypes(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(16, dtype=np.int32).reshape(4, 4))
    np.save(tmp_path / "b.npy", np.arange(16, dtype=np.uint8).reshape(4, 4))
    for name in ("a.npy", "b.npy"):
        frame = read_raw(tmp_path / name, cfa="RGGB", white_level=255)
        assert frame.mosaic.dtype == np.uint16
        np.testing.assert_array_equal(frame.mosaic, np.arange(16).reshape(4, 4))


def test_dng_dispatch_with_overrides(tmp_path, monkeypatch):
    calls = []
    frame = make_frame()

    def read_dng(path):
        calls.append(path)
        return frame

    monkeypatch.setitem(sys.modules, "rawdiff.raw.dng", types.SimpleNamespace(read_dng=read_dng))
    for name in ("a.dng", "b.DNG", "c.nef", "d.cr2"):
        (tmp_path / name).write_bytes(b"not really")
        assert read_raw(tmp_path / name) is frame
        assert calls[-1] == tmp_path / name
    got = read_raw(tmp_path / "a.dng", cfa="RGGB", frame_id="x")
    assert got.cfa == "RGGB" and got.frame_id == "x"
    np.testing.assert_array_equal(got.mosaic, frame.mosaic)
    assert got.black_level == frame.black_level and got.timestamp == frame.timestamp
    with pytest.raises(ValueError, match=r"a\.dng: --width only applies to packed"):
        read_raw(tmp_path / "a.dng", width=8)


# --- bad input ----------------------------------------------------------------------


def test_missing_file(tmp_path):
    for name in ("nope.npy", "nope.dng", "nope.raw12", "nope.xyz"):
        with pytest.raises(FileNotFoundError, match="RAW file not found: .*%s" % name.replace(".", r"\.")):
            read_raw(tmp_path / name)


def test_directory_is_not_a_file(tmp_path):
    (tmp_path / "d.npy").mkdir()
    with pytest.raises(ValueError, match=r"d\.npy is a directory, not a RAW file"):
        read_raw(tmp_path / "d.npy")


def test_unknown_suffix(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ValueError, match=r"photo\.jpg: unknown RAW file type '\.jpg'.*format="):
        read_raw(tmp_path / "photo.jpg")
    (tmp_path / "noext").write_bytes(b"")
    with pytest.raises(ValueError, match=r"noext: unknown RAW file type ''"):
        read_raw(tmp_path / "noext")


def test_unknown_format_and_contradicting_suffix(tmp_path):
    (tmp_path / "a.bin").write_bytes(bytes(10))
    with pytest.raises(ValueError, match=r"a\.bin: format 'raw14p' is not a packed CSI-2 format"):
        read_raw(tmp_path / "a.bin", format="raw14p", width=4, height=2, cfa="RGGB")
    (tmp_path / "a.raw10").write_bytes(bytes(10))
    with pytest.raises(ValueError, match=r"a\.raw10: format 'raw12p' contradicts the suffix"):
        read_raw(tmp_path / "a.raw10", format="raw12p", width=4, height=2, cfa="RGGB")
    with pytest.raises(ValueError, match="contradicts the suffix"):
        write_csi2(make_frame(bits=10), tmp_path / "b.raw10", 12)


def test_unknown_override(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((2, 2), np.uint16))
    with pytest.raises(ValueError, match=r"m\.npy: unknown read_raw option 'blacklevel'"):
        read_raw(tmp_path / "m.npy", cfa="RGGB", white_level=10, blacklevel=3)
    with pytest.raises(ValueError, match=r"m\.npy: --width, --height only apply to packed"):
        read_raw(tmp_path / "m.npy", cfa="RGGB", white_level=10, width=2, height=2)


def test_packed_needs_geometry(tmp_path):
    (tmp_path / "a.raw12").write_bytes(bytes(6))
    with pytest.raises(ValueError, match=r"a\.raw12: packed raw12p data needs width and height"):
        read_raw(tmp_path / "a.raw12", cfa="RGGB")
    with pytest.raises(ValueError, match="needs height; give it"):
        read_raw(tmp_path / "a.raw12", cfa="RGGB", width=4)
    with pytest.raises(ValueError, match=r"a\.raw12: width 3 is not a multiple of 2"):
        read_raw(tmp_path / "a.raw12", cfa="RGGB", width=3, height=2)
    with pytest.raises(ValueError, match="stride 2 is smaller"):
        read_raw(tmp_path / "a.raw12", cfa="RGGB", width=2, height=2, stride=2)
    with pytest.raises(ValueError, match=r"width must be a positive integer, got '4'"):
        read_raw(tmp_path / "a.raw12", cfa="RGGB", width="4", height=1)


def test_missing_cfa_and_white_level(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((2, 2), np.uint16))
    with pytest.raises(ValueError, match=r"m\.npy: missing cfa and white_level: give them in the JSON "
                                         r"sidecar m\.json or as --cfa RGGB --white-level 4095 "
                                         r"\(read_raw: cfa='RGGB', white_level=4095\)"):
        read_raw(tmp_path / "m.npy")
    with pytest.raises(ValueError, match=r"missing white_level: give it"):
        read_raw(tmp_path / "m.npy", cfa="RGGB")
    (tmp_path / "m.json").write_text(json.dumps({"white_level": 1023}))
    with pytest.raises(ValueError, match=r"missing cfa: give it"):
        read_raw(tmp_path / "m.npy")


@pytest.mark.parametrize("writer", ["cv2", "tifffile"])
def test_reject_8bit_images(tmp_path, writer):
    image = np.zeros((4, 4), np.uint8)
    path = tmp_path / ("g.png" if writer == "cv2" else "g.tif")
    if writer == "cv2":
        cv2.imwrite(str(path), image)
    else:
        tifffile.imwrite(path, image)
    with pytest.raises(ValueError, match=r"g\.(png|tif) is an 8-bit image, not a RAW mosaic"):
        read_raw(path, cfa="RGGB", white_level=255)


def test_reject_rgb_images(tmp_path):
    rgb16 = np.zeros((4, 4, 3), np.uint16)
    cv2.imwrite(str(tmp_path / "c.png"), rgb16)
    tifffile.imwrite(tmp_path / "c.tiff", rgb16, photometric="rgb")
    np.save(tmp_path / "c.npy", rgb16)
    cv2.imwrite(str(tmp_path / "c8.png"), rgb16.astype(np.uint8))
    for name in ("c.png", "c.tiff", "c.npy", "c8.png"):
        with pytest.raises(ValueError, match=r"c8?\.\w+ is an RGB image \(shape 4x4x3\), not a RAW mosaic"):
            read_raw(tmp_path / name, cfa="RGGB", white_level=4095)


def test_reject_non_integer_or_odd_arrays(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match=r"f\.npy holds float32 values, not an integer RAW mosaic"):
        read_raw(tmp_path / "f.npy", cfa="RGGB", white_level=1)
    np.save(tmp_path / "v.npy", np.zeros(4, np.uint16))
    with pytest.raises(ValueError, match=r"v\.npy is a 1-D image"):
        read_raw(tmp_path / "v.npy", cfa="RGGB", white_level=1)
    np.save(tmp_path / "o.npy", np.array([[{"a": 1}]], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"o\.npy: cannot read the \.npy file"):
        read_raw(tmp_path / "o.npy", cfa="RGGB", white_level=1)
    np.savez(tmp_path / "z.npz", a=np.zeros((2, 2), np.uint16))
    (tmp_path / "z.npz").rename(tmp_path / "z.npy")
    with pytest.raises(ValueError, match=r"z\.npy: cannot read the \.npy file: not a single \.npy array"):
        read_raw(tmp_path / "z.npy", cfa="RGGB", white_level=1)


def test_corrupt_files(tmp_path):
    for name in ("x.npy", "x.png", "x.tif"):
        (tmp_path / name).write_bytes(b"garbage garbage garbage")
        with pytest.raises(ValueError, match=r"x\.\w+: cannot read the"):
            read_raw(tmp_path / name, cfa="RGGB", white_level=1)


def test_bad_sidecars(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((2, 2), np.uint16))
    side = tmp_path / "m.json"
    side.write_text("{not json")
    with pytest.raises(ValueError, match=r"m\.json: cannot read the JSON sidecar"):
        read_raw(tmp_path / "m.npy")
    side.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"m\.json: the sidecar must hold a JSON object, got list"):
        read_raw(tmp_path / "m.npy")
    side.write_text(json.dumps({"cfa": "RGGB", "white_level": 10, "blacklevel": 2}))
    with pytest.raises(ValueError, match=r"m\.npy: unknown metadata key 'blacklevel'"):
        read_raw(tmp_path / "m.npy")
    bad_values = [
        ({"cfa": "RGBG"}, r"cfa 'RGBG' is not one of"),
        ({"cfa": 3}, r"cfa must be a string"),
        ({"white_level": "high"}, r"white_level must be numeric, got 'high'"),
        ({"white_level": [1, 2]}, r"white_level must be one number"),
        ({"black_level": [1, 2]}, r"black_level must be a scalar or 4 values"),
        ({"black_level": "64"}, r"black_level must be numeric"),
        ({"black_level": 20}, r"white_level 10 <= black_level 20"),
        ({"wb_gains": [1, 2]}, r"wb_gains must be 3 positive finite values"),
        ({"color_matrix": [[1, 0], [0, 1]]}, r"color_matrix must be a finite 3x3 matrix"),
        ({"timestamp": "noon"}, r"timestamp must be a number of seconds"),
        ({"frame_id": 7}, r"frame_id must be a string"),
        ({"extra": [1]}, r"extra must be a JSON object"),
    ]
    for change, message in bad_values:
        meta = {"cfa": "RGGB", "white_level": 10}
        meta.update(change)
        side.write_text(json.dumps(meta))
        with pytest.raises(ValueError, match=r"m\.npy: " + message):
            read_raw(tmp_path / "m.npy")


def test_write_errors(tmp_path):
    frame = make_frame(bits=12)
    for name in ("f.dng", "f.jpg", "f.raw12", "f"):
        with pytest.raises(ValueError, match="cannot write a RAW mosaic as"):
            write_raw(frame, tmp_path / name)
    with pytest.raises(ValueError, match=r"value \d+ at .* outside the 10-bit range"):
        write_csi2(frame.copy(white_level=1023, black_level=0), tmp_path / "f.raw", 10)
    with pytest.raises(ValueError, match=r"white_level 65535 exceeds the 12-bit maximum 4095"):
        write_csi2(frame.copy(white_level=65535), tmp_path / "f.raw", 12)
    with pytest.raises(ValueError, match="bits 8 is not a supported"):
        write_csi2(frame, tmp_path / "f.raw", 8)
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        write_raw(frame.copy(extra={"x": object()}), tmp_path / "f.npy")


def test_dim_note_names_frames_that_stay_far_below_their_white_level():
    from rawdiff.raw.io import DIM_SHARE, dim_note

    assert dim_note(DIM_SHARE + 1e-6, 10, "--white-level") is None and dim_note(0.01, 0, "x") is None
    note = dim_note(4095 / 65535.0, 30, "~black_level, ~white_level", first=True)
    assert note == ("the brightest pixel of the first 30 frames is at 6.2 % of the range up to the white level: if "
                    "the sensor has fewer bits than its images, give its levels (~black_level, ~white_level)")
