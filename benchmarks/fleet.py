"""Fleet: a collection of logs transcoded on Ray, with 1 and 2 workers, then killed midway and resumed.

    python benchmarks/fleet.py [--corpus data/corpus] [--model models/default] [--backend onnx]
                               [--bags 20] [--mcap 4] [--frames 12] [--size 384x512]
                               [--work DIR] [--json OUT]

1. A collection is made from the corpus frames (``make data`` builds ``data/corpus``): ``--bags``
   ROS 1 bags and ``--mcap`` MCAP files in three folders, each with ``--frames`` RAW frames
   (``bayer_<cfa>16``, cropped to ``--size`` from the corpus mosaics, stamped 10 Hz,
   every stamp unique in the collection) and a GPS string topic beside them.
2. ``rawdiff bag encode LOGS --out-dir OUT --workers 1`` and ``--workers 2``, each into a
   fresh folder, each a child process timed from start to exit (Ray's start and stop
   included): frames per second and the speed-up of 2 workers over 1.
3. The same with 2 workers into a third folder, killed (SIGKILL to the command and every
   process of its Ray) once half the outputs are there; the temporary files it leaves are
   counted; then the same command again. Every output is checked against its input: the
   stamps of the codes, in order, equal the frames' (none lost, none twice), the other
   topic is complete, and no temporary file is left.

Prints the results as JSON, then as a markdown table, on stdout; progress goes to stderr.
Times are single runs on whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPIC = "/camera/image_raw"
LEVELS = ["--black-level", "256", "--white-level", "4095"]  # the corpus frames' (data/corpus/*/frame.json)


def log(text: str) -> None:
    print("fleet: %s" % text, file=sys.stderr, flush=True)


def corpus_frames(corpus: str, height: int, width: int) -> List:
    """RawFrames of the corpus cropped to height x width at the top left (the CFA unchanged),
    from every mosaic large enough."""
    from rawdiff.raw import read_raw

    paths = sorted(glob.glob(os.path.join(corpus, "frames", "*", "*.npy")))
    if not paths:
        raise SystemExit("no frames in %s; run `make data` first" % corpus)
    frames = []
    for path in paths:
        frame = read_raw(path)
        if frame.height >= height and frame.width >= width:
            frames.append(frame.copy(mosaic=frame.mosaic[:height, :width].copy()))
    if not frames:
        raise SystemExit("no corpus frame is %dx%d or larger; give a smaller --size" % (height, width))
    return frames


def make_collection(folder: str, frames: List, bags: int, mcaps: int, per_log: int) -> Dict[str, List[int]]:
    """The logs, in three day folders; returns {relative path: [stamp in ns, ...]}."""
    import rospy
    from std_msgs.msg import String

    from rawdiff.ros.conversions import frame_to_image
    from rawdiff.ros.logs import Record, create_log

    stamps: Dict[str, List[int]] = {}
    for i in range(bags + mcaps):
        suffix = ".mcap" if i >= bags else ".bag"
        rel = os.path.join("day%d" % (i % 3 + 1), "drive%02d%s" % (i, suffix))
        path = os.path.join(folder, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        start_ns = (1700000000 + 3600 * i) * 10**9
        stamps[rel] = []
        with create_log(path, "mcap" if suffix == ".mcap" else "bag") as out:
            for k in range(per_log):
                t_ns = start_ns + k * 10**8
                stamp = rospy.Time(t_ns // 10**9, t_ns % 10**9)
                msg = frame_to_image(frames[(i * per_log + k) % len(frames)], stamp=stamp, frame_id="front")
                out.write(TOPIC, msg, Record(TOPIC, "", b"", t_ns, None))
                out.write("/gps", String(data="fix %d %d" % (i, k)), Record("/gps", "", b"", t_ns + 10**6, None))
                stamps[rel].append(t_ns)
    return stamps


def command(logs: str, out: str, workers: int, args) -> List[str]:
    return [sys.executable, "-m", "rawdiff.cli", "bag", "encode", logs, "--out-dir", out, "--topic", TOPIC,
            "--model", args.model, "--backend", args.backend, "--workers", str(workers), "-q"] + LEVELS


def cpu_ticks() -> List[int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return [sum(values) - idle, sum(values)]


def run_timed(cmd: List[str]) -> Dict:
    """Runs ``cmd``; its wall time, its stdout, and how busy the whole machine was meanwhile
    (the command and everything else: a second worker gains only what the others leave)."""
    before, load = cpu_ticks(), os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = cpu_ticks()
    if proc.returncode != 0:
        raise SystemExit("failed (%d):\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr[-3000:]))
    busy = (after[0] - before[0]) / max(1, after[1] - before[1])
    return {"wall_s": wall, "summary": proc.stdout, "machine_busy": busy, "load_avg_before": load}


def table_counts(summary: str, row: str) -> Dict[str, int]:
    line = next(line for line in summary.splitlines() if line.startswith(row))
    cells = line[len(row):].split()
    return {"files": int(cells[0]), "frames": int(cells[1])}


def alive_in_session(sid: int) -> List[int]:
    out = subprocess.run(["ps", "-o", "pid=,stat=", "-s", str(sid)], stdout=subprocess.PIPE, text=True).stdout
    return [int(f[0]) for f in (line.split() for line in out.splitlines()) if f and not f[1].startswith("Z")]


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL to the command and every process of the Ray it started (one session)."""
    import signal

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        proc.poll()
        pids = alive_in_session(proc.pid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    raise SystemExit("processes of session %d survive SIGKILL" % proc.pid)


def outputs(folder: str) -> List[str]:
    found = []
    for dirpath, _, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(dirpath, n), folder) for n in names]
    return sorted(found)


def verify(out: str, stamps: Dict[str, List[int]]) -> Dict:
    """Every frame of every input once in the outputs, in order; nothing else there."""
    from rawdiff.ros.logs import log_info, open_log

    names = outputs(out)
    extra = sorted(set(names) - set(stamps))
    everything: List[int] = []
    bad = []
    for rel, expected in stamps.items():
        path = os.path.join(out, rel)
        if not os.path.isfile(path):
            bad.append("%s missing" % rel)
            continue
        got = []
        with open_log(path) as log_file:
            for record in log_file.records(["/compressed_codes"]):
                msg = log_file.message_class(record)()
                msg.deserialize(record.data)
                got.append(msg.header.stamp.to_nsec())
        if got != expected:
            bad.append("%s: %d frames, %d expected" % (rel, len(got), len(expected)))
        if log_info(path).counts.get("/gps") != len(expected):
            bad.append("%s: /gps incomplete" % rel)
        everything += got
    total = sum(len(v) for v in stamps.values())
    return {"frames_expected": total, "frames_found": len(everything), "unique": len(set(everything)),
            "duplicates": len(everything) - len(set(everything)), "problems": bad, "unexpected_files": extra}


def machine() -> Dict:
    info = {"python": platform.python_version(), "cores": os.cpu_count(), "load_avg": os.getloadavg()}
    try:
        lscpu = subprocess.run(["lscpu"], stdout=subprocess.PIPE, text=True).stdout
        info["cpu"] = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                            if line.startswith("Model name")), "")
    except OSError:
        info["cpu"] = platform.processor()
    with open("/proc/meminfo") as f:
        info["memory_gib"] = round(int(f.readline().split()[1]) / 1024.0**2, 1)
    return info


def ray_start_stop_s() -> float:
    """What starting and stopping a local Ray costs here (one CPU), in this process."""
    from rawdiff.ros.ray_pool import start_ray, stop_ray

    start = time.perf_counter()
    start_ray(1)
    stop_ray()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=os.path.join(ROOT, "data", "corpus"))
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "default"))
    parser.add_argument("--backend", default="onnx", choices=["onnx", "torch", "auto"])
    parser.add_argument("--bags", type=int, default=20)
    parser.add_argument("--mcap", type=int, default=4)
    parser.add_argument("--frames", type=int, default=12, help="frames per log")
    parser.add_argument("--size", default="384x512", help="HxW of the frames")
    parser.add_argument("--work", help="working folder (default: a temporary one, removed)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))
    work = args.work or tempfile.mkdtemp(prefix="rawdiff-fleet-")
    os.makedirs(work, exist_ok=True)
    try:
        report = {"machine": machine(), "model": args.model, "backend": args.backend, "size": [height, width],
                  "bags": args.bags, "mcap": args.mcap, "frames_per_log": args.frames}
        logs = os.path.join(work, "logs")
        shutil.rmtree(logs, ignore_errors=True)
        log("making %d bags and %d MCAP files of %d frames %dx%d from %s"
            % (args.bags, args.mcap, args.frames, height, width, args.corpus))
        stamps = make_collection(logs, corpus_frames(args.corpus, height, width), args.bags, args.mcap, args.frames)
        report["input_mb"] = round(sum(os.path.getsize(os.path.join(logs, r)) for r in stamps) / 1e6, 1)
        report["ray_start_stop_s"] = round(ray_start_stop_s(), 2)
        runs = {}
        for workers in (1, 2):
            out = os.path.join(work, "out%d" % workers)
            shutil.rmtree(out, ignore_errors=True)
            log("encoding with %d worker%s" % (workers, "" if workers == 1 else "s"))
            run = run_timed(command(logs, out, workers, args))
            check = verify(out, stamps)
            if check["problems"] or check["unexpected_files"]:
                raise SystemExit("outputs of the %d-worker run are wrong: %s" % (workers, check))
            frames = table_counts(run["summary"], "encoded now")["frames"]
            runs[workers] = {"wall_s": round(run["wall_s"], 1), "frames": frames,
                             "frames_per_s": round(frames / run["wall_s"], 2),
                             "machine_busy_pct": round(100 * run["machine_busy"]),
                             "load_avg_before": round(run["load_avg_before"], 2),
                             "output_mb": round(sum(os.path.getsize(os.path.join(out, r)) for r in stamps) / 1e6, 2)}
            log("%d worker(s): %.1f s, %.2f frames/s" % (workers, run["wall_s"], runs[workers]["frames_per_s"]))
        report["runs"] = runs
        report["speed_up"] = round(runs[2]["frames_per_s"] / runs[1]["frames_per_s"], 2)

        out = os.path.join(work, "out_killed")
        shutil.rmtree(out, ignore_errors=True)
        half = (args.bags + args.mcap) // 2
        log("encoding with 2 workers, killed once %d outputs are there" % half)
        start = time.perf_counter()
        proc = subprocess.Popen(command(logs, out, 2, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        while proc.poll() is None:
            if sum(not os.path.basename(n).startswith(".") for n in outputs(out)) >= half:
                break
            time.sleep(0.02)
        if proc.poll() is not None:
            raise SystemExit("the run ended before it was killed; give more --frames")
        kill_session(proc)
        proc.communicate()
        killed_after = time.perf_counter() - start
        left = outputs(out)
        complete = [n for n in left if not os.path.basename(n).startswith(".")]
        parts = [n for n in left if os.path.basename(n).startswith(".")]
        log("killed after %.1f s: %d outputs, %d temporary files" % (killed_after, len(complete), len(parts)))
        resumed = run_timed(command(logs, out, 2, args))
        check = verify(out, stamps)
        report["kill"] = {
            "killed_after_s": round(killed_after, 1), "outputs_at_kill": len(complete),
            "temporary_files_at_kill": len(parts), "resume_wall_s": round(resumed["wall_s"], 1),
            "skipped_as_complete": table_counts(resumed["summary"], "complete")["files"],
            "encoded_on_resume": table_counts(resumed["summary"], "encoded now")["files"],
            "temporary_files_after": sum(os.path.basename(n).startswith(".") for n in outputs(out)),
            "verify": check,
        }
        if check["problems"] or check["duplicates"] or check["frames_found"] != check["frames_expected"]:
            raise SystemExit("resumed outputs are wrong: %s" % check)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    print(markdown(report))
    return 0


def markdown(r: Dict) -> str:
    m, k = r["machine"], r["kill"]
    lines = [
        "%d bags + %d MCAP files, %d frames of %dx%d each (%d frames, %.1f MB), model %s, backend %s; "
        "%s, %d cores, %.0f GiB; a local Ray starts and stops in %.1f s here."
        % (r["bags"], r["mcap"], r["frames_per_log"], r["size"][0], r["size"][1],
           k["verify"]["frames_expected"], r["input_mb"], os.path.relpath(r["model"], ROOT), r["backend"],
           m["cpu"], m["cores"], m["memory_gib"], r["ray_start_stop_s"]),
        "",
        "| workers | wall s (Ray start and stop included) | frames/s | speed-up | output MB | machine busy "
        "(all processes) | load average before |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for workers, run in sorted(r["runs"].items(), key=lambda kv: int(kv[0])):
        lines.append("| %s | %.1f | %.2f | %s | %.2f | %d %% | %.1f |" % (
            workers, run["wall_s"], run["frames_per_s"], "%.2fx" % r["speed_up"] if str(workers) == "2" else "1x",
            run["output_mb"], run["machine_busy_pct"], run["load_avg_before"]))
    v = k["verify"]
    lines += ["", "Killed (SIGKILL, the command and its Ray) after %.1f s with %d outputs complete and %d temporary "
              "files; the rerun skipped %d complete outputs, encoded %d files in %.1f s and left %d temporary files; "
              "%d of %d frames in the outputs, %d unique, %d duplicated."
              % (k["killed_after_s"], k["outputs_at_kill"], k["temporary_files_at_kill"], k["skipped_as_complete"],
                 k["encoded_on_resume"], k["resume_wall_s"], k["temporary_files_after"], v["frames_found"],
                 v["frames_expected"], v["unique"], v["duplicates"])]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
