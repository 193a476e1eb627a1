"""Rate control of the encoder node: each frame's quality picked to hold a bit budget.

    input frame --arrived(t)--> frame rate over the last ``rate_window_s`` (arrival times)
    worker: choose(pixels, t) --> quality q:
        per-frame budget = target_bps / frame rate - bucket level / (frame rate * payback_s)
        q = the highest quality whose predicted bits (bpp[q] * pixels) fit it, else 1
    Codec.compress(frame, quality=q) --coded(q, bytes of each quality <= q, pixels, t)-->
        bpp[k] for k <= q: EWMA of what quality k produced (a stream cut to k is what
            coding at k gives, so one frame at q measures every k <= q);
            k > q: moved by the factor quality q moved (the scene's complexity)
        bucket level += bits sent - target_bps * min(time since the last coded frame,
            two frame intervals), within +- target_bps * bucket_s: overshoot is paid back
            by the frames that follow and undershoot spent by them, but a pause (a bag
            looping, a camera restarting) earns no more than two frames' budget, so
            silence is not saved up for a burst

The estimates start from the model's measured operating points (``model.json``
``operating_points``: ``quality`` and ``bpp`` of each) when it has them. A quality without
an estimate makes the next frame go out at the highest quality, which measures all of them
at once; the bucket then pays that frame back. Below the lowest quality's rate the node codes
every frame at quality 1 and says so (:meth:`RateControl.status`).

Why arrival times and not header stamps: the budget is the link's, in wall time; a bag
replayed at ``-r 2`` or looped has stamps that say nothing about it, and a live camera's
stamps and arrivals agree. Plain Python, thread-safe (the receive thread counts arrivals,
the worker chooses and accounts, reconfiguration sets the target, diagnostics read the
status), with an injectable clock for tests.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Callable, Deque, Dict, Iterable, Optional, Tuple


def check_target_kbps(value) -> float:
    """``~target_kbps`` as a float >= 0 (0: off); ``ValueError`` naming the value."""
    try:
        kbps = float(value)
    except (TypeError, ValueError):
        raise ValueError("~target_kbps must be a number of kbit/s >= 0 (0: off), got %r" % (value,)) from None
    if not (kbps >= 0 and math.isfinite(kbps)):
        raise ValueError("~target_kbps must be a number of kbit/s >= 0 (0: off), got %r" % (value,))
    return kbps


def seed_bpp(operating_points: Iterable[dict], qualities: int) -> Dict[int, float]:
    """``{quality: bpp}`` of a model's measured operating points (entries without a quality
    in 1..``qualities`` or a positive finite ``bpp`` are left out)."""
    seeds: Dict[int, float] = {}
    for i, point in enumerate(operating_points or (), start=1):
        if not isinstance(point, dict):
            continue
        try:
            q = int(point.get("quality", i))
            bpp = float(point["bpp"])
        except (KeyError, TypeError, ValueError):
            continue
        if 1 <= q <= qualities and bpp > 0 and math.isfinite(bpp):
            seeds[q] = bpp
    return seeds


class RateControl:
    """Picks qualities 1..``qualities`` to hold ``target_kbps``; see the module docstring.

    ``ewma``: weight of a new measurement in a quality's bpp estimate. ``rate_window_s``: the
    input frame rate is measured over this many seconds of arrivals. ``bucket_s``: the leaky
    bucket holds at most this many seconds of budget either way. ``payback_s``: an over- or
    under-spent bucket is evened out over this many seconds of frames. ``window_s``: the
    achieved rate is measured over this many seconds of coded frames.
    """

    def __init__(self, qualities: int, operating_points: Iterable[dict] = (), ewma: float = 0.3,
                 rate_window_s: float = 2.0, bucket_s: float = 1.0, payback_s: float = 1.0, window_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        if int(qualities) < 1:
            raise ValueError("qualities must be >= 1, got %r" % (qualities,))
        if not 0 < ewma <= 1:
            raise ValueError("ewma must be in (0, 1], got %r" % (ewma,))
        self.qualities = int(qualities)
        self.ewma = float(ewma)
        self.rate_window_s = float(rate_window_s)
        self.bucket_s = float(bucket_s)
        self.payback_s = float(payback_s)
        self.window_s = float(window_s)
        self.clock = clock
        self.seeded = seed_bpp(operating_points, self.qualities)
        self._lock = threading.Lock()
        self._bpp: Dict[int, float] = dict(self.seeded)
        self._target_bps = 0.0
        self._level = 0.0  # bits sent minus bits allowed: > 0 overspent
        self._last_coded: Optional[float] = None
        self._last_fps = 0.0  # the last frame rate measured (a pause empties the window)
        self._arrivals: Deque[float] = deque()
        self._sent: Deque[Tuple[float, int]] = deque()  # (time, bits) of coded frames
        self.quality = 0  # the last frame's
        self.frames = 0

    # -- settings --------------------------------------------------------------------------

    @property
    def target_kbps(self) -> float:
        return self._target_bps / 1000.0

    def set_target(self, kbps) -> None:
        """A new budget (0: off); a changed one starts with an empty bucket."""
        kbps = check_target_kbps(kbps)
        with self._lock:
            if kbps * 1000.0 != self._target_bps:
                self._target_bps = kbps * 1000.0
                self._level = 0.0
                self._last_coded = None

    # -- measurements ----------------------------------------------------------------------

    def arrived(self, now: Optional[float] = None) -> None:
        """One input frame (every frame received, coded or not)."""
        now = self.clock() if now is None else now
        with self._lock:
            self._arrivals.append(now)
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._arrivals and self._arrivals[0] < now - self.rate_window_s:
            self._arrivals.popleft()
        while self._sent and self._sent[0][0] < now - self.window_s:
            self._sent.popleft()

    def _frame_rate(self) -> float:
        if len(self._arrivals) < 2 or self._arrivals[-1] <= self._arrivals[0]:
            return 0.0
        return (len(self._arrivals) - 1) / (self._arrivals[-1] - self._arrivals[0])

    def _budget_rate(self) -> float:
        """The frame rate the budget is shared by: the measured one, else the last one."""
        fps = self._frame_rate()
        if fps > 0:
            self._last_fps = fps
        return self._last_fps

    def frame_rate(self) -> float:
        """The input frame rate in Hz over the last ``rate_window_s`` (0: not known yet)."""
        with self._lock:
            self._trim(self.clock())
            return self._frame_rate()

    def _achieved_bps(self) -> float:
        if len(self._sent) < 2 or self._sent[-1][0] <= self._sent[0][0]:
            return 0.0
        # n frames span n - 1 intervals: the bits of the frames after the first
        return sum(bits for _, bits in list(self._sent)[1:]) / (self._sent[-1][0] - self._sent[0][0])

    def achieved_kbps(self) -> float:
        """The codes' rate in kbit/s over the last ``window_s`` of coded frames."""
        with self._lock:
            self._trim(self.clock())
            return self._achieved_bps() / 1000.0

    # -- the decision ----------------------------------------------------------------------

    def predicted_bits(self, quality: int, pixels: int) -> Optional[float]:
        with self._lock:
            bpp = self._bpp.get(int(quality))
        return None if bpp is None else bpp * pixels

    def budget_bits(self, now: Optional[float] = None) -> Optional[float]:
        """The next frame's bits: the budget at the input frame rate, less a share of the
        bucket's level; None while the frame rate is not known."""
        now = self.clock() if now is None else now
        with self._lock:
            self._trim(now)
            return self._budget_bits()

    def _budget_bits(self) -> Optional[float]:
        fps = self._budget_rate()
        if fps <= 0:
            return None
        return self._target_bps / fps - self._level / max(1.0, fps * self.payback_s)

    def choose(self, pixels: int, now: Optional[float] = None) -> int:
        """The quality of the next frame of ``pixels`` pixels (the budget must be set)."""
        now = self.clock() if now is None else now
        with self._lock:
            if self._target_bps <= 0:
                raise ValueError("no bit budget set (target_kbps 0)")
            self._trim(now)
            if len(self._bpp) < self.qualities:
                return self.qualities  # measures every quality at once
            budget = self._budget_bits()
            if budget is None:
                return 1  # the first frame ever: the frame rate is not known yet
            fitting = [q for q in range(1, self.qualities + 1) if self._bpp[q] * pixels <= budget]
            return max(fitting) if fitting else 1

    def coded(self, quality: int, sizes: Dict[int, int], pixels: int, now: Optional[float] = None) -> None:
        """A frame went out at ``quality``; ``sizes``: the bytes of its stream cut to each
        quality up to ``quality`` (``sizes[quality]`` is what was sent)."""
        now = self.clock() if now is None else now
        quality = int(quality)
        if pixels <= 0 or quality not in sizes:
            raise ValueError("coded() needs the sent quality's size and pixels > 0")
        with self._lock:
            before = self._bpp.get(quality)
            for q, nbytes in sizes.items():
                bpp = 8.0 * nbytes / pixels
                old = self._bpp.get(q)
                self._bpp[q] = bpp if old is None else (1.0 - self.ewma) * old + self.ewma * bpp
            if before:  # higher qualities, not measured by this frame, follow the highest one that was
                factor = self._bpp[quality] / before
                for q in range(quality + 1, self.qualities + 1):
                    if q in self._bpp:
                        self._bpp[q] *= factor
            bits = 8 * int(sizes[quality])
            if self._target_bps > 0:
                fps = self._budget_rate()
                if fps <= 0:
                    allowed = float(bits)  # the first frame of a stream: nothing to compare with
                elif self._last_coded is None:
                    allowed = self._target_bps / fps
                else:
                    allowed = self._target_bps * min(now - self._last_coded, 2.0 / fps)
                cap = self._target_bps * self.bucket_s
                self._level = min(cap, max(-cap, self._level + bits - allowed))
                self._last_coded = now
            self._sent.append((now, bits))
            self._trim(now)
            self.quality = quality
            self.frames += 1

    # -- reporting -------------------------------------------------------------------------

    def status(self, pixels: Optional[int] = None) -> Dict[str, str]:
        """Diagnostics values: the target, the achieved rate, the frame rate, the last
        quality, the bucket, the estimates; whether the lowest quality fits the budget."""
        now = self.clock()
        with self._lock:
            self._trim(now)
            fps = self._frame_rate()
            out = {
                "target (kbps)": "%.1f" % (self._target_bps / 1000.0),
                "achieved (kbps)": "%.1f" % (self._achieved_bps() / 1000.0),
                "frame rate (Hz)": "%.2f" % fps,
                "quality": str(self.quality) if self.frames else "-",
                "bpp by quality": ", ".join("%d: %.4f" % (q, self._bpp[q]) for q in sorted(self._bpp)) or "-",
            }
            if self._target_bps > 0:
                out["bucket (kbit)"] = "%.1f" % (self._level / 1000.0)
                lowest = self._bpp.get(1)
                if pixels and lowest and fps > 0 and lowest * pixels * fps > self._target_bps:
                    out["budget"] = ("not met: quality 1 needs %.1f kbps at %.2f Hz"
                                     % (lowest * pixels * fps / 1000.0, fps))
                else:
                    out["budget"] = "met" if self.frames else "-"
        return out


__all__ = ["RateControl", "check_target_kbps", "seed_bpp"]
