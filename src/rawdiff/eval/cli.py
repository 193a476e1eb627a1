"""``rawdiff eval``'s command line: its arguments, the run and the summary on the terminal.

    rawdiff eval --model DIR [--model DIR2 ...] DATA... --out OUT [--qualities 1,3,5]
        --run()--> evaluate.evaluate() --> OUT/results.json, OUT/side_by_side.png
               --> report.write_report() --> OUT/report.md, OUT/rd.png, OUT/rd_*.png
               --> summary(): per operating point rate and quality, the WebP target check,
                   BD-rates, per stage coded bits per index, colour, notes
               --> with --write-operating-points: operating_points.write_operating_points()
                   --> DIR/model.json "operating_points", DIR/MODEL_CARD.md

:func:`add_arguments` and :func:`run` are what :mod:`rawdiff.cli` wires into ``rawdiff eval``;
the measuring is :mod:`rawdiff.eval.evaluate`, the RD maths :mod:`rawdiff.eval.rd`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List

from rawdiff.eval import rd, report
from rawdiff.eval.evaluate import CODECS, DEFAULT_STEPS, evaluate, parse_qualities
from rawdiff.paths import DEFAULT_MODEL_DIR


def add_arguments(p, realism: Callable = float) -> None:
    """The arguments of ``rawdiff eval`` on the subparser ``p``; ``realism`` is the argparse
    type of a realism value (``rawdiff.cli.realism_arg``)."""
    p.add_argument("data", nargs="+", help="index files (e.g. data/corpus/test.txt), folders of RAW frames "
                   "(DNG, .npy + .json sidecar) or RAW files")
    p.add_argument("--model", action="append", metavar="DIR",
                   help="model directory (default: models/default); repeat it to compare models, each with "
                   "its own curve of operating points")
    p.add_argument("--qualities", metavar="Q,Q,...",
                   help="operating points to evaluate, e.g. 1,3,5 (default: every quality of the model)")
    p.add_argument("--out", default="eval-out", help="folder for results.json, report.md and the PNGs")
    p.add_argument("--steps", type=int, nargs="*", default=list(DEFAULT_STEPS),
                   help="diffusion sampling steps to evaluate at every quality (default: none, the fast path "
                   "only; e.g. --steps 1 4)")
    p.add_argument("--seed", type=int, default=0, help="diffusion noise seed")
    p.add_argument("--realism", type=realism, nargs="*", metavar="R",
                   help="diffusion realism values to evaluate, each a curve (0: the fast path, 1: a whole "
                   "sample; default: the model's)")
    p.add_argument("--codecs", nargs="*", default=list(CODECS), choices=CODECS, help="standard codecs to compare")
    p.add_argument("--no-butteraugli", dest="butteraugli", action="store_false",
                   help="skip butteraugli (the slowest metric)")
    p.add_argument("--butteraugli-max-pixels", type=int, default=1000000,
                   help="butteraugli on centre crops of at most N pixels (default 1000000; 0: whole images)")
    p.add_argument("--max-frames", type=int, help="evaluate the first N frames")
    p.add_argument("--max-pixels", type=int, help="evaluate the centre crop of each frame with at most N pixels")
    p.add_argument("--figure-frame", type=int, default=0, help="index of the frame in the side-by-side picture")
    p.add_argument("--figure-qualities", metavar="Q,Q",
                   help="rawdiff's qualities in the side-by-side picture (default: the lowest and the highest "
                   "evaluated), each beside WebP at the same bytes")
    p.add_argument("--write-operating-points", action="store_true",
                   help="record each quality's mean bpp, PSNR and MS-SSIM in the model's model.json "
                   "(\"operating_points\", which `rawdiff info --model DIR` lists) and model card; needs every "
                   "quality evaluated")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _check_write(models: List[str], qualities) -> None:
    """--write-operating-points records whole models: refuse, before the run, a --qualities
    that leaves one out."""
    from rawdiff.codec.modeldir import read_model_dir

    for d in models:
        meta = read_model_dir(d)["meta"]
        count = len(meta.get("stages") or [None])
        if qualities and qualities != list(range(1, count + 1)):
            raise ValueError("--write-operating-points records every quality of model %s (1..%d); leave out "
                             "--qualities" % (d, count))


def run(args) -> int:
    """Check the arguments, evaluate, write results.json and the report, print the summary,
    and with ``--write-operating-points`` record the operating points in the models."""
    for name in ("max_frames", "max_pixels", "butteraugli_max_pixels"):
        v = getattr(args, name)
        if v is not None and v < (0 if name == "butteraugli_max_pixels" else 1):
            raise ValueError("--%s must be positive, got %d" % (name.replace("_", "-"), v))
    if any(s < 1 for s in args.steps):
        raise ValueError("--steps must be positive, got %s" % args.steps)
    if args.max_pixels is not None and args.max_pixels < 64 * 64:
        raise ValueError("--max-pixels %d is too small (at least 4096)" % args.max_pixels)
    qualities = parse_qualities(args.qualities)
    figure_qualities = parse_qualities(args.figure_qualities)
    models = args.model or [DEFAULT_MODEL_DIR]
    if args.write_operating_points:
        _check_write(models, qualities)
    results = evaluate(models, args.data, args.out, qualities=qualities, steps=args.steps,
                       codecs=args.codecs, butteraugli=args.butteraugli,
                       butteraugli_max_pixels=args.butteraugli_max_pixels or None, max_frames=args.max_frames,
                       max_pixels=args.max_pixels, seed=args.seed, device=args.device,
                       figure_frame=args.figure_frame, figure_qualities=figure_qualities, progress=args.progress,
                       realism=args.realism or [None])
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    report.write_report(results, args.out)
    print(summary(results, args.out))
    if args.write_operating_points:
        from rawdiff.eval.operating_points import split_name, write_operating_points

        for m in results["models"]:
            points = rd.operating_points(results, m["curves"]["fast"])
            write_operating_points(m["dir"], m["model_id"], points, split_name(args.data), args.max_pixels)
            print("operating points of %s (qualities %s) written to %s"
                  % (m["label"], ",".join(str(p["quality"]) for p in points), os.path.join(m["dir"], "model.json")))
    return 0


def _f(fmt: str, v) -> str:
    return "—" if v is None else fmt % v


def summary(results: Dict[str, Any], out_dir: str) -> str:
    """Lines for the terminal: rawdiff's operating points, the WebP target check, BD-rates,
    per stage bits, truncation, colour, notes."""
    cv = rd.curves(results)
    lines = ["rawdiff eval: %d frames in %.0f s -> %s" % (len(results["frames"]), results["wall_s"], out_dir)]
    names = [n for n, info in results["codecs"].items() if info["kind"] == "rawdiff" and n in cv]
    for name in names:
        info = results["codecs"][name]
        for p in cv[name]:
            enc = "" if p.get("encode_s") is None else "encode %.3f s, " % p["encode_s"]
            lines.append("  %-28s q%s: %.4f bpp, PSNR %.2f dB, MS-SSIM %.4f, butteraugli %s, spectral %.3f; "
                         "%sdecode %.3f s/frame" % (info["label"], p["setting"], p["bpp"], p["psnr"], p["ms_ssim"],
                                                    _f("%.2f", p.get("butteraugli")), p["spectral"], enc,
                                                    p["decode_s"]))
    fast = [n for n in names if results["codecs"][n].get("path") == "fast"]
    for name in fast:
        rows = report.target_rows(results, name)
        if rows:
            lines.append("  target (%s vs WebP at the same bytes, per frame, up to %.2f bpp):"
                         % (results["codecs"][name]["label"], rd.TARGET_MAX_BPP))
        for r in rows:
            if not r["frames_reached"]:
                lines.append("    q%s %.4f bpp: WebP does not reach this rate on any frame" % (r["quality"], r["bpp"]))
                continue
            lines.append("    q%s %.4f bpp (%d/%d frames): MS-SSIM %s vs %s %s, butteraugli %s vs %s %s, PSNR %s vs "
                         "%s %s -> %s" % (
                             r["quality"], r["bpp"], r["frames_reached"], r["frames"],
                             _f("%.4f", r["rawdiff_ms_ssim"]), _f("%.4f", r["anchor_ms_ssim"]),
                             _pass(r["pass_ms_ssim"]), _f("%.2f", r["rawdiff_butteraugli"]),
                             _f("%.2f", r["anchor_butteraugli"]), _pass(r["pass_butteraugli"]),
                             _f("%.2f", r["rawdiff_psnr"]), _f("%.2f", r["anchor_psnr"]), _pass(r["pass_psnr"]),
                             "PASS" if r["pass"] else "FAIL" if r["pass"] is False else "not decided"))
        if len(cv[name]) >= 2:
            for base, info in results["codecs"].items():
                if info["kind"] == "baseline" and base in cv:
                    lines.append("  BD-rate %s vs %s: PSNR %s, MS-SSIM %s" % (
                        results["codecs"][name]["label"], info["label"], _pct(rd.bd_rate(cv[base], cv[name], "psnr")),
                        _pct(rd.bd_rate(cv[base], cv[name], "ms_ssim"))))
    for m in results["models"]:
        for st in m.get("stage_stats") or []:
            lines.append("  stage %d of %s (f%d, K=%d): %d/%d codes used, %.3f coded bits/index, %.3f prior "
                         "bits/index, log2 K = %.2f, %.4f bpp" % (
                             st["stage"], m["label"], st["grid_factor"], st["codebook_size"], st["codes_used"],
                             st["codebook_size"], st["coded_bits_per_index"], st["prior_bits_per_index"],
                             st["log2_k"], st["bpp"]))
        t = m.get("truncation") or {}
        if t.get("checked"):
            lines.append("  truncation %s: %d of %d cut streams equal to encoding at that quality"
                         % (m["label"], t["identical"], t["checked"]))
    for c in rd.colour_means(results):
        raw = ("RAW output through the ISP %.2f dB (%+.2f dB from fast), RAW-domain PSNR %.2f dB"
               % (c["raw_isp_psnr"], c["raw_isp_gap_db"], c["raw_psnr"]) if c["raw_isp_psnr"] is not None
               else "no RAW output (the model decodes sRGB)")
        lines.append("  colour %s q%s: colour-fit gain %.2f dB (max %.2f); %s"
                     % (c["model"], c["quality"], c["colour_fit_gain_db"], c["colour_fit_gain_db_max"], raw))
    for n in results["notes"]:
        lines.append("  note: %s" % n)
    return "\n".join(lines)


def _pass(v) -> str:
    return "(—)" if v is None else "(pass)" if v else "(FAIL)"


def _pct(v) -> str:
    return "—" if v is None else "%+.1f %%" % v
