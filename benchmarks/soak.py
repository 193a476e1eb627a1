"""Soak: the encoder and decoder nodes on a real roscore for a long run; does memory grow?

    python benchmarks/soak.py [--minutes 30] [--max-frames 100000] [--warmup-minutes 5]
        [--max-slope 12] [--model models/default] [--out build/soak]

    roscore (127.0.0.1, a free port) + pipeline.launch (encoder_node, decoder_node)
    this script: publishes RAW frames (vtest.avi, unprocessed as in `make demo`) on
    /camera/image_raw, one in flight: the next when the last came back decoded (or after
    a timeout), so the pipeline runs at the rate it sustains, with nothing queued up
    every --sample-s (10 s): the nodes' resident sets (VmRSS of their processes), the
    round-trip latency of the frames since the last sample, the nodes' /diagnostics

It ends after ``--minutes`` or ``--max-frames`` frames, whichever comes first, writes
``soak.json`` and ``soak.png`` (RSS and latency over time) to ``--out``, and fails (exit 1)
when a node's RSS keeps growing after the warm-up: the Theil-Sen slope of its samples
after ``--warmup-minutes`` above ``--max-slope`` MiB per hour (default 30: 15 MiB over
the 25 minutes after the default warm-up; a decoded 768x576 frame is 1.3 MB, so keeping
one in a hundred, 80 MiB an hour at 1.7 frames a second, would exceed it), or when a node
died, or when frames went missing from the nodes' accounting (received = published +
dropped + rejected + failed). Everything runs on the loopback interface, and everything
started here is stopped before it exits.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODES = {"encoder": "/camera/rawdiff_encoder", "decoder": "/rawdiff_decoder"}


def node_pid(name: str) -> int:
    """The process id of a ROS node, asked from the node itself (XML-RPC getPid)."""
    import xmlrpc.client

    import rosgraph
    import rosnode

    uri = rosnode.get_api_uri(rosgraph.Master("/rawdiff_soak"), name, skip_cache=True)
    if not uri:
        raise RuntimeError("node %s is not registered" % name)
    code, msg, pid = xmlrpc.client.ServerProxy(uri).getPid("/rawdiff_soak")
    if code != 1:
        raise RuntimeError("node %s: getPid failed: %s" % (name, msg))
    return int(pid)


def rss_mib(pid: int) -> float:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("process %d has no VmRSS" % pid)


def slope_per_hour(times_s: List[float], values: List[float]) -> float:
    """Theil-Sen slope of ``values`` over ``times_s`` (the median of the slopes between all
    pairs of samples), per hour: robust to the allocator's ups and downs of a few tens of
    MiB, which move a least-squares line over a short window."""
    if len(times_s) < 3:
        return float("nan")
    t, v = np.asarray(times_s, dtype=np.float64) / 3600.0, np.asarray(values, dtype=np.float64)
    i, j = np.triu_indices(len(t), k=1)
    dt = t[j] - t[i]
    keep = dt > 0
    return float(np.median((v[j] - v[i])[keep] / dt[keep]))


def frames(count: int) -> List:
    """RAW image messages of the demo's camera (vtest.avi, unprocessed)."""
    import rosbag

    from rawdiff.ros.tools.demo import make_bag

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "soak.bag")
        make_bag(path, frames=count)
        with rosbag.Bag(path) as bag:
            return [m for _, m, _ in bag.read_messages()]


class Loop:
    """Publishes a frame, waits for its decoded image (by stamp), publishes the next."""

    def __init__(self, rospy, images, timeout_s: float):
        from sensor_msgs.msg import Image

        self.rospy = rospy
        self.images = images
        self.timeout_s = timeout_s
        self.pub = rospy.Publisher("/camera/image_raw", Image, queue_size=2)
        self.sub = rospy.Subscriber("/camera/image_decoded", Image, self._decoded, queue_size=None,
                                    buff_size=1 << 26)
        self._cond = threading.Condition()
        self._waiting = None
        self._arrived = False
        self.sent = self.decoded = self.timeouts = 0
        self.latencies: List[float] = []

    def _decoded(self, msg) -> None:
        with self._cond:
            if self._waiting is not None and msg.header.stamp == self._waiting:
                self._arrived = True
                self._cond.notify()

    def step(self) -> None:
        msg = self.images[self.sent % len(self.images)]
        msg.header.stamp = self.rospy.Time.from_sec(1700000000.0 + self.sent * 0.1)
        with self._cond:
            self._waiting, self._arrived = msg.header.stamp, False
        start = time.monotonic()
        self.pub.publish(msg)
        self.sent += 1
        with self._cond:
            self._cond.wait_for(lambda: self._arrived, self.timeout_s)
            arrived = self._arrived
        if arrived:
            self.decoded += 1
            self.latencies.append(time.monotonic() - start)
        else:
            self.timeouts += 1


def run(args) -> Dict:
    from rawdiff.ros.tools.demo import _diagnostics_listener, _find
    from rawdiff.ros.tools.processes import Process, ros_environment, start_roscore, wait_for

    os.makedirs(args.out, exist_ok=True)
    images = frames(args.frames)
    env = ros_environment(os.path.join(args.out, "ros"))
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
    core = start_roscore(env, os.path.join(args.out, "roscore.log"))
    launch = None
    samples: List[Dict] = []
    loop = None
    counters: Dict[str, Dict[str, int]] = {}
    failure = ""
    # a SIGTERM (a CI timeout, a kill) ends the run through the finally below: no roscore left behind
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit("soak: terminated by signal %d" % signum))
    try:
        os.environ.update({k: env[k] for k in ("ROS_MASTER_URI", "ROS_HOME", "ROS_LOG_DIR", "ROS_HOSTNAME")})
        import rospy

        rospy.init_node("rawdiff_soak", anonymous=False, disable_signals=True)
        latest, _ = _diagnostics_listener(rospy)
        launch = Process(["roslaunch", "--screen", "rawdiff", "pipeline.launch", "model:=" + args.model,
                          "black_level:=256", "white_level:=4095"], os.path.join(args.out, "pipeline.log"), env)
        pids = wait_for(lambda: _pids(launch), 300, 1.0, "the encoder and decoder nodes")
        loop = Loop(rospy, images, args.frame_timeout_s)
        wait_for(lambda: loop.pub.get_num_connections() > 0 and loop.sub.get_num_connections() > 0, 120, 0.2,
                 "the nodes to connect")
        started = time.monotonic()
        next_sample = started
        last_latency = 0
        while True:
            now = time.monotonic()
            if now >= next_sample:
                try:
                    launch.check_alive()
                except RuntimeError as exc:
                    failure = "the pipeline died after %.0f s: %s" % (now - started, str(exc)[-600:])
                    break
                window = loop.latencies[last_latency:]
                last_latency = len(loop.latencies)
                samples.append({
                    "t_s": now - started, "frames": loop.sent, "decoded": loop.decoded, "timeouts": loop.timeouts,
                    "rss_mib": {k: rss_mib(pid) for k, pid in pids.items()},
                    "latency_ms": 1000.0 * float(np.mean(window)) if window else None,
                    "latency_ms_max": 1000.0 * float(np.max(window)) if window else None})
                s = samples[-1]
                print("soak: %5.0f s, %d frames (%d timeouts), RSS encoder %.0f MiB, decoder %.0f MiB, latency %s ms"
                      % (s["t_s"], s["frames"], s["timeouts"], s["rss_mib"]["encoder"], s["rss_mib"]["decoder"],
                         "-" if s["latency_ms"] is None else "%.0f" % s["latency_ms"]), flush=True)
                next_sample += args.sample_s
                if now - started >= 60.0 * args.minutes or loop.sent >= args.max_frames:
                    break
            loop.step()
        time.sleep(2.0)  # a last diagnostics period
        counters = {k: _counters(_find(latest, name.rsplit("/", 1)[-1])) for k, name in NODES.items()}
    finally:
        if launch is not None:
            launch.stop()
        core.stop()
    return summarize(args, samples, loop, counters, failure)


def _pids(launch) -> Optional[Dict[str, int]]:
    launch.check_alive()
    try:
        return {k: node_pid(name) for k, name in NODES.items()}
    except Exception:  # not up yet
        return None


def _counters(values: Dict[str, str]) -> Dict[str, int]:
    return {k: int(values.get("frames " + k) or 0) for k in ("received", "published", "dropped", "rejected", "failed")}


def summarize(args, samples: List[Dict], loop, counters: Dict[str, Dict[str, int]], failure: str = "") -> Dict:
    warm = [s for s in samples if s["t_s"] >= 60.0 * args.warmup_minutes]
    slopes = {k: slope_per_hour([s["t_s"] for s in warm], [s["rss_mib"][k] for s in warm]) for k in NODES}
    growing = {k: v for k, v in slopes.items() if v == v and v > args.max_slope}
    unaccounted = {k: c["received"] - c["published"] - c["dropped"] - c["rejected"] - c["failed"]
                   for k, c in counters.items()}
    latencies = [1000.0 * x for x in loop.latencies] if loop else []
    summary = {
        "minutes": samples[-1]["t_s"] / 60.0 if samples else 0.0, "frames": loop.sent if loop else 0,
        "decoded": loop.decoded if loop else 0, "timeouts": loop.timeouts if loop else 0,
        "fps": (loop.decoded / samples[-1]["t_s"]) if samples and samples[-1]["t_s"] > 0 else 0.0,
        "latency_ms_median": float(np.median(latencies)) if latencies else None,
        "latency_ms_p99": float(np.percentile(latencies, 99)) if latencies else None,
        "rss_mib_first": samples[0]["rss_mib"] if samples else {},
        "rss_mib_last": samples[-1]["rss_mib"] if samples else {},
        "slope_mib_per_hour": slopes, "max_slope": args.max_slope, "warmup_minutes": args.warmup_minutes,
        "counters": counters, "unaccounted": unaccounted, "growing": sorted(growing), "failure": failure,
        "samples": samples,
    }
    summary["ok"] = not failure and not growing and not any(unaccounted.values()) and bool(warm)
    with open(os.path.join(args.out, "soak.json"), "w") as f:
        json.dump(summary, f, indent=1)
    plot(summary, os.path.join(args.out, "soak.png"))
    return summary


def plot(summary: Dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = summary["samples"]
    if not samples:
        return
    t = [s["t_s"] / 60.0 for s in samples]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for k in NODES:
        top.plot(t, [s["rss_mib"][k] for s in samples], label="%s (%.1f MiB/h after warm-up)"
                 % (k, summary["slope_mib_per_hour"][k]))
    top.axvline(summary["warmup_minutes"], color="grey", linestyle=":")
    top.set_ylabel("RSS (MiB)")
    top.legend()
    bottom.plot(t, [s["latency_ms"] for s in samples], label="round trip, mean over 10 s")
    bottom.plot(t, [s["latency_ms_max"] for s in samples], label="max over 10 s", alpha=0.6)
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("minutes")
    bottom.legend()
    fig.suptitle("rawdiff soak: %d frames in %.0f min, %.2f frames/s" % (summary["decoded"], summary["minutes"],
                                                                       summary["fps"]))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--max-frames", type=int, default=100000)
    parser.add_argument("--warmup-minutes", type=float, default=5.0)
    parser.add_argument("--max-slope", type=float, default=30.0, help="MiB per hour a node may grow after warm-up")
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--frames", type=int, default=8, help="distinct RAW frames, published in turn")
    parser.add_argument("--frame-timeout-s", type=float, default=30.0)
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "default"))
    parser.add_argument("--out", default=os.path.join(ROOT, "build", "soak"))
    args = parser.parse_args(argv)
    args.model, args.out = os.path.abspath(args.model), os.path.abspath(args.out)
    summary = run(args)
    print("soak: %d frames in %.1f min (%.2f frames/s, %d timeouts), latency median %s ms, p99 %s ms"
          % (summary["frames"], summary["minutes"], summary["fps"], summary["timeouts"],
             "%.0f" % summary["latency_ms_median"] if summary["latency_ms_median"] else "-",
             "%.0f" % summary["latency_ms_p99"] if summary["latency_ms_p99"] else "-"))
    for k in NODES:
        print("soak: %s RSS %.0f -> %.0f MiB, %+.1f MiB/h after %.0f min of warm-up (limit %.0f); counters %s"
              % (k, summary["rss_mib_first"].get(k, 0), summary["rss_mib_last"].get(k, 0),
                 summary["slope_mib_per_hour"][k], args.warmup_minutes, args.max_slope, summary["counters"].get(k)))
    if summary["failure"]:
        print("soak: %s" % summary["failure"])
    print("soak: %s; %s" % ("PASS" if summary["ok"] else "FAIL", os.path.join(args.out, "soak.png")))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
