"""The report of a ``rawdiff eval`` run: markdown, RD plots and the side-by-side picture.

    results.json --rd.curves()--> per codec, per setting: means over the frames
                 --markdown()--> report.md: rawdiff's points, matched rates
                                 (rd.quality_at_rate / rd.rate_at_quality), BD-rates (rd.bd_rate),
                                 colour and RAW output, codebook usage, the sweeps
                 --rd_plots()--> rd_psnr.png, rd_ms_ssim.png, rd_butteraugli.png, rd_spectral.png
    (label, image) panels --side_by_side()--> side_by_side.png

The numbers come from :mod:`rawdiff.eval.rd`; this module only lays them out.
Regenerate the markdown and plots of a finished run: ``python -m rawdiff.eval.report
OUT/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rawdiff.eval.rd import (
    HIGHER_IS_BETTER,
    METRIC_LABEL,
    METRICS,
    Curve,
    bd_rate,
    colour_means,
    curves,
    quality_at_rate,
    rate_at_quality,
)

_FORMAT = {"psnr": "%.2f", "ms_ssim": "%.4f", "butteraugli": "%.2f", "spectral": "%.3f"}


# --------------------------------------------------------------------------- markdown


def _metric_keys(cv: Dict[str, Curve]) -> List[str]:
    """The metrics some curve has values for (butteraugli is absent with --no-butteraugli)."""
    return [k for k, _, _ in METRICS if any(p.get(k) is not None for c in cv.values() for p in c)]


def _num(key: str, v: Optional[float]) -> str:
    return "—" if v is None else (_FORMAT.get(key, "%.4g") % v)


def format_setting(v: Any) -> str:
    """A codec setting as the tables print it: ``10`` for 10.0, ``2.5``, or the text."""
    if isinstance(v, float):
        return ("%d" % v) if v.is_integer() else ("%g" % v)
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _rate_cell(ref_bpp: float, bpp: Optional[float], status: str) -> str:
    if status == "none" or bpp is None:
        return "—"
    d = 100.0 * (bpp / ref_bpp - 1.0)
    if status == "below":
        return "< %.3f (< %+.0f %%)" % (bpp, d)
    if status == "above":
        return "> %.3f (> %+.0f %%)" % (bpp, d)
    return "%.3f (%+.0f %%)" % (bpp, d)


def matched_rate_rows(results: Dict[str, Any], cv: Dict[str, Curve], point: Dict[str, Any],
                      keys: Sequence[str]) -> List[List[str]]:
    """Rows of the matched-rate table of one rawdiff point: for each baseline its setting
    and quality at the point's rate, and its rate at the point's quality."""
    rate = point["bpp"]
    rows = []
    for name, info in results["codecs"].items():
        if info["kind"] != "baseline" or name not in cv:
            continue
        curve = cv[name]
        s_val, s_status = quality_at_rate([dict(p, s=float(p["setting"])) for p in curve], rate, "s")
        if s_status == "ok":
            setting = "%s %.3g" % (info["setting_name"], s_val)
        elif s_status == "below":
            setting = "— (lowest %.3f bpp)" % curve[0]["bpp"]
        else:
            setting = "— (highest %.3f bpp)" % curve[-1]["bpp"]
        row = [info["label"], setting]
        row += [_num(k, quality_at_rate(curve, rate, k)[0]) for k in keys]
        row += [_rate_cell(rate, *rate_at_quality(curve, point[k], k)) if point.get(k) is not None else "—"
                for k in keys if k != "spectral"]
        rows.append(row)
    return rows


def markdown(results: Dict[str, Any]) -> str:
    cv = curves(results)
    keys = _metric_keys(cv)
    codecs = results["codecs"]
    s = results["settings"]
    lines = ["# rawdiff rate-distortion evaluation", ""]
    for m in results["models"]:
        lines.append("- model `%s`: id %s, f%d, K=%d codes, %s prior (%s)"
                     % (m["label"], m["model_id"], m["factor"], m["codebook_size"], m["prior_kind"], m["dir"]))
    n = len(results["frames"])
    pixels = [f["width"] * f["height"] for f in results["frames"]]
    lines.append("- %d frame%s (%s), %s RAW pixels per frame on average"
                 % (n, "" if n == 1 else "s", ", ".join(s.get("data", [])), f"{int(np.mean(pixels)):,}"
                    if pixels else "0"))
    lines += [
        "- rate: bits per RAW pixel, 8 x bytes / (RAW width x height), from the real payload or file size;"
        " quality: against the reference-ISP image of each frame, averaged over the frames",
        "- butteraugli: max-norm distance of `butteraugli_main` (lower is better)%s; spectral distance:"
        " mean |difference| of the radially averaged log10 luma power spectra (lower is more realistic)"
        % ((", on centre crops of at most {:,} pixels".format(s["butteraugli_max_pixels"])
            if s.get("butteraugli_max_pixels") else "") if s.get("butteraugli") else " (not measured)"),
        ""]

    rawdiff_names = [k for k, v in codecs.items() if v["kind"] == "rawdiff" and k in cv]
    lines += ["## rawdiff", ""]
    rows = []
    for name in rawdiff_names:
        for p in cv[name]:
            rows.append([codecs[name]["label"], format_setting(p["setting"]), "%.4f" % p["bpp"], "%.0f" % p["bytes"]]
                        + [_num(k, p.get(k)) for k in keys]
                        + ["%.3f" % p["encode_s"] if p.get("encode_s") is not None else "—",
                           "%.3f" % p["decode_s"] if p.get("decode_s") is not None else "—"])
    lines += _table(["path", "model", "bpp", "bytes/frame"] + [METRIC_LABEL[k] for k in keys]
                    + ["encode s/frame", "decode s/frame"], rows) + [""]

    for name in rawdiff_names:
        for p in cv[name]:
            lines += ["## Matched rates: %s (`%s`), %.4f bpp" % (codecs[name]["label"], p["setting"], p["bpp"]), "",
                      "Each codec's setting and quality at rawdiff's rate, and the rate it needs for rawdiff's "
                      "quality (in brackets: more bits than rawdiff, positive = rawdiff is smaller; < and > "
                      "are bounds where the sweep does not reach).", ""]
            header = (["codec", "setting at this rate"] + ["%s" % METRIC_LABEL[k] for k in keys]
                      + ["bpp for %s %s" % (METRIC_LABEL[k].split(" (")[0], _num(k, p.get(k)))
                         for k in keys if k != "spectral"])
            first = ["**%s**" % codecs[name]["label"], "—"] + ["**%s**" % _num(k, p.get(k)) for k in keys]
            first += ["%.3f" % p["bpp"] for k in keys if k != "spectral"]
            lines += _table(header, [first] + matched_rate_rows(results, cv, p, keys)) + [""]

    lines += ["## BD-rate", ""]
    bd_rows = []
    for name in rawdiff_names:
        if len(cv[name]) < 2:
            continue
        for base, info in codecs.items():
            if info["kind"] == "baseline" and base in cv:
                bd_rows.append(["%s vs %s" % (codecs[name]["label"], info["label"])]
                               + [_pct(bd_rate(cv[base], cv[name], k)) for k in keys if k != "spectral"])
    if bd_rows:
        lines += ["Bjontegaard delta rate of rawdiff against each codec (negative: rawdiff needs fewer bits), "
                  "over the quality range both curves cover (— where they do not overlap).", ""]
        lines += _table(["curves"] + ["BD-rate %s" % METRIC_LABEL[k] for k in keys if k != "spectral"], bd_rows)
    else:
        lines.append("rawdiff has one operating point per path here, so it has no curve to integrate: BD-rate "
                     "needs two or more models (`rawdiff eval --model A --model B ...`). The 'bpp for ...' "
                     "columns above are the one-point equivalent.")
    if "jpeg" in cv:
        rows = [[info["label"]] + [_pct(bd_rate(cv["jpeg"], cv[base], k)) for k in keys if k != "spectral"]
                for base, info in codecs.items() if info["kind"] == "baseline" and base in cv and base != "jpeg"]
        if rows:
            lines += ["", "Standard codecs against JPEG (a check of the sweeps):", ""]
            lines += _table(["codec"] + ["BD-rate %s" % METRIC_LABEL[k] for k in keys if k != "spectral"], rows)
    lines.append("")

    lines += _colour_section(results)
    lines += _codebook_section(results) + _sweep_section(results, cv, keys)
    if results.get("figure"):
        lines += ["## Side by side", "", "![side by side](%s)" % os.path.basename(results["figure"]["path"]), "",
                  results["figure"].get("caption", ""), ""]
    if results.get("plots"):
        lines += ["## Plots", ""] + ["![%s](%s)" % (os.path.splitext(p)[0], p) for p in results["plots"]] + [""]
    if results.get("notes"):
        lines += ["## Notes", ""] + ["- %s" % n for n in results["notes"]] + [""]
    env = results.get("environment", {})
    if env:
        lines += ["## Environment", ""] + ["- %s: %s" % (k, v) for k, v in sorted(env.items())] + [""]
    return "\n".join(lines)


def _pct(v: Optional[float]) -> str:
    return "—" if v is None else "%+.1f %%" % v


def _colour_section(results: Dict[str, Any]) -> List[str]:
    rows = results.get("colour") or []
    if not rows:
        return []
    frames = results["frames"]

    def cell(v: Optional[float], fmt: str = "%.2f") -> str:
        return "—" if v is None else fmt % v

    body = []
    for r in rows:
        f = frames[r["frame"]]
        body.append([os.path.basename(os.path.dirname(f["path"])) if os.path.basename(f["path"]) == "frame.npy"
                     else os.path.basename(f["path"]), r["model"], cell(r["psnr"]), cell(r["colour_fit_gain_db"]),
                     cell(r["raw_isp_psnr"]), cell(r["raw_isp_gap_db"], "%+.2f"), cell(r["raw_psnr"])])
    for label, m in colour_means(results).items():
        body.append(["**mean**", label, cell(m["psnr"]), cell(m["colour_fit_gain_db"]) + " (max %.2f)"
                     % m["colour_fit_gain_db_max"], cell(m["raw_isp_psnr"]), cell(m["raw_isp_gap_db"], "%+.2f"),
                     cell(m["raw_psnr"])])
    return (["## Colour and RAW output (fast path)", "",
             "Colour-fit gain: the PSNR a 3x3 colour matrix plus offset, fitted from the decoded image to the "
             "reference, would add (what colour errors cost). RAW output: the reference ISP applied to the "
             "reconstructed RAW frame (`rawdiff decompress --output raw`), against the reference, and its "
             "difference to the fast RGB output; RAW-domain PSNR: the normalised mosaic against the frame's.", ""]
            + _table(["frame", "model", "PSNR (dB)", "colour-fit gain (dB)", "ISP on RAW output (dB)",
                      "vs fast RGB (dB)", "RAW-domain PSNR (dB)"], body) + [""])


def _codebook_section(results: Dict[str, Any]) -> List[str]:
    rows = []
    for m in results["models"]:
        cb = m.get("codebook")
        if not cb:
            continue
        rows.append([m["label"], "%d" % cb["indices"], "%d / %d (%.1f %%)" % (cb["codes_used"], m["codebook_size"],
                                                                             100.0 * cb["usage"]),
                     "%.3f" % cb["histogram_entropy_bits"], "%.1f" % cb["perplexity"],
                     "%.3f" % cb["prior_bits_per_index"], "%.3f" % cb["coded_bits_per_index"],
                     "%.2f" % cb["log2_k"], "%.0f" % cb["header_bytes_per_frame"]])
    if not rows:
        return []
    return (["## Codebook usage on the evaluated frames", "",
             "Codes used of K, entropy of the index histogram (bits, and its perplexity 2^H), ideal bits per index "
             "under the model's prior, bits per index actually coded (the range coder's payload), against the "
             "log2 K bits of a fixed-length code; header: bitstream bytes besides the payload.", ""]
            + _table(["model", "indices", "codes used", "histogram entropy", "perplexity", "prior bits/index",
                      "coded bits/index", "log2 K", "header bytes"], rows) + [""])


def _sweep_section(results: Dict[str, Any], cv: Dict[str, Curve], keys: Sequence[str]) -> List[str]:
    lines = ["## Sweeps", "", "Mean over the frames for each setting; encode/decode: wall time per frame "
             "(the tools' times include starting the process).", ""]
    for name, info in results["codecs"].items():
        if info["kind"] != "baseline" or name not in cv:
            continue
        rows = [[format_setting(p["setting"]), "%.4f" % p["bpp"]] + [_num(k, p.get(k)) for k in keys]
                + ["%.1f" % (1e3 * p["encode_s"]), "%.1f" % (1e3 * p["decode_s"])] for p in cv[name]]
        lines += ["### %s" % info["label"], ""]
        lines += _table([info["setting_name"], "bpp"] + [METRIC_LABEL[k] for k in keys]
                        + ["encode ms", "decode ms"], rows) + [""]
    return lines


# --------------------------------------------------------------------------- plots


def rd_plots(results: Dict[str, Any], out_dir: str) -> List[str]:
    """One PNG per metric, quality against bpp (log scale); returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib import ticker

    cv = curves(results)
    written = []
    for key in _metric_keys(cv):
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for name, info in results["codecs"].items():
            pts = [p for p in cv.get(name, []) if p.get(key) is not None]
            if not pts:
                continue
            x, y = [p["bpp"] for p in pts], [p[key] for p in pts]
            if info["kind"] == "rawdiff":
                ax.plot(x, y, marker="*", markersize=13, linestyle="-" if len(pts) > 1 else "none",
                        label=info["label"], zorder=3)
            else:
                ax.plot(x, y, marker="o", markersize=4, label=info["label"])
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("bits per RAW pixel")
        ax.set_ylabel(METRIC_LABEL[key] + ("" if HIGHER_IS_BETTER[key] else " (lower is better)"))
        ax.set_title("%s vs rate, %d frames" % (METRIC_LABEL[key], len(results["frames"])))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fname = "rd_%s.png" % key
        fig.savefig(os.path.join(out_dir, fname), dpi=110)
        plt.close(fig)
        written.append(fname)
    return written


def side_by_side(panels: Sequence[Tuple[str, np.ndarray]], path: str, panel_width: int = 480,
                 crop: int = 192) -> None:
    """A picture of labelled images in a row (scaled to ``panel_width``) above a row of
    their 1:1 centre crops (``crop`` pixels), so both the whole frame and texture show."""
    import cv2

    if not panels:
        raise ValueError("side_by_side needs at least one image")
    h, w = panels[0][1].shape[:2]
    scale = min(1.0, panel_width / float(w))
    pw, ph = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    ch, cw = min(crop, h), min(crop, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    bar, gap = 40, 6
    cols = []
    for label, img in panels:
        if img.shape[:2] != (h, w):
            raise ValueError("side_by_side needs images of one size, got %s and %s" % (img.shape, (h, w)))
        text_w = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)[0][0] + 8 for t in label.split("\n")[:2])
        col = np.full((bar + ph + gap + max(ch, 1), max(pw, cw, text_w), 3), 255, np.uint8)
        col[bar:bar + ph, :pw] = cv2.resize(img, (pw, ph), interpolation=cv2.INTER_AREA)
        col[bar + ph + gap:bar + ph + gap + ch, :cw] = img[top:top + ch, left:left + cw]
        for i, text in enumerate(label.split("\n")[:2]):
            cv2.putText(col, text, (4, 16 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        cols.append(col)
    sep = np.full((cols[0].shape[0], gap, 3), 255, np.uint8)
    row = np.concatenate([c for col in cols for c in (col, sep)][:-1], axis=1)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, np.ascontiguousarray(row[:, :, ::-1])):
        raise OSError("could not write %s" % path)


# --------------------------------------------------------------------------- files


def write_report(results: Dict[str, Any], out_dir: str) -> Dict[str, str]:
    """Write the plots and ``report.md`` into ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    results = dict(results, plots=rd_plots(results, out_dir))
    md_path = os.path.join(out_dir, "report.md")
    with open(md_path, "w") as f:
        f.write(markdown(results))
    paths = {"report": md_path}
    paths.update({p: os.path.join(out_dir, p) for p in results["plots"]})
    return paths


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rawdiff.eval.report",
                                     description="Rewrite report.md and the RD plots of a rawdiff eval run.")
    parser.add_argument("results", help="results.json of `rawdiff eval`")
    parser.add_argument("--out", help="folder (default: the folder of results.json)")
    args = parser.parse_args(argv)
    with open(args.results) as f:
        results = json.load(f)
    paths = write_report(results, args.out or os.path.dirname(os.path.abspath(args.results)))
    print("\n".join(sorted(paths.values())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
