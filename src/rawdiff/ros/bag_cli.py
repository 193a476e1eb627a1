"""``rawdiff bag encode|decode``: the arguments, and the choice between one log and a collection.

    rawdiff bag encode IN OUT --topic T                   one log, in this process (bag_transcode)
    rawdiff bag encode IN... --out-dir DIR --topic T      files and folders, one Ray task per file
        [--workers N | --address ADDR] [--out-format bag|mcap]
    encode takes --quality Q (1 to the model's stages; default: the model's default quality),
    checked against the model before any file is opened.

A log is a ROS 1 bag (``.bag``) or an MCAP file (``.mcap``); the suffix picks the format
of an input and of an output. :func:`add_arguments` is called by :mod:`rawdiff.cli` with
the option helpers the other commands share, so every command spells ``--backend``,
``--threads``, the decoder's ``--model``, ``--mode``, ``--steps``, ``--seed``, ``--realism`` and
``--device``, ``--max-pixels`` and ``--tile`` the same way.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable, Dict, Optional, Tuple

from rawdiff.codec.modeldir import diffusion_steps
from rawdiff.raw.frame import check_black_level
from rawdiff.ros import bag_transcode as bag_tools
from rawdiff.ros.collection import format_table, plan_jobs
from rawdiff.ros.node import resolve_model_dir


def default_workers() -> int:
    """The CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _add_collection_options(q: argparse.ArgumentParser, positive_int: Callable) -> None:
    q.add_argument("inputs", nargs="+", metavar="IN",
                   help="IN OUT: one log (.bag or .mcap, by suffix) and its output; with --out-dir: logs and "
                        "folders of logs (searched recursively)")
    q.add_argument("--out-dir", metavar="DIR",
                   help="transcode a collection: one Ray task per file, outputs under DIR (a file's path below "
                        "the folder it was found in is kept); complete outputs are skipped, so a rerun resumes")
    q.add_argument("--workers", type=positive_int, metavar="N",
                   help="with --out-dir: CPUs of the local Ray the command starts and stops, one file and one "
                        "thread each (default: this machine's, %d)" % default_workers())
    q.add_argument("--address", metavar="ADDR",
                   help="with --out-dir: join the Ray cluster at ADDR (e.g. 10.0.0.5:6379, or auto) instead of "
                        "starting one; rawdiff, the model and the paths given must be on every node (a shared "
                        "filesystem)")
    q.add_argument("--out-format", choices=["bag", "mcap"],
                   help="with --out-dir: format of every output (default: its input's)")


def add_arguments(p: argparse.ArgumentParser, default_model: str, encoder_options: Callable,
                  decoder_options: Callable, decoder_limits: Callable, positive_int: Callable) -> None:
    """The ``bag`` command's subcommands on ``p``."""
    bag_sub = p.add_subparsers(dest="bag_command", metavar="{encode,decode}")
    bag_sub.required = True
    q = bag_sub.add_parser("encode", help="RAW sensor_msgs/Image topic -> rawdiff/CompressedCodes")
    _add_collection_options(q, positive_int)
    q.add_argument("--topic", required=True, help="RAW image topic, e.g. /camera/image_raw")
    q.add_argument("--output-topic", default=bag_tools.DEFAULT_CODES_TOPIC, help="codes topic (default %(default)s)")
    q.add_argument("--model", default=default_model, help="model directory (default: models/default)")
    q.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    encoder_options(q)
    q.add_argument("--quality", type=positive_int,
                   help="operating point of every frame: 1 (fewest bits) to the model's number of quantizer stages "
                        "(`rawdiff info --model DIR` lists them); default: the model's default quality")
    q.add_argument("--cfa", help="CFA pattern RGGB, BGGR, GRBG or GBRG (mono/packed images; default: the encoding's)")
    q.add_argument("--black-level", type=float, default=0.0, help="sensor black level (default 0)")
    q.add_argument("--white-level", type=float, help="sensor white level (default: the container's full scale)")
    q.add_argument("--input-format", choices=["raw10p", "raw12p"], help="packed MIPI CSI-2 images")
    q.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_encode)

    q = bag_sub.add_parser("decode", help="rawdiff/CompressedCodes -> sensor_msgs/Image rgb8")
    _add_collection_options(q, positive_int)
    q.add_argument("--topic", help="codes topic (default: the log's only rawdiff/CompressedCodes topic)")
    q.add_argument("--output-topic", default=bag_tools.DEFAULT_DECODED_TOPIC,
                   help="decoded image topic (default %(default)s)")
    decoder_options(q)
    q.add_argument("--threads", type=positive_int, help="CPU threads for the decoder (default: torch's; "
                                                        "with --out-dir: 1 per worker)")
    decoder_limits(q)
    q.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_decode)


def _single(args) -> None:
    """``IN OUT``: set ``args.input`` and ``args.output``; anything else is a one-line error."""
    if len(args.inputs) != 2:
        raise ValueError("give IN OUT for one log, or IN... --out-dir DIR for a collection (got %d path%s)"
                         % (len(args.inputs), "" if len(args.inputs) == 1 else "s"))
    for name in ("workers", "address", "out_format"):
        if getattr(args, name) is not None:
            raise ValueError("--%s goes with --out-dir" % name.replace("_", "-"))
    args.input, args.output = args.inputs


def cmd_encode(args) -> int:
    check_black_level(args.black_level)  # before a log is opened or the model read
    if args.out_dir is None:
        _single(args)
        return bag_tools.cmd_encode(args)
    options = {"topic": args.topic, "backend": args.backend, "cfa": args.cfa, "black_level": args.black_level,
               "white_level": args.white_level, "input_format": args.input_format, "quality": args.quality,
               "encode_rows": args.encode_rows, "static_tables": args.static_tables}
    return run_collection_command(args, "encode", options)


def cmd_decode(args) -> int:
    args.steps = diffusion_steps(args.mode, args.steps, args.realism)
    if args.out_dir is None:
        _single(args)
        return bag_tools.cmd_decode(args)
    options = {"topic": args.topic, "mode": args.mode, "steps": args.steps, "seed": args.seed,
               "realism": args.realism, "max_pixels": args.max_pixels, "tile": args.tile}
    return run_collection_command(args, "decode", options)


def model_quality(meta: Dict[str, Any], quality: Optional[int]) -> Tuple[int, int]:
    """``(quality, qualities)`` of a model directory's ``model.json`` (``quality`` None: its
    default), read without loading the model: the check ``Codec.check_quality`` makes."""
    from rawdiff.codec.modeldir import check_quality

    qualities = len(meta.get("stages") or [None])
    if quality is None:
        return int(meta.get("default_quality") or qualities), qualities
    return check_quality(quality, qualities), qualities


def run_collection_command(args, verb: str, options: Dict[str, Any]) -> int:
    """Plan the jobs, check the model, run them on Ray, print the summary table; exit 1
    (a ``ValueError`` naming the count) when any file failed."""
    from rawdiff.codec.modeldir import read_model_dir
    from rawdiff.ros.ray_pool import run_collection, start_ray, stop_ray

    if args.address and args.workers is not None:
        raise ValueError("give --workers (a local Ray) or --address (a cluster), not both")
    if args.threads is not None and args.threads < 1:
        raise ValueError("--threads must be at least 1, got %d" % args.threads)
    start = time.perf_counter()
    model = resolve_model_dir(args.model or "")
    meta = read_model_dir(model)["meta"]  # a wrong --model is one line now, not one per file
    detail = ""
    if verb == "encode":
        quality, qualities = model_quality(meta, options.get("quality"))  # and a wrong --quality
        options = dict(options, quality=quality)
        detail = "quality %d of %d" % (quality, qualities)
    jobs, results = plan_jobs(args.inputs, args.out_dir, args.out_format)
    options = dict(options, verb=verb, model=model, device=args.device, output_topic=args.output_topic,
                   threads=args.threads or 1)
    where = "nothing to run"
    if jobs:
        where = start_ray(args.workers or default_workers(), args.address)
        try:
            results += run_collection(jobs, options, progress=not args.quiet)
        finally:
            stop_ray()
    order = {path: i for i, path in enumerate(j.input for j in jobs)}
    results.sort(key=lambda r: order.get(r["input"], -1))  # inputs that could not be used first
    print(format_table(results, verb, time.perf_counter() - start, where, detail))
    for r in results:
        if r["traceback"]:
            print("rawdiff bag %s: %s:\n%s" % (verb, r["input"], r["traceback"]), file=sys.stderr)
    failed = sum(r["status"] == "failed" for r in results)
    if failed:
        raise ValueError("%d of %d files failed (listed above)" % (failed, len(results)))
    return 0


__all__ = ["add_arguments", "cmd_decode", "cmd_encode", "default_workers", "model_quality", "run_collection_command"]
