"""The skeleton both rawdiff nodes share: parameters, a drop-oldest queue, one worker.

    rospy receive thread --callback: count, put--> DropOldestQueue(queue_size)
        (full: the oldest frame is pushed out and counted as dropped)
    worker thread --get--> process(msg) (the codec; subclass) --publish-->
        ValueError: rejected (bad input), other exceptions: failed; both are logged
        through ErrorThrottle and the node goes on with the next message
    rospy.Timer --diagnostic_updater.Updater.update--> /diagnostics: the node's status
        (fill_status) and a TopicStatus (rate, stall, stamp age) of its input and its output

Why our own queue: rospy's ``queue_size`` drops inside the receive thread without
telling anyone, so drops could not be counted. The subscriber is created with
``queue_size=None``; its callback only appends to :class:`DropOldestQueue`, which keeps
the newest ``queue_size`` messages and counts every message pushed out before the
worker took it: those are the frames that arrived while the node was busy. Nothing
else is dropped, so ``received == published + dropped + rejected + failed`` once the
queue is empty. A large ``buff_size`` lets rospy read a whole image per ``recv``.
Header ``seq`` gaps are not used: every publisher (and a bag's recorder) numbers its
messages itself, so a gap would also count frames lost before the node.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import Any, Dict, List, Optional, Tuple

from rawdiff.paths import DEFAULT_MODEL_DIR as DEFAULT_MODEL
from rawdiff.ros.diagnostics import ErrorThrottle, NodeStats, TopicStatus, fill_status, topic_check_args


class DropOldestQueue:
    """A bounded FIFO whose :meth:`put` pushes the oldest item out when full."""

    def __init__(self, maxsize: int):
        if int(maxsize) < 1:
            raise ValueError("queue_size must be >= 1, got %r" % (maxsize,))
        self.maxsize = int(maxsize)
        self._items: deque = deque()
        self._cond = threading.Condition()

    def put(self, item: Any) -> int:
        """Append ``item``; returns how many older items were pushed out (0 or 1)."""
        with self._cond:
            dropped = 0
            while len(self._items) >= self.maxsize:
                self._items.popleft()
                dropped += 1
            self._items.append(item)
            self._cond.notify()
            return dropped

    def get(self, timeout: float) -> Optional[Any]:
        """The oldest item, or ``None`` after ``timeout`` seconds without one."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


def named(log):
    """``log`` (``rospy.logerr``, ``rospy.logwarn``, ...) of one message, with the node's name
    first as on its other lines: with several cameras on one console, whose problem it is."""
    import rospy

    return lambda text: log("%s: %s", rospy.get_name(), text)


class _RospyHandler(logging.Handler):
    """Records of the ``rawdiff`` loggers (the codec's reasons: "encoding with torch: ...") as
    the node's own lines: ROS's logging configuration sends Python loggers other than its own
    to the node's log file only, not to the screen or /rosout."""

    def emit(self, record: logging.LogRecord) -> None:
        import rospy

        log = (rospy.logerr if record.levelno >= logging.ERROR else rospy.logwarn if record.levelno >= logging.WARNING
               else rospy.loginfo)
        try:
            named(log)(record.getMessage())
        except Exception:  # noqa: BLE001 - a log line must never stop a frame
            self.handleError(record)


def forward_library_log() -> None:
    """Send the ``rawdiff`` loggers' records of level INFO and above through rospy, once."""
    logger = logging.getLogger("rawdiff")
    if not any(isinstance(h, _RospyHandler) for h in logger.handlers):
        logger.addHandler(_RospyHandler(logging.INFO))
        logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))


def read_params(defaults: Dict[str, Any]) -> Dict[str, Any]:
    """The node's private parameters (``~name``), with ``defaults`` for unset ones."""
    import rospy

    return {name: rospy.get_param("~" + name, default) for name, default in defaults.items()}


def resolve_model_dir(model: str) -> str:
    """``""`` is the package's ``models/default`` (``rospack find rawdiff``, else the source
    tree); a relative path is taken from the cwd (roslaunch starts nodes in ``ROS_HOME``,
    so launch files pass absolute paths)."""
    if model:
        return os.path.abspath(os.path.expanduser(model))
    try:
        import rospkg

        return os.path.join(rospkg.RosPack().get_path("rawdiff"), "models", "default")
    except Exception:  # no ROS environment, or the package is not on ROS_PACKAGE_PATH
        return DEFAULT_MODEL


class CodecNode:
    """Base of the encoder and decoder nodes; subclasses set the class attributes and
    implement :meth:`process`.

    ``process(msg)`` returns ``(out_msg, info)`` with ``info`` a dict of ``work_s``,
    ``bytes_in``, ``bytes_out``, ``code_bytes`` and ``pixels``; it raises ``ValueError``
    for bad input.
    """

    verb = "code"  # "encode" / "decode": diagnostics labels
    in_topic = "in"
    in_type: Any = None
    out_topic = "out"
    out_type: Any = None
    out_queue_size = 5

    def __init__(self, params: Dict[str, Any]):
        import rospy

        self.params = params
        self.stats = NodeStats(window_s=5.0)  # rates and means over the last 5 s
        self.errors = ErrorThrottle(float(params.get("error_throttle_s", 5.0)), named(rospy.logerr))
        self.queue = DropOldestQueue(int(params.get("queue_size", 1)))
        self.topic_checks = topic_check_args(params)
        self.pub = None
        self.sub = None
        self.updater = None
        self.in_status: Optional[TopicStatus] = None
        self.out_status: Optional[TopicStatus] = None
        self._timer = None
        self._last_reported: Dict[str, float] = {}
        self._worker: Optional[threading.Thread] = None

    # -- to override --------------------------------------------------------------------

    def process(self, msg) -> Tuple[Any, Dict[str, float]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self, msg) -> str:
        """A short name of an input message for error lines (stamp, frame_id)."""
        header = getattr(msg, "header", None)
        if header is None:
            return "message"
        return "message stamp %d.%09d frame_id %r" % (header.stamp.secs, header.stamp.nsecs, header.frame_id)

    def hardware_id(self) -> str:
        return "rawdiff"

    def status_extra(self) -> Dict[str, str]:
        """Values of the node's status that are also in its start-up line (what it runs)."""
        return {}

    def status_now(self) -> Dict[str, str]:
        """Values of the node's status that change while it runs (diagnostics only)."""
        return {}

    def status_warning(self) -> str:
        """A reason to report WARN beside dropped, rejected or failed frames ("": none)."""
        return ""

    def arrived(self, msg, now: float) -> None:
        """An input message arrived at ``now`` (``time.monotonic()``), in the receive thread."""

    def advertise_more(self) -> None:
        """Publishers beside the output (``self.pub`` exists)."""

    def subscribe_more(self) -> None:
        """Subscriptions beside the input, made just before it."""

    def publish(self, out) -> None:
        """Publish one output message (a subclass publishes what goes with it first)."""
        self.pub.publish(out)

    # -- wiring -------------------------------------------------------------------------

    def start(self) -> None:
        """Advertise, set up diagnostics, start the worker, then subscribe."""
        import diagnostic_updater
        import rospy

        self.pub = rospy.Publisher(self.out_topic, self.out_type, queue_size=self.out_queue_size)
        self.advertise_more()
        self.updater = diagnostic_updater.Updater()
        self.updater.setHardwareID(self.hardware_id())
        self.updater.add(self.verb + "r", self._diagnose)  # first: tools that look for the node's name find it
        self.in_status = TopicStatus(self.updater, rospy.resolve_name(self.in_topic), **self.topic_checks)
        self.out_status = TopicStatus(self.updater, self.pub.resolved_name, **self.topic_checks)
        self._timer = rospy.Timer(rospy.Duration(0.25), lambda _event: self.updater.update())
        self._worker = threading.Thread(target=self._work, name="rawdiff-" + self.verb, daemon=True)
        self._worker.start()
        self.wait_for_subscribers(int(self.params.get("wait_for_subscribers", 0)))
        if rospy.is_shutdown():
            return
        self.subscribe_more()
        self.sub = rospy.Subscriber(self.in_topic, self.in_type, self._receive, queue_size=None,
                                    buff_size=int(self.params.get("buff_size", 1 << 28)), tcp_nodelay=True)
        rospy.loginfo("%s: %s -> %s (%s)", rospy.get_name(), self.sub.resolved_name, self.pub.resolved_name,
                      ", ".join("%s %s" % kv for kv in sorted(self.status_extra().items())))

    def wait_for_subscribers(self, count: int) -> None:
        """Subscribe to the input only once ``count`` nodes listen to the output, so a
        bag played with ``--wait-for-subscribers`` starts when the whole chain is up."""
        import rospy

        if count <= 0:
            return
        rospy.loginfo("%s: waiting for %d subscriber(s) on %s", rospy.get_name(), count, self.pub.resolved_name)
        while not rospy.is_shutdown() and self.pub.get_num_connections() < count:
            time.sleep(0.05)

    def _receive(self, msg) -> None:
        self.stats.count_received()
        self.in_status.tick(msg.header.stamp)
        now = time.monotonic()
        self.arrived(msg, now)
        dropped = self.queue.put((msg, now))
        if dropped:
            self.stats.count_dropped(dropped)

    def _work(self) -> None:
        import rospy

        while not rospy.is_shutdown():
            item = self.queue.get(timeout=0.2)
            if item is not None:
                self.handle(*item)

    def handle(self, msg, arrived: float) -> None:
        """Process one message; bad input is logged, counted and skipped."""
        try:
            out, info = self.process(msg)
            self.publish(out)
            self.out_status.tick(out.header.stamp)
        except ValueError as exc:
            self.stats.count_rejected(str(exc))
            self.errors.report(str(exc), "rejected " + self.describe(msg))
            return
        except Exception as exc:  # keep serving: one bad frame must not stop the node
            reason = "%s: %s" % (type(exc).__name__, exc)
            self.stats.count_failed(reason)
            self.errors.report(reason, "failed on " + self.describe(msg))
            return
        self.stats.count_published(time.monotonic() - arrived, info["work_s"], info["bytes_in"],
                                   info["bytes_out"], info["code_bytes"], info["pixels"])

    def _diagnose(self, stat):
        snap = self.stats.snapshot()
        extra = dict(self.status_extra())
        extra["queue size"] = str(self.queue.maxsize)
        extra.update(self.status_now())
        fill_status(stat, snap, self.verb, self._last_reported, extra)
        warning = self.status_warning()
        if warning:
            from diagnostic_msgs.msg import DiagnosticStatus

            stat.mergeSummary(DiagnosticStatus.WARN, warning)
        self._last_reported = snap
        return stat

    def spin(self) -> None:
        import rospy

        rospy.spin()


def run_node(node_name: str, make_node, argv: Optional[List[str]] = None) -> int:
    """``rospy.init_node``, build the node (model loading: a failure is fatal, logged
    with its reason), start it and spin. Returns the exit status."""
    import rospy

    rospy.init_node(node_name, argv=argv)
    forward_library_log()
    try:
        node = make_node()
    except Exception as exc:  # a bad parameter or model directory: say which, exit non-zero
        reason = str(exc) if isinstance(exc, (ValueError, OSError)) else "%s: %s" % (type(exc).__name__, exc)
        rospy.logfatal("%s: cannot start: %s", rospy.get_name(), reason)
        return 1
    node.start()
    node.spin()
    return 0
