"""One Ray task per log file: a local Ray started and stopped here, or a cluster joined.

    run_collection(jobs, options, workers=N)        ray.init(num_cpus=N) ... ray.shutdown()
    run_collection(jobs, options, address=ADDR)     joins the cluster at ADDR, leaves it after
        --> [result per job] (rawdiff.ros.collection.transcode_file), a progress bar meanwhile

Each task asks for one CPU and runs :func:`rawdiff.ros.collection.transcode_file`, which
turns every problem of its file into a failed result; the tasks are not retried (a file
that failed once fails again, and a rerun picks it up). A worker process that dies (the
out-of-memory killer, a crash in native code) is one failed file as well. The local Ray
of the command has no dashboard and keeps the workers' output in its session logs
(``/tmp/ray/session_latest/logs``), not on the terminal: the command prints the progress
bar and the summary. Joining a cluster needs rawdiff (and the model directory's path) on
every node.

An interrupt (Ctrl-C) cancels the tasks, stops the local Ray, removes the temporary files
of the outputs that were being written and re-raises; outputs already renamed into place
stay, and a rerun skips them.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Any, Dict, List, Optional

from rawdiff.ros.collection import Job, new_result, remove_stale_parts, transcode_file

LOCAL_HOST = "127.0.0.1"
#: Object store of the local Ray: results are a few hundred bytes each.
OBJECT_STORE_BYTES = 100 * 1024 * 1024


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A ``HOST:PORT`` address answers a TCP connection within ``timeout_s``; else a one-line
    ``ValueError`` now (``ray.init`` would retry for minutes). Other forms (``auto``,
    ``ray://...``) are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or "/" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ValueError("cannot reach the Ray cluster at %s: %s" % (address, exc.strerror or exc)) from None


def start_ray(workers: int = 1, address: Optional[str] = None) -> str:
    """Start a local Ray with ``workers`` CPUs, or join the cluster at ``address``; returns
    a description for the summary. ``ValueError`` when the cluster cannot be reached."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine
    # errors only: its start-up notes (token authentication, resources) are not the command's output
    common = {"log_to_driver": False, "configure_logging": True, "logging_level": logging.ERROR}
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ValueError("cannot join the Ray cluster at %s: %s" % (address, " ".join(str(exc).split()))) \
                from None
        cpus = int(ray.cluster_resources().get("CPU", 0))
        return "Ray cluster %s (%d CPUs)" % (address, cpus)
    if workers < 1:
        raise ValueError("--workers must be at least 1, got %d" % workers)
    # on the loopback interface: a local Ray serves this process only
    ray.init(num_cpus=workers, include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES,
             _node_ip_address=LOCAL_HOST, **common)
    return "%d worker%s (local Ray)" % (workers, "" if workers == 1 else "s")


def stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def run_collection(jobs: List[Job], options: Dict[str, Any], progress: bool = True) -> List[Dict[str, Any]]:
    """One task per job on the Ray this process is connected to (:func:`start_ray`); the
    results in the order the files finish."""
    import ray
    from tqdm import tqdm

    task = ray.remote(num_cpus=1, max_retries=0)(transcode_file)
    pending = {task.remote(job, options): job for job in jobs}
    results: List[Dict[str, Any]] = []
    frames = failed = 0
    try:
        with tqdm(total=len(jobs), unit="file", desc="%s" % options["verb"], file=sys.stderr,
                  disable=not progress or None, dynamic_ncols=True) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in done:
                    job = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # the worker died, not the file's code
                        first = (str(exc).strip().splitlines() or [""])[0]
                        result = new_result(job, error="its task failed: %s: %s" % (type(exc).__name__, first))
                    results.append(result)
                    frames += result["frames"]
                    failed += result["status"] == "failed"
                    bar.update(1)
                    bar.set_postfix(frames=frames, failed=failed, refresh=False)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        stop_ray()
        for job in pending.values():  # what the killed tasks were writing
            remove_stale_parts(job.output)
        raise
    return results


__all__ = ["OBJECT_STORE_BYTES", "run_collection", "start_ray", "stop_ray"]
