"""The encoder node's quality on a real roscore: ``~quality`` changed at run time through
dynamic_reconfigure's client changes the stages of the next frames (their bitstream header),
``~target_kbps`` holds a bit budget on a looping stream, and bad values are refused at start
or clamped with a warning at run time.
"""

import os
import subprocess
import sys
import time

import pytest
from ros_harness import LAUNCH, REPO, Collector, Diagnostics, Launch, bayer_image, wait_for

from rawdiff.codec.bitstream import read_header

pytestmark = pytest.mark.timeout(300)

H, W = 128, 160
NODE = "/q/rawdiff_encoder"
STATUS = "q/rawdiff_encoder: encoder"
RATE_HZ = 10.0
# Rate: the codes' kbit/s over the last WINDOW_S of a looping stream at RATE_HZ, once the
# rate control had SETTLE_S to learn the frames, is within TOLERANCE of the target.
SETTLE_S, WINDOW_S, TOLERANCE = 3.0, 5.0, 0.10


class QualityNode:
    """encoder.launch in namespace ``q`` with the fixture model, a publisher of RAW frames,
    a collector of the codes, /diagnostics and /rosout."""

    def __init__(self, rospy, launch_dir, model):
        from rosgraph_msgs.msg import Log
        from sensor_msgs.msg import Image

        from rawdiff.msg import CompressedCodes

        self.rospy = rospy
        self.pub = rospy.Publisher("/q/image_raw", Image, queue_size=100)
        self.codes = Collector(rospy, "/q/compressed_codes", CompressedCodes)
        self.rosout = Collector(rospy, "/rosout", Log)
        self.diags = Diagnostics(rospy)
        self.node = Launch(launch_dir, "quality-encoder", os.path.join(LAUNCH, "encoder.launch"), "camera:=q",
                           "output:=/q/compressed_codes", "model:=" + model, "backend:=torch", "queue_size:=4")
        self.sent_at = {}  # stamp -> time.monotonic() of publication
        self._stamp = 1800000000
        # a looping stream: a few different scenes, over and over
        self.scenes = [bayer_image(H, W, seed=s) for s in range(4)]
        self.frames = 0

    def publish(self):
        msg = self.scenes[self.frames % len(self.scenes)]
        self.frames += 1
        self._stamp += 1
        msg.header.stamp = self.rospy.Time(self._stamp, 0)
        self.sent_at[msg.header.stamp] = time.monotonic()
        self.pub.publish(msg)
        return msg.header.stamp

    def code_of(self, stamp):
        found = [m for m in self.codes.since(0) if m.header.stamp == stamp]
        return found[0] if found else None

    def one_frame(self, timeout=30.0):
        """Publish a frame, return its codes (the node answered it)."""
        stamp = self.publish()
        return wait_for(lambda: self.code_of(stamp), timeout, 0.02, "the codes of frame %s" % stamp)

    def wait_ready(self, timeout=180.0):
        """A frame answered; frames published while the connection is still being set up
        may be lost, so publish again until one is."""
        deadline = time.monotonic() + timeout
        while True:
            self.node.check_alive()
            try:
                return self.one_frame(timeout=2.0)
            except AssertionError:
                if time.monotonic() > deadline:
                    raise AssertionError("the encoder answered no frame in %.0f s:\n%s"
                                         % (timeout, self.node.output()[-3000:])) from None

    def warnings(self, fragment):
        from rosgraph_msgs.msg import Log

        return [m.msg for m in self.rosout.since(0) if m.level == Log.WARN and fragment in m.msg]

    def close(self):
        self.node.stop()
        for c in (self.codes, self.rosout, self.diags):
            c.sub.unregister()
        self.pub.unregister()


@pytest.fixture(scope="module")
def qnode(ros_node, launch_dir, fixture_model):
    from dynamic_reconfigure.client import Client

    q = QualityNode(ros_node, launch_dir, fixture_model)
    try:
        wait_for(lambda: q.node.check_alive() is None and q.pub.get_num_connections() >= 1, 180, 0.2,
                 "the encoder to subscribe")
        q.wait_ready()
        ros_node.set_param(NODE + "/diagnostic_period", 0.3)
        q.client = Client(NODE, timeout=30)
        yield q
    finally:
        q.close()


@pytest.fixture(scope="module")
def codec(fixture_model):
    from rawdiff.codec import Codec

    return Codec.load(fixture_model, device="cpu", backend="torch")


def test_the_fixture_model_has_several_qualities(codec):
    assert codec.qualities >= 3, "the quality tests need a staged model (test/fixtures/model)"


def test_quality_changed_at_run_time_codes_the_next_frames_at_it(qnode, codec):
    from rawdiff.ros.transcode import encode_image

    top = codec.qualities
    assert qnode.client.get_configuration(timeout=10)["quality"] == codec.default_quality
    descr = {d["name"]: d for d in qnode.client.get_parameter_descriptions(timeout=10)}
    assert (descr["quality"]["min"], descr["quality"]["max"]) == (0, top)  # this model's range
    for quality in (1, top, 2, 1):
        config = qnode.client.update_configuration({"quality": quality})
        assert config["quality"] == quality
        assert qnode.rospy.get_param(NODE + "/quality") == quality
        for _ in range(2):  # the next frames, each checked against the codec at that quality
            got = qnode.one_frame()
            assert read_header(bytes(got.data)).quality == quality
            scene = qnode.scenes[(qnode.frames - 1) % len(qnode.scenes)]
            want, _ = encode_image(codec, scene, quality=quality)
            assert bytes(got.data) == bytes(want.data)
    # 0 stands for the model's default and comes back as it
    assert qnode.client.update_configuration({"quality": 0})["quality"] == codec.default_quality
    assert read_header(bytes(qnode.one_frame().data)).quality == codec.default_quality


def test_an_out_of_range_quality_is_clamped_with_a_warning(qnode, codec):
    top = codec.qualities
    config = qnode.client.update_configuration({"quality": top + 5})
    assert config["quality"] == top
    assert read_header(bytes(qnode.one_frame().data)).quality == top
    text = "~quality %d is outside 0..%d" % (top + 5, top)
    warned = wait_for(lambda: qnode.warnings(text), 10, 0.1, "the clamping warning")
    assert "set to %d" % top in warned[0]
    config = qnode.client.update_configuration({"target_kbps": -3.0})
    assert config["target_kbps"] == 0.0  # dynamic_reconfigure's own minimum
    assert wait_for(lambda: qnode.warnings("~target_kbps -3.0 is outside"), 10, 0.1, "the warning")
    config = qnode.client.update_configuration({"target_kbps": float("nan")})
    assert config["target_kbps"] == 0.0  # refused: kept
    qnode.client.update_configuration({"quality": 1})


def _rate_kbps(qnode, codes):
    """kbit/s of ``codes`` over the wall time they were published in (n frames, n - 1 gaps)."""
    times = [qnode.sent_at[m.header.stamp] for m in codes]
    bits = sum(8 * len(m.data) for m in codes[1:])
    return bits / (times[-1] - times[0]) / 1000.0


def _stream(qnode, seconds):
    """Publish the looping stream at RATE_HZ for ``seconds``; the codes of those frames."""
    start_count = len(qnode.codes)
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < seconds:
        qnode.publish()
        n += 1
        time.sleep(max(0.0, t0 + n / RATE_HZ - time.monotonic()))
    time.sleep(1.0)  # the last frames through the node
    return qnode.codes.since(start_count)


def test_target_kbps_holds_the_budget_on_a_looping_stream(qnode, codec):
    from rawdiff.ros.transcode import encode_image

    # a budget between two qualities' rates, so that the node must mix them
    kbps = {}
    for q in range(1, codec.qualities + 1):
        bits = [8 * len(encode_image(codec, s, quality=q)[0].data) for s in qnode.scenes]
        kbps[q] = sum(bits) / len(bits) * RATE_HZ / 1000.0
    low, high = 2, 3
    target = round((kbps[low] + kbps[high]) / 2, 1)
    assert kbps[low] < target < kbps[high]
    qnode.client.update_configuration({"target_kbps": target})
    try:
        codes = _stream(qnode, SETTLE_S + WINDOW_S)
        settle = [m for m in codes if qnode.sent_at[m.header.stamp] < qnode.sent_at[codes[0].header.stamp] + SETTLE_S]
        held = codes[len(settle):]
        assert len(held) >= 0.6 * WINDOW_S * RATE_HZ, "the node coded %d of %d frames" % (
            len(held), int(WINDOW_S * RATE_HZ))
        achieved = _rate_kbps(qnode, held)
        qualities = [read_header(bytes(m.data)).quality for m in settle + held]
        assert abs(achieved - target) <= TOLERANCE * target, (achieved, target, kbps, qualities)
        assert {low, high} <= set(qualities[len(settle):]), qualities  # it mixes the two around the target
        values = qnode.diags.fresh(STATUS)
        assert values["quality mode"] == "target" and float(values["target (kbps)"]) == target
        assert abs(float(values["achieved (kbps)"]) - target) <= 2 * TOLERANCE * target, values
        assert abs(float(values["frame rate (Hz)"]) - RATE_HZ) < 0.3 * RATE_HZ, values
        assert values["budget"] == "met"

        # below quality 1's rate: every frame at quality 1, and the node says so (WARN)
        qnode.client.update_configuration({"target_kbps": round(kbps[1] / 4, 1)})
        tight = _stream(qnode, 2.0)
        assert [read_header(bytes(m.data)).quality for m in tight[2:]] == [1] * len(tight[2:])
        values = qnode.diags.fresh(STATUS)
        assert values["budget"].startswith("not met: quality 1 needs"), values
        assert values["_level"] == 1 and "budget not met" in values["_message"]
    finally:
        qnode.client.update_configuration({"target_kbps": 0.0, "quality": 1})
    # back to a fixed quality
    assert read_header(bytes(qnode.one_frame().data)).quality == 1
    assert qnode.diags.fresh(STATUS)["quality mode"] == "fixed"


@pytest.mark.parametrize("launch_file, args, node", [
    ("encoder.launch", [], "/camera/rawdiff_encoder"),
    ("pipeline.launch", [], "/camera/rawdiff_encoder"),
    ("cameras.launch", ["cameras:=front rear"], "/rear/rawdiff_encoder"),
])
def test_launch_files_pass_quality_and_target_kbps(tmp_path, launch_file, args, node):
    import yaml

    def params(*more):
        proc = subprocess.run(["roslaunch", "--dump-params", os.path.join(LAUNCH, launch_file)] + args + list(more),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
                              env=dict(os.environ, ROS_HOME=str(tmp_path)))
        assert proc.returncode == 0, proc.stdout.decode()
        return yaml.safe_load(proc.stdout.decode())

    given = params("quality:=2", "target_kbps:=500")
    assert (given[node + "/quality"], given[node + "/target_kbps"]) == (2, 500.0)
    assert isinstance(given[node + "/target_kbps"], float)
    default = params()
    assert (default[node + "/quality"], default[node + "/target_kbps"]) == (0, 0.0)


def _start_refused(fixture_model, tmp_path, *params):
    """Run the encoder node with private ``params``; (exit status, output)."""
    name = "refused_%d" % int(time.monotonic() * 1000)
    args = [sys.executable, os.path.join(REPO, "scripts", "encoder_node"), "__name:=" + name,
            "_model:=" + fixture_model] + list(params)
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    return proc.returncode, proc.stdout.decode()


@pytest.mark.parametrize("params, expected", [
    (["_quality:=99"], "cannot start: ~quality 99 is not one of this model's operating points: 1..%d, or 0 for "
                       "its default (%d)"),
    (["_quality:=-1"], "cannot start: ~quality -1 is not one of this model's operating points"),
    (["_quality:=high"], "cannot start: ~quality 'high' is not one of this model's operating points"),
    (["_target_kbps:=-5"], "cannot start: ~target_kbps must be a number of kbit/s >= 0 (0: off), got -5"),
    (["_target_kbps:=fast"], "cannot start: ~target_kbps must be a number of kbit/s >= 0 (0: off), got 'fast'"),
])
def test_bad_quality_parameters_are_refused_at_start(ros_master, fixture_model, tmp_path, codec, params, expected):
    if "%d" in expected:
        expected = expected % (codec.qualities, codec.default_quality)
    code, output = _start_refused(fixture_model, tmp_path, *params)
    assert code == 1, output
    lines = [line for line in output.splitlines() if "cannot start" in line]
    assert len(lines) == 1 and expected in lines[0], output
    assert "Traceback" not in output
