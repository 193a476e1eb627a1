"""What both nodes report: counters, rates, latency, throttled errors, diagnostics.

    receive --count_received--> queue --count_dropped (oldest pushed out)
            worker --count_rejected (bad input) | count_failed (internal error)
                   --count_published(latency, bytes, pixels)--> NodeStats.snapshot()
                                       diagnostic_updater task --fill_status()--> /diagnostics

:class:`NodeStats` and :class:`ErrorThrottle` are plain Python (thread-safe, no ROS),
so they are tested without a roscore; :func:`fill_status` writes a snapshot into a
``diagnostic_updater.DiagnosticStatusWrapper``. Accounting, at any time::

    received == published + dropped + rejected + failed + (frames queued or in work)
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from typing import Callable, Deque, Dict, Optional, Tuple

# Numbers, hex digests and quoted values change from message to message; what is left
# names the kind of problem, and each kind is throttled on its own.
_VARYING = re.compile(r"0x[0-9a-fA-F]+|\b[0-9a-f]{8,}\b|[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?|'[^']*'|\"[^\"]*\"")


def problem_kind(message: str) -> str:
    """The throttling key of an error message: the message without its varying values."""
    return _VARYING.sub("#", str(message))


class ErrorThrottle:
    """Log each kind of problem at most once per ``period_s``, counting the repeats.

    ``rospy.logerr_throttle`` throttles per call site, so one site that reports many
    kinds of bad input would hide all but the first; here the key is the problem
    (:func:`problem_kind`). A repeat after the period says how many were suppressed.
    """

    def __init__(self, period_s: float, log: Callable[[str], None], clock: Callable[[], float] = time.monotonic):
        self.period_s = float(period_s)
        self.log = log
        self.clock = clock
        self._last: Dict[str, Tuple[float, int]] = {}  # kind -> (time logged, repeats suppressed since)
        self._lock = threading.Lock()

    def report(self, message: str, context: str = "") -> bool:
        """Log ``context: message`` unless this kind was logged less than ``period_s`` ago.

        Returns whether it was logged.
        """
        kind = problem_kind(message)
        now = self.clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last[0] < self.period_s:
                self._last[kind] = (last[0], last[1] + 1)
                return False
            suppressed = last[1] if last is not None else 0
            self._last[kind] = (now, 0)
        text = "%s: %s" % (context, message) if context else str(message)
        if suppressed:
            text += " (%d more like it in the last %.0f s)" % (suppressed, now - last[0])
        self.log(text)
        return True


class NodeStats:
    """Counters since start and rates over the last ``window_s`` seconds.

    Thread-safe: the receive threads count arrivals and drops, the worker counts the
    rest, the diagnostics timer reads :meth:`snapshot`.
    """

    def __init__(self, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.window_s = float(window_s)
        self.clock = clock
        self._lock = threading.Lock()
        self.started = clock()
        self.received = 0
        self.published = 0
        self.dropped = 0
        self.rejected = 0
        self.failed = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.last_error = ""
        self._arrivals: Deque[float] = deque()
        # (time, latency_s, work_s, bytes_in, bytes_out, code_bytes, pixels)
        self._outputs: Deque[Tuple[float, float, float, int, int, int, int]] = deque()

    def _trim(self, now: float) -> None:
        horizon = now - self.window_s
        while self._arrivals and self._arrivals[0] < horizon:
            self._arrivals.popleft()
        while self._outputs and self._outputs[0][0] < horizon:
            self._outputs.popleft()

    def count_received(self) -> None:
        now = self.clock()
        with self._lock:
            self.received += 1
            self._arrivals.append(now)
            self._trim(now)

    def count_dropped(self, n: int = 1) -> None:
        with self._lock:
            self.dropped += n

    def count_rejected(self, reason: str) -> None:
        """Bad input: the message could not be used (wrong size, encoding, bitstream, model)."""
        with self._lock:
            self.rejected += 1
            self.last_error = str(reason)

    def count_failed(self, reason: str) -> None:
        """An internal error on a message that looked valid (a bug, out of memory, ...)."""
        with self._lock:
            self.failed += 1
            self.last_error = str(reason)

    def count_published(self, latency_s: float, work_s: float, bytes_in: int, bytes_out: int,
                        code_bytes: int, pixels: int) -> None:
        """One output message: ``latency_s`` from arrival to publication, ``work_s`` in
        the codec; ``code_bytes`` are the bitstream's bytes, ``pixels`` the frame's."""
        now = self.clock()
        with self._lock:
            self.published += 1
            self.bytes_in += int(bytes_in)
            self.bytes_out += int(bytes_out)
            self._outputs.append((now, float(latency_s), float(work_s), int(bytes_in), int(bytes_out),
                                  int(code_bytes), int(pixels)))
            self._trim(now)

    def snapshot(self) -> Dict[str, float]:
        """Counters and windowed figures (rates in Hz, times in ms, ``bpp`` of the codes)."""
        now = self.clock()
        with self._lock:
            self._trim(now)
            span = max(min(self.window_s, now - self.started), 1e-6)
            outs = list(self._outputs)
            snap = {
                "received": self.received, "published": self.published, "dropped": self.dropped,
                "rejected": self.rejected, "failed": self.failed,
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "input_rate_hz": len(self._arrivals) / span,
                "output_rate_hz": len(outs) / span,
                "last_error": self.last_error,
            }
        if outs:
            latencies = [o[1] for o in outs]
            pixels = sum(o[6] for o in outs)
            snap.update(
                latency_ms_mean=1000.0 * sum(latencies) / len(latencies),
                latency_ms_max=1000.0 * max(latencies),
                work_ms_mean=1000.0 * sum(o[2] for o in outs) / len(outs),
                bytes_in_per_frame=sum(o[3] for o in outs) / len(outs),
                bytes_out_per_frame=sum(o[4] for o in outs) / len(outs),
                code_bytes_per_frame=sum(o[5] for o in outs) / len(outs),
                bpp=8.0 * sum(o[5] for o in outs) / pixels if pixels else 0.0,
            )
        return snap


# Keys of /diagnostics values: (label, snapshot key, format). ``{verb}`` is encode/decode.
_FIELDS = (
    ("input rate (Hz)", "input_rate_hz", "%.2f"),
    ("output rate (Hz)", "output_rate_hz", "%.2f"),
    ("{verb} latency mean (ms)", "latency_ms_mean", "%.1f"),
    ("{verb} latency max (ms)", "latency_ms_max", "%.1f"),
    ("{verb} time mean (ms)", "work_ms_mean", "%.1f"),
    ("bytes in per frame", "bytes_in_per_frame", "%.0f"),
    ("bytes out per frame", "bytes_out_per_frame", "%.0f"),
    ("bits per pixel", "bpp", "%.4f"),
    ("frames received", "received", "%d"),
    ("frames published", "published", "%d"),
    ("frames dropped", "dropped", "%d"),
    ("frames rejected", "rejected", "%d"),
    ("frames failed", "failed", "%d"),
)


def fill_status(stat, snap: Dict[str, float], verb: str, previous: Optional[Dict[str, float]] = None,
                extra: Optional[Dict[str, str]] = None):
    """Write ``snap`` into a ``DiagnosticStatusWrapper``; WARN while frames are dropped,
    rejected or fail (since ``previous``, the last snapshot published), else OK."""
    from diagnostic_msgs.msg import DiagnosticStatus

    prev = previous or {}
    new = {k: snap[k] - prev.get(k, 0) for k in ("dropped", "rejected", "failed")}
    problems = ["%d %s" % (n, k) for k, n in new.items() if n]
    if problems:
        stat.summary(DiagnosticStatus.WARN, "frames since the last report: %s" % ", ".join(problems))
    elif snap["received"] == 0:
        stat.summary(DiagnosticStatus.OK, "waiting for input")
    else:
        stat.summary(DiagnosticStatus.OK, "%sd %d frames, %.2f Hz" % (verb, snap["published"],
                                                                     snap["output_rate_hz"]))
    for label, key, fmt in _FIELDS:
        if key in snap:
            stat.add(label.format(verb=verb), fmt % snap[key])
    if snap.get("last_error"):
        stat.add("last error", snap["last_error"])
    for key, value in (extra or {}).items():
        stat.add(key, str(value))
    return stat


def status_values(status) -> Dict[str, str]:
    """``{key: value}`` of a ``diagnostic_msgs/DiagnosticStatus`` (for tests and tools)."""
    return {kv.key: kv.value for kv in status.values}


# -- the ROS checks of a topic (diagnostic_updater) ---------------------------------------

TOPIC_DEFAULTS = {"expected_rate": 0.0, "rate_tolerance": 0.1, "rate_window": 5, "max_delay": 1.0}


def topic_check_args(params: Dict[str, object]) -> Dict[str, float]:
    """``TopicStatus`` keyword arguments from a node's ``~expected_rate``, ``~rate_tolerance``,
    ``~rate_window`` and ``~max_delay``; raises ``ValueError`` naming the parameter."""
    values = {}
    for name, default in TOPIC_DEFAULTS.items():
        raw = params.get(name, default)
        try:
            value = int(raw) if name == "rate_window" else float(raw)
        except (TypeError, ValueError):
            raise ValueError("~%s must be a number, got %r" % (name, raw)) from None
        values[name] = value
    if not values["expected_rate"] >= 0:  # NaN too
        raise ValueError("~expected_rate must be >= 0 Hz (0: no rate check), got %r" % values["expected_rate"])
    if not 0 <= values["rate_tolerance"] < 1:
        raise ValueError("~rate_tolerance must be in [0, 1), got %r" % values["rate_tolerance"])
    if values["rate_window"] < 1:
        raise ValueError("~rate_window must be >= 1 diagnostic updates, got %r" % values["rate_window"])
    if not values["max_delay"] >= 0:
        raise ValueError("~max_delay must be >= 0 s (0: no stamp check), got %r" % values["max_delay"])
    return {"expected_rate_hz": values["expected_rate"], "tolerance": values["rate_tolerance"],
            "window": values["rate_window"], "max_delay_s": values["max_delay"]}


class TopicStatus:
    """diagnostic_updater's ``TopicDiagnostic`` for one topic, reporting at most WARN.

    One status, ``"<topic> topic status"``, made of the stock ``FrequencyStatus`` (the
    rate over the last ``window`` diagnostic updates, against ``expected_rate_hz`` +-
    ``tolerance``; no events in the window: the topic stalled) and ``TimeStampStatus``
    (the age of each message's header stamp on arrival, ``now - stamp``, against
    ``max_delay_s``; a stamp more than 1 s in the future too). The stock tasks call a stall
    or a late stamp an ERROR; here they are WARN, with the stock message: the node is
    healthy, its input is not (an ERROR is kept for what the node itself cannot do).
    ``expected_rate_hz`` 0 checks only for a stall; ``max_delay_s`` 0 leaves the stamp
    check out (bag replay without ``/clock`` has old stamps).
    """

    def __init__(self, updater, topic: str, expected_rate_hz: float = 0.0, tolerance: float = 0.1,
                 window: int = 5, max_delay_s: float = 1.0):
        import diagnostic_updater

        bounds = {"min": expected_rate_hz, "max": expected_rate_hz} if expected_rate_hz > 0 else {"min": 0.0}
        self.name = "%s topic status" % topic
        self.freq = diagnostic_updater.FrequencyStatus(
            diagnostic_updater.FrequencyStatusParam(bounds, tolerance, int(window)))
        self.stamp = None
        if max_delay_s > 0:
            self.stamp = diagnostic_updater.TimeStampStatus(
                diagnostic_updater.TimeStampStatusParam(-1.0, max_delay_s))
        task = diagnostic_updater.CompositeDiagnosticTask(self.name)
        for sub in (self.freq, self.stamp):
            if sub is not None:
                task.addTask(diagnostic_updater.FunctionDiagnosticTask(sub.getName(), _at_most_warn(sub.run)))
        updater.add(task)

    def tick(self, stamp) -> None:
        """One message on the topic, with its header stamp."""
        if self.stamp is not None:
            self.stamp.tick(stamp)
        self.freq.tick()


def _at_most_warn(run):
    def capped(stat):
        stat = run(stat)
        if stat.level > 1:  # DiagnosticStatus.ERROR -> WARN
            stat.level = 1
        return stat

    return capped
