"""What the nodes count and report, without a roscore: NodeStats, ErrorThrottle, the
drop-oldest queue, node parameter checks and the one-message transcoders."""

import threading

import numpy as np
import pytest

from rawdiff.ros.diagnostics import ErrorThrottle, NodeStats, fill_status, problem_kind
from rawdiff.ros.node import DropOldestQueue


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_stats_count_rates_latency_and_bpp():
    clock = Clock()
    stats = NodeStats(window_s=5.0, clock=clock)
    for i in range(10):
        clock.t += 0.5
        stats.count_received()
        if i % 2:
            stats.count_published(latency_s=0.02 * i, work_s=0.01, bytes_in=1000, bytes_out=10, code_bytes=10,
                                  pixels=800)
    stats.count_dropped(3)
    stats.count_rejected("image has zero size (0x0)")
    snap = stats.snapshot()
    assert (snap["received"], snap["published"], snap["dropped"], snap["rejected"], snap["failed"]) == (10, 5, 3, 1, 0)
    assert snap["input_rate_hz"] == pytest.approx(2.0)  # 10 arrivals in the last 5 s
    assert snap["output_rate_hz"] == pytest.approx(1.0)
    assert snap["latency_ms_max"] == pytest.approx(180.0)
    assert snap["bpp"] == pytest.approx(0.1) and snap["bytes_in_per_frame"] == 1000
    assert snap["last_error"] == "image has zero size (0x0)"
    clock.t += 10  # the window empties, the counters stay
    later = stats.snapshot()
    assert later["input_rate_hz"] == 0 and later["received"] == 10 and "latency_ms_mean" not in later


def test_fill_status_warns_on_new_drops_and_rejects_only():
    from diagnostic_updater import DiagnosticStatusWrapper

    stats = NodeStats(clock=Clock())
    stat = fill_status(DiagnosticStatusWrapper(), stats.snapshot(), "encode")
    assert stat.level == 0 and stat.message == "waiting for input"
    stats.count_received()
    stats.count_dropped()
    first = stats.snapshot()
    stat = fill_status(DiagnosticStatusWrapper(), first, "encode", {"dropped": 0}, {"model_id": "abc"})
    values = {kv.key: kv.value for kv in stat.values}
    assert stat.level == 1 and stat.message == "frames since the last report: 1 dropped"
    assert values["frames dropped"] == "1" and values["model_id"] == "abc" and "input rate (Hz)" in values
    stat = fill_status(DiagnosticStatusWrapper(), stats.snapshot(), "encode", first)
    assert stat.level == 0


def test_error_throttle_per_kind_of_problem():
    clock, lines = Clock(), []
    throttle = ErrorThrottle(5.0, lines.append, clock=clock)
    assert throttle.report("image data has 10 bytes, expected step*height = 2*6 = 12", "frame 1")
    assert not throttle.report("image data has 11 bytes, expected step*height = 2*6 = 12", "frame 2")
    assert throttle.report("unsupported image encoding 'yuv422'", "frame 3")  # another kind: logged
    clock.t += 6
    assert throttle.report("image data has 9 bytes, expected step*height = 2*6 = 12", "frame 4")
    assert lines[0] == "frame 1: image data has 10 bytes, expected step*height = 2*6 = 12"
    assert lines[2].startswith("frame 4: image data has 9 bytes") and "(1 more like it in the last 6 s)" in lines[2]
    assert problem_kind("model mismatch: codes from model c1ea77c9312fa6d5bd541b8006c7cf62, but") == \
        problem_kind("model mismatch: codes from model 0123456789abcdef0123456789abcdef, but")


def test_drop_oldest_queue_keeps_the_newest_and_counts():
    q = DropOldestQueue(2)
    assert [q.put(i) for i in range(5)] == [0, 0, 1, 1, 1]
    assert q.get(0.01) == 3 and q.get(0.01) == 4 and q.get(0.01) is None
    with pytest.raises(ValueError, match="queue_size must be >= 1"):
        DropOldestQueue(0)
    got = []
    t = threading.Thread(target=lambda: got.append(q.get(5.0)))
    t.start()
    q.put("late")
    t.join(5)
    assert got == ["late"]


def test_node_parameter_checks():
    from rawdiff.ros.decoder_node import DEFAULTS as DEC
    from rawdiff.ros.decoder_node import decode_args
    from rawdiff.ros.encoder_node import DEFAULTS as ENC
    from rawdiff.ros.encoder_node import conversion_args

    none = {"wb_gains": None, "color_matrix": None}
    assert conversion_args(ENC) == dict(none, cfa=None, black_level=0, white_level=None, input_format=None)
    assert conversion_args(dict(ENC, cfa="grbg", black_level=[64, 64, 64, 64], white_level=4095,
                                input_format="RAW12P")) == \
        dict(none, cfa="GRBG", black_level=[64, 64, 64, 64], white_level=4095.0, input_format="raw12p")
    colour = conversion_args(dict(ENC, wb_gains=[2.0, 1.0, 1.5], color_matrix=[1.5, -0.5, 0, 0, 1, 0, 0, -0.5, 1.5]))
    assert colour["wb_gains"].tolist() == [2.0, 1.0, 1.5] and colour["color_matrix"].shape == (3, 3)
    for bad, message in [({"cfa": "RGBW"}, "cfa 'RGBW'"), ({"input_format": "raw14p"}, "raw14p"),
                         ({"black_level": 300, "white_level": 255}, "white_level"),
                         ({"black_level": "low"}, "black_level"),
                         ({"black_level": -3}, "parameter black_level must be >= 0"),
                         ({"black_level": [64, -1, 64, 64]}, "parameter black_level must be >= 0"),
                         ({"wb_gains": [1.0, 0.0, 1.0]}, "wb_gains must be 3 positive finite"),
                         ({"wb_gains": [1.0, -2.0, 1.0]}, "wb_gains must be 3 positive finite"),
                         ({"wb_gains": [1.0, float("nan"), 1.0]}, "wb_gains must be 3 positive finite"),
                         ({"wb_gains": [1.0, 2.0]}, "~wb_gains must be 3 numbers"),
                         ({"wb_gains": "warm"}, "~wb_gains must be 3 numbers"),
                         ({"color_matrix": [1, 0, 0, 1]}, "~color_matrix must be 9 numbers"),
                         ({"color_matrix": [1, 2, 3, 2, 4, 6, 0, 0, 1]}, "color_matrix .* is singular")]:
        with pytest.raises(ValueError, match=message):
            conversion_args(dict(ENC, **bad))
    assert decode_args(DEC) == {"mode": "fast", "steps": 4, "seed": 0, "output": "rgb8", "realism": None}
    assert decode_args(dict(DEC, realism=0.25))["realism"] == 0.25
    for bad in (1.5, -0.5, "much"):
        with pytest.raises(ValueError, match="~realism"):
            decode_args(dict(DEC, realism=bad))
    assert decode_args(dict(DEC, output="bayer16"))["output"] == "bayer16"
    with pytest.raises(ValueError, match="~mode"):
        decode_args(dict(DEC, mode="slow"))
    with pytest.raises(ValueError, match="~steps"):
        decode_args(dict(DEC, steps=0))
    with pytest.raises(ValueError, match=r"~output \(decoder.launch.s output_encoding\) must be one of rgb8, bayer16"):
        decode_args(dict(DEC, output="bgr8"))


def test_transcode_one_message_both_ways(fixture_model):
    pytest.importorskip("rawdiff.msg")
    import rospy
    from ros_harness import bayer_image

    from rawdiff.codec import Codec
    from rawdiff.ros.transcode import check_codes, decode_codes, encode_image

    codec = Codec.load(fixture_model, device="cpu")
    img = bayer_image(64, 96, stamp=rospy.Time(5, 6), frame_id="left")
    codes, info = encode_image(codec, img, black_level=64, white_level=4095)
    assert (codes.header.stamp, codes.header.frame_id) == (rospy.Time(5, 6), "left")
    assert (codes.height, codes.width, codes.code_height, codes.code_width) == (64, 96, 8, 12)
    assert info["bytes_in"] == 64 * 96 * 2 and info["code_bytes"] == len(codes.data) and info["pixels"] == 64 * 96
    top = int(np.frombuffer(img.data, "<u2").max())
    assert info["peak"] == pytest.approx((top - 64) / (4095 - 64))  # the brightest pixel's share of the range
    peak = encode_image(codec, img)[1]["peak"]  # 12 bits taken as 16 (black 0, white 65535)
    assert peak == pytest.approx(top / 65535.0) and peak <= 1 / 16
    rgb, info = decode_codes(codec, codes)
    assert (rgb.header.stamp, rgb.header.frame_id, rgb.encoding) == (rospy.Time(5, 6), "left", "rgb8")
    np.testing.assert_array_equal(np.frombuffer(rgb.data, np.uint8).reshape(64, 96, 3),
                                  codec.decompress(bytes(codes.data)))
    codes.source_encoding = "rgb8"  # a filled field must be the stream's; an empty one says nothing
    with pytest.raises(ValueError, match="message field source_encoding='rgb8' disagrees with the bitstream "
                                         "\\(source_encoding='bayer_rggb16'\\)"):
        check_codes(codes, codec.model_id)
    codes.source_encoding = ""
    assert check_codes(codes, codec.model_id)[0].source_encoding == "bayer_rggb16"
    codes.model_id = "b" * 32  # a model the decoder also takes, but not the stream's
    with pytest.raises(ValueError, match="message field model_id='b{32}' disagrees with the bitstream"):
        check_codes(codes, codec.model_id, ("b" * 32,))
    codes.model_id = "0" * 32
    with pytest.raises(ValueError, match="codes from model 0{32}, but this decoder runs model %s" % codec.model_id):
        check_codes(codes, codec.model_id)


def test_the_library_s_log_records_reach_rospy_with_the_node_s_name(monkeypatch):
    """ROS's logging configuration keeps other Python loggers out of the screen and /rosout:
    the codec's reasons ("encoding with torch: ...") go through rospy, once, named."""
    import logging

    import rospy

    from rawdiff.ros import node

    said = []
    for level in ("loginfo", "logwarn", "logerr"):
        monkeypatch.setattr(rospy, level, lambda fmt, *args, _level=level: said.append((_level, fmt % args)))
    monkeypatch.setattr(rospy, "get_name", lambda: "/cam/rawdiff_encoder")
    library = logging.getLogger("rawdiff")
    before = list(library.handlers)
    try:
        node.forward_library_log()
        node.forward_library_log()  # once
        logging.getLogger("rawdiff.codec.codec").warning("encoding with torch: %s cannot be used", "x.onnx")
        logging.getLogger("rawdiff.codec.onnx_runtime").info("%d %% of it", 100)
        logging.getLogger("rawdiff.codec.codec").debug("not this")
    finally:
        library.handlers[:] = before
    assert said == [("logwarn", "/cam/rawdiff_encoder: encoding with torch: x.onnx cannot be used"),
                    ("loginfo", "/cam/rawdiff_encoder: 100 % of it")]
