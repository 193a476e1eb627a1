"""``rawdiff`` command line: argument parsing only; the work is done by the library.

    rawdiff isp INPUT -o OUT.png
    rawdiff compress INPUT -o OUT.rdc [--model DIR]
    rawdiff decompress IN.rdc -o OUT.png [--mode fast] [--model DIR] [--output rgb|raw] [--max-pixels N] [--tile N]
    rawdiff info IN.rdc | --model DIR
    rawdiff prepare-data (--default | --source PATH...) --out DIR
    rawdiff train --base CFG.yaml [--resume CKPT] [--accelerator gpu] [--devices N] [key=value ...]

Bad input prints one line naming the problem and exits non-zero. Outputs are checked
before any work (suffix, folder, writability, not one of the inputs) and written
atomically (:mod:`rawdiff.outputs`). What the library logs on the ``rawdiff`` logger (the
encoder backend chosen and why, clipped pixels) goes to stderr as ``rawdiff CMD: ...``.
A closed stdout (``rawdiff info f.rdc | head``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from contextlib import contextmanager
from typing import Iterator, List, Optional

from rawdiff.codec.limits import DEFAULT_ENCODE_ROWS, DEFAULT_MAX_PIXELS, DEFAULT_TILE, MIN_TILE
from rawdiff.codec.modeldir import DEFAULT_DIFFUSION_STEPS, TEXTURE_LEGACY_SIGMAS, deblocked_qualities, diffusion_steps
from rawdiff.outputs import atomic_output, check_folder, check_output, write_bytes
from rawdiff.paths import DEFAULT_MODEL_DIR as DEFAULT_MODEL

#: What `rawdiff isp` and `rawdiff decompress` write RGB images as (OpenCV picks the format by suffix).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
RAW_OUTPUT_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".dng")
BITSTREAM_SUFFIXES = (".rdc",)


def _add_raw_input(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=_input_path,
                   help="DNG, 16-bit PNG/TIFF or .npy mosaic (+ .json sidecar), or packed CSI-2")
    p.add_argument("--format", choices=["raw10p", "raw12p"], help="packed MIPI CSI-2 input")
    p.add_argument("--width", type=int, help="frame width (packed input)")
    p.add_argument("--height", type=int, help="frame height (packed input)")
    p.add_argument("--stride", type=int, help="bytes per line of packed input (default: no padding)")
    p.add_argument("--cfa", help="CFA pattern: RGGB, BGGR, GRBG or GBRG")
    p.add_argument("--black-level", type=float, help="sensor black level")
    p.add_argument("--white-level", type=float, help="sensor white (saturation) level")


def _add_decoder_options(p: argparse.ArgumentParser) -> None:
    """--model, --mode, --steps, --seed, --realism and --device of the commands that decode."""
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="DIR",
                   help="the model directory the codes were made with (default: the shipped model, models/default)")
    p.add_argument("--mode", default="fast", choices=["fast", "diffusion"],
                   help="fast: one pass of the decoder (default); diffusion: the latent diffusion decoder (a model "
                        "that has one, as the shipped model)")
    p.add_argument("--steps", type=_positive_int,
                   help="diffusion sampling steps (default %d; --mode diffusion only)" % DEFAULT_DIFFUSION_STEPS)
    p.add_argument("--seed", type=int, default=0, help="diffusion noise seed")
    p.add_argument("--realism", type=realism_arg, metavar="R",
                   help="diffusion only: 0 is the fast path, 1 a whole sample (texture back, less like the scene "
                        "pixel for pixel), finest scale first: with a texture stage its first share draws pixel "
                        "texture, the rest the latent's channels; default: the model's")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")


def _add_decoder_limits(p: argparse.ArgumentParser) -> None:
    """--max-pixels and --tile of the commands that decode (Codec.load's max_pixels and tile)."""
    p.add_argument("--max-pixels", type=_non_negative_int, default=DEFAULT_MAX_PIXELS,
                   help="refuse frames larger than this many pixels, from their header (default %(default)d: "
                        "4 x 3868 x 2176; 0: no limit)")
    p.add_argument("--tile", type=_tile, default=DEFAULT_TILE,
                   help="decode frames larger than N x N codes (8N pixels at f8) in tiles of that size: memory "
                        "stays that of a tile (default %(default)d; 0: never)")


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a whole number" % text) from None


def _input_path(text: str) -> str:
    """argparse type of an input file's name: not empty (``""`` would be the current folder)."""
    if not text:
        raise argparse.ArgumentTypeError("the input path is empty")
    return text


def _non_negative_int(text: str) -> int:
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0, got %d" % value)
    return value


def _positive_int(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1, got %d" % value)
    return value


def realism_arg(text: str) -> float:
    """argparse type of a diffusion ``--realism`` (:func:`rawdiff.codec.modeldir.check_realism`)."""
    from rawdiff.codec.modeldir import check_realism

    try:
        return check_realism(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _tile(text: str) -> int:
    value = _non_negative_int(text)
    if 0 < value < MIN_TILE:
        raise argparse.ArgumentTypeError("must be 0 (no tiling) or at least %d codes, got %d" % (MIN_TILE, value))
    return value


def _add_encoder_options(p: argparse.ArgumentParser) -> None:
    """--backend, --threads, --encode-rows (Codec.load's) and --static-tables of the commands
    that encode."""
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"],
                   help="encoder: auto (the model's encoder.onnx when present and current, else torch)")
    p.add_argument("--threads", type=int, help="CPU threads for the encoder (default: the libraries')")
    p.add_argument("--encode-rows", type=_non_negative_int, default=DEFAULT_ENCODE_ROWS,
                   help="plane rows (half the RAW rows) the encoder codes at a time, which bounds its memory; "
                        "0: whole frames (default %(default)s; the codes are the same)")
    p.add_argument("--static-tables", action="store_true",
                   help="code with the model's tables as they are, not adapted to the frame: streams of format "
                        "version 6 or before, for readers older than version 7 (4 to 14 %% larger on the test frames)")


def _read_input(args):
    from rawdiff.raw import read_raw

    overrides = {k: getattr(args, k) for k in ("format", "width", "height", "stride", "cfa",
                                               "black_level", "white_level") if getattr(args, k) is not None}
    return read_raw(args.input, **overrides)


def _raw_inputs(path: str) -> List[str]:
    """A RAW input and its JSON sidecar: what an output must not overwrite."""
    from rawdiff.raw.io import sidecar_path

    return [path, str(sidecar_path(path))]


def _write_image(rgb, path: str) -> None:
    import cv2

    with atomic_output(path) as part:
        if not cv2.imwrite(part, rgb[:, :, ::-1]):
            raise ValueError("OpenCV could not write the image %s" % path)


def cmd_isp(args) -> int:
    from rawdiff.raw.isp import render

    check_output(args.output, IMAGE_SUFFIXES, _raw_inputs(args.input))
    frame = _read_input(args)
    _write_image(render(frame), args.output)
    print("%s: %dx%d %s -> %s" % (args.input, frame.width, frame.height, frame.cfa, args.output))
    return 0


def cmd_compress(args) -> int:
    from rawdiff.codec import Codec

    check_output(args.output, BITSTREAM_SUFFIXES, _raw_inputs(args.input))
    frame = _read_input(args)
    codec = Codec.load(args.model, device=args.device, backend=args.backend, threads=args.threads,
                       encode_rows=args.encode_rows)
    quality = codec.check_quality(args.quality)
    codec.adaptive_coding = not args.static_tables
    payload = codec.compress(frame, source_encoding=args.source_encoding, quality=quality)
    write_bytes(args.output, payload)
    bpp = 8.0 * len(payload) / (frame.width * frame.height)
    print("%s: %dx%d -> %d bytes, %.4f bpp, quality %d of %d (%s)" % (
        args.input, frame.width, frame.height, len(payload), bpp, quality, codec.qualities, args.output))
    return 0


def cmd_truncate(args) -> int:
    from rawdiff.codec.bitstream import read_header, truncate

    check_output(args.output, BITSTREAM_SUFFIXES, [args.input])
    data = _read_bytes(args.input)
    cut = truncate(data, args.quality)
    write_bytes(args.output, cut)
    header = read_header(cut)
    print("%s: quality %d, %d bytes -> quality %d, %d bytes, %.4f bpp (%s)" % (
        args.input, read_header(data, verify=False).quality, len(data), header.quality, len(cut),
        8.0 * len(cut) / (header.width * header.height), args.output))
    return 0


def _read_bytes(path: str) -> bytes:
    if os.path.isdir(path):
        raise ValueError("%s is a directory, not a bitstream file" % path)
    if not os.path.exists(path):
        raise FileNotFoundError("%s does not exist" % path)
    with open(path, "rb") as f:
        return f.read()


def cmd_decompress(args) -> int:
    from rawdiff.codec import Codec

    output_kind = args.output_kind or ("raw" if args.output.lower().endswith(".dng") else "rgb")
    if output_kind == "raw":
        suffix = os.path.splitext(args.output)[1].lower()
        if suffix not in RAW_OUTPUT_SUFFIXES:
            raise ValueError("--output raw writes %s, not %r (%s)"
                             % (", ".join(RAW_OUTPUT_SUFFIXES), suffix or "no suffix", args.output))
    steps = diffusion_steps(args.mode, args.steps, args.realism)
    check_output(args.output, RAW_OUTPUT_SUFFIXES if output_kind == "raw" else IMAGE_SUFFIXES, [args.input])
    payload = _read_bytes(args.input)
    from rawdiff.codec.bitstream import read_header
    from rawdiff.codec.limits import check_frame_size, check_max_pixels

    # a frame over the limit is refused from its header, before the model is loaded
    check_frame_size(read_header(payload), check_max_pixels(args.max_pixels))
    codec = Codec.load(args.model, device=args.device, max_pixels=args.max_pixels, tile=args.tile)
    if output_kind == "raw":
        frame = codec.decompress_raw(payload, mode=args.mode, steps=steps, seed=args.seed,
                                     realism=args.realism)
        _write_raw_frame(frame, args.output)
        print("%s: %d bytes -> %dx%d %s mosaic (%s)" % (args.input, len(payload), frame.width, frame.height,
                                                       frame.cfa, args.output))
        return 0
    rgb = codec.decompress(payload, mode=args.mode, steps=steps, seed=args.seed, realism=args.realism)
    _write_image(rgb, args.output)
    print("%s: %d bytes -> %dx%d RGB (%s)" % (args.input, len(payload), rgb.shape[1], rgb.shape[0], args.output))
    return 0


def _write_raw_frame(frame, path: str) -> None:
    """A reconstructed RAW frame: DNG, or a 16-bit mosaic with the JSON sidecar the readers
    take (each written atomically)."""
    if path.lower().endswith(".dng"):
        from rawdiff.raw.dng import write_dng

        write_dng(frame, path)
    else:
        from rawdiff.raw.io import write_raw

        write_raw(frame, path)


def cmd_info(args) -> int:
    """A bitstream's header as JSON (each stage with its grid, bits per index and bpp), or
    with ``--model DIR`` the model's stages and measured operating points."""
    from rawdiff.codec.bitstream import read_header

    if (args.input is None) == (args.model is None):
        raise ValueError("give a bitstream (rawdiff info IN.rdc) or a model (rawdiff info --model DIR), one of them")
    if args.model is not None:
        return _model_info(args.model, args.json)
    payload = _read_bytes(args.input)
    header = read_header(payload)
    info = header.to_dict()
    info["bytes"] = len(payload)
    info["bpp"] = round(8.0 * len(payload) / (info["width"] * info["height"]), 6)
    for st, (h, w) in zip(info["stages"] or [], header.stage_shapes()):
        st.update(grid=[h, w], bits_per_index=round(8.0 * st["bytes"] / (h * w), 4),
                  bpp=round(8.0 * st["bytes"] / (info["width"] * info["height"]), 6))
        if header.adapt:  # the stream's "adapt" values, named: those its version carries (rawdiff.codec.adaptive)
            st["adaptive_coding"] = dict(zip(("strength_exponent", "pool", "parent_level", "aging"), st["adapt"]))
    print(json.dumps(info, indent=2, sort_keys=True))
    return 0


def _model_info(model_dir: str, as_json: bool) -> int:
    """`rawdiff info --model DIR`: read from model.json (no weights loaded, no torch)."""
    import math

    from rawdiff.codec.modeldir import read_model_dir

    meta = read_model_dir(model_dir)["meta"]
    factor, prior = int(meta["factor"]), meta.get("prior") or {}
    stages = meta.get("stages") or [[1, meta["codebook_size"]]]
    fitted = prior.get("stages") or [{"bits_per_index": prior.get("bits_per_index"),
                                      "codes_used": prior.get("codes_used")}]
    rows = [{"stage": k + 1, "scale": int(sc), "grid_factor": factor * int(sc), "codebook_size": int(size),
             "log2_k": math.log2(int(size)), "prior_bits_per_index": (fitted[k] if k < len(fitted) else {}).get(
                 "bits_per_index"), "codes_used": (fitted[k] if k < len(fitted) else {}).get("codes_used")}
            for k, (sc, size) in enumerate(stages)]
    default = int(meta.get("default_quality") or len(stages))
    points = meta.get("operating_points") or []
    texture = {k: meta["texture"][k]
               for k in ("share", "gain", "realism", "parameters", "sigmas", "amplify", "noise", "level")
               if k in meta["texture"]} \
        if meta.get("texture") else None
    deblock = {k: meta["deblock"][k] for k in ("taps", "clip", "beta")} if meta.get("deblock") else None
    streams = list(meta.get("streams_of") or [])
    update = {k: meta["decoder_update"][k] for k in ("base_model_id", "decoder_model_id", "tensors", "bytes")
              if k in meta["decoder_update"]} if meta.get("decoder_update") else None
    if as_json:
        print(json.dumps({"model_dir": model_dir, "model_id": meta["model_id"], "factor": factor,
                          "out": meta.get("out"), "prior_kind": meta.get("prior_kind"), "stages": rows,
                          "qualities": len(stages), "default_quality": default, "operating_points": points,
                          "texture": texture, "deblock": deblock, "decoder_update": update,
                          "streams_of": streams},
                         indent=2, sort_keys=True))
        return 0

    def num(fmt: str, v) -> str:
        return "-" if v is None else fmt % v

    lines = ["model %s (%s): f%d, decoder output %s, %s prior%s" % (
        meta["model_id"], model_dir, factor, meta.get("out", "rgb"), meta.get("prior_kind", "?"),
        ", diffusion decoder" if "diffusion" in meta else "")
        + (", texture stage (%d parameters, %d bands; realism: texture up to %g, the default %g%s)"
           % (texture.get("parameters", 0), len(texture.get("sigmas", TEXTURE_LEGACY_SIGMAS)), texture["share"],
              texture["realism"], "; its level from the detail statistics the streams carry"
              if texture.get("level") else "")
           if texture else "")
        + (", deblocking filter at qualities %s" % ",".join(str(q) for q in deblocked_qualities(deblock))
           if deblock else "")
        + (", the decoder side of model %s stored as an update of model %s's weights (%d bytes)"
           % (update.get("decoder_model_id"), update.get("base_model_id"), update.get("bytes", 0)) if update else "")
        + ("; also decodes the streams of model%s %s (the same codes and prior)"
           % ("s" if len(streams) > 1 else "", ", ".join(streams)) if streams else ""),
        "", "stages, coarse to fine (prior bits per index on the training split%s):"
        % (", %d frames" % prior["frames"] if prior.get("frames") else ""),
        "  stage  grid  K      log2 K  prior bits/index  codes used"]
    lines += ["  %-6d f%-4d %-6d %-7.2f %-17s %s" % (r["stage"], r["grid_factor"], r["codebook_size"], r["log2_k"],
                                                   num("%.3f", r["prior_bits_per_index"]), num("%d", r["codes_used"]))
              for r in rows]
    lines.append("")
    if not points:
        lines.append("operating points: qualities 1..%d (default %d), not measured yet: rawdiff eval --model %s "
                     "data/corpus/test.txt --write-operating-points" % (len(stages), default, model_dir))
    else:
        lines += ["operating points (rawdiff compress --quality Q; default %d):" % default,
                  "  quality  bpp      PSNR (dB)  MS-SSIM  frames  split"]
        lines += ["  %-8s %-8s %-10s %-8s %-7s %s" % (
            "%d%s" % (p["quality"], "*" if p["quality"] == default else ""), num("%.4f", p.get("bpp")),
            num("%.2f", p.get("psnr")), num("%.4f", p.get("ms_ssim")), num("%d", p.get("frames")),
            p.get("split", "-") + (" (centre crops of %d pixels)" % p["max_pixels"] if p.get("max_pixels") else ""))
            for p in points]
        lines.append("  (* the default quality)")
    print("\n".join(lines))
    return 0


def cmd_train(args) -> int:
    from rawdiff.train import train

    devices = args.devices
    if devices not in (None, "auto"):
        devices = int(devices) if devices.lstrip("-").isdigit() else devices
    # `--base A.yaml B.yaml key=value` (no option in between): argparse gives the overrides to --base
    bases = [b for b in args.base or [] if "=" not in b]
    overrides = [b for b in args.base or [] if "=" in b] + list(args.overrides)
    train(bases, overrides=overrides, resume=args.resume, do_train=args.train,
          accelerator=args.accelerator, devices=devices, max_epochs=args.max_epochs, max_steps=args.max_steps,
          log_every_n_steps=args.log_every_n_steps, strategy=args.strategy, logdir=args.logdir,
          name=args.name, seed=args.seed, export=args.export)
    return 0


def cmd_fit_texture(args) -> int:
    """Fit the texture stage of a model directory on its own fast decodes of ``DATA``."""
    from rawdiff.codec import Codec
    from rawdiff.codec.detail_stats import FEATURES
    from rawdiff.codec.modeldir import DIFFUSION_FILE, check_texture_settings
    from rawdiff.eval.frames import find_frames
    from rawdiff.models.texture import CHANNELS, SIGMAS
    from rawdiff.texture_fit import fit_level, fit_texture, level_examples, set_texture_level, write_texture

    codec = Codec.load(args.model, threads=args.threads)
    if not codec.has_diffusion:
        raise ValueError("model %s has no diffusion decoder (%s): the texture stage is part of its realism path"
                         % (args.model, DIFFUSION_FILE))
    if args.level_only and (codec.texture_settings is None
                            or list(codec.texture_settings.get("sigmas") or ()) != list(SIGMAS)):
        raise ValueError("--level-only: model %s has no texture stage of the bands %s to keep"
                         % (args.model, list(SIGMAS)))
    # the settings not given: the model's own with --level-only, else the defaults; checked
    # before the decodes and the fit
    base = codec.texture_settings if args.level_only else TEXTURE_DEFAULTS
    settings = {k: base[k] if getattr(args, k) is None else getattr(args, k) for k in TEXTURE_DEFAULTS}
    check_texture_settings(settings["share"], settings["gain"], settings["realism"], CHANNELS, SIGMAS,
                           settings["amplify"], settings["noise"])
    paths = find_frames(args.data)[: args.max_frames or None]
    level = None
    if args.level_only or len(paths) > FEATURES + 1:
        level = dict(fit_level(*level_examples(codec, paths, args.max_pixels, SIGMAS)), data=list(args.data))
    if args.level_only:
        entry = set_texture_level(args.model, level, **settings)
    else:
        if level is None:
            logging.getLogger("rawdiff").warning(
                "%d frames are too few to fit the texture's level on %d detail statistics: the texture stage keeps "
                "its network's own level", len(paths), FEATURES)
        examples = _fit_examples(codec, args)
        net, record = fit_texture(examples, steps=args.steps, seed=args.seed, crop=args.crop, batch=args.batch,
                                  max_seconds=None if args.max_minutes is None else 60.0 * args.max_minutes)
        record["data"] = list(args.data)
        entry = write_texture(args.model, net, settings["share"], settings["gain"], record,
                              realism=settings["realism"], amplify=settings["amplify"], noise=settings["noise"],
                              level=level)
    print(json.dumps(entry, indent=2, sort_keys=True))
    return 0


#: the texture stage's settings where `rawdiff fit-texture` is not given them (the shipped
#: model's settings go with its level: Makefile's TEXTURE_ARGS)
TEXTURE_DEFAULTS = {"share": 0.25, "gain": 1.0, "realism": 0.25, "amplify": [1.0, 2.0, 2.0], "noise": [1.0, 1.0, 0.0]}


def _fit_examples(codec, args, deblock: bool = True):
    """The fits' (reference, fast decodes at every operating point) of the frames of
    ``args.data`` (at most ``args.max_frames``, centre crops of ``args.max_pixels``)."""
    from rawdiff.eval.frames import find_frames
    from rawdiff.texture_fit import decoded_examples

    paths = find_frames(args.data)
    if args.max_frames:
        paths = paths[: args.max_frames]
    if not paths:
        raise ValueError("no frames in %s" % ", ".join(args.data))
    log = logging.getLogger("rawdiff")
    return decoded_examples(codec, paths, args.max_pixels, deblock=deblock,
                            progress=lambda i, n: log.info("decoded %d/%d frames at %d qualities", i, n,
                                                           codec.qualities))


def cmd_fit_deblock(args) -> int:
    """Choose the deblocking filter of a model directory on its own fast decodes of ``DATA``."""
    from rawdiff.codec import Codec
    from rawdiff.deblock_fit import fit_deblock, write_deblock

    codec = Codec.load(args.model, threads=args.threads)
    examples = _fit_examples(codec, args, deblock=False)
    log = logging.getLogger("rawdiff")
    settings, record = fit_deblock(examples, codec.factor,
                                   progress=lambda q, n: log.info("chose the filter of quality %d/%d", q, n))
    record["data"] = list(args.data)
    entry = write_deblock(args.model, settings, record)
    print(json.dumps(entry, indent=2, sort_keys=True))
    return 0


def cmd_decoder_update(args) -> int:
    """OUT: the model directory --model with the decoder side of --decoder, stored as an
    update of --model's weights."""
    from rawdiff.export.model_dir import export_decoder_update

    entry = export_decoder_update(args.model, args.decoder, args.out)
    print(json.dumps({k: v for k, v in entry.items() if k != "training"}, indent=2, sort_keys=True))
    return 0


def _eval_with_checked_out(run):
    """`rawdiff eval`, its --out folder checked (and its absence fine) before the evaluation."""

    def checked(args) -> int:
        check_folder(args.out, "--out folder")
        return run(args)

    return checked


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rawdiff", description="Learned compression of RAW Bayer frames.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("isp", help="reference ISP: RAW -> sRGB PNG")
    _add_raw_input(p)
    p.add_argument("-o", "--output", required=True, help="OUT.png (or .jpg, .tif, .bmp, .webp)")
    p.set_defaults(func=cmd_isp)

    p = sub.add_parser("compress", help="RAW frame -> .rdc bitstream")
    _add_raw_input(p)
    p.add_argument("-o", "--output", required=True, help="OUT.rdc")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model directory (default: models/default)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    _add_encoder_options(p)
    p.add_argument("--source-encoding", default="", help="recorded in the header, e.g. bayer_rggb16")
    p.add_argument("--quality", type=_positive_int,
                   help="operating point: 1 (smallest) to the model's number of quantizer stages (`rawdiff info "
                        "--model DIR` lists them); default: the model's default quality")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("truncate", help="cut an .rdc bitstream to a lower quality without re-encoding")
    p.add_argument("input", type=_input_path, help="IN.rdc")
    p.add_argument("-o", "--output", required=True, help="OUT.rdc: the bitstream encoding at --quality gives")
    p.add_argument("--quality", type=_positive_int, required=True, help="1 to the input's quality")
    p.set_defaults(func=cmd_truncate)

    p = sub.add_parser("decompress", help=".rdc bitstream -> RGB PNG, or the RAW frame (--output raw)")
    p.add_argument("input", type=_input_path, help="IN.rdc")
    p.add_argument("-o", dest="output", metavar="OUT", required=True,
                   help="OUT.png (RGB); with --output raw: OUT.png/.tif/.npy (+ .json sidecar) or OUT.dng")
    _add_decoder_options(p)
    p.add_argument("--output", dest="output_kind", choices=["rgb", "raw"],
                   help="rgb: sRGB image (default); raw: the reconstructed mosaic as a 16-bit PNG/TIFF/.npy "
                        "with its JSON sidecar, or a DNG (the default for a .dng name)")
    _add_decoder_limits(p)
    p.set_defaults(func=cmd_decompress)

    p = sub.add_parser("info", help="print a bitstream's header as JSON, or a model's stages and operating points")
    p.add_argument("input", nargs="?", type=_input_path, help="IN.rdc")
    p.add_argument("--model", metavar="DIR", help="a model directory instead: its stages and the operating points "
                   "measured by `rawdiff eval --write-operating-points`")
    p.add_argument("--json", action="store_true", help="with --model: as JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("prepare-data", help="build a paired RAW/RGB dataset with splits")
    from rawdiff.data import prepare as prep
    from rawdiff.ros import bag as bag_reader  # noqa: F401 (registers the reader of bag sources)

    prep.add_arguments(p)
    p.set_defaults(func=prep.run)

    p = sub.add_parser("export-onnx", help="write the encoder (with code search) as DIR/encoder.onnx")
    from rawdiff.export import onnx as onnx_export

    p.add_argument("--model", default=DEFAULT_MODEL, help="model directory (default: models/default)")
    p.add_argument("--opset", type=int, default=onnx_export.DEFAULT_OPSET,
                   help="ONNX opset, %d..%d (default %d: onnxruntime 1.17+)"
                   % (onnx_export.OPSET_RANGE + (onnx_export.DEFAULT_OPSET,)))
    p.set_defaults(func=onnx_export.run)

    p = sub.add_parser("decoder-update", help="a model directory with the decoder side of another on the same "
                       "codes, stored as 8-bit differences from its own weights")
    p.add_argument("--model", default=DEFAULT_MODEL, help="the base model directory (default: models/default)")
    p.add_argument("--decoder", required=True, help="model directory whose decoder side to take (the same codes)")
    p.add_argument("-o", "--out", required=True, help="the new model directory (must not exist)")
    p.set_defaults(func=cmd_decoder_update)

    p = sub.add_parser("bag", help="transcode ROS 1 bags and MCAP files offline, one or a collection on Ray: "
                                   "RAW frames <-> codes")
    from rawdiff.ros import bag_cli

    bag_cli.add_arguments(p, DEFAULT_MODEL, _add_encoder_options, _add_decoder_options, _add_decoder_limits,
                          _positive_int)

    p = sub.add_parser("eval", help="rate-distortion evaluation against JPEG, WebP, JPEG XL and AVIF")
    from rawdiff.eval import cli as eval_cli

    eval_cli.add_arguments(p, realism_arg)
    p.set_defaults(func=_eval_with_checked_out(eval_cli.run))

    p = sub.add_parser("fit-texture", help="fit a model directory's texture stage (the realism path's finest "
                       "texture) on its own fast decodes")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model directory (written in place)")
    p.add_argument("data", nargs="+", help="index files or folders of training frames (data/corpus/train.txt)")
    p.add_argument("--steps", type=_positive_int, default=16000)
    p.add_argument("--crop", type=_positive_int, default=128, help="training crops of this side (pixels)")
    p.add_argument("--batch", type=_positive_int, default=16)
    p.add_argument("--max-minutes", type=float, help="stop the fit after this wall time")
    p.add_argument("--max-frames", type=_non_negative_int, default=0, help="at most this many frames (0: all)")
    p.add_argument("--max-pixels", type=_positive_int, default=400_000, help="centre crop of each frame")
    p.add_argument("--share", type=float, help="the share of the realism knob the texture takes (default 0.25)")
    p.add_argument("--gain", type=float,
                   help="at full share the texture raises the image's band energies to gain^2 times the predicted "
                   "(default 1)")
    p.add_argument("--amplify", type=float, nargs="+", metavar="A",
                   help="raise the image's own detail in each band by at most this factor before adding noise "
                   "(1: none), finest band first (sigma 1, 2, 4; default 1 2 2)")
    p.add_argument("--noise", type=float, nargs="+", metavar="SHARE",
                   help="share of each band's remaining deficit filled with noise, finest band first (sigma 1, 2, 4; "
                   "default 1 1 0)")
    p.add_argument("--realism", type=realism_arg, help="the model's default realism with texture (default 0.25)")
    p.add_argument("--level-only", action="store_true",
                   help="keep the model's texture network and settings (those given here replace theirs); fit only "
                   "its level on the frames' detail statistics")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive_int)
    p.set_defaults(func=cmd_fit_texture)

    p = sub.add_parser("fit-deblock", help="choose a model directory's deblocking filter (the cells' edges) "
                       "on its own fast decodes")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model directory (written in place)")
    p.add_argument("data", nargs="+", help="index files or folders of frames (data/corpus/val.txt)")
    p.add_argument("--max-frames", type=_non_negative_int, default=0, help="at most this many frames (0: all)")
    p.add_argument("--max-pixels", type=_positive_int, default=400_000, help="centre crop of each frame")
    p.add_argument("--threads", type=_positive_int)
    p.set_defaults(func=cmd_fit_deblock)

    p = sub.add_parser("train", help="train a model from a YAML config (Lightning)")
    p.add_argument("-b", "--base", nargs="*", default=[], help="config files, merged left to right")
    p.add_argument("-r", "--resume", help="checkpoint or run folder to resume from")
    p.add_argument("-t", "--train", type=lambda s: s.lower() in ("1", "true", "yes"), default=True,
                   help="train (default true); false only exports the model of --resume")
    p.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    p.add_argument("--devices", default="auto", help="number of devices or a list")
    p.add_argument("--strategy", default="auto", help="auto, ddp, ddp_spawn")
    # the underscore spellings are the seed's (Lightning's names), kept for old scripts
    p.add_argument("--max-epochs", "--max_epochs", dest="max_epochs", type=int)
    p.add_argument("--max-steps", "--max_steps", dest="max_steps", type=int)
    p.add_argument("--log-every-n-steps", "--log_every_n_steps", dest="log_every_n_steps", type=int, default=50)
    p.add_argument("--logdir", default="runs")
    p.add_argument("--name")
    p.add_argument("--seed", type=int, default=23)
    p.add_argument("--export", help="where to write the model directory (default RUN/model)")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. model.params.learning_rate=1e-4")
    p.set_defaults(func=cmd_train)
    return parser


@contextmanager
def _library_log(command: str) -> Iterator[None]:
    """The ``rawdiff`` logger's messages (INFO and up) on stderr while a command runs."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("rawdiff %s: %%(message)s" % command))
    logger = logging.getLogger("rawdiff")
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _stdout_closed() -> int:
    """The reader of stdout went away (``| head``): no more output, no error. stdout is
    pointed at /dev/null so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file descriptor (a test's capture)
        pass
    return 141  # 128 + SIGPIPE, what a command killed by the closed pipe would return


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = " ".join(c for c in (args.command, getattr(args, "bag_command", None)) if c)
    try:
        with _library_log(command):
            code = int(args.func(args) or 0)
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        print("rawdiff %s: interrupted" % command, file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _stdout_closed()
    except (ValueError, OSError) as exc:  # bad input; anything else is a bug and shows its traceback
        msg = exc
        if isinstance(exc, OSError) and exc.filename and (exc.strerror or str(exc.filename) not in str(msg)):
            names = exc.filename if exc.filename2 is None else "%s -> %s" % (exc.filename, exc.filename2)
            msg = "%s: %s" % (names, exc.strerror or msg)  # "f.rdc: Permission denied", no "[Errno 13]"
        print("rawdiff %s: error: %s" % (command, msg), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
