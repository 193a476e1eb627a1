"""Decoder speed: the fast decoder at every operating point and the diffusion decoder (where
the model has one), per frame, on whatever device is present.

    python benchmarks/decoder_speed.py [--model DIR ...] [--size 1936x1112] [--repeats N]
                                       [--steps 1 4] [--device auto|cpu|cuda] [--threads N]
                                       [--precision auto fp32 bf16 fp16]
                                       [--memory-format auto channels_last contiguous]
                                       [--render auto host device] [--compile none reduce-overhead ...]
                                       [--breakdown] [--json OUT]

For each model (default: models/default and models/colour where present), the frame
(12-bit RGGB, unprocessed from a collage of scikit-image photographs, as
benchmarks/encoder_speed.py makes it) is compressed once per quality; then
``Codec.decompress`` is timed: one warm-up and ``--repeats`` timed decodes, the median
reported. That is what the decoder node and ``rawdiff decompress`` run: entropy decoding,
the decoder, the colour stage, 8-bit output, the deblocking filter (timed alone as well, the
``deblocking filter`` rows, where the model has one and renders on the host: part of the fast
rows' time). The diffusion decoder (``--steps``, at the model's default quality) is timed the
same way with seed 0, at the model's default realism. Each ``--precision`` (default ``auto``:
bfloat16/float16 autocast on CUDA, float32 on the CPU; ``Codec.load(precision=...)``), each
``--memory-format`` (default ``auto``: channels_last on the CPU, NCHW elsewhere; ``contiguous``
is NCHW; ``Codec.load(memory_format=...)``), each ``--render`` (where the colour stage, filter
and texture run: ``Codec.render_on_device``) and each ``--compile`` mode
(``Codec.load(compile_mode=...)``; the first decode compiles, the warm-up pays it) is a set
of rows. ``--breakdown`` adds, for the default quality's fast and diffusion (``--steps``' last)
decodes, the median time of each part of ``Codec.decompress`` run one
after the other: parsing (header and entropy decoding), the networks (``decode_indices``, to
host memory), the colour stage (``render``), the deblocking filter and the texture stage; or,
rendered on the device, the networks, colour stage, filter and texture there and the copy of
the uint8 image to the host (the ``part`` rows; on CUDA each part is synchronised). Prints
JSON, then a markdown table, on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import itertools
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


def synchronise(codec) -> None:
    """Wait for the codec's device (CUDA kernels are asynchronous)."""
    import torch

    if codec.device.type == "cuda":
        torch.cuda.synchronize(codec.device)


def breakdown(codec, data: bytes, mode: str, steps: int, repeats: int) -> dict:
    """Median seconds of each part of ``codec.decompress(data, mode, steps, seed=0)``."""
    parts = {}
    header, codes = codec.parse(data)
    gain, realism = codec.realism_split(mode, None)

    def part(name, fn):
        def run():
            fn()
            synchronise(codec)
        parts[name] = timed(run, repeats)

    part("parse", lambda: codec.parse(data))
    if codec.render_on_device and codec.out != "raw":
        device_parts(codec, header, codes, mode, steps, realism, gain, part)
        return parts
    if codec.tiled(header.code_shape):  # the host's parts below are those of a frame decoded whole
        log("breakdown: a frame decoded in tiles is broken down rendered on the device only")
        return parts
    output = codec.decode_indices(codes, mode, steps, 0, header.code_shape, realism)
    rgb = codec.render(output, header)
    deblocked = codec.deblocked(rgb, len(codes))
    part("networks", lambda: codec.decode_indices(codes, mode, steps, 0, header.code_shape, realism))
    part("colour stage", lambda: codec.render(output, header))
    if codec.deblock_filters is not None:
        part("deblocking filter", lambda: codec.deblocked(rgb, len(codes)))
    if gain > 0:
        part("texture", lambda: codec.textured(deblocked, len(codes), 0, gain, codec.texture_level(header)))
    return parts


def device_parts(codec, header, codes, mode: str, steps: int, realism, gain: float, part) -> None:
    """The parts of a decode rendered on the networks' device (``Codec._decompress_on_device``
    step by step)."""
    import torch

    from rawdiff.codec import device_render
    from rawdiff.codec.deblock import filter_levels

    if gain > 0:
        codec._texture_stage()
    with torch.inference_mode():
        def networks():  # gathered from the tiles where it tiles, as Codec._decompress_on_device does
            if codec.tiled(header.code_shape):
                return codec._tiled_output_on_device(codes, header, mode, steps, 0, realism)
            return codec._network_output(codes, mode, steps, 0, header.code_shape, realism)

        rgb = networks()[:, : header.height, : header.width]

        def colour():
            return codec._levels_on_device(rgb, header)

        levels = colour()
        part("networks", networks)
        part("colour stage", colour)
        if codec.deblock_filters is not None:
            setting = codec.deblock_filters[len(codes) - 1]
            part("deblocking filter", lambda: filter_levels(levels.clone(), codec.factor, setting))
        if gain > 0:
            part("texture", lambda: codec._textured_tensor(levels[None] / 255.0, len(codes), 0, gain,
                                                           codec.texture_level(header)))
        part("copy to host", lambda: device_render.to_host(levels))


def bench_model(model_dir: str, frame, args, precision: str, memory_format: str, render: str = "auto",
                compile_mode: str = "none") -> list:
    from rawdiff.codec import Codec
    codec = Codec.load(model_dir, device=args.device, backend="torch", threads=args.threads or None,
                       precision=precision, memory_format=memory_format, compile_mode=compile_mode,
                       tile=args.tile)
    tiled = codec.tiled(codec.code_shape(*frame.mosaic.shape))
    if render != "auto":
        codec.render_on_device = render == "device"
    setting = "%s, %s, render %s, compile %s" % (precision, memory_format, render, compile_mode)
    has_diffusion = os.path.isfile(os.path.join(model_dir, "diffusion.safetensors"))
    rows = []
    name = os.path.relpath(model_dir, ROOT)
    for q in args.qualities or range(1, codec.qualities + 1):
        data = codec.compress(frame, quality=q)
        s = timed(lambda data=data: codec.decompress(data, mode="fast"), args.repeats)
        rows.append({"model": name, "path": "fast", "quality": q, "steps": None, "bytes": len(data), "s": s})
        log("%s q%d fast (%s): %.3f s" % (name, q, setting, s))
        if getattr(codec, "deblock_filters", None) is not None and not codec.render_on_device:
            # its share of the fast decode on the host (on the device: the --breakdown rows)
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
            log("%s q%d diffusion %d steps (%s): %.3f s" % (name, codec.default_quality, steps, setting, s))
    if args.breakdown:
        data = codec.compress(frame, quality=codec.default_quality)
        runs = [("fast", None)] + ([("diffusion", args.steps[-1])] if has_diffusion and args.steps else [])
        for mode, steps in runs:
            for part, s in breakdown(codec, data, mode, steps or 1, args.repeats).items():
                rows.append({"model": name, "path": "%s: %s" % (mode, part), "quality": codec.default_quality,
                             "steps": steps, "bytes": len(data), "s": s})
                log("%s q%d %s part %s: %.4f s" % (name, codec.default_quality, mode, part, s))
    for r in rows:
        r["fps"] = 1.0 / r["s"]
        r["precision"] = precision
        r["memory_format"] = memory_format
        r["render"] = "device" if codec.render_on_device else "host"
        r["compile"] = compile_mode
        r["tiled"] = tiled
    return rows


def markdown(rows: list, size, info: dict) -> str:
    lines = ["%s, %s cores, %s; %dx%d; median of the timed decodes" % (
        info["cpu"], info["cores"], info["device"], size[0], size[1]), "",
        "| model | path | precision | memory format | render | compile | quality | steps | bytes | s/frame | "
        "frames/s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %s | %s | %s | %s | %s | %s | %d | %s | %d | %.4f | %.2f |" % (
            r["model"], r["path"], r["precision"], r["memory_format"], r["render"], r["compile"], r["quality"],
            r["steps"] or "—", r["bytes"], r["s"], r["fps"]))
    return "\n".join(lines)


def main(argv=None) -> int:
    from rawdiff.codec.limits import DEFAULT_TILE
    from rawdiff.device import COMPILE_MODES

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
    p.add_argument("--render", nargs="+", default=["auto"], choices=["auto", "host", "device"],
                   help="where the colour stage, deblocking filter and texture run (default auto: on the networks' "
                   "device when it is an accelerator; Codec.render_on_device)")
    p.add_argument("--compile", nargs="+", default=["none"], choices=list(COMPILE_MODES),
                   help="torch.compile mode of the decoder networks (default none; Codec.load(compile_mode=...))")
    p.add_argument("--qualities", type=int, nargs="+", help="the fast path's operating points (default: all)")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, help="decode code grids larger than this in tiles "
                   "(default: the codec's, %d codes; 0: never)" % DEFAULT_TILE)
    p.add_argument("--breakdown", action="store_true",
                   help="also time each part of the default quality's fast and diffusion decodes")
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
    failed = []
    for m, precision, memory_format, render, compile_mode in itertools.product(
            models, args.precision, args.memory_format, args.render, args.compile):
        try:
            rows += bench_model(os.path.abspath(m), frame, args, precision, memory_format, render, compile_mode)
        except Exception as exc:  # noqa: BLE001 - a setting this machine cannot run is a result
            first = (str(exc).splitlines() or [""])[0][:300]
            failed.append({"model": m, "precision": precision, "memory_format": memory_format, "render": render,
                           "compile": compile_mode, "error": "%s: %s" % (type(exc).__name__, first)})
            log("failed: %s" % failed[-1])
    out = {"machine": info, "size": list(args.size), "repeats": args.repeats, "results": rows, "failed": failed}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    print(json.dumps(out, indent=2))
    print(markdown(rows, args.size, info))
    for f in failed:
        print("failed: %s" % json.dumps(f))
    return 0


if __name__ == "__main__":
    sys.exit(main())
