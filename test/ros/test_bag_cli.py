"""``rawdiff bag encode|decode``: offline transcoding without a roscore, keeping record
times, headers and every other topic."""

import numpy as np
import pytest

rosbag = pytest.importorskip("rosbag")
rospy = pytest.importorskip("rospy")
pytest.importorskip("rawdiff.msg")

from ros_harness import FIXTURE_MODEL, bayer_image  # noqa: E402

from rawdiff.cli import main  # noqa: E402

H, W = 64, 96
N = 6


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny frames: one thread is faster, and much faster on a busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _make_bag(path, bad_frame=None):
    from std_msgs.msg import String

    with rosbag.Bag(str(path), "w") as bag:
        for i in range(N):
            t = rospy.Time(1500000000 + i, 250000000)
            msg = bayer_image(H, W, stamp=rospy.Time(1400000000 + i, 5), frame_id="cam%d" % i, seed=i)
            if i == bad_frame:
                msg.data = msg.data[:-3]
            bag.write("/camera/image_raw", msg, t)
            bag.write("/imu", String(data="imu %d" % i), t + rospy.Duration(0, 1000))
        bag.write("/tf_static", String(data="latched"), rospy.Time(1500000000, 0),
                  connection_header={"topic": "/tf_static", "type": "std_msgs/String", "md5sum": String._md5sum,
                                     "message_definition": String._full_text, "latching": "1", "callerid": "/x"})


def _read(path):
    with rosbag.Bag(str(path)) as bag:
        types = {t: i.msg_type for t, i in bag.get_type_and_topic_info().topics.items()}
        msgs, conns = [], {}
        for topic, msg, t, conn in bag.read_messages(return_connection_header=True):
            msgs.append((topic, msg, t))
            conns[topic] = conn
    return types, msgs, conns


def test_encode_decode_round_trip_keeps_times_headers_and_other_topics(tmp_path, capsys):
    from rawdiff.codec import Codec

    raw, codes, rgb = tmp_path / "raw.bag", tmp_path / "codes.bag", tmp_path / "rgb.bag"
    _make_bag(raw)
    assert main(["bag", "encode", str(raw), str(codes), "--topic", "/camera/image_raw", "--model", FIXTURE_MODEL,
                 "--black-level", "64", "--white-level", "4095", "-q"]) == 0
    out = capsys.readouterr().out
    assert "encoded %d frames of /camera/image_raw -> /compressed_codes" % N in out
    assert "bytes in %.1f kB" % (N * H * W * 2 / 1000.0) in out and "bpp" in out
    assert "%d other messages copied, 0 frames rejected" % (2 * N - N + 1) in out  # N imu + tf_static

    types_in, msgs_in, conns_in = _read(raw)
    types, msgs, conns = _read(codes)
    assert types == {"/compressed_codes": "rawdiff/CompressedCodes", "/imu": "std_msgs/String",
                     "/tf_static": "std_msgs/String"}
    frames_in = [(m, t) for topic, m, t in msgs_in if topic == "/camera/image_raw"]
    code_msgs = [(m, t) for topic, m, t in msgs if topic == "/compressed_codes"]
    assert [t for _, t in code_msgs] == [t for _, t in frames_in]  # record times kept
    codec = Codec.load(FIXTURE_MODEL, device="cpu")
    for (c, _), (f, _) in zip(code_msgs, frames_in):
        assert (c.header.stamp, c.header.frame_id) == (f.header.stamp, f.header.frame_id)
        assert (c.height, c.width, c.model_id, c.source_encoding) == (H, W, codec.model_id, "bayer_rggb16")
        header, _ = codec.parse(bytes(c.data))
        assert header.black_level == (64.0,) * 4 and header.white_level == 4095.0
    others_in = [(topic, m, t) for topic, m, t in msgs_in if topic != "/camera/image_raw"]
    assert [(topic, m, t) for topic, m, t in msgs if topic != "/compressed_codes"] == others_in
    assert conns["/tf_static"].get("latching") == b"1"  # connection headers copied too

    assert main(["bag", "decode", str(codes), str(rgb), "--model", FIXTURE_MODEL, "-q"]) == 0
    assert "decoded %d frames of /compressed_codes -> /camera/image_decoded" % N in capsys.readouterr().out
    types, msgs, _ = _read(rgb)
    assert types == {"/camera/image_decoded": "sensor_msgs/Image", "/imu": "std_msgs/String",
                     "/tf_static": "std_msgs/String"}
    images = [(m, t) for topic, m, t in msgs if topic == "/camera/image_decoded"]
    assert [t for _, t in images] == [t for _, t in frames_in]
    for (img, _), (c, _) in zip(images, code_msgs):
        assert (img.header.stamp, img.header.frame_id) == (c.header.stamp, c.header.frame_id)
        assert (img.height, img.width, img.encoding, img.step) == (H, W, "rgb8", 3 * W)
        expected = codec.decompress(bytes(c.data))  # the same code path as rawdiff decompress
        np.testing.assert_array_equal(np.frombuffer(img.data, np.uint8).reshape(H, W, 3), expected)
    assert [(topic, m, t) for topic, m, t in msgs if topic != "/camera/image_decoded"] == others_in


def test_bad_frame_is_left_out_reported_and_exits_nonzero(tmp_path, capsys):
    raw, codes = tmp_path / "raw.bag", tmp_path / "codes.bag"
    _make_bag(raw, bad_frame=2)
    assert main(["bag", "encode", str(raw), str(codes), "--topic", "/camera/image_raw", "--model", FIXTURE_MODEL,
                 "-q"]) == 1
    captured = capsys.readouterr()
    assert "encoded %d frames" % (N - 1) in captured.out and "1 frames rejected" in captured.out
    assert "1 of %d frames of /camera/image_raw rejected" % N in captured.err
    assert "frame 3 of /camera/image_raw (recorded at 1500000002.250000): image data has" in captured.err
    types, msgs, _ = _read(codes)
    assert sum(topic == "/compressed_codes" for topic, _, _ in msgs) == N - 1


@pytest.mark.parametrize("args, message", [
    (["encode", "{raw}", "{out}", "--topic", "/nope"], "topic '/nope' is not in"),
    (["encode", "{raw}", "{out}", "--topic", "/imu"], "topic '/imu' carries std_msgs/String, not sensor_msgs/Image"),
    (["encode", "{raw}", "{raw}", "--topic", "/camera/image_raw"], "is the input bag"),
    (["encode", "{missing}", "{out}", "--topic", "/camera/image_raw"], "does not exist"),
    (["decode", "{raw}", "{out}"], "has no rawdiff/CompressedCodes topic"),
    (["encode", "{notabag}", "{out}", "--topic", "/camera/image_raw"], "notabag.bag is not a rosbag"),
    (["decode", "{png}", "{out}"], "f.png is not a rosbag (a bag starts with '#ROSBAG V2.0'"),
    (["encode", "{truncated}", "{out}", "--topic", "/camera/image_raw"],
     "truncated.bag has no index: it is truncated, or its recording did not finish; `rosbag reindex"),
    (["decode", "{tmp}", "{out}"], "is a directory, not a bag"),
    (["encode", "{raw}", "{tmp}/out", "--topic", "/camera/image_raw"], "out has no suffix; give one of .bag"),
    (["decode", "{raw}", "{tmp}", "--topic", "/camera/image_raw"], "is a directory; give a file name"),
], ids=["missing-topic", "wrong-type", "same-file", "missing-bag", "no-codes", "not-a-bag", "a-png", "truncated",
        "directory", "no-suffix", "output-directory"])
def test_errors_print_one_line(tmp_path, capsys, args, message):
    raw = tmp_path / "raw.bag"
    _make_bag(raw)
    (tmp_path / "notabag.bag").write_bytes(b"not a bag at all")
    (tmp_path / "f.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    data = raw.read_bytes()
    (tmp_path / "truncated.bag").write_bytes(data[: len(data) // 2])
    paths = {"raw": raw, "out": tmp_path / "out.bag", "missing": tmp_path / "missing.bag", "tmp": tmp_path,
             "notabag": tmp_path / "notabag.bag", "png": tmp_path / "f.png", "truncated": tmp_path / "truncated.bag"}
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = ["bag"] + [a.format(**paths) for a in args] + ["--model", FIXTURE_MODEL, "-q"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rawdiff bag %s: error: " % args[0]) and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no partial file


def test_decode_rejects_frames_over_max_pixels_counts_them_and_decodes_the_rest(tmp_path, capsys):
    from synthetic import declare_size

    raw, codes, rgb, big = tmp_path / "raw.bag", tmp_path / "codes.bag", tmp_path / "rgb.bag", tmp_path / "big.bag"
    _make_bag(raw)
    assert main(["bag", "encode", str(raw), str(codes), "--topic", "/camera/image_raw", "--model", FIXTURE_MODEL,
                 "-q"]) == 0
    n_big = 0
    with rosbag.Bag(str(codes)) as src, rosbag.Bag(str(big), "w") as dst:
        for topic, msg, t in src.read_messages():
            if topic == "/compressed_codes" and msg.header.frame_id in ("cam1", "cam4"):  # declare 16384 x 16384
                msg.data = declare_size(bytes(msg.data), 16384, 16384)
                msg.height = msg.width = 16384
                msg.code_height = msg.code_width = 2048
                n_big += 1
            dst.write(topic, msg, t)
    capsys.readouterr()
    assert main(["bag", "decode", str(big), str(rgb), "--model", FIXTURE_MODEL, "-q", "--max-pixels", "1000000"]) == 1
    captured = capsys.readouterr()
    assert "decoded %d frames" % (N - n_big) in captured.out and "%d frames rejected" % n_big in captured.out
    assert "frame 16384x16384 (268435456 pixels) exceeds the decoder's limit of 1000000 pixels" in captured.err
    _, msgs, _ = _read(rgb)
    assert sorted(m.header.frame_id for topic, m, _ in msgs if topic == "/camera/image_decoded") == \
        ["cam0", "cam2", "cam3", "cam5"]


def test_a_missing_output_folder_is_made_and_no_partial_file_is_left(tmp_path, capsys):
    raw, codes = tmp_path / "raw.bag", tmp_path / "new" / "deeper" / "codes.bag"
    _make_bag(raw)
    assert main(["bag", "encode", str(raw), str(codes), "--topic", "/camera/image_raw", "--model", FIXTURE_MODEL,
                 "-q"]) == 0
    assert codes.is_file() and [p.name for p in codes.parent.iterdir()] == ["codes.bag"]


def test_pixels_above_the_white_level_are_counted_in_the_summary(tmp_path, capsys):
    """A white level below the data: the encoder clips, as always, and the summary says how
    many pixels it clipped in how many frames (not silently)."""
    raw, codes = tmp_path / "raw.bag", tmp_path / "codes.bag"
    _make_bag(raw)
    with rosbag.Bag(str(raw)) as bag:
        mosaics = [np.frombuffer(m.data, "<u2") for _, m, _ in bag.read_messages(topics=["/camera/image_raw"])]
    expected = sum(int(np.count_nonzero(m > 1500)) for m in mosaics)
    frames = sum(1 for m in mosaics if np.any(m > 1500))
    assert expected > 0
    assert main(["bag", "encode", str(raw), str(codes), "--topic", "/camera/image_raw", "--model", FIXTURE_MODEL,
                 "--cfa", "RGGB", "--black-level", "64", "--white-level", "1500", "-q"]) == 0
    out = capsys.readouterr().out
    assert "%d pixels in %d frames above the white level, clipped to it" % (expected, frames) in out


def test_frames_that_stay_far_below_the_white_level_are_named_in_the_summary(tmp_path, capsys):
    """12-bit frames in 16-bit images encoded without the sensor's levels (black 0, white
    65535): the summary says so (the frames are coded, as given); with the levels it does not."""
    raw, codes = tmp_path / "raw.bag", tmp_path / "codes.bag"
    _make_bag(raw)
    encode = ["bag", "encode", str(raw), str(codes), "--topic", "/camera/image_raw", "--model", FIXTURE_MODEL, "-q"]
    assert main(encode) == 0
    out = capsys.readouterr().out
    assert "the brightest pixel of the %d frames is at " % N in out and "give its levels (--black-level" in out
    assert main(encode + ["--black-level", "64", "--white-level", "4095"]) == 0
    assert "the brightest pixel" not in capsys.readouterr().out


def test_a_negative_black_level_is_refused_before_the_log_is_read(tmp_path, capsys):
    raw = tmp_path / "raw.bag"
    _make_bag(raw)
    assert main(["bag", "encode", str(raw), str(tmp_path / "codes.bag"), "--topic", "/camera/image_raw",
                 "--model", FIXTURE_MODEL, "--black-level", "-3", "-q"]) == 1
    err = capsys.readouterr().err
    assert err == "rawdiff bag encode: error: black_level must be >= 0 (the mosaic's unsigned values minus it), " \
                  "got -3.0\n"
    assert not (tmp_path / "codes.bag").exists()
