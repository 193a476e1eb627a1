"""Stopping a process tree (rawdiff.ros.tools.processes, what `make demo` and the ROS tests
start roslaunch with): what was below it is stopped too, even in a session of its own."""

import os
import subprocess

from rawdiff.ros.tools.processes import Process, descendants, stop_process, wait_for


def _alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has stopped
    except OSError:
        return False


def test_stop_kills_what_was_below_it_in_a_session_of_its_own(tmp_path):
    """As roslaunch starts its nodes (setsid): a parent that does not stop on SIGINT, killed
    after the timeout, would leave such a child running; stop kills it."""
    pidfile = tmp_path / "child.pid"
    script = "trap '' INT; setsid sleep 300 & echo $! > %s; wait" % pidfile
    proc = Process(["bash", "-c", script], str(tmp_path / "log"))
    child = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, what="the child's pid"))
    assert _alive(child) and os.getpgid(child) != proc.proc.pid  # not in the group a group kill reaches
    assert child in [pid for pid, _ in descendants(proc.proc.pid)]
    stop_process(proc.proc, timeout=0.5)
    wait_for(lambda: not _alive(child), 5, what="the child to stop")
    assert proc.proc.returncode is not None


def test_descendants_lists_the_children_while_they_run():
    parent = subprocess.Popen(["bash", "-c", "sleep 30 & wait"])
    try:
        (child, started), = wait_for(lambda: descendants(parent.pid), 10, what="the child")
        assert started and child != parent.pid
    finally:
        subprocess.run(["pkill", "-P", str(parent.pid)])
        parent.wait(10)
    assert descendants(parent.pid) == []
