"""Collections of logs: which files, where their outputs go, one file's task, the summary.

    rawdiff bag encode IN... --out-dir DIR          (IN: .bag / .mcap files and folders)
      plan_jobs(IN..., DIR) --> Job(input, output) per log, and a failed Result per input
                                that cannot be used (missing, unreadable folder, not a log,
                                output not writable or taken by another input)
      transcode_file(job, options) --> Result     one file, run as a Ray task (rawdiff.ros.ray_pool)
      format_table(results) --> the summary table

A folder is searched recursively for ``.bag`` and ``.mcap`` files (hidden names, such as
the temporary files of unfinished outputs, are not logs); each output keeps the file's
path below the folder it was found in, under DIR, and its suffix (or ``--out-format``'s).
DIR itself is never searched, so it may lie inside an input folder.

Resuming: an output is written under a temporary name and renamed when complete
(:func:`rawdiff.outputs.atomic_output`), so an output that exists was complete when it
was written; a rerun still checks it, by message counts per topic against the input's
index (:func:`output_complete`) and, for encoding, the quality of its first frame
(:func:`output_quality`), and skips it only when they agree, so a run killed at any point
resumes where it stopped and a run at another ``--quality`` codes every file again.
Temporary files that a killed run left behind are removed before a file is done again
(:func:`stale_parts`).

One file's failure (a truncated or damaged log, a missing topic, frames rejected) is one
line in its ``Result`` and does not stop the others. The codec is loaded once per worker
process and kept for the files that follow.
"""

from __future__ import annotations

import os
import re
import time
import traceback
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Tuple

from rawdiff.codec.limits import DEFAULT_ENCODE_ROWS
from rawdiff.outputs import check_output
from rawdiff.raw.io import dim_note
from rawdiff.ros.bag import CODES_TYPE, IMAGE_TYPE
from rawdiff.ros.bag_transcode import _size, clipped_note, decode_bag, encode_bag, ratio_text
from rawdiff.ros.logs import LOG_FORMATS, LOG_SUFFIXES, LogInfo, codes_topic, log_info, open_log

VERBS = ("encode", "decode")


class Job(NamedTuple):
    input: str
    output: str


def new_result(job: Job, status: str = "failed", error: str = "") -> Dict[str, Any]:
    """A file's result: ``status`` is ``done`` (transcoded now), ``complete`` (its output
    was complete from an earlier run) or ``failed`` (``error`` says why, in one line)."""
    return {"input": job.input, "output": job.output, "status": status, "frames": 0, "rejected": 0,
            "bytes_in": 0, "bytes_out": 0, "seconds": 0.0, "error": error, "traceback": "",
            "clipped": 0, "clipped_frames": 0, "peak": None}


# -- planning (the command's process) ---------------------------------------------------------

def _output_name(relative: str, out_format: Optional[str]) -> str:
    if not out_format:
        return relative
    suffix = next(s for s, f in LOG_FORMATS.items() if f == out_format)
    return os.path.splitext(relative)[0] + suffix


def _is_log(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in LOG_SUFFIXES


def _walk(folder: str, out_dir: str, problems: List[Tuple[str, str]]) -> List[str]:
    """The log files below ``folder`` (sorted, links to folders not followed), ``out_dir``
    left out; a folder that cannot be read is a problem, and the walk goes on."""
    found: List[str] = []

    def unreadable(exc: OSError) -> None:
        problems.append((exc.filename or folder, "cannot read folder: %s" % (exc.strerror or exc)))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable):
        dirnames[:] = sorted(d for d in dirnames if os.path.abspath(os.path.join(dirpath, d)) != out_dir)
        found.extend(os.path.join(dirpath, n) for n in sorted(filenames) if _is_log(n))
    return found


def plan_jobs(inputs: Iterable[str], out_dir: str, out_format: Optional[str] = None
              ) -> Tuple[List[Job], List[Dict[str, Any]]]:
    """``(jobs, failed results)`` of the inputs (files and folders): the output of a file
    given by name is ``out_dir/NAME``, of a file found in a folder ``out_dir/RELATIVE/PATH``.
    Every input that cannot be done is one failed result; the paths are only looked at, not
    opened (the tasks open them)."""
    out_dir = os.path.abspath(out_dir)
    jobs: List[Job] = []
    failed: List[Dict[str, Any]] = []
    problems: List[Tuple[str, str]] = []
    seen_inputs, outputs = set(), {}

    def add(path: str, relative: str) -> None:
        real = os.path.realpath(path)
        if real in seen_inputs:  # a file named and also found in a folder given
            return
        seen_inputs.add(real)
        output = os.path.join(out_dir, _output_name(relative, out_format))
        job = Job(os.path.abspath(path), output)
        if output in outputs:
            failed.append(new_result(job, error="its output %s is also the output of %s; give them separate "
                                                "--out-dir runs" % (output, outputs[output])))
            return
        outputs[output] = job.input
        try:
            check_output(output, LOG_SUFFIXES, [job.input], what="output")
        except (ValueError, OSError) as exc:
            failed.append(new_result(job, error=str(exc)))
            return
        jobs.append(job)

    for item in inputs:
        path = os.path.abspath(item)
        if os.path.isdir(path):
            if not os.access(path, os.R_OK | os.X_OK):
                problems.append((path, "cannot read folder: permission denied"))
                continue
            logs = _walk(path, out_dir, problems)
            if not logs and not any(p[0].startswith(path) for p in problems):
                problems.append((path, "no .bag or .mcap file in this folder"))
            for found in logs:
                add(found, os.path.relpath(found, path))
        elif not os.path.exists(path):
            problems.append((path, "does not exist"))
        elif os.path.splitext(path)[1].lower() not in LOG_SUFFIXES:
            problems.append((path, "is not a log: the suffix must be one of %s" % ", ".join(LOG_SUFFIXES)))
        else:
            add(path, os.path.basename(path))
    for path, reason in problems:
        failed.append(new_result(Job(path, ""), error=reason))
    return jobs, failed


# -- one file (a Ray task) ---------------------------------------------------------------------

def stale_parts(path: str) -> List[str]:
    """The temporary files of ``path`` that an interrupted run left: the names
    :func:`rawdiff.outputs.part_path` gives, ``.STEM.<8 hex>.partSUFFIX``."""
    folder, base = os.path.split(os.path.abspath(path))
    stem, suffix = os.path.splitext(base)
    pattern = re.compile(r"^\.%s\.[0-9a-f]{8}\.part%s$" % (re.escape(stem), re.escape(suffix)))
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(os.path.join(folder, n) for n in names if pattern.match(n))


def remove_stale_parts(path: str) -> None:
    for part in stale_parts(path):
        try:
            os.remove(part)
        except FileNotFoundError:
            pass


def expected_counts(info: LogInfo, topic: str, output_topic: str) -> Dict[str, int]:
    """Messages per topic that a complete output of a log holds: ``topic``'s become
    ``output_topic``'s, every other topic's are copied."""
    counts = {t: n for t, n in info.counts.items() if n and t != topic}
    if info.counts.get(topic):
        counts[output_topic] = info.counts[topic]
    return counts


def output_complete(info: LogInfo, output: str, topic: str, output_topic: str, output_type: str) -> bool:
    """The output exists, opens, has ``output_type`` on ``output_topic`` and as many
    messages on every topic as :func:`expected_counts` says."""
    if not os.path.isfile(output):
        return False
    try:
        out = log_info(output)
    except (ValueError, OSError):
        return False
    expected = expected_counts(info, topic, output_topic)
    if expected.get(output_topic) and out.topics.get(output_topic) != output_type:
        return False
    return {t: n for t, n in out.counts.items() if n} == expected


def output_quality(output: str, output_topic: str) -> Optional[int]:
    """The quality (bitstream header) of the first codes message on ``output_topic`` of a log;
    None when it has none."""
    from rawdiff.codec.bitstream import read_header

    with open_log(output) as log:
        for record in log.records([output_topic]):
            msg = log.message_class(record)()
            msg.deserialize(record.data)
            return read_header(bytes(msg.data), verify=False).quality
    return None


_CODECS: Dict[Tuple, Any] = {}


def _codec(options: Dict[str, Any]):
    """The codec of ``options``, loaded once per process (a Ray worker runs many files)."""
    from rawdiff.codec import Codec

    key = (options["verb"], options["model"], options["device"], options.get("backend", "auto"),
           options.get("threads"), options.get("max_pixels"), options.get("tile"), options.get("encode_rows"),
           bool(options.get("static_tables")))
    if key not in _CODECS:
        if options["verb"] == "encode":
            _CODECS[key] = Codec.load(options["model"], device=options["device"], backend=options["backend"],
                                      threads=options.get("threads"),
                                      encode_rows=options.get("encode_rows", DEFAULT_ENCODE_ROWS))
            _CODECS[key].adaptive_coding = not options.get("static_tables")
        else:
            _CODECS[key] = Codec.load(options["model"], device=options["device"], threads=options.get("threads"),
                                      max_pixels=options["max_pixels"], tile=options["tile"])
    return _CODECS[key]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, (ValueError, OSError)) and text else "%s: %s" % (type(exc).__name__, text)


def transcode_file(job: Job, options: Dict[str, Any]) -> Dict[str, Any]:
    """Transcode one log of a collection (``options``: ``verb``, ``topic``,
    ``output_topic``, the codec's and the conversion's options) unless its output is
    complete. Never raises for a problem of the file: the result says it in one line."""
    start = time.perf_counter()
    result = new_result(job)
    verb = options["verb"]
    try:
        remove_stale_parts(job.output)
        info = log_info(job.input)
        topic = options.get("topic") or codes_topic(job.input)
        output_type = CODES_TYPE if verb == "encode" else IMAGE_TYPE
        if output_complete(info, job.output, topic, options["output_topic"], output_type) and (
                verb != "encode" or options.get("quality") is None
                or output_quality(job.output, options["output_topic"]) in (None, options["quality"])):
            result.update(status="complete", frames=info.counts.get(topic, 0))
            return result
        codec = _codec(options)
        if verb == "encode":
            summary = encode_bag(job.input, job.output, topic, codec=codec, progress=False,
                                 output_topic=options["output_topic"],
                                 **{k: options.get(k) for k in ("cfa", "black_level", "white_level", "input_format",
                                                                "quality")})
        else:
            summary = decode_bag(job.input, job.output, topic=topic, codec=codec, progress=False,
                                 output_topic=options["output_topic"], mode=options["mode"], steps=options["steps"],
                                 seed=options["seed"], realism=options.get("realism"))
        result.update({k: summary[k] for k in ("frames", "rejected", "bytes_in", "bytes_out", "clipped",
                                               "clipped_frames")})
        if verb == "encode":
            result["peak"] = summary["peak"]
        if summary["rejected"]:
            result["error"] = "%d of %d frames rejected and left out of the output (first: %s)" % (
                summary["rejected"], summary["rejected"] + summary["frames"],
                summary["errors"][0] if summary["errors"] else "?")
        else:
            result["status"] = "done"
    except Exception as exc:  # one file's problem is its result, never the collection's end
        result["error"] = _one_line(exc)
        if not isinstance(exc, (ValueError, OSError)):
            result["traceback"] = traceback.format_exc()
    finally:
        result["seconds"] = time.perf_counter() - start
    return result


# -- the summary ---------------------------------------------------------------------------------

ROWS = (("done", "%sd now"), ("complete", "complete"), ("failed", "failed"))


def totals(results: List[Dict[str, Any]], status: Optional[str] = None) -> Dict[str, Any]:
    rows = [r for r in results if status is None or r["status"] == status]
    return {"files": len(rows), "frames": sum(r["frames"] for r in rows),
            "bytes_in": sum(r["bytes_in"] for r in rows), "bytes_out": sum(r["bytes_out"] for r in rows)}


def format_table(results: List[Dict[str, Any]], verb: str, seconds: float, where: str, detail: str = "") -> str:
    """The summary: a table of files, frames, bytes in and out, ratio and frames per second
    (frames transcoded now over the run's wall time) by outcome, then one line per failed
    file. ``complete`` outputs were done by an earlier run: their frames are counted, their
    bytes not read. ``detail`` (e.g. the quality) goes into the first line."""
    head = "%-14s %6s %8s %10s %10s %9s %9s" % ("", "files", "frames", "bytes in", "bytes out", "ratio", "frames/s")
    lines = ["rawdiff bag %s: %d file%s, %s%s, %.1f s" % (verb, len(results), "" if len(results) == 1 else "s", where,
                                                          ", " + detail if detail else "", seconds), head]

    def row(name: str, t: Dict[str, Any], rate: bool) -> str:
        ratio = ratio_text(t["bytes_in"], t["bytes_out"])
        fps = "%.2f" % (t["frames"] / seconds) if rate and t["frames"] and seconds > 0 else "-"
        nbytes = t["bytes_in"] or t["bytes_out"]
        return "%-14s %6d %8d %10s %10s %9s %9s" % (
            name, t["files"], t["frames"], _size(t["bytes_in"]) if nbytes else "-",
            _size(t["bytes_out"]) if nbytes else "-", ratio, fps)

    for status, label in ROWS:
        lines.append(row(label % verb if "%" in label else label, totals(results, status), status == "done"))
    now = totals([r for r in results if r["status"] != "complete"])
    total = totals(results)
    lines.append(row("total", dict(total, bytes_in=now["bytes_in"], bytes_out=now["bytes_out"]), False))
    for r in results:
        if r["status"] == "failed":  # the file's name once: most errors start with it
            error = r["error"]
            lines.append("failed: %s" % (error if error.startswith(r["input"]) else "%s: %s" % (r["input"], error)))
    for r in results:  # the levels' warnings of single-log summaries, a line a file
        if r.get("clipped"):
            lines.append("levels: %s: %s" % (r["input"], clipped_note(r["clipped"], r["clipped_frames"])))
        dim = dim_note(r["peak"], r["frames"], "--black-level, --white-level") if r.get("peak") is not None else None
        if dim:
            lines.append("levels: %s: %s" % (r["input"], dim))
    return "\n".join(lines)


__all__ = ["Job", "VERBS", "expected_counts", "format_table", "new_result", "output_complete", "output_quality",
           "plan_jobs", "remove_stale_parts", "stale_parts", "totals", "transcode_file"]
