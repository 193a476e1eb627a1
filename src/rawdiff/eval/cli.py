"""``rawdiff eval``'s command line: its arguments, the run and the summary on the terminal.

    rawdiff eval --model DIR [--model DIR2 ...] DATA... --out OUT
        --run()--> evaluate.evaluate() --> OUT/results.json
               --> report.write_report() --> OUT/report.md, OUT/rd_*.png
               --> summary(): rawdiff's mean rate and quality, colour, codebook usage, notes

:func:`add_arguments` and :func:`run` are what :mod:`rawdiff.cli` wires into ``rawdiff eval``;
the measuring is :mod:`rawdiff.eval.evaluate`, the RD maths :mod:`rawdiff.eval.rd`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict

from rawdiff.eval import rd, report
from rawdiff.eval.evaluate import CODECS, DEFAULT_STEPS, evaluate
from rawdiff.paths import DEFAULT_MODEL_DIR


def add_arguments(p) -> None:
    """The arguments of ``rawdiff eval`` on the subparser ``p``."""
    p.add_argument("data", nargs="+", help="index files (e.g. data/corpus/test.txt), folders of RAW frames "
                   "(DNG, .npy + .json sidecar) or RAW files")
    p.add_argument("--model", action="append", metavar="DIR",
                   help="model directory (default: models/default); repeat it for several operating points, "
                   "which give rawdiff an RD curve and BD-rates")
    p.add_argument("--out", default="eval-out", help="folder for results.json, report.md and the PNGs")
    p.add_argument("--steps", type=int, nargs="*", default=list(DEFAULT_STEPS),
                   help="diffusion sampling steps to evaluate (none: fast path only; default 1 2 4 8 20)")
    p.add_argument("--seed", type=int, default=0, help="diffusion noise seed")
    p.add_argument("--codecs", nargs="*", default=list(CODECS), choices=CODECS, help="standard codecs to compare")
    p.add_argument("--no-butteraugli", dest="butteraugli", action="store_false",
                   help="skip butteraugli (the slowest metric)")
    p.add_argument("--butteraugli-max-pixels", type=int, default=1000000,
                   help="butteraugli on centre crops of at most N pixels (default 1000000; 0: whole images)")
    p.add_argument("--max-frames", type=int, help="evaluate the first N frames")
    p.add_argument("--max-pixels", type=int, help="evaluate the centre crop of each frame with at most N pixels")
    p.add_argument("--figure-frame", type=int, default=0, help="index of the frame in the side-by-side picture")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args) -> int:
    """Check the arguments, evaluate, write results.json and the report, print the summary."""
    for name in ("max_frames", "max_pixels", "butteraugli_max_pixels"):
        v = getattr(args, name)
        if v is not None and v < (0 if name == "butteraugli_max_pixels" else 1):
            raise ValueError("--%s must be positive, got %d" % (name.replace("_", "-"), v))
    if any(s < 1 for s in args.steps):
        raise ValueError("--steps must be positive, got %s" % args.steps)
    if args.max_pixels is not None and args.max_pixels < 64 * 64:
        raise ValueError("--max-pixels %d is too small (at least 4096)" % args.max_pixels)
    results = evaluate(args.model or [DEFAULT_MODEL_DIR], args.data, args.out, steps=args.steps,
                       codecs=args.codecs, butteraugli=args.butteraugli,
                       butteraugli_max_pixels=args.butteraugli_max_pixels or None, max_frames=args.max_frames,
                       max_pixels=args.max_pixels, seed=args.seed, device=args.device,
                       figure_frame=args.figure_frame, progress=args.progress)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    report.write_report(results, args.out)
    print(summary(results, args.out))
    return 0


def summary(results: Dict[str, Any], out_dir: str) -> str:
    """A few lines for the terminal: rawdiff's mean rate and quality, usage, times, files."""
    cv = rd.curves(results)
    lines = ["rawdiff eval: %d frames in %.0f s -> %s" % (len(results["frames"]), results["wall_s"], out_dir)]
    for name, info in results["codecs"].items():
        for p in cv.get(name, []) if info["kind"] == "rawdiff" else []:
            ba = "" if p.get("butteraugli") is None else ", butteraugli %.2f" % p["butteraugli"]
            enc = "" if p.get("encode_s") is None else "encode %.3f s, " % p["encode_s"]
            lines.append("  %-28s %s: %.4f bpp, PSNR %.2f dB, MS-SSIM %.4f%s, spectral %.3f; %sdecode %.3f s/frame"
                         % (info["label"], p["setting"], p["bpp"], p["psnr"], p["ms_ssim"], ba, p["spectral"], enc,
                            p["decode_s"]))
    for label, c in rd.colour_means(results).items():
        raw = ("RAW output through the ISP %.2f dB (%+.2f dB from fast), RAW-domain PSNR %.2f dB"
               % (c["raw_isp_psnr"], c["raw_isp_gap_db"], c["raw_psnr"]) if c["raw_isp_psnr"] is not None
               else "no RAW output (the model decodes sRGB)")
        lines.append("  colour %s: colour-fit gain %.2f dB (max %.2f); %s"
                     % (label, c["colour_fit_gain_db"], c["colour_fit_gain_db_max"], raw))
    for m in results["models"]:
        cb = m.get("codebook")
        if cb:
            lines.append("  codebook %s: %d/%d codes used (%.1f %%), %.3f coded bits/index (log2 K = %.1f)"
                         % (m["label"], cb["codes_used"], m["codebook_size"], 100 * cb["usage"],
                            cb["coded_bits_per_index"], cb["log2_k"]))
    for n in results["notes"]:
        lines.append("  note: %s" % n)
    return "\n".join(lines)
