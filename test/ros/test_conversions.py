"""sensor_msgs/Image <-> RawFrame conversions and reading RAW frames from a bag.

Needs the ROS message classes and rosbag (Debian packages), no roscore.
"""

import numpy as np
import pytest

sensor_msgs = pytest.importorskip("sensor_msgs.msg")
rosbag = pytest.importorskip("rosbag")
rospy = pytest.importorskip("rospy")

from rawdiff.raw import csi2  # noqa: E402
from rawdiff.raw.frame import CFA_PATTERNS, RawFrame  # noqa: E402
from rawdiff.ros.bag import iter_raw_frames  # noqa: E402
from rawdiff.ros.conversions import frame_to_image, image_to_frame, rgb_to_image  # noqa: E402

H, W = 6, 10


def _mosaic(bits, seed=0, h=H, w=W):
    return np.random.default_rng(seed).integers(0, 1 << bits, size=(h, w)).astype(np.uint16)


def _image(encoding, data, h=H, w=W, step=None, bigendian=0):
    msg = sensor_msgs.Image()
    msg.height, msg.width, msg.encoding = h, w, encoding
    msg.is_bigendian = bigendian
    msg.step = step if step is not None else len(data) // h
    msg.data = bytes(data)
    return msg


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_encodings_round_trip(cfa, bits):
    mosaic = _mosaic(bits)
    dtype = np.uint8 if bits == 8 else "<u2"
    msg = _image("bayer_%s%d" % (cfa.lower(), bits), mosaic.astype(dtype).tobytes())
    frame = image_to_frame(msg)
    assert frame.cfa == cfa
    assert frame.mosaic.dtype == np.uint16
    np.testing.assert_array_equal(frame.mosaic, mosaic)
    assert frame.white_level == (1 << bits) - 1
    assert frame.extra["source_encoding"] == msg.encoding
    # and back through frame_to_image (always 16 bit)
    back = image_to_frame(frame_to_image(frame), white_level=frame.white_level)
    np.testing.assert_array_equal(back.mosaic, mosaic)
    assert back.cfa == cfa


def test_frame_to_image_fields_and_header():
    frame = RawFrame(_mosaic(12), cfa="GBRG", white_level=4095, timestamp=12.25, frame_id="cam0")
    msg = frame_to_image(frame)
    assert (msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian) == ("bayer_gbrg16", H, W, 2 * W, 0)
    assert msg.header.frame_id == "cam0"
    assert msg.header.stamp.to_sec() == pytest.approx(12.25)
    msg2 = frame_to_image(frame, stamp=rospy.Time(3, 500), frame_id="other")
    assert msg2.header.frame_id == "other" and msg2.header.stamp == rospy.Time(3, 500)
    back = image_to_frame(msg2, black_level=64, white_level=4095)
    assert back.timestamp == pytest.approx(3.0000005)
    assert back.frame_id == "other"
    assert back.black_level == 64.0


def test_mono16_needs_cfa():
    mosaic = _mosaic(16)
    msg = _image("mono16", mosaic.astype("<u2").tobytes())
    with pytest.raises(ValueError, match="cfa"):
        image_to_frame(msg)
    frame = image_to_frame(msg, cfa="grbg")
    assert frame.cfa == "GRBG"
    np.testing.assert_array_equal(frame.mosaic, mosaic)


def test_cfa_contradicting_encoding():
    msg = _image("bayer_rggb16", _mosaic(16).astype("<u2").tobytes())
    assert image_to_frame(msg, cfa="RGGB").cfa == "RGGB"
    with pytest.raises(ValueError, match="contradicts"):
        image_to_frame(msg, cfa="BGGR")


@pytest.mark.parametrize("bits,pad", [(8, 3), (16, 6), (16, 5)])
def test_step_padding(bits, pad):
    mosaic = _mosaic(bits)
    bpp = bits // 8
    rows = np.full((H, W * bpp + pad), 0xAB, dtype=np.uint8)  # padding bytes are garbage
    rows[:, : W * bpp] = np.frombuffer(mosaic.astype(np.uint8 if bits == 8 else "<u2").tobytes(),
                                       np.uint8).reshape(H, W * bpp)
    msg = _image("bayer_bggr%d" % bits, rows.tobytes(), step=W * bpp + pad)
    np.testing.assert_array_equal(image_to_frame(msg).mosaic, mosaic)


def test_big_endian():
    mosaic = _mosaic(16)
    msg = _image("bayer_grbg16", mosaic.astype(">u2").tobytes(), bigendian=1)
    np.testing.assert_array_equal(image_to_frame(msg).mosaic, mosaic)
    msg.is_bigendian = 0  # the same bytes read little-endian are different values
    assert not np.array_equal(image_to_frame(msg).mosaic, mosaic)


@pytest.mark.parametrize("fmt,bits", [("raw10p", 10), ("raw12p", 12)])
def test_packed_formats(fmt, bits):
    h, w = 4, 8
    mosaic = _mosaic(bits, h=h, w=w)
    stride = csi2.packed_line_bytes(w, bits) + 4
    data = csi2.pack(mosaic, bits, stride=stride)
    msg = _image("8UC1", data, h=h, w=w, step=stride)
    frame = image_to_frame(msg, cfa="RGGB", input_format=fmt)
    np.testing.assert_array_equal(frame.mosaic, mosaic)
    assert frame.white_level == (1 << bits) - 1
    assert frame.extra["source_encoding"] == "%s_rggb" % fmt
    # the pattern and the packing named by the encoding itself
    msg.encoding = "%s_gbrg" % fmt
    frame = image_to_frame(msg)
    assert frame.cfa == "GBRG"
    np.testing.assert_array_equal(frame.mosaic, mosaic)
    with pytest.raises(ValueError, match="cfa"):
        image_to_frame(_image("8UC1", data, h=h, w=w, step=stride), input_format=fmt)
    with pytest.raises(ValueError, match="input_format"):
        image_to_frame(msg, input_format="raw14p")


@pytest.mark.parametrize("change,match", [
    (dict(data=b"\x00" * (H * W * 2 - 1)), "bytes"),
    (dict(data=b"\x00" * (H * W * 2 + 2)), "bytes"),
    (dict(encoding="rgb8"), "unsupported"),
    (dict(encoding="bayer_rggb12"), "unsupported"),
    (dict(encoding="yuv422"), "unsupported"),
    (dict(height=0, data=b""), "zero size"),
    (dict(width=0), "zero size"),
    (dict(step=W), "shorter than one row"),
    (dict(step=0, data=b""), "step"),
])
def test_bad_inputs(change, match):
    msg = _image("bayer_rggb16", _mosaic(16).astype("<u2").tobytes())
    for key, value in change.items():
        setattr(msg, key, value)
    if "step" in change and change["step"]:
        msg.data = b"\x00" * (change["step"] * msg.height)
    with pytest.raises(ValueError, match=match):
        image_to_frame(msg)


def test_rgb_to_image():
    rgb = np.random.default_rng(1).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    header = frame_to_image(RawFrame(_mosaic(16), timestamp=2.0, frame_id="f")).header
    msg = rgb_to_image(rgb, header)
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("rgb8", 5, 7, 21)
    assert msg.header.frame_id == "f"
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(5, 7, 3), rgb)
    assert rgb_to_image(rgb).header.frame_id == ""
    with pytest.raises(ValueError):
        rgb_to_image(rgb.astype(np.float32))
    with pytest.raises(ValueError):
        rgb_to_image(rgb[:, :, 0])


def _write_bag(path, n=3):
    from std_msgs.msg import String

    frames = []
    with rosbag.Bag(str(path), "w") as bag:
        for i in range(n):
            frame = RawFrame(_mosaic(12, seed=i), cfa="BGGR", white_level=4095, timestamp=100.0 + i,
                             frame_id="cam")
            frames.append(frame)
            bag.write("/cam/image_raw", frame_to_image(frame), t=rospy.Time(200 + i))
            bag.write("/chatter", String(data="hi %d" % i), t=rospy.Time(200 + i))
    return frames


def test_bag_iter_raw_frames(tmp_path):
    path = tmp_path / "raw.bag"
    frames = _write_bag(path)
    got = list(iter_raw_frames(path, "/cam/image_raw", white_level=4095, black_level=16))
    assert len(got) == len(frames)
    for i, ((t, frame), ref) in enumerate(zip(got, frames)):
        assert t.to_sec() == pytest.approx(200 + i)
        np.testing.assert_array_equal(frame.mosaic, ref.mosaic)
        assert frame.cfa == "BGGR"
        assert frame.white_level == 4095 and frame.black_level == 16
        assert frame.timestamp == pytest.approx(100.0 + i)
        assert frame.frame_id == "cam"
    with pytest.raises(ValueError, match="not in"):
        list(iter_raw_frames(path, "/nope"))
    with pytest.raises(ValueError, match="not sensor_msgs/Image"):
        list(iter_raw_frames(path, "/chatter"))


def test_prepare_from_bag(tmp_path):
    from rawdiff.data.prepare import prepare
    from rawdiff.raw import read_raw

    src = tmp_path / "src"
    src.mkdir()
    frames = []
    with rosbag.Bag(str(src / "drive.bag"), "w") as bag:
        for i in range(5):
            frame = RawFrame(_mosaic(12, seed=i, h=70, w=66), cfa="GRBG", white_level=4095)
            frames.append(frame)
            bag.write("/cam/image_raw", frame_to_image(frame), t=rospy.Time(10 + i))
    out = tmp_path / "out"
    manifest = prepare([str(src / "drive.bag")], str(out), topic="/cam/image_raw", every=2,
                       conversion={"white_level": 4095}, progress=False, verbose=False)
    (entry,) = manifest["sources"]
    assert [fr["index"] for fr in entry["frames"]] == [0, 2, 4]
    got = read_raw(out / entry["frames"][1]["raw"])
    np.testing.assert_array_equal(got.mosaic, frames[2].mosaic)
    assert got.cfa == "GRBG" and got.white_level == 4095
    assert (out / entry["frames"][1]["target"]).is_file()
