"""Transcoding a whole log offline: ``rawdiff bag encode|decode``, for ROS 1 bags and MCAP.

    rawdiff bag encode IN.bag|IN.mcap OUT.bag|OUT.mcap --topic /camera/image_raw [--quality Q]
        sensor_msgs/Image (RAW) on --topic --encode_image (at quality Q: 1 to the model's
        stages; default the model's)--> rawdiff/CompressedCodes on --output-topic (default
        /compressed_codes)
    rawdiff bag decode IN.bag|IN.mcap OUT.bag|OUT.mcap
        rawdiff/CompressedCodes --decode_codes--> sensor_msgs/Image rgb8 on --output-topic
        (default /camera/image_decoded)

No roscore is needed: logs are read and written through :mod:`rawdiff.ros.logs` (rosbag
for ``.bag``, the ``mcap`` library for ``.mcap``; the suffix picks the format, so a bag
can become an MCAP file as it is transcoded). Each message is written at its record time
and keeps its header (stamp, frame_id); every other topic is copied as is (raw bytes,
connection header or MCAP channel, schema, publish time and sequence), in the input's
order. The per-message work is the nodes' (:mod:`rawdiff.ros.transcode`), so a log
transcoded offline holds what the nodes would have published. A frame that cannot be
transcoded is left out, reported once per kind of problem and counted; the command then
exits non-zero after writing the log. Progress goes to stderr; the summary gives frames,
bytes in and out, bpp. Collections of logs, one Ray task per file, are
:mod:`rawdiff.ros.collection`.

The paths are checked before the model is loaded (:func:`check_bag_paths`: the input is a
log file, the output a writable ``.bag`` or ``.mcap`` that is not the input), the output
is written under a temporary name and renamed when complete (:mod:`rawdiff.outputs`), and
decoding takes the decoder's limits (``max_pixels``, ``tile``: :class:`rawdiff.codec.Codec`).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Dict, Optional

from rawdiff.codec.limits import DEFAULT_ENCODE_ROWS, DEFAULT_MAX_PIXELS, DEFAULT_TILE
from rawdiff.codec.modeldir import DEFAULT_DIFFUSION_STEPS
from rawdiff.outputs import atomic_output, check_output
from rawdiff.raw.io import dim_note
from rawdiff.ros.bag import CODES_TYPE, IMAGE_TYPE, check_topic
from rawdiff.ros.diagnostics import ErrorThrottle
from rawdiff.ros.logs import LOG_SUFFIXES, codes_topic, create_log, log_format, log_topics, open_log, output_compression
from rawdiff.ros.node import resolve_model_dir
from rawdiff.ros.transcode import decode_codes, encode_image

DEFAULT_CODES_TOPIC = "/compressed_codes"
DEFAULT_DECODED_TOPIC = "/camera/image_decoded"


def check_bag_paths(in_path: str, out_path: str) -> None:
    """Before any work: the input is an existing log file (not a directory), the output a
    ``.bag`` or ``.mcap`` in a writable (or makeable) folder, and not the input."""
    in_path, out_path = str(in_path), str(out_path)
    what = "MCAP file" if log_format(in_path) == "mcap" else "bag"
    if os.path.isdir(in_path):
        raise ValueError("%s is a directory, not a %s" % (in_path, what))
    if not os.path.isfile(in_path):
        raise FileNotFoundError("%s %s does not exist" % (what, in_path))
    if os.path.abspath(in_path) == os.path.abspath(out_path) or (
            os.path.exists(out_path) and os.path.samefile(in_path, out_path)):
        raise ValueError("the output bag %s is the input bag; give another path" % out_path)
    check_output(out_path, LOG_SUFFIXES, [in_path], what="output log")


def check_log_topics(topics: Dict[str, str], in_path: str, topic: str, msg_type: str, output_topic: str) -> None:
    """``topic`` is in the log with ``msg_type``, and ``output_topic`` would not mix with
    another topic of the log."""
    check_topic(in_path, topics, topic, msg_type)
    if output_topic != topic and output_topic in topics:
        raise ValueError("output topic %r is already in %s (%s); choose another --output-topic"
                         % (output_topic, in_path, topics[output_topic]))


def check_bag_topics(in_path: str, topic: str, msg_type: str, output_topic: str) -> None:
    """Before the model is loaded: the log opens and its topics pass :func:`check_log_topics`."""
    check_log_topics(log_topics(in_path), in_path, topic, msg_type, output_topic)


def transcode_bag(in_path: str, out_path: str, topic: str, msg_type: str, convert: Callable,
                  output_topic: str, verb: str = "transcode", progress: bool = True) -> Dict[str, Any]:
    """Copy a log (bag or MCAP, by suffix), replacing each message of ``topic`` by
    ``convert(msg)``'s output.

    ``convert(msg) -> (out_msg, info)`` (``info`` as from :mod:`rawdiff.ros.transcode`)
    raises ``ValueError`` for a message it cannot use; that message is left out and
    counted as rejected. The output is written next to ``out_path`` and renamed when
    complete, so a failed run leaves no partial file. Returns the summary dict.
    """
    import genpy
    from tqdm import tqdm

    in_path, out_path = str(in_path), str(out_path)
    check_bag_paths(in_path, out_path)
    summary: Dict[str, Any] = {
        "input": in_path, "output": out_path, "topic": topic, "output_topic": output_topic, "verb": verb,
        "frames": 0, "rejected": 0, "other_messages": 0, "bytes_in": 0, "bytes_out": 0, "code_bytes": 0,
        "pixels": 0, "clipped": 0, "clipped_frames": 0, "peak": 0.0, "errors": [],
    }

    def note(text: str) -> None:
        summary["errors"].append(text)
        tqdm.write("rawdiff bag %s: warning: %s" % (verb, text), file=sys.stderr)

    errors = ErrorThrottle(float("inf"), note)  # each kind of problem once
    start = time.perf_counter()
    out_format = log_format(out_path)
    with atomic_output(out_path) as part:
        with open_log(in_path) as src:
            info = src.info()
            check_log_topics(info.topics, in_path, topic, msg_type, output_topic)
            src.check_decodable(topic)
            with create_log(part, out_format, output_compression(src, out_format)) as dst, \
                    tqdm(total=info.message_count, unit="msg", desc="%s %s" % (verb, os.path.basename(in_path)),
                         file=sys.stderr, disable=not progress or None, leave=False) as bar:
                for record in src.records():
                    bar.update(1)
                    if record.topic != topic:
                        dst.copy(record, src)
                        summary["other_messages"] += 1
                        continue
                    try:
                        msg = src.message_class(record)()
                        try:
                            msg.deserialize(record.data)
                        except genpy.DeserializationError as exc:
                            raise ValueError("the message does not deserialize as %s: %s" % (record.msg_type, exc)) \
                                from None
                        out, stats = convert(msg)
                    except ValueError as exc:
                        summary["rejected"] += 1
                        errors.report(str(exc), "frame %d of %s (recorded at %.6f)" % (
                            summary["frames"] + summary["rejected"], topic, record.time_ns / 1e9))
                        continue
                    dst.write(output_topic, out, record)
                    summary["frames"] += 1
                    for key in ("bytes_in", "bytes_out", "code_bytes", "pixels"):
                        summary[key] += int(stats[key])
                    summary["peak"] = max(summary["peak"], float(stats.get("peak", 1.0)))
                    if stats.get("clipped"):  # pixels above the white level: clipped, counted
                        summary["clipped"] += int(stats["clipped"])
                        summary["clipped_frames"] += 1
                dst.copy_extras(src)
    seconds = time.perf_counter() - start
    summary["seconds"] = seconds
    summary["fps"] = summary["frames"] / seconds if seconds > 0 else 0.0
    summary["bpp"] = 8.0 * summary["code_bytes"] / summary["pixels"] if summary["pixels"] else 0.0
    return summary


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (n, unit)
        n /= 1000.0
    return "%d B" % n  # pragma: no cover


def clipped_note(pixels: int, frames: int) -> str:
    """The sentence that counts the pixels the encoder clipped to the white level."""
    return "%d pixels in %d frames above the white level, clipped to it (is --white-level right?)" % (pixels, frames)


def ratio_text(bytes_in: int, bytes_out: int) -> str:
    """How much smaller the output is (``"151.2:1"``), or how much larger (``"x301.5"``,
    decoding); ``"-"`` without bytes on either side."""
    if not bytes_in or not bytes_out:
        return "-"
    ratio = bytes_in / bytes_out
    return "%.1f:1" % ratio if ratio >= 1 else "x%.1f" % (1.0 / ratio)


def format_summary(s: Dict[str, Any]) -> str:
    """The summary lines a bag command prints."""
    ratio = ratio_text(s["bytes_in"], s["bytes_out"])
    quality = " at quality %d of %d" % (s["quality"], s["qualities"]) if s.get("quality") else ""
    lines = [
        "%s: %sd %d frames of %s -> %s in %s%s" % (s["input"], s["verb"], s["frames"], s["topic"], s["output_topic"],
                                                  s["output"], quality),
        "  bytes in %s, bytes out %s (%s), %.4f bpp of the codes"
        % (_size(s["bytes_in"]), _size(s["bytes_out"]),
           ("ratio " + ratio) if ratio.endswith(":1") else ratio, s["bpp"]),
        "  %d other messages copied, %d frames rejected, %.1f s (%.2f frames/s)"
        % (s["other_messages"], s["rejected"], s["seconds"], s["fps"]),
    ]
    if s.get("clipped"):
        lines.append("  " + clipped_note(s["clipped"], s["clipped_frames"]))
    dim = dim_note(s.get("peak", 1.0), s["frames"], "--black-level, --white-level") if s["verb"] == "encode" else None
    if dim:
        lines.append("  " + dim)
    return "\n".join(lines)


def _finish(summary: Dict[str, Any]) -> int:
    print(format_summary(summary))
    if summary["rejected"]:
        raise ValueError("%d of %d frames of %s rejected and left out of %s (first: %s)"
                         % (summary["rejected"], summary["rejected"] + summary["frames"], summary["topic"],
                            summary["output"], summary["errors"][0] if summary["errors"] else "?"))
    return 0


def encode_bag(in_path: str, out_path: str, topic: str, model: Optional[str] = None, device: str = "auto",
               backend: str = "auto", cfa: Optional[str] = None, black_level=0,
               white_level: Optional[float] = None, input_format: Optional[str] = None,
               output_topic: str = DEFAULT_CODES_TOPIC, progress: bool = True, codec=None,
               threads: Optional[int] = None, quality: Optional[int] = None,
               encode_rows: int = DEFAULT_ENCODE_ROWS, static_tables: bool = False) -> Dict[str, Any]:
    """RAW images of ``topic`` -> ``CompressedCodes`` on ``output_topic`` at ``quality`` (None:
    the model's default; ``encode_rows`` and ``static_tables`` (format version 6 streams): for
    the codec loaded here, a ``codec`` given keeps its own); see module doc."""
    check_bag_paths(in_path, out_path)
    check_bag_topics(in_path, topic, IMAGE_TYPE, output_topic)
    if codec is None:
        from rawdiff.codec import Codec  # torch, only when a bag is transcoded

        codec = Codec.load(resolve_model_dir(model or ""), device=device, backend=backend, threads=threads,
                           encode_rows=encode_rows)
        codec.adaptive_coding = not static_tables
    quality = codec.check_quality(quality)  # before any work: one line naming the range
    conversion = {"cfa": cfa, "black_level": black_level, "white_level": white_level, "input_format": input_format,
                  "quality": quality}
    summary = transcode_bag(in_path, out_path, topic, IMAGE_TYPE, lambda msg: encode_image(codec, msg, **conversion),
                            output_topic, verb="encode", progress=progress)
    summary.update(quality=quality, qualities=codec.qualities)
    return summary


def decode_bag(in_path: str, out_path: str, topic: Optional[str] = None, model: Optional[str] = None,
               mode: str = "fast", steps: int = DEFAULT_DIFFUSION_STEPS, seed: int = 0, device: str = "auto",
               output_topic: str = DEFAULT_DECODED_TOPIC, progress: bool = True, codec=None,
               max_pixels: Optional[int] = DEFAULT_MAX_PIXELS, tile: int = DEFAULT_TILE,
               threads: Optional[int] = None, realism: Optional[float] = None) -> Dict[str, Any]:
    """``CompressedCodes`` of ``topic`` (default: the bag's only codes topic) -> rgb8
    images on ``output_topic``; see module doc. A frame over ``max_pixels`` is rejected
    from its header; frames larger than ``tile`` codes decode in tiles."""
    check_bag_paths(in_path, out_path)
    topic = topic or codes_topic(in_path)
    check_bag_topics(in_path, topic, CODES_TYPE, output_topic)
    if codec is None:
        from rawdiff.codec import Codec  # torch, only when a bag is transcoded

        codec = Codec.load(resolve_model_dir(model or ""), device=device, max_pixels=max_pixels, tile=tile,
                           threads=threads)
    return transcode_bag(in_path, out_path, topic, CODES_TYPE,
                         lambda msg: decode_codes(codec, msg, mode=mode, steps=steps, seed=seed, realism=realism),
                         output_topic, verb="decode", progress=progress)


# -- `rawdiff bag encode|decode IN OUT` (parsed in rawdiff.ros.bag_cli) -----------------------

def cmd_encode(args) -> int:
    summary = encode_bag(args.input, args.output, args.topic, model=args.model, device=args.device,
                         backend=args.backend, cfa=args.cfa, black_level=args.black_level,
                         white_level=args.white_level, input_format=args.input_format,
                         output_topic=args.output_topic, progress=not args.quiet, threads=args.threads,
                         quality=args.quality, encode_rows=args.encode_rows, static_tables=args.static_tables)
    return _finish(summary)


def cmd_decode(args) -> int:
    summary = decode_bag(args.input, args.output, topic=args.topic, model=args.model, mode=args.mode,
                         steps=args.steps, seed=args.seed, device=args.device, output_topic=args.output_topic,
                         progress=not args.quiet, max_pixels=args.max_pixels, tile=args.tile,
                         threads=getattr(args, "threads", None), realism=getattr(args, "realism", None))
    return _finish(summary)
