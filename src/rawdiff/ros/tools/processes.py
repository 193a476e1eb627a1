"""Running ROS processes from Python: a private roscore on a free port and roslaunch, each
in its own process group so that stopping them stops everything they started. (roslaunch
starts each node in a session of its own and stops them itself on SIGINT; what it leaves
running, if it is killed first, is killed after it: :func:`stop_process`.)

Used by ``make demo`` (:mod:`rawdiff.ros.tools.demo`) and the integration tests (test/ros).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import Callable, Dict, List, Optional, Tuple


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns something true; AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))


def _stat(pid: str) -> Optional[Tuple[int, str]]:
    """(parent pid, start time) of a process from /proc, or None when it is gone."""
    try:
        with open("/proc/%s/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command, which may hold spaces
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[19]


def descendants(pid: int) -> List[Tuple[int, str]]:
    """(pid, start time) of every process below ``pid`` now (Linux /proc; none elsewhere)."""
    children: Dict[int, List[Tuple[int, str]]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if name.isdigit():
            st = _stat(name)
            if st is not None:
                children.setdefault(st[0], []).append((int(name), st[1]))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def _running(processes: List[Tuple[int, str]]) -> List[int]:
    """The pids of ``processes`` (pid, start time) still running: the same process, not one
    that took its pid since."""
    return [pid for pid, started in processes if (_stat(str(pid)) or (0, None))[1] == started]


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGINT to the process group (roslaunch then stops its nodes), SIGKILL after ``timeout``
    to the group and to every process that was below it while it ran and still runs then
    (roslaunch's nodes have sessions of their own: had roslaunch died before it stopped them,
    they would go on; a process that had already died leaves none to find)."""
    deadline = time.monotonic() + timeout
    below: List[int] = []
    if proc.poll() is None:
        below = descendants(proc.pid)
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            below = list(dict.fromkeys(below + descendants(proc.pid)))  # and what it started since
    try:  # leftovers of the group
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while _running(below) and time.monotonic() < deadline:  # the rest of the timeout to stop on their own
        time.sleep(0.1)
    for pid in _running(below):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(5)


def ros_environment(root: str, port: Optional[int] = None) -> Dict[str, str]:
    """Environment of a private ROS graph: master on ``port`` (free if None), ROS_HOME and
    logs under ``root``, loopback only."""
    port = port or free_port()
    env = dict(os.environ, ROS_MASTER_URI="http://127.0.0.1:%d" % port, ROS_HOME=os.path.join(root, "home"),
               ROS_LOG_DIR=os.path.join(root, "log"), ROS_HOSTNAME="127.0.0.1")
    env.pop("ROS_IP", None)
    return env


class Process:
    """A command in its own process group with its output in ``log_path``."""

    def __init__(self, args, log_path: str, env: Optional[Dict[str, str]] = None):
        self.args = list(args)
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=env)

    def output(self) -> str:
        self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError("%s exited (%s):\n%s" % (self.args[0], self.proc.returncode, self.output()[-4000:]))

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


def start_roscore(env: Dict[str, str], log_path: str, timeout: float = 60.0) -> Process:
    """roscore on the port of ``env["ROS_MASTER_URI"]``; returns once the master answers."""
    import rosgraph

    port = env["ROS_MASTER_URI"].rsplit(":", 1)[1]
    core = Process(["roscore", "-p", port], log_path, env)
    saved = os.environ.get("ROS_MASTER_URI")
    os.environ["ROS_MASTER_URI"] = env["ROS_MASTER_URI"]

    def up():
        core.check_alive()
        try:
            return rosgraph.Master("/rawdiff_probe").getPid()
        except Exception:  # not answering yet
            return None

    try:
        wait_for(up, timeout, 0.2, "roscore on port %s" % port)
    except BaseException:
        core.stop()
        raise
    finally:
        if saved is None:
            os.environ.pop("ROS_MASTER_URI", None)
        else:
            os.environ["ROS_MASTER_URI"] = saved
    return core
