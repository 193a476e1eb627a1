"""MCAP logs for ``rawdiff bag encode|decode``: ROS 1 messages in MCAP files (the ``ros1``
profile) transcoded with every other channel, time, order, metadata and attachment kept;
bags and MCAP converted into each other by the output's suffix; damaged files refused in
one line with nothing left behind."""

import io

import numpy as np
import pytest

rosbag = pytest.importorskip("rosbag")
rospy = pytest.importorskip("rospy")
pytest.importorskip("rawdiff.msg")
mcap_writer = pytest.importorskip("mcap.writer")

from mcap.reader import make_reader  # noqa: E402
from ros_harness import FIXTURE_MODEL, bayer_image  # noqa: E402

from rawdiff.cli import main  # noqa: E402

H, W = 32, 48
N = 5
T0 = 1500000000 * 10**9


@pytest.fixture(autouse=True)
def one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _serialize(msg) -> bytes:
    buffer = io.BytesIO()
    msg.serialize(buffer)
    return buffer.getvalue()


def make_mcap(path, n=N, json_channel=False, image_encoding="ros1"):
    """A recording as a ROS 1 MCAP recorder writes it, with the mcap library itself: images,
    an /imu channel with a caller id, a latched /tf_static, messages not in log-time order,
    publish times and sequence numbers of their own, a metadata record and an attachment."""
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    with open(str(path), "wb") as f:
        writer = mcap_writer.Writer(f, chunk_size=4096)
        writer.start(profile="ros1", library="test recorder")
        image_schema = writer.register_schema("sensor_msgs/Image", "ros1msg", Image._full_text.encode())
        string_schema = writer.register_schema("std_msgs/String", "ros1msg", String._full_text.encode())
        image = writer.register_channel("/camera/image_raw", image_encoding, image_schema, {"callerid": "/camera"})
        imu = writer.register_channel("/imu", "ros1", string_schema, {"callerid": "/imu_node"})
        tf = writer.register_channel("/tf_static", "ros1", string_schema, {"callerid": "/tf", "latching": "1"})
        writer.add_message(tf, log_time=T0, publish_time=T0 - 5, sequence=0, data=_serialize(String(data="latched")))
        for i in range(n):
            t = T0 + i * 10**8
            msg = bayer_image(H, W, stamp=rospy.Time(1400000000 + i, 7), frame_id="cam%d" % i, seed=i)
            writer.add_message(image, log_time=t, publish_time=t - 1000, sequence=10 + i, data=_serialize(msg))
            # an IMU sample recorded late: its log time is before the image's, it comes after it
            writer.add_message(imu, log_time=t - 2000, publish_time=t - 3000, sequence=100 + i,
                               data=_serialize(String(data="imu %d" % i)))
        if json_channel:
            events = writer.register_channel("/events", "json", 0, {})
            writer.add_message(events, log_time=T0 + 1, publish_time=T0 + 1, sequence=1, data=b'{"lap": 1}')
        writer.add_metadata("drive", {"vehicle": "v7", "route": "depot"})
        writer.add_attachment(create_time=T0, log_time=T0, name="calib.yaml", media_type="text/yaml",
                              data=b"fx: 100\n")
        writer.finish()


def read_mcap(path):
    """[(topic, log_time, publish_time, sequence, data, schema name)] in file order, channel
    metadata by topic, metadata records and attachments."""
    with open(str(path), "rb") as f:
        reader = make_reader(f)
        messages = [(c.topic, m.log_time, m.publish_time, m.sequence, m.data, s.name if s else None)
                    for s, c, m in reader.iter_messages(log_time_order=False)]
        channels = {c.topic: (c.message_encoding, dict(c.metadata)) for c in reader.get_summary().channels.values()}
        metadata = [(m.name, dict(m.metadata)) for m in reader.iter_metadata()]
        attachments = [(a.name, a.media_type, a.data, a.log_time) for a in reader.iter_attachments()]
        profile = reader.get_header().profile
    return messages, channels, metadata, attachments, profile


def _decode(data, cls):
    msg = cls()
    msg.deserialize(data)
    return msg


def test_mcap_encode_decode_keeps_every_other_channel_time_order_metadata_and_attachments(tmp_path, capsys):
    from sensor_msgs.msg import Image

    from rawdiff.codec import Codec
    from rawdiff.msg import CompressedCodes

    raw, codes, rgb = tmp_path / "raw.mcap", tmp_path / "codes.mcap", tmp_path / "rgb.mcap"
    make_mcap(raw)
    assert main(["bag", "encode", str(raw), str(codes), "--topic", "/camera/image_raw", "--model", FIXTURE_MODEL,
                 "--black-level", "64", "--white-level", "4095", "-q"]) == 0
    assert "encoded %d frames of /camera/image_raw -> /compressed_codes" % N in capsys.readouterr().out

    msgs_in, channels_in, meta_in, att_in, _ = read_mcap(raw)
    msgs, channels, meta, att, profile = read_mcap(codes)
    assert profile == "ros1" and meta == meta_in and att == att_in
    rename = {"/camera/image_raw": "/compressed_codes"}
    # same order, times, publish times and sequence numbers; only the image topic changed
    assert [(rename.get(t, t), lt, pt, seq) for t, lt, pt, seq, _, _ in msgs_in] == \
        [(t, lt, pt, seq) for t, lt, pt, seq, _, _ in msgs]
    assert [m for m in msgs if m[0] != "/compressed_codes"] == [m for m in msgs_in if m[0] != "/camera/image_raw"]
    assert channels["/imu"] == channels_in["/imu"] and channels["/tf_static"] == ("ros1", {"callerid": "/tf",
                                                                                           "latching": "1"})
    codec = Codec.load(FIXTURE_MODEL, device="cpu")
    images = [_decode(d, Image) for t, _, _, _, d, _ in msgs_in if t == "/camera/image_raw"]
    code_msgs = [_decode(d, CompressedCodes) for t, _, _, _, d, s in msgs if t == "/compressed_codes"]
    assert {s for t, _, _, _, _, s in msgs if t == "/compressed_codes"} == {"rawdiff/CompressedCodes"}
    for c, img in zip(code_msgs, images):
        assert (c.header.stamp, c.header.frame_id) == (img.header.stamp, img.header.frame_id)
        assert (c.height, c.width, c.model_id) == (H, W, codec.model_id)
        assert codec.parse(bytes(c.data))[0].white_level == 4095.0

    assert main(["bag", "decode", str(codes), str(rgb), "--model", FIXTURE_MODEL, "-q"]) == 0
    msgs_rgb, _, meta_rgb, att_rgb, _ = read_mcap(rgb)
    assert meta_rgb == meta_in and att_rgb == att_in
    decoded = [_decode(d, Image) for t, _, _, _, d, _ in msgs_rgb if t == "/camera/image_decoded"]
    assert [(m[1], m[2], m[3]) for m in msgs_rgb if m[0] == "/camera/image_decoded"] == \
        [(m[1], m[2], m[3]) for m in msgs_in if m[0] == "/camera/image_raw"]
    for img, c in zip(decoded, code_msgs):
        assert (img.header.stamp, img.header.frame_id, img.encoding) == (c.header.stamp, c.header.frame_id, "rgb8")
        np.testing.assert_array_equal(np.frombuffer(img.data, np.uint8).reshape(H, W, 3),
                                      codec.decompress(bytes(c.data)))


def test_the_output_suffix_converts_bag_to_mcap_and_back_keeping_topics_times_and_connection_fields(tmp_path):
    from std_msgs.msg import String

    raw_bag, codes_mcap, rgb_bag = tmp_path / "raw.bag", tmp_path / "codes.mcap", tmp_path / "rgb.bag"
    with rosbag.Bag(str(raw_bag), "w") as bag:
        for i in range(N):
            t = rospy.Time(1500000000 + i, 250000000)
            bag.write("/camera/image_raw", bayer_image(H, W, stamp=t, frame_id="cam", seed=i), t)
            bag.write("/imu", String(data="imu %d" % i), t + rospy.Duration(0, 1000))
        bag.write("/tf_static", String(data="latched"), rospy.Time(1500000000, 0),
                  connection_header={"topic": "/tf_static", "type": "std_msgs/String", "md5sum": String._md5sum,
                                     "message_definition": String._full_text, "latching": "1", "callerid": "/x"})
    assert main(["bag", "encode", str(raw_bag), str(codes_mcap), "--topic", "/camera/image_raw", "--model",
                 FIXTURE_MODEL, "-q"]) == 0
    msgs, channels, _, _, profile = read_mcap(codes_mcap)
    assert profile == "ros1"
    assert channels["/tf_static"] == ("ros1", {"latching": "1", "callerid": "/x"})  # connection header -> metadata
    assert sum(t == "/compressed_codes" for t, *_ in msgs) == N

    assert main(["bag", "decode", str(codes_mcap), str(rgb_bag), "--model", FIXTURE_MODEL, "-q"]) == 0
    with rosbag.Bag(str(raw_bag)) as a, rosbag.Bag(str(rgb_bag)) as b:
        original = [(t, m, tt) for t, m, tt in a.read_messages() if t != "/camera/image_raw"]
        back = [(t, m, tt) for t, m, tt in b.read_messages() if t != "/camera/image_decoded"]
        stamps_in = [(m.header.stamp, tt) for t, m, tt in a.read_messages(topics=["/camera/image_raw"])]
        stamps_out = [(m.header.stamp, tt) for t, m, tt in b.read_messages(topics=["/camera/image_decoded"])]
        conns = {t: c for t, _, _, c in b.read_messages(return_connection_header=True)}
    assert back == original and stamps_out == stamps_in
    assert conns["/tf_static"].get("latching") == b"1" and conns["/tf_static"].get("callerid") == b"/x"


@pytest.mark.parametrize("case, message", [
    ("truncated", "truncated.mcap is truncated (it does not end with the MCAP magic)"),
    ("damaged", "damaged.mcap: cannot read on (a truncated or damaged MCAP file?): CRCValidationError"),
    ("not-mcap", "not-mcap.mcap is not an MCAP file"),
    ("cdr-images", "topic '/camera/image_raw' of"),
    ("json-to-bag", "topic '/events' of"),
    ("missing-topic", "topic '/camera/left' is not in"),
])
def test_bad_mcap_is_one_line_and_leaves_no_output(tmp_path, capsys, case, message):
    good = tmp_path / "good.mcap"
    make_mcap(good, json_channel=case == "json-to-bag")
    data = good.read_bytes()
    src, out, topic = tmp_path / ("%s.mcap" % case), tmp_path / "out" / "o.mcap", "/camera/image_raw"
    if case == "truncated":
        src.write_bytes(data[: len(data) * 2 // 3])
    elif case == "damaged":  # bytes changed inside the second chunk: its CRC no longer matches
        with open(str(good), "rb") as f:
            chunk = make_reader(f).get_summary().chunk_indexes[1]
        mid = chunk.chunk_start_offset + chunk.chunk_length // 2
        src.write_bytes(data[:mid] + bytes(b ^ 0x5A for b in data[mid:mid + 16]) + data[mid + 16:])
    elif case == "not-mcap":
        src.write_bytes(b"#ROSBAG V2.0\n" + bytes(64))
    elif case == "cdr-images":
        make_mcap(src, image_encoding="cdr")
    elif case == "json-to-bag":
        src, out = good, tmp_path / "out" / "o.bag"
    elif case == "missing-topic":
        src, topic = good, "/camera/left"
    assert main(["bag", "encode", str(src), str(out), "--topic", topic, "--model", FIXTURE_MODEL, "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if ": error: " in line]
    assert len(errors) == 1 and message in errors[0], err
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # no output, no partial file


def test_a_damaged_image_message_is_rejected_and_counted_the_rest_encoded(tmp_path, capsys):
    from mcap.reader import make_reader as reader_of

    good, bad, out = tmp_path / "good.mcap", tmp_path / "bad.mcap", tmp_path / "out.mcap"
    make_mcap(good)
    with open(str(good), "rb") as f, open(str(bad), "wb") as g:
        reader = reader_of(f)
        writer = mcap_writer.Writer(g)
        writer.start(profile="ros1", library="test")
        summary = reader.get_summary()
        ids = {}
        for s in summary.schemas.values():
            ids[("s", s.id)] = writer.register_schema(s.name, s.encoding, s.data)
        for c in summary.channels.values():
            ids[("c", c.id)] = writer.register_channel(c.topic, c.message_encoding, ids[("s", c.schema_id)],
                                                       c.metadata)
        images = 0
        for _, c, m in reader.iter_messages(log_time_order=False):
            data = m.data
            if c.topic == "/camera/image_raw":
                images += 1
                if images == 3:
                    data = data[:40]  # cut inside the header: does not deserialize
            writer.add_message(ids[("c", c.id)], m.log_time, data, m.publish_time, m.sequence)
        writer.finish()
    assert main(["bag", "encode", str(bad), str(out), "--topic", "/camera/image_raw", "--model", FIXTURE_MODEL,
                 "-q"]) == 1
    captured = capsys.readouterr()
    assert "encoded %d frames" % (N - 1) in captured.out and "1 frames rejected" in captured.out
    assert "does not deserialize as sensor_msgs/Image" in captured.err
    msgs, _, _, _, _ = read_mcap(out)
    assert sum(t == "/compressed_codes" for t, *_ in msgs) == N - 1
