"""encoder_node and decoder_node on a real roscore, started with encoder.launch and
decoder.launch: frames round trip with their header, every frame is accounted for,
``rostopic echo`` prints the codes, bad input is rejected and the nodes keep serving.

Counters are read from fresh diagnostics once each node has accounted for every frame it
received (received == published + dropped + rejected + failed); how many frames a busy
node drops depends on the machine, so the tests check the accounting, not zero drops.
"""

import os
import subprocess
import time

import numpy as np
import pytest
from ros_harness import (
    LAUNCH,
    Collector,
    Diagnostics,
    Launch,
    accounted_for,
    bayer_image,
    frame_counters,
    in_order,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)

H, W = 128, 160
ENC = "camera/rawdiff_encoder"
DEC = "rawdiff_decoder"
STATUS = {ENC: ENC + ": encoder", DEC: DEC + ": decoder"}  # each node's own status (beside its topic statuses)


class Pipeline:
    def __init__(self, rospy, launch_dir, model):
        from rosgraph_msgs.msg import Log
        from sensor_msgs.msg import Image

        from rawdiff.msg import CompressedCodes

        self.rospy = rospy
        self.model = model
        self.image_pub = rospy.Publisher("/camera/image_raw", Image, queue_size=200)
        self.codes_pub = rospy.Publisher("/compressed_codes", CompressedCodes, queue_size=50)
        self.decoded = Collector(rospy, "/camera/image_decoded", Image)
        self.codes = Collector(rospy, "/compressed_codes", CompressedCodes)
        self.rosout = Collector(rospy, "/rosout", Log)
        self.diags = Diagnostics(rospy)
        self.encoder = Launch(launch_dir, "encoder", os.path.join(LAUNCH, "encoder.launch"), "model:=" + model)
        self.decoder = Launch(launch_dir, "decoder", os.path.join(LAUNCH, "decoder.launch"), "model:=" + model)
        self._stamp = 1700000000

    def next_stamp(self):
        self._stamp += 1
        return self.rospy.Time(self._stamp, 123456789)

    def decoded_with(self, stamp):
        return [m for m in self.decoded.since(0) if m.header.stamp == stamp]

    def roundtrip(self, timeout=30.0, **kwargs):
        """Publish a good frame; wait for its decoded image (the chain answers)."""
        stamp = self.next_stamp()
        self.image_pub.publish(bayer_image(H, W, stamp=stamp, **kwargs))
        return wait_for(lambda: self.decoded_with(stamp), timeout, what="decoded frame %s" % stamp)[0]

    def wait_ready(self, timeout=180.0):
        deadline = time.monotonic() + timeout
        wait_for(lambda: self.alive() and self.image_pub.get_num_connections() >= 1, timeout,
                 0.2, "the encoder to subscribe")
        while time.monotonic() < deadline:
            self.alive()
            try:
                return self.roundtrip(timeout=2.0)
            except AssertionError:
                continue
        raise AssertionError("no round trip through the pipeline in %.0f s:\n%s\n%s"
                             % (timeout, self.encoder.output()[-3000:], self.decoder.output()[-3000:]))

    def alive(self):
        self.encoder.check_alive()
        self.decoder.check_alive()
        return True

    def errors_of(self, node, fragment):
        from rosgraph_msgs.msg import Log

        return [m.msg for m in self.rosout.since(0)
                if m.level == Log.ERROR and m.name.endswith(node) and fragment in m.msg]

    def counters(self, name, timeout=60.0):
        """The node's frame counters from fresh diagnostics, once every frame it received
        is accounted for (none queued or in work)."""
        def settled():
            counters = frame_counters(self.diags.fresh(STATUS[name]))
            return counters if accounted_for(counters) else None

        return wait_for(settled, timeout, 0.0, "%s to account for every frame it received" % name)

    def mark(self):
        """Where the counters and the collected messages stand before a test sends frames."""
        return {"enc": self.counters(ENC), "dec": self.counters(DEC), "decoded": len(self.decoded),
                "codes": len(self.codes)}

    def through(self, mark, sent, timeout=120.0):
        """(encoder, decoder) counters since ``mark`` once the encoder has received the ``sent``
        frames, the decoder every code the encoder published, and the test every code and
        image the two published."""
        last = {}

        def done():
            enc, dec = _delta(self.counters(ENC), mark["enc"]), _delta(self.counters(DEC), mark["dec"])
            last.update(enc=enc, dec=dec)
            return (enc, dec) if (enc["received"] == sent and dec["received"] == enc["published"]
                                  and len(self.codes) - mark["codes"] == enc["published"]
                                  and len(self.decoded) - mark["decoded"] == dec["published"]) else None

        try:
            return wait_for(done, timeout, 0.1, "%d frames through the pipeline" % sent)
        except AssertionError as exc:
            raise AssertionError("%s: %d codes, %d decoded, counters %s\n%s\n%s" % (
                exc, len(self.codes) - mark["codes"], len(self.decoded) - mark["decoded"], last,
                self.encoder.output()[-3000:], self.decoder.output()[-3000:])) from None

    def close(self):
        self.encoder.stop()
        self.decoder.stop()
        for c in (self.decoded, self.codes, self.rosout, self.diags):
            c.sub.unregister()
        self.image_pub.unregister()
        self.codes_pub.unregister()


@pytest.fixture(scope="module")
def pipe(ros_node, launch_dir, fixture_model):
    p = Pipeline(ros_node, launch_dir, fixture_model)
    try:
        p.wait_ready()
        # Faster diagnostics for the tests (diagnostic_updater re-reads the parameter).
        for node in (ENC, DEC):
            ros_node.set_param("/%s/diagnostic_period" % node, 0.3)
        yield p
    finally:
        p.close()


def _delta(after, before):
    return {k: after[k] - before[k] for k in after}


def _packed_raw12(h, w, stamp, frame_id):
    from sensor_msgs.msg import Image

    from rawdiff.raw.csi2 import pack

    mosaic = np.random.default_rng(3).integers(0, 4096, size=(h, w)).astype(np.uint16)
    msg = Image()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.height, msg.width, msg.encoding = h, w, "raw12p_grbg"
    msg.data = pack(mosaic, 12)
    msg.step = len(msg.data) // h
    return msg


def test_frames_round_trip_with_their_header_and_every_frame_is_accounted_for(pipe, fixture_model):
    """20 frames at 10 Hz in three encodings: each code carries its frame's header and fields,
    each decoded image its frame's header; a frame a busy node could not take is counted as
    dropped, the rest arrive in order, and the last one always gets through."""
    from rawdiff.codec.modeldir import read_model_dir

    model_id = read_model_dir(fixture_model)["meta"]["model_id"]
    mark = pipe.mark()
    sent = []
    for i in range(20):
        stamp = pipe.next_stamp()
        frame_id = "cam%d" % (i % 3)
        if i % 3 == 2:
            msg = _packed_raw12(H, W, stamp, frame_id)
        else:
            msg = bayer_image(H, W, encoding=("bayer_rggb16", "bayer_bggr8")[i % 3], stamp=stamp,
                              frame_id=frame_id, seed=i)
        sent.append(msg)
        pipe.image_pub.publish(msg)
        time.sleep(0.1)  # 10 Hz
    enc, dec = pipe.through(mark, len(sent))
    assert enc["published"] + enc["dropped"] == len(sent) and enc["rejected"] == enc["failed"] == 0, enc
    assert dec["published"] + dec["dropped"] == dec["received"] and dec["rejected"] == dec["failed"] == 0, dec
    codes, decoded = pipe.codes.since(mark["codes"]), pipe.decoded.since(mark["decoded"])
    assert in_order(codes, sent) and in_order(decoded, codes)
    assert decoded and in_order(decoded[-1:], sent[-1:])  # the last frame always gets through
    for img in decoded:
        assert (img.height, img.width, img.encoding, img.step) == (H, W, "rgb8", 3 * W)
        assert len(img.data) == H * W * 3
    by_stamp = {m.header.stamp: m for m in sent}
    for c in codes:
        m = by_stamp[c.header.stamp]
        assert c.model_id == model_id and c.header.frame_id == m.header.frame_id
        assert c.source_encoding == m.encoding
        assert (c.height, c.width, c.code_height, c.code_width) == (H, W, H // 8, W // 8)
        assert bytes(c.data[:4]) == b"RDCF"


def test_overload_drops_oldest_and_accounts_for_every_frame(pipe):
    mark = pipe.mark()
    n = 40
    for i in range(n):  # a burst far above the encoder's rate
        pipe.image_pub.publish(bayer_image(256, 320, stamp=pipe.next_stamp(), seed=i))
    enc, dec = pipe.through(mark, n)
    assert enc["published"] + enc["dropped"] == n, enc
    assert dec["received"] == enc["published"] and dec["published"] + dec["dropped"] == dec["received"], dec
    assert enc["rejected"] == enc["failed"] == dec["rejected"] == dec["failed"] == 0
    # the newest frame always gets through: nothing queues behind it
    decoded = pipe.decoded.since(mark["decoded"])
    assert decoded and decoded[-1].header.stamp == pipe.rospy.Time(pipe._stamp, 123456789)
    pipe.roundtrip()


def test_rostopic_echo_prints_the_codes(pipe, fixture_model):
    from rawdiff.codec.modeldir import read_model_dir

    model_id = read_model_dir(fixture_model)["meta"]["model_id"]
    proc = subprocess.Popen(["rostopic", "echo", "-n", "1", "/compressed_codes"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            pipe.image_pub.publish(bayer_image(H, W, stamp=pipe.next_stamp(), frame_id="echo_cam"))
            time.sleep(0.5)
        time.sleep(0.5)  # the last frame is through before the next test counts
        out = proc.communicate(timeout=10)[0].decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    assert proc.returncode == 0, out
    for line in ('frame_id: "echo_cam"', 'model_id: "%s"' % model_id, 'source_encoding: "bayer_rggb16"',
                 "height: %d" % H, "width: %d" % W, "code_height: %d" % (H // 8), "code_width: %d" % (W // 8),
                 "data: [82, 68, 67, 70, "):
        assert line in out, out[:2000]


def _wrong_byte_count(stamp):
    msg = bayer_image(H, W, stamp=stamp)
    msg.data = msg.data[:-10]
    return msg


def _unknown_encoding(stamp):
    msg = bayer_image(H, W, stamp=stamp)
    msg.encoding = "yuv422"
    return msg


def _zero_size(stamp):
    msg = bayer_image(H, W, stamp=stamp)
    msg.height = msg.width = msg.step = 0
    msg.data = b""
    return msg


def _mono_without_cfa(stamp):
    msg = bayer_image(H, W, stamp=stamp)
    msg.encoding = "mono16"
    return msg


def _odd_size(stamp):
    return bayer_image(H - 1, W - 1, stamp=stamp)


@pytest.mark.parametrize("make, fragment", [
    (_wrong_byte_count, "expected step*height"),
    (_unknown_encoding, "unsupported image encoding 'yuv422'"),
    (_zero_size, "zero size"),
    (_mono_without_cfa, "does not name a Bayer pattern"),
    (_odd_size, "must be even"),
], ids=["wrong-byte-count", "unknown-encoding", "zero-size", "mono-without-cfa", "odd-size"])
def test_encoder_rejects_bad_input_and_keeps_serving(pipe, make, fragment):
    before = pipe.counters(ENC)
    stamp = pipe.next_stamp()
    pipe.image_pub.publish(make(stamp))
    errors = wait_for(lambda: pipe.errors_of(ENC, fragment), 30, what="an error naming %r" % fragment)
    assert "rejected message stamp %d.%09d" % (stamp.secs, stamp.nsecs) in errors[0]
    img = pipe.roundtrip()  # still answering
    assert (img.height, img.width) == (H, W)
    after = _delta(pipe.counters(ENC), before)
    assert after == {"received": 2, "published": 1, "dropped": 0, "rejected": 1, "failed": 0}
    assert not pipe.decoded_with(stamp)


def _good_codes(pipe):
    """A valid CompressedCodes message made by the running encoder."""
    n = len(pipe.codes)
    img = pipe.roundtrip()
    # the test's own subscription to the codes may hear them after the decoded image
    return wait_for(lambda: [c for c in pipe.codes.since(n) if c.header.stamp == img.header.stamp], 30,
                    what="the codes of frame %s" % img.header.stamp)[0]


@pytest.fixture(scope="module")
def other_codes(other_model):
    from rawdiff.codec import Codec
    from rawdiff.ros.conversions import image_to_frame

    codec = Codec.load(other_model, device="cpu")
    return codec.model_id, codec.compress(image_to_frame(bayer_image(H, W)))


@pytest.mark.parametrize("case", ["corrupted", "truncated", "empty", "other-model", "other-model-bitstream",
                                  "fields-disagree", "too-large"])
def test_decoder_rejects_bad_codes_and_keeps_serving(pipe, other_codes, case):
    good = _good_codes(pipe)
    other_id, other_data = other_codes
    msg = type(good)()
    msg.header.stamp, msg.header.frame_id = pipe.next_stamp(), "bad"
    for field in ("model_id", "source_encoding", "height", "width", "code_height", "code_width"):
        setattr(msg, field, getattr(good, field))
    data = bytearray(good.data)
    if case == "corrupted":
        data[len(data) // 2] ^= 0x5A
        fragment = "CRC mismatch"
    elif case == "truncated":
        data = data[: len(data) - 7]
        fragment = "truncated bitstream"
    elif case == "empty":
        data = bytearray()
        fragment = "no data"
    elif case == "other-model":
        msg.model_id, data = other_id, bytearray(other_data)
        fragment = "model mismatch: codes from model %s, but this decoder runs model %s" % (other_id, good.model_id)
    elif case == "other-model-bitstream":  # the message claims our model, the bitstream says otherwise
        data = bytearray(other_data)
        fragment = "encoded with model %s, but the loaded model is %s" % (other_id, good.model_id)
    elif case == "too-large":  # a valid bitstream declaring 32768 x 32768: refused from its header
        from synthetic import declare_size

        data = bytearray(declare_size(bytes(data), 32768, 32768))
        msg.height = msg.width = 32768
        msg.code_height = msg.code_width = 4096
        fragment = "frame 32768x32768 (1073741824 pixels) exceeds the decoder's limit of 33667072 pixels"
    else:
        msg.height += 8
        fragment = "message field height=%d disagrees" % msg.height
    msg.data = bytes(data)
    wait_for(lambda: any(c.endpoint_id.endswith(DEC) for c in pipe.codes_pub.impl.connections), 20,
             what="the decoder to connect to the test's codes publisher")
    before = pipe.counters(DEC)
    pipe.codes_pub.publish(msg)
    errors = wait_for(lambda: pipe.errors_of(DEC, fragment), 60, what="an error naming %r" % fragment)
    assert errors[0].startswith("/%s: rejected message stamp" % DEC)  # the node's name first, as its other lines
    pipe.roundtrip()  # still answering
    after = _delta(pipe.counters(DEC), before)
    assert after == {"received": 2, "published": 1, "dropped": 0, "rejected": 1, "failed": 0}
    assert not pipe.decoded_with(msg.header.stamp)


def test_diagnostics_report_rates_latency_and_counters(pipe, fixture_model):
    for _ in range(3):
        pipe.roundtrip()
    enc = pipe.diags.fresh(STATUS[ENC])
    dec = pipe.diags.fresh(STATUS[DEC])
    for values, verb in ((enc, "encode"), (dec, "decode")):
        for key in ("input rate (Hz)", "output rate (Hz)", "%s latency mean (ms)" % verb,
                    "%s latency max (ms)" % verb, "%s time mean (ms)" % verb, "bytes in per frame",
                    "bytes out per frame", "bits per pixel", "frames received", "frames published",
                    "frames dropped", "frames rejected", "frames failed", "model_id", "queue size"):
            assert key in values, (key, values)
        assert float(values["bits per pixel"]) > 0
        assert values["queue size"] == "1"
    # auto: the fixture model has no encoder.onnx; the launch sets OMP_NUM_THREADS=1
    assert enc["backend"] == "torch" and enc["threads"] == "1" and dec["mode"] == "fast"
    assert enc["device"] == "cpu"  # where it runs, not the "auto" asked for
    assert os.path.samefile(enc["model"], fixture_model)
    assert float(enc["bytes in per frame"]) == H * W * 2
    assert enc["camera_info"].startswith("/camera/camera_info -> /compressed_codes/camera_info: ")
    assert dec["camera_info"].startswith("/compressed_codes/camera_info -> /camera/camera_info: ")
    # diagnostic_updater's topic checks of each node's input and output, beside its own status
    for name in ("%s: /camera/image_raw topic status" % ENC, "%s: /compressed_codes topic status" % ENC,
                 "%s: /compressed_codes topic status" % DEC, "%s: /camera/image_decoded topic status" % DEC):
        values = pipe.diags.fresh(name)
        assert values["_level"] <= 1 and "Actual frequency (Hz)" in values, (name, values)
        assert "Latest acceptable timestamp delay:" in values  # ~max_delay 1 s by default
