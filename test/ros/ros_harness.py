"""Helpers of the ROS integration tests: processes, waiting, collecting messages,
diagnostics, RAW image messages. Fixtures are in conftest.py."""

import os
import shutil
import threading
import time
import xmlrpc.client

import numpy as np

from rawdiff.ros.tools.processes import Process, free_port, stop_process, wait_for  # noqa: F401 (re-exported)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE_MODEL = os.path.join(REPO, "test", "fixtures", "model")
LAUNCH = os.path.join(REPO, "launch")


def ros_unavailable() -> str:
    """Why the ROS tests cannot run here, or "" when they can."""
    if shutil.which("roscore") is None or shutil.which("roslaunch") is None:
        return "roscore/roslaunch not on PATH (source build/env.sh)"
    try:
        import rospy  # noqa: F401

        from rawdiff.msg import CompressedCodes  # noqa: F401
    except ImportError as exc:
        return "ROS Python packages or the built message are missing (%s); source build/env.sh" % exc
    return ""


class Launch(Process):
    """``roslaunch FILE args...`` in its own process group, output to a log file."""

    def __init__(self, log_dir, name: str, launch_file: str, *args: str):
        # One torch thread per node: two nodes with a thread per core each, beside other
        # work on a small CI machine, make OpenMP's spinning threads 10-100x slower.
        env = dict(os.environ, OMP_NUM_THREADS="1")
        super().__init__(["roslaunch", "--screen", launch_file] + list(args),
                         os.path.join(str(log_dir), "%s.log" % name), env)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError("roslaunch exited (%s):\n%s" % (self.proc.returncode, self.output()[-4000:]))

    def stop(self) -> None:
        super().stop()
        try:
            forget_dead_nodes()
        except Exception as exc:  # the master gone, a reused port answering junk: nothing to forget then
            print("forget_dead_nodes: %s" % exc)


class _TimedTransport(xmlrpc.client.Transport):
    def __init__(self, timeout: float):
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host):
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


def forget_dead_nodes(timeout: float = 2.0) -> list:
    """Unregister from the master every node whose address refuses connections (nothing
    listens there any more); returns their names. A node killed before it unregistered stays
    on the master under its name and address; when a node of the same name registers later
    (the next test's launch), the master tells that old address to shut down, and if the
    system has since given its port to another of the new launch's nodes, that node is the one
    that stops. Called as each launch stops, while its ports are still closed."""
    import rosgraph
    import rosnode

    master = rosgraph.Master("/rawdiff_test_cleanup")
    dead = []
    for name in rosnode.get_node_names():
        uri = rosnode.get_api_uri(master, name, skip_cache=True)
        if not uri:
            continue
        try:
            xmlrpc.client.ServerProxy(uri, transport=_TimedTransport(timeout)).getPid("/rawdiff_test_cleanup")
        except ConnectionRefusedError:  # nothing listens there: a busy node that is slow to answer is not dead
            dead.append(name)
        except Exception:  # it answered, or something else now holds the port
            pass
    if dead:
        rosnode.cleanup_master_blacklist(master, dead)
    return dead


class Collector:
    """Subscribes and keeps every message (rospy queue off: nothing is dropped here)."""

    def __init__(self, rospy, topic: str, msg_type):
        self.msgs = []
        self.times = []
        self._lock = threading.Lock()
        self.sub = rospy.Subscriber(topic, msg_type, self._cb, queue_size=None, buff_size=1 << 26)

    def _cb(self, msg):
        with self._lock:
            self.msgs.append(msg)
            self.times.append(time.monotonic())

    def __len__(self):
        with self._lock:
            return len(self.msgs)

    def since(self, n: int):
        with self._lock:
            return list(self.msgs[n:])

    def unregister(self):
        self.sub.unregister()


class Diagnostics:
    """The latest DiagnosticStatus per name from /diagnostics, with arrival times."""

    def __init__(self, rospy):
        from diagnostic_msgs.msg import DiagnosticArray

        self.latest = {}
        self._lock = threading.Lock()
        self.sub = rospy.Subscriber("/diagnostics", DiagnosticArray, self._cb, queue_size=None)

    def _cb(self, msg):
        now = time.monotonic()
        with self._lock:
            for status in msg.status:
                self.latest[status.name] = (now, status)

    def values(self, name_part: str, newer_than: float = 0.0):
        """``{key: value}`` of the status whose name contains ``name_part``, if it arrived
        after ``newer_than`` (a ``time.monotonic()``), else None."""
        from rawdiff.ros.diagnostics import status_values

        with self._lock:
            for name, (t, status) in self.latest.items():
                if name_part in name and t > newer_than and status.values:
                    out = status_values(status)
                    out["_level"] = status.level
                    out["_message"] = status.message
                    return out
        return None

    def fresh(self, name_part: str, timeout: float = 10.0):
        """Wait for a status published after now (it sees everything done before)."""
        start = time.monotonic()
        return wait_for(lambda: self.values(name_part, start), timeout, what="diagnostics of %s" % name_part)


COUNTERS = ("received", "published", "dropped", "rejected", "failed")


def frame_counters(values):
    """``{received, published, dropped, rejected, failed}`` of a node's diagnostics values."""
    return {k: int(values["frames " + k]) for k in COUNTERS}


def accounted_for(counters) -> bool:
    """Whether every frame the node received is accounted for, none queued or in work
    (:mod:`rawdiff.ros.node`): received == published + dropped + rejected + failed."""
    return counters["received"] == (counters["published"] + counters["dropped"] + counters["rejected"]
                                     + counters["failed"])


def in_order(items, sent) -> bool:
    """Whether the headers of ``items`` are those of ``sent``, in order, some perhaps left out."""
    rest = iter([(m.header.stamp, m.header.frame_id) for m in sent])
    return all((m.header.stamp, m.header.frame_id) in rest for m in items)


def bayer_image(h=128, w=160, encoding="bayer_rggb16", stamp=None, frame_id="cam0", seed=0):
    """A ``sensor_msgs/Image`` with a smooth random RAW mosaic (12-bit values in 16 bits)."""
    import rospy
    from sensor_msgs.msg import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    mosaic = (800 + 600 * np.sin(xx / 9.0 + seed) + 500 * np.cos(yy / 7.0) + rng.normal(0, 40, (h, w)))
    mosaic = np.clip(mosaic, 0, 4095)
    msg = Image()
    msg.header.stamp = stamp if stamp is not None else rospy.Time(1700000000, 0)
    msg.header.frame_id = frame_id
    msg.height, msg.width, msg.encoding, msg.is_bigendian = h, w, encoding, 0
    if encoding.endswith("8"):
        msg.data = (mosaic / 16).astype(np.uint8).tobytes()
        msg.step = w
    else:
        msg.data = mosaic.astype("<u2").tobytes()
        msg.step = 2 * w
    return msg
