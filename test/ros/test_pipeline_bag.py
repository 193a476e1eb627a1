"""``rosbag play`` of a bag made here through ``pipeline.launch``, recording the outputs:
every played frame is accounted for by both nodes (received == published + dropped +
rejected + failed), and every frame they publish is recorded, in order, with its header;
how many a busy node drops at 5 Hz depends on the machine. The frames are packed MIPI
CSI-2 RAW10 whose encoding does not name the pattern, so the launch arguments
input_format, cfa, black_level and white_level reach the encoder."""

import os

import pytest
from ros_harness import LAUNCH, Diagnostics, Launch, accounted_for, bayer_image, frame_counters, wait_for

pytestmark = pytest.mark.timeout(300)

N = 12
H, W = 96, 128


def _packed_raw10(stamp, seed):
    import numpy as np

    from rawdiff.raw.csi2 import pack

    msg = bayer_image(H, W, stamp=stamp, frame_id="front", seed=seed)
    mosaic = np.frombuffer(msg.data, "<u2").reshape(H, W) // 4 + 64  # 10 bits above a black level of 64
    msg.data = pack(np.minimum(mosaic, 1023), 10)
    msg.encoding, msg.step = "8UC1", len(msg.data) // H
    return msg


def _make_bag(path, rospy):
    import rosbag
    from std_msgs.msg import String

    stamps = []
    with rosbag.Bag(str(path), "w") as bag:
        for i in range(N):
            t = rospy.Time(1600000000 + i // 5, (i % 5) * 200000000)  # 5 Hz
            msg = _packed_raw10(t, i)
            bag.write("/camera/image_raw", msg, t)
            bag.write("/gps", String(data="fix %d" % i), t + rospy.Duration(0, 1000))
            stamps.append(t)
    return stamps


def test_bag_played_through_pipeline_launch_is_accounted_for_and_what_is_decoded_is_recorded(
        ros_node, launch_dir, fixture_model, tmp_path):
    import rosbag

    from rawdiff.codec.bitstream import read_header

    rospy = ros_node
    played = tmp_path / "camera.bag"
    recorded = tmp_path / "decoded.bag"
    stamps = _make_bag(played, rospy)
    diags = Diagnostics(rospy)
    run = Launch(launch_dir, "pipeline", os.path.join(LAUNCH, "pipeline.launch"), "model:=" + fixture_model,
                 "bag:=%s" % played, "record:=%s" % recorded, "input_format:=raw10p", "cfa:=BGGR",
                 "black_level:=64", "white_level:=1023")
    try:
        def through():
            """Both nodes' counters once the encoder has received every played frame and the
            decoder every code, each with all of them accounted for."""
            run.check_alive()
            enc, dec = diags.values("camera/rawdiff_encoder"), diags.values("rawdiff_decoder")
            if enc is None or dec is None:
                return None
            enc, dec = frame_counters(enc), frame_counters(dec)
            return enc["received"] == N and accounted_for(enc) and dec["received"] == enc["published"] \
                and accounted_for(dec)

        try:
            wait_for(through, 240, 0.2, "%d frames through the encoder and the decoder" % N)
        except AssertionError as exc:
            raise AssertionError("%s\n%s" % (exc, run.output()[-5000:])) from None
        enc = frame_counters(diags.fresh("camera/rawdiff_encoder"))
        dec = frame_counters(diags.fresh("rawdiff_decoder"))
    finally:
        run.stop()  # SIGINT: rosbag record closes the bag
        diags.sub.unregister()
    assert enc["received"] == N and enc["published"] + enc["dropped"] == N, enc
    assert dec["received"] == enc["published"] and dec["published"] + dec["dropped"] == dec["received"], dec
    assert enc["rejected"] == enc["failed"] == dec["rejected"] == dec["failed"] == 0, (enc, dec)
    assert recorded.exists(), run.output()[-3000:]
    with rosbag.Bag(str(recorded)) as bag:
        info = bag.get_type_and_topic_info().topics
        assert info["/compressed_codes"].message_count == enc["published"]
        assert info["/camera/image_decoded"].message_count == dec["published"]
        assert info["/camera/image_decoded"].msg_type == "sensor_msgs/Image"
        images = [m for _, m, _ in bag.read_messages(topics=["/camera/image_decoded"])]
        codes = [m for _, m, _ in bag.read_messages(topics=["/compressed_codes"])]
    played = iter(stamps)
    assert all(m.header.stamp in played for m in images)  # in the played order, drops left out
    assert images[-1].header.stamp == stamps[-1]  # the last frame always gets through
    assert all((m.header.frame_id, m.height, m.width, m.encoding) == ("front", H, W, "rgb8") for m in images)
    assert all(c.source_encoding == "raw10p_bggr" and (c.height, c.width) == (H, W) for c in codes)
    header = read_header(bytes(codes[0].data))
    assert (header.cfa, header.black_level, header.white_level) == ("BGGR", (64.0,) * 4, 1023.0)
