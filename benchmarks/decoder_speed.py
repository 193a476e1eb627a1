"""Decoder speed: the fast decoder at every operating point and the diffusion decoder (where
the model has one), per frame, on whatever device is present.

    python benchmarks/decoder_speed.py [--model DIR ...] [--size 1936x1112] [--repeats N]
                                       [--steps 1 4] [--device auto|cpu|cuda] [--threads N]
                                       [--precision auto fp32 bf16 fp16]
                                       [--memory-format auto channels_last contiguous] [--json OUT]

For each model (default: models/default and models/colour where present), the frame
(12-bit RGGB, unprocessed from a collage of scikit-image photographs, as
benchmarks/encoder_speed.py makes it) is compressed once per quality; then
``Codec.decompress`` is timed: one warm-up and ``--repeats`` timed decodes, the median
reported. That is what the decoder node and ``rawdiff decompress`` run: entropy decoding,
the decoder, the colour stage, 8-bit output, the deblocking filter (timed alone as well, the
``deblocking filter`` rows, where the model has one: part of the fast rows' time). The
diffusion decoder (``--steps``, at the model's default quality) is timed the same way with
seed 0, at the model's default realism.
Each ``--precision`` (default ``auto``: bfloat16/float16 autocast on CUDA, float32 on the
CPU; ``Codec.load(precision=...)``) and each ``--memory-format`` (default ``auto``:
channels_last on the CPU, NCHW elsewhere; ``contiguous`` is NCHW; ``Codec.load(memory_format=...)``)
is a set of rows. Prints JSON, then a markdown table, on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

from encoder_speed import ROOT, log, machine, make_frame, parse_size  # noqa: E402

MODELS = (os.path.join(ROOT, "models", "default"), os.path.join(ROOT, "models", "colour"))


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: lazy loading, allocator, kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_model(model_dir: str, frame, args, precision: str, memory_format: str) -> list:
    from rawdiff.codec import Codec

    codec = Codec.load(model_dir, device=args.device, backend="torch", threads=args.threads or None,
                       precision=precision, memory_format=memory_format)
    has_diffusion = os.path.isfile(os.path.join(model_dir, "diffusion.safetensors"))
    rows = []
    name = os.path.relpath(model_dir, ROOT)
    for q in range(1, codec.qualities + 1):
        data = codec.compress(frame, quality=q)
        s = timed(lambda data=data: codec.decompress(data, mode="fast"), args.repeats)
        rows.append({"model": name, "path": "fast", "quality": q, "steps": None, "bytes": len(data), "s": s})
        log("%s q%d fast (%s, %s): %.3f s" % (name, q, precision, memory_format, s))
        if getattr(codec, "deblock_filters", None) is not None:  # its share of the fast decode
            rgb = codec.decompress(data, mode="fast", deblock=False)
            s = timed(lambda rgb=rgb, q=q: codec.deblocked(rgb, q), args.repeats)
            rows.append({"model": name, "path": "deblocking filter", "quality": q, "steps": None,
                         "bytes": len(data), "s": s})
            log("%s q%d deblocking filter: %.3f s" % (name, q, s))
    if has_diffusion:
        data = codec.compress(frame, quality=codec.default_quality)
        for steps in args.steps:
            s = timed(lambda data=data, steps=steps: codec.decompress(data, mode="diffusion", steps=steps, seed=0),
                      args.repeats)
            rows.append({"model": name, "path": "diffusion", "quality": codec.default_quality, "steps": steps,
                         "bytes": len(data), "s": s})
            log("%s q%d diffusion %d steps (%s, %s): %.3f s" % (name, codec.default_quality, steps, precision,
                                                                 memory_format, s))
    for r in rows:
        r["fps"] = 1.0 / r["s"]
        r["precision"] = precision
        r["memory_format"] = memory_format
    return rows


def markdown(rows: list, size, info: dict) -> str:
    lines = ["%s, %s cores, %s; %dx%d; median of the timed decodes" % (
        info["cpu"], info["cores"], info["device"], size[0], size[1]), "",
        "| model | path | precision | memory format | quality | steps | bytes | s/frame | frames/s |",
        "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %s | %s | %s | %s | %d | %s | %d | %.3f | %.2f |" % (
            r["model"], r["path"], r["precision"], r["memory_format"], r["quality"], r["steps"] or "—", r["bytes"],
            r["s"], r["fps"]))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", help="model directory (repeat for several; default: "
                   "models/default and models/colour where present)")
    p.add_argument("--size", type=parse_size, default=parse_size("1936x1112"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, nargs="*", default=[1, 4], help="diffusion sampling steps")
    p.add_argument("--device", default="auto", help="auto (the GPU when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--precision", nargs="+", default=["auto"], choices=["auto", "fp32", "bf16", "fp16"],
                   help="what the decoder networks run in (default auto: half precision on CUDA, float32 on the CPU)")
    p.add_argument("--memory-format", nargs="+", default=["auto"], choices=["auto", "channels_last", "contiguous"],
                   help="how the decoder networks lay out their tensors (default auto: channels_last on the CPU, "
                   "NCHW elsewhere)")
    p.add_argument("--json", help="also write the JSON results to this file")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    models = args.model or [m for m in MODELS if os.path.isfile(os.path.join(m, "model.json"))]
    if not models:
        p.error("no model directory: give --model DIR")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    info = dict(machine(), device=("cuda (%s)" % torch.cuda.get_device_name(0)) if (
        args.device != "cpu" and torch.cuda.is_available()) else "cpu, %d threads" % torch.get_num_threads())
    log("frame %dx%d" % args.size)
    frame = make_frame(*args.size)
    rows = []
    for m in models:
        for precision in args.precision:
            for memory_format in args.memory_format:
                rows += bench_model(os.path.abspath(m), frame, args, precision, memory_format)
    out = {"machine": info, "size": list(args.size), "repeats": args.repeats, "results": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    print(json.dumps(out, indent=2))
    print(markdown(rows, args.size, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
