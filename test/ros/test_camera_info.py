"""CameraInfo beside the codes (rawdiff.ros.camera_info) and the topic statuses
(rawdiff.ros.diagnostics.TopicStatus), without nodes: which calibrations the encoder
relays, which one a decoded image gets, the topic names, and the levels the stock
diagnostic_updater checks end at."""

import math

import pytest

from rawdiff.ros.camera_info import (
    CameraInfoHistory,
    CameraInfoRelay,
    codes_camera_info_topic,
    sibling_camera_info_topic,
)
from rawdiff.ros.diagnostics import TOPIC_DEFAULTS, topic_check_args


class Clock:
    def __init__(self):
        self.t = 50.0

    def __call__(self):
        return self.t


def _info(secs, fx=500.0, frame_id="front_optical", h=96, w=128):
    import rospy
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo()
    info.header.stamp, info.header.frame_id = rospy.Time(secs, 0), frame_id
    info.height, info.width, info.distortion_model = h, w, "plumb_bob"
    info.D = [0.1, 0.0, 0.0, 0.0, 0.0]
    info.K = [fx, 0.0, w / 2.0, 0.0, fx, h / 2.0, 0.0, 0.0, 1.0]
    info.R = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.P = [fx, 0.0, w / 2.0, 0.0, 0.0, fx, h / 2.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def test_topic_names_follow_image_transport():
    assert codes_camera_info_topic("/front/compressed_codes") == "/front/compressed_codes/camera_info"
    assert codes_camera_info_topic("/compressed_codes") == "/compressed_codes/camera_info"
    assert sibling_camera_info_topic("/camera/image_decoded") == "/camera/camera_info"
    assert sibling_camera_info_topic("/front/image_raw") == "/front/camera_info"
    assert sibling_camera_info_topic("/image_decoded") == "/camera_info"
    assert sibling_camera_info_topic("image_decoded") == "camera_info"


def test_relay_sends_the_first_every_change_and_one_per_period():
    clock = Clock()
    relay = CameraInfoRelay(1.0, clock)
    sent = []
    for i in range(30):  # 30 Hz for 1 s, one calibration
        clock.t += 1 / 30.0
        sent.append(relay.offer(_info(i)))
    assert sent[0] and sum(sent) == 1  # the first; the period has not run out yet
    clock.t += 0.1
    assert relay.offer(_info(40))  # a second after the first relay: sent again
    assert not relay.offer(_info(41))
    assert relay.offer(_info(42, fx=510.0))  # a new calibration goes at once
    assert relay.offer(_info(43, fx=500.0))  # and so does the change back
    assert not relay.offer(_info(44, fx=500.0))
    assert (relay.received, relay.relayed) == (35, 4)
    every = CameraInfoRelay(0.0, clock)
    assert all(every.offer(_info(i)) for i in range(5))


@pytest.mark.parametrize("period", [-1, float("nan"), "soon"])
def test_relay_period_must_be_a_non_negative_number(period):
    with pytest.raises(ValueError, match="~camera_info_period must be"):
        CameraInfoRelay(period)


def test_decoded_image_gets_the_newest_calibration_at_or_before_it_with_its_own_header():
    import rospy
    from std_msgs.msg import Header

    history = CameraInfoHistory(size=4)
    header = Header(stamp=rospy.Time(100, 5), frame_id="front_optical")
    uncalibrated = history.for_image(header, 96, 128)  # nothing received yet
    assert (uncalibrated.height, uncalibrated.width) == (96, 128)
    assert list(uncalibrated.K) == [0.0] * 9 and uncalibrated.distortion_model == ""
    assert uncalibrated.header.stamp == header.stamp and uncalibrated.header.frame_id == "front_optical"
    assert history.describe().startswith("none received")

    history.add(_info(90, fx=400.0))
    history.add(_info(99, fx=500.0))
    history.add(_info(101, fx=600.0))  # a calibration after the frame: not the frame's
    out = history.for_image(header, 96, 128)
    assert out.K[0] == 500.0 and out.header.stamp == header.stamp and out.header.frame_id == "front_optical"
    assert out.distortion_model == "plumb_bob" and out.D[0] == 0.1
    old = Header(stamp=rospy.Time(10, 0), frame_id="front_optical")
    assert history.for_image(old, 96, 128).K[0] == 400.0  # older than all: the oldest held
    for s in range(102, 106):  # the oldest fall out of a history of 4
        history.add(_info(s, fx=700.0))
    assert history.for_image(old, 96, 128).K[0] == 700.0
    assert history.describe() == "calibrated 128x96, 7 received"
    # the message the decoder publishes is a new one: the history's calibration keeps its header
    assert history.calibration_for(rospy.Time(103)).header.stamp == rospy.Time(103)


def test_topic_check_parameters_are_checked_by_name():
    assert topic_check_args({}) == {"expected_rate_hz": 0.0, "tolerance": 0.1, "window": 5, "max_delay_s": 1.0}
    assert topic_check_args(dict(TOPIC_DEFAULTS, expected_rate=30, max_delay="0.5"))["max_delay_s"] == 0.5
    for bad, fragment in (({"expected_rate": -1}, "~expected_rate"), ({"expected_rate": math.nan}, "~expected_rate"),
                          ({"rate_tolerance": 1.5}, "~rate_tolerance"), ({"rate_window": 0}, "~rate_window"),
                          ({"max_delay": "late"}, "~max_delay"), ({"max_delay": -2}, "~max_delay")):
        with pytest.raises(ValueError, match=fragment):
            topic_check_args(bad)


def _run(updater, name):
    from diagnostic_updater import DiagnosticStatusWrapper

    task = next(t for t in updater.tasks if t.name == name)
    stat = DiagnosticStatusWrapper()
    stat.level = 2
    return task.run(stat)


def test_topic_status_warns_on_a_stall_and_on_late_stamps_never_errors(ros_node):
    """The stock FrequencyStatus and TimeStampStatus inside, run against the test node's clock."""
    import diagnostic_updater

    from rawdiff.ros.diagnostics import TopicStatus

    rospy = ros_node
    updater = diagnostic_updater.Updater()
    status = TopicStatus(updater, "/unit/image_raw", expected_rate_hz=0.0, window=2, max_delay_s=0.5)
    name = "/unit/image_raw topic status"
    stat = _run(updater, name)  # nothing yet: no events, no stamps
    assert stat.level == 1 and "No events recorded." in stat.message
    status.tick(rospy.Time.now())
    stat = _run(updater, name)
    assert stat.level == 0, stat.message
    status.tick(rospy.Time.now() - rospy.Duration(3.0))  # three seconds old
    stat = _run(updater, name)
    assert stat.level == 1 and "Timestamps too far in past seen." in stat.message
    values = {kv.key: kv.value for kv in stat.values}
    assert float(values["Latest timestamp delay:"]) >= 3.0
    assert float(values["Latest acceptable timestamp delay:"]) == 0.5
    _run(updater, name)
    stat = _run(updater, name)  # a window of 2 updates without a message: stalled
    assert stat.level == 1 and "No events recorded." in stat.message
    # no stamp check with max_delay 0: old stamps are fine
    quiet = TopicStatus(updater, "/unit/replayed", max_delay_s=0.0)
    quiet.tick(rospy.Time(1))
    assert _run(updater, "/unit/replayed topic status").level == 0
