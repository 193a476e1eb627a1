"""rostest's ``hztest`` on the decoded topics: ``cameras_hz.test`` (two cameras through
cameras.launch, fed by ``rosbag play --loop`` at 5 Hz) run by ``rostest``. The test fails
when either decoded image topic, or a decoded camera_info topic, is not published at 5 +- 1.5
Hz on average over 6 s.

rostest brings the launch up again for each of its tests; with its own master (not
``--reuse-master``) each of them gets a fresh one. On a reused master the names of the last
launch's nodes stay registered, and when a node of the same name registers again the master
sends the shutdown meant for the old one to the old node's address, which the system may
have given to a new node by then (seen once: the new encoder of /front shut down as "the old
/front/rawdiff_decoder", and no image came)."""

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest
from ros_harness import REPO, bayer_image

pytestmark = pytest.mark.timeout(600)

RATE = 5
H, W = 96, 128
TEST_FILE = os.path.join(REPO, "test", "ros", "cameras_hz.test")


def camera_info(stamp, frame_id, fx):
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo()
    info.header.stamp, info.header.frame_id = stamp, frame_id
    info.height, info.width, info.distortion_model = H, W, "plumb_bob"
    info.D = [0.1, -0.05, 0.0, 0.0, 0.0]
    info.K = [fx, 0.0, W / 2.0, 0.0, fx, H / 2.0, 0.0, 0.0, 1.0]
    info.R = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.P = [fx, 0.0, W / 2.0, 0.0, 0.0, fx, H / 2.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def make_cameras_bag(path, seconds=4.0, rate=RATE, cameras=("front", "rear")):
    """A bag of ``cameras``' RAW frames and camera_info (same header), ``rate`` Hz each."""
    import rosbag
    import rospy

    with rosbag.Bag(str(path), "w") as bag:
        for i in range(int(seconds * rate)):
            t = rospy.Time(1600000000) + rospy.Duration.from_sec(i / float(rate))
            for k, cam in enumerate(cameras):
                bag.write("/%s/image_raw" % cam, bayer_image(H, W, stamp=t, frame_id=cam + "_optical", seed=i + k), t)
                bag.write("/%s/camera_info" % cam, camera_info(t, cam + "_optical", 100.0 + k), t)


def test_hztest_is_runnable_here():
    """Debian's python3-rostest ships hztest as a node of the rostest package."""
    import roslib.packages

    assert shutil.which("rostest"), "rostest not on PATH"
    nodes = roslib.packages.find_node("rostest", "hztest")
    assert nodes and os.access(nodes[0], os.X_OK), nodes


def test_decoded_topics_keep_the_camera_rate_under_rostest_hztest(ros_master, fixture_model, tmp_path):
    bag = tmp_path / "cameras.bag"
    make_cameras_bag(bag)
    results = tmp_path / "results"
    env = dict(os.environ, OMP_NUM_THREADS="1")  # one torch thread per node (four nodes, two cores)
    proc = subprocess.run(
        ["rostest", "--results-base-dir", str(results), TEST_FILE, "bag:=%s" % bag,
         "model:=%s" % fixture_model, "rate:=%d" % RATE],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=580, start_new_session=True)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out[-6000:]
    xmls = [os.path.join(d, f) for d, _, fs in os.walk(str(results)) for f in fs if f.endswith(".xml")]
    cases = {}
    for path in xmls:
        for case in ET.parse(path).getroot().iter("testcase"):
            cases[case.get("name")] = [c.tag for c in case if c.tag in ("failure", "error")]
    for name in ("front_image_decoded_hz", "rear_image_decoded_hz", "front_decoded_camera_info_hz"):
        assert any(name in key for key in cases), (name, cases, out[-3000:])
    assert all(not problems for problems in cases.values()), (cases, out[-6000:])
