"""CameraInfo beside the codes: the encoder relays the camera's calibration, the decoder
gives every decoded image its ``camera_info`` (same stamp and frame_id).

    camera driver: image_raw + camera_info (the same header, image_transport's convention)
    encoder_node:  camera_info --CameraInfoRelay: when it changes, else once a period-->
                   <codes topic>/camera_info (latched, e.g. /front/compressed_codes/camera_info)
    decoder_node:  <codes topic>/camera_info --CameraInfoHistory--> for each decoded image the
                   newest calibration stamped at or before it, with the image's header -->
                   camera_info beside the decoded image (image_transport's sibling rule)

Why a topic beside the codes and not a field of ``CompressedCodes``: the message layout is
fixed (tools echo it, bags hold it, the design pins it), and a calibration rarely changes.
A plumb_bob ``sensor_msgs/CameraInfo`` serialises to 359 bytes: more than the codes of a
small frame, about 1 % of a 1936x1112 frame's at 0.13 bits per pixel. Sent on change and
once a ``period`` (1 s by default), it costs one message a second instead of one a frame.
Latched, a late subscriber gets it at once; repeated once a period, a bag cut anywhere
still holds one. The decoder rewrites the header, so the pair (image,
camera_info) has exactly the same stamp and frame_id, which ``image_proc`` and
``message_filters``' exact-time synchroniser need. A camera that publishes no
calibration gets what ``camera_info_manager`` gives an uncalibrated camera: the image
size and zero matrices (downstream rectification then passes the image through).

:class:`CameraInfoRelay` and :class:`CameraInfoHistory` hold no ROS objects (clocks and
messages are passed in), so they are tested without a roscore.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Optional, Tuple


def codes_camera_info_topic(codes_topic: str) -> str:
    """The topic of the relayed calibration beside a (resolved) codes topic:
    ``/front/compressed_codes`` -> ``/front/compressed_codes/camera_info`` (as
    image_transport puts a transport's topics below the image topic)."""
    return codes_topic.rstrip("/") + "/camera_info"


def sibling_camera_info_topic(image_topic: str) -> str:
    """image_transport's ``getCameraInfoTopic``: ``camera_info`` in the image topic's
    namespace (``/camera/image_decoded`` -> ``/camera/camera_info``)."""
    head, sep, _ = image_topic.rstrip("/").rpartition("/")
    return head + sep + "camera_info"


def calibration_key(info) -> Tuple[Any, ...]:
    """Everything of a CameraInfo but its header: two messages with the same key describe
    the same calibration."""
    roi = info.roi
    return (int(info.height), int(info.width), str(info.distortion_model), tuple(float(v) for v in info.D),
            tuple(float(v) for v in info.K), tuple(float(v) for v in info.R), tuple(float(v) for v in info.P),
            int(info.binning_x), int(info.binning_y),
            (int(roi.x_offset), int(roi.y_offset), int(roi.height), int(roi.width), bool(roi.do_rectify)))


def stamp_ns(stamp) -> int:
    return int(stamp.secs) * 1000000000 + int(stamp.nsecs)


class CameraInfoRelay:
    """Which camera_info messages the encoder forwards: the first, every one whose
    calibration differs from the last one relayed, and otherwise one per ``period_s``
    (``0``: every one)."""

    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic):
        try:
            period_s = float(period_s)
        except (TypeError, ValueError):
            raise ValueError("~camera_info_period must be a number of seconds, got %r" % (period_s,)) from None
        if not period_s >= 0:  # also NaN
            raise ValueError("~camera_info_period must be >= 0 seconds, got %r" % (period_s,))
        self.period_s = period_s
        self.clock = clock
        self.received = 0
        self.relayed = 0
        self._last: Optional[Tuple[float, Tuple[Any, ...]]] = None
        self._lock = threading.Lock()

    def offer(self, info) -> bool:
        """Count ``info``; whether to relay it (then it is counted as relayed)."""
        key = calibration_key(info)
        now = self.clock()
        with self._lock:
            self.received += 1
            last = self._last
            if last is not None and last[1] == key and now - last[0] < self.period_s:
                return False
            self._last = (now, key)
            self.relayed += 1
            return True


class CameraInfoHistory:
    """The calibrations the decoder has received, newest last (at most ``size``), and the
    camera_info of a decoded image."""

    def __init__(self, size: int = 32):
        self._infos: Deque[Tuple[int, Any]] = deque(maxlen=int(size))
        self._lock = threading.Lock()
        self.received = 0

    def add(self, info) -> None:
        with self._lock:
            self.received += 1
            self._infos.append((stamp_ns(info.header.stamp), info))

    def calibration_for(self, stamp) -> Optional[Any]:
        """The newest calibration stamped at or before ``stamp``; else the oldest one held
        (a frame older than every calibration received); ``None`` before any."""
        t = stamp_ns(stamp)
        with self._lock:
            if not self._infos:
                return None
            best = None
            for s, info in self._infos:
                if s <= t and (best is None or s >= best[0]):
                    best = (s, info)
            if best is None:
                best = min(self._infos, key=lambda item: item[0])
            return best[1]

    def for_image(self, header, height: int, width: int):
        """The camera_info of a decoded image: its calibration (or an uncalibrated one of the
        image's size) with the image's header, stamp and frame_id."""
        from sensor_msgs.msg import CameraInfo

        calib = self.calibration_for(header.stamp)
        out = CameraInfo()
        if calib is None:
            out.height, out.width = int(height), int(width)
        else:
            for field in ("height", "width", "distortion_model", "D", "K", "R", "P", "binning_x", "binning_y",
                          "roi"):
                setattr(out, field, getattr(calib, field))
        out.header.stamp = header.stamp
        out.header.frame_id = header.frame_id
        return out

    def describe(self) -> str:
        """One line for the diagnostics."""
        with self._lock:
            if not self._infos:
                return "none received: uncalibrated (image size, zero matrices)"
            info = self._infos[-1][1]
        calibrated = any(float(v) != 0.0 for v in info.K)
        return "%s %dx%d, %d received" % ("calibrated" if calibrated else "uncalibrated", info.width, info.height,
                                          self.received)
