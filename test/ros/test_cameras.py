"""Many cameras on a real roscore: cameras.launch with two cameras, encoders and decoders on
one master. Each camera's frames go to its own /<camera>/compressed_codes and come back on
its own /<camera>/image_decoded, each with its camera_info (same stamp and frame_id), the
per-camera parameter files reach their encoder, the topic statuses WARN (never ERROR) on
late stamps, a low rate and a stall, and the aggregator's analyzer file groups every
status the nodes publish."""

import os
import threading
import time

import pytest
import yaml
from ros_harness import LAUNCH, REPO, Collector, Diagnostics, Launch, bayer_image, wait_for

pytestmark = pytest.mark.timeout(400)

H, W = 96, 128
CAMERAS = ("front", "rear")
PARAMS = {  # per-camera encoder parameters (params_dir/<camera>.yaml), loaded after the arguments
    "front": {"black_level": 64, "white_level": 4095, "diagnostic_period": 0.3, "rate_window": 5,
              "rate_tolerance": 0.5, "max_delay": 0.5, "camera_info_period": 2.0},
    "rear": {"black_level": [60, 61, 62, 63], "white_level": 4000, "diagnostic_period": 0.3},
}


class StatusLog:
    """Every DiagnosticStatus whose name is in ``names``, in arrival order."""

    def __init__(self, rospy):
        from diagnostic_msgs.msg import DiagnosticArray

        self.statuses = []
        self.names = set()
        self._lock = threading.Lock()
        self.sub = rospy.Subscriber("/diagnostics", DiagnosticArray, self._cb, queue_size=None)

    def _cb(self, msg):
        with self._lock:
            for s in msg.status:
                self.names.add(s.name)
                self.statuses.append((time.monotonic(), s))

    def of(self, name, since=0.0):
        with self._lock:
            return [s for t, s in self.statuses if s.name == name and t >= since]


class Cameras:
    def __init__(self, rospy, launch_dir, model, params_dir):
        from sensor_msgs.msg import CameraInfo, Image

        from rawdiff.msg import CompressedCodes

        self.rospy = rospy
        self.images = {c: rospy.Publisher("/%s/image_raw" % c, Image, queue_size=50) for c in CAMERAS}
        self.infos = {c: rospy.Publisher("/%s/camera_info" % c, CameraInfo, queue_size=50) for c in CAMERAS}
        self.codes = {c: Collector(rospy, "/%s/compressed_codes" % c, CompressedCodes) for c in CAMERAS}
        self.decoded = {c: Collector(rospy, "/%s/image_decoded" % c, Image) for c in CAMERAS}
        self.decoded_info = {c: Collector(rospy, "/%s/decoded/camera_info" % c, CameraInfo) for c in CAMERAS}
        self.relayed = {c: Collector(rospy, "/%s/compressed_codes/camera_info" % c, CameraInfo) for c in CAMERAS}
        self.single = Collector(rospy, "/compressed_codes", CompressedCodes)  # the one-camera topic: silent here
        self.diags = Diagnostics(rospy)
        self.log = StatusLog(rospy)
        self.launch = Launch(launch_dir, "cameras", os.path.join(LAUNCH, "cameras.launch"), "cameras:=front,rear",
                             "decode:=true", "model:=" + model, "params_dir:=" + params_dir, "expected_rate:=5")
        self._stamp = 1700000000

    def next_stamp(self):
        self._stamp += 1
        return self.rospy.Time(self._stamp, 250000000)

    def send(self, cam, stamp=None, info=None, seed=0):
        stamp = stamp or self.next_stamp()
        if info is not None:
            info.header.stamp, info.header.frame_id = stamp, cam + "_optical"
            self.infos[cam].publish(info)
        self.images[cam].publish(bayer_image(H, W, stamp=stamp, frame_id=cam + "_optical", seed=seed))
        return stamp

    def decoded_with(self, cam, stamp):
        return [m for m in self.decoded[cam].since(0) if m.header.stamp == stamp]

    def roundtrip(self, cam, timeout=30.0, info=None):
        stamp = self.send(cam, info=info)
        return wait_for(lambda: self.decoded_with(cam, stamp), timeout, what="%s frame %s decoded" % (cam, stamp))[0]

    def wait_ready(self, timeout=240.0):
        deadline = time.monotonic() + timeout
        for cam in CAMERAS:
            while True:
                self.launch.check_alive()
                try:
                    self.roundtrip(cam, timeout=2.0)
                    break
                except AssertionError:
                    if time.monotonic() > deadline:
                        raise AssertionError("no round trip for %s:\n%s"
                                             % (cam, self.launch.output()[-4000:])) from None

    def close(self):
        self.launch.stop()
        for group in (self.codes, self.decoded, self.decoded_info, self.relayed):
            for c in group.values():
                c.unregister()
        for c in (self.single, self.diags, self.log):
            c.sub.unregister()
        for pub in list(self.images.values()) + list(self.infos.values()):
            pub.unregister()


@pytest.fixture(scope="module")
def cams(ros_node, launch_dir, fixture_model, tmp_path_factory):
    params_dir = tmp_path_factory.mktemp("camera_params")
    for cam, values in PARAMS.items():
        (params_dir / ("%s.yaml" % cam)).write_text(yaml.safe_dump(values))
    c = Cameras(ros_node, launch_dir, fixture_model, str(params_dir))
    try:
        c.wait_ready()
        for cam in CAMERAS:  # the decoders' diagnostics faster too (diagnostic_updater re-reads it)
            ros_node.set_param("/%s/rawdiff_decoder/diagnostic_period" % cam, 0.3)
        yield c
    finally:
        c.close()


def _calibration(fx):
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo()
    info.height, info.width, info.distortion_model = H, W, "plumb_bob"
    info.D = [0.05, -0.01, 0.0, 0.0, 0.0]
    info.K = [fx, 0.0, 64.0, 0.0, fx, 48.0, 0.0, 0.0, 1.0]
    info.R = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.P = [fx, 0.0, 64.0, 0.0, 0.0, fx, 48.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def test_each_camera_has_its_own_codes_decoder_and_parameters(cams):
    from rawdiff.codec.bitstream import read_header

    marks = {c: (len(cams.codes[c]), len(cams.decoded[c])) for c in CAMERAS}
    sent = {c: [] for c in CAMERAS}
    for i in range(6):  # both cameras at 5 Hz
        for cam in CAMERAS:
            sent[cam].append(cams.send(cam, seed=i))
        time.sleep(0.2)
    for cam in CAMERAS:  # the last frame of each camera always gets through (nothing queues behind it)
        last = sent[cam][-1]
        wait_for(lambda c=cam, s=last: cams.decoded_with(c, s), 60, what="%s's last frame decoded" % cam)
    for cam in CAMERAS:
        codes = cams.codes[cam].since(marks[cam][0])
        decoded = cams.decoded[cam].since(marks[cam][1])
        assert codes and all(m.header.frame_id == cam + "_optical" and m.header.stamp in sent[cam] for m in codes)
        assert all(m.header.frame_id == cam + "_optical" and m.header.stamp in sent[cam] for m in decoded)
        assert all((m.height, m.width, m.encoding) == (H, W, "rgb8") for m in decoded)
        header = read_header(bytes(codes[-1].data))
        want = PARAMS[cam]["black_level"]
        assert header.black_level == tuple(float(b) for b in (want if isinstance(want, list) else [want] * 4))
        assert header.white_level == float(PARAMS[cam]["white_level"])
    assert len(cams.single) == 0  # the single-camera topic stays free
    assert cams.launch.proc.poll() is None


def test_decoded_images_come_with_their_camera_info(cams):
    """front publishes a calibration with its frames (relayed on change, else once in 2 s);
    rear publishes none and gets the uncalibrated form. Every decoded image has a
    camera_info with its stamp and frame_id on /<camera>/decoded/camera_info."""
    relayed_before = len(cams.relayed["front"])
    stamps = []
    for i in range(8):  # 8 frames in ~1.6 s, one calibration: relayed once (the period is 2 s)
        stamps.append(cams.send("front", info=_calibration(500.0), seed=i))
        time.sleep(0.2)
    wait_for(lambda: cams.decoded_with("front", stamps[-1]), 60, what="front's last frame decoded")
    time.sleep(0.5)
    relayed = cams.relayed["front"].since(relayed_before)
    assert 1 <= len(relayed) <= 2, [m.header.stamp for m in relayed]
    assert list(relayed[0].K)[0] == 500.0 and relayed[0].header.stamp in stamps

    img = cams.roundtrip("front", info=_calibration(520.0))  # a new calibration goes out at once
    assert cams.relayed["front"].since(0)[-1].K[0] == 520.0

    def info_of(cam, image):
        found = [m for m in cams.decoded_info[cam].since(0) if m.header.stamp == image.header.stamp]
        return found[0] if found else None

    info = wait_for(lambda: info_of("front", img), 30, what="the camera_info of front's last image")
    assert info.header.frame_id == img.header.frame_id == "front_optical"
    assert list(info.K) == list(_calibration(520.0).K) and info.distortion_model == "plumb_bob"
    assert list(info.D) == list(_calibration(520.0).D) and (info.height, info.width) == (H, W)
    for image in cams.decoded["front"].since(0):  # every decoded image has one
        if image.header.stamp in stamps:
            assert wait_for(lambda i=image: info_of("front", i), 10, what="camera_info of %s" % image.header.stamp)

    rear = cams.roundtrip("rear")
    info = wait_for(lambda: info_of("rear", rear), 30, what="the camera_info of rear's image")
    assert info.header.frame_id == "rear_optical" and (info.height, info.width) == (H, W)
    assert list(info.K) == [0.0] * 9 and info.distortion_model == ""
    dec = cams.diags.fresh("rear/rawdiff_decoder: decoder")
    assert dec["camera_info"].startswith("/rear/compressed_codes/camera_info -> /rear/decoded/camera_info: none")
    enc = cams.diags.fresh("front/rawdiff_encoder: encoder")
    assert enc["camera_info"].startswith("/front/camera_info -> /front/compressed_codes/camera_info: ")


def test_topic_statuses_warn_on_late_stamps_a_low_rate_and_a_stall_never_error(cams):
    """front's encoder: expected 5 Hz +- 50 %, stamps at most 0.5 s old, a window of 5
    updates of 0.3 s (params_dir/front.yaml)."""
    rospy = cams.rospy
    name = "front/rawdiff_encoder: /front/image_raw topic status"
    start = time.monotonic()

    def run(rate_hz, seconds, age_s=0.0):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            cams.send("front", stamp=rospy.Time.now() - rospy.Duration.from_sec(age_s))
            time.sleep(1.0 / rate_hz)

    def seen(fragment, level, since):
        return [s for s in cams.log.of(name, since) if fragment in s.message and s.level == level]

    t = time.monotonic()
    run(5, 3.0)
    assert seen("Desired frequency met", 0, t), [s.message for s in cams.log.of(name, t)]
    t = time.monotonic()
    run(5, 2.0, age_s=3.0)
    assert seen("Timestamps too far in past seen.", 1, t), [s.message for s in cams.log.of(name, t)]
    t = time.monotonic()
    run(1, 4.0)
    assert seen("Frequency too low.", 1, t), [s.message for s in cams.log.of(name, t)]
    t = time.monotonic()
    wait_for(lambda: seen("No events recorded.", 1, t), 15, what="the stall reported")
    statuses = cams.log.of(name, start)
    assert statuses and max(s.level for s in statuses) == 1  # WARN, never ERROR
    values = {kv.key: kv.value for kv in statuses[-1].values}
    assert float(values["Target frequency (Hz)"]) == 5.0 and float(values["Latest acceptable timestamp delay:"]) == 0.5
    # the node's own status does not turn red for its input's sake
    assert cams.diags.fresh("front/rawdiff_encoder: encoder")["_level"] == 0
    cams.roundtrip("front")


def _generic_matches(analyzer, name):
    """GenericAnalyzer::match of diagnostic_aggregator: regex (whole name), expected, name,
    startswith, contains."""
    import re

    def as_list(value):
        return value if isinstance(value, list) else [value]

    return (any(re.fullmatch(r, name) for r in as_list(analyzer.get("regex", [])))
            or name in as_list(analyzer.get("expected", [])) or name in as_list(analyzer.get("name", []))
            or any(name.startswith(s) for s in as_list(analyzer.get("startswith", [])))
            or any(s in name for s in as_list(analyzer.get("contains", []))))


def _generic_analyzers(group, path=""):
    for key, analyzer in group.items():
        kind = analyzer["type"]
        assert kind in ("diagnostic_aggregator/AnalyzerGroup", "diagnostic_aggregator/GenericAnalyzer"), kind
        assert analyzer.get("path"), key
        full = path + "/" + analyzer["path"]
        if kind.endswith("AnalyzerGroup"):
            yield from _generic_analyzers(analyzer["analyzers"], full)
        else:
            assert any(k in analyzer for k in ("regex", "expected", "name", "startswith", "contains")), key
            yield full, analyzer


def test_aggregator_analyzers_group_every_status_of_every_node(cams):
    with open(os.path.join(REPO, "config", "diagnostic_analyzers.yaml")) as f:
        config = yaml.safe_load(f)
    analyzers = list(_generic_analyzers(config["analyzers"]))
    ours = sorted(n for n in cams.log.names if "rawdiff_encoder" in n or "rawdiff_decoder" in n)
    for cam in CAMERAS:
        for node, topics in (("encoder", ("/%s/image_raw" % cam, "/%s/compressed_codes" % cam)),
                             ("decoder", ("/%s/compressed_codes" % cam, "/%s/image_decoded" % cam))):
            prefix = "%s/rawdiff_%s: " % (cam, node)
            assert prefix + node in ours and all(prefix + t + " topic status" in ours for t in topics), ours
    for name in ours:
        paths = [path for path, analyzer in analyzers if _generic_matches(analyzer, name)]
        side = "Encoders" if "rawdiff_encoder" in name else "Decoders"
        assert paths == ["/Camera codec/" + side], (name, paths)
