"""The report of a ``rawdiff eval`` run: markdown, RD plots and the side-by-side picture.

    results.json --rd.curves()--> per codec, per setting: means over the frames
                 --markdown()--> report.md: rawdiff's operating points, the WebP target check
                                 (rd.target_check), BD-rates (rd.bd_rate, rd.bd_range), matched
                                 rates (rd.quality_at_rate / rd.rate_at_quality), per stage
                                 coded bits per index against log2 K, the truncation check,
                                 colour and RAW output per quality, the sweeps
                 --rd_plots()--> rd.png (PSNR, MS-SSIM, butteraugli side by side), and
                                 rd_psnr.png, rd_ms_ssim.png, rd_butteraugli.png, rd_spectral.png
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
    TARGET_ANCHOR,
    TARGET_MAX_BPP,
    TARGET_PSNR_MARGIN_DB,
    UNRATED,
    Curve,
    bd_range,
    bd_rate,
    colour_means,
    curves,
    quality_at_rate,
    rate_at_quality,
    target_check,
)

_FORMAT = {"psnr": "%.2f", "ms_ssim": "%.4f", "butteraugli": "%.2f", "spectral": "%.3f", "swd": "%.1f",
           "grid": "%.2f", "people": "%.3f", "orb": "%.3f"}


# --------------------------------------------------------------------------- markdown


def _metric_keys(cv: Dict[str, Curve]) -> List[str]:
    """The metrics some curve has values for (butteraugli is absent with --no-butteraugli)."""
    return [k for k, _, _ in METRICS if any(p.get(k) is not None for c in cv.values() for p in c)]


def _num(key: str, v: Optional[float]) -> str:
    return "—" if v is None else (_FORMAT.get(key, "%.4g") % v)


def frame_name(path: str) -> str:
    """A frame's name for tables and pictures: its folder for a prepared ``DIR/frame*.npy``."""
    base = os.path.basename(path)
    return os.path.basename(os.path.dirname(path)) if base.startswith("frame.") else base


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
                for k in keys if k not in UNRATED]
        rows.append(row)
    return rows


def _rawdiff_names(results: Dict[str, Any], cv: Dict[str, Curve]) -> List[str]:
    return [k for k, v in results["codecs"].items() if v["kind"] == "rawdiff" and k in cv]


def markdown(results: Dict[str, Any]) -> str:
    cv = curves(results)
    keys = _metric_keys(cv)
    codecs = results["codecs"]
    s = results["settings"]
    lines = ["# rawdiff rate-distortion evaluation", ""]
    for m in results["models"]:
        stages = m.get("stages") or [[1, m["codebook_size"]]]
        lines.append("- model `%s`: id %s, f%d, %d stage%s (%s), %s prior (%s)" % (
            m["label"], m["model_id"], m["factor"], len(stages), "" if len(stages) == 1 else "s",
            ", ".join("f%d K=%d" % (m["factor"] * sc, k) for sc, k in stages), m["prior_kind"], m["dir"]))
    n = len(results["frames"])
    pixels = [f["width"] * f["height"] for f in results["frames"]]
    lines.append("- %d frame%s (%s), %s RAW pixels per frame on average"
                 % (n, "" if n == 1 else "s", ", ".join(s.get("data", [])), f"{int(np.mean(pixels)):,}"
                    if pixels else "0"))
    lines += [
        "- rate: bits per RAW pixel, 8 x bytes / (RAW width x height), from the real payload or file size;"
        " quality: against the reference-ISP image of each frame, averaged over the frames",
        "- butteraugli: max-norm distance of `butteraugli_main` (lower is better)%s; spectral distance:"
        " mean |difference| of the radially averaged log10 luma power spectra (lower is more realistic);"
        " SWD: sliced Wasserstein distance between the 7x7 patch distributions of the Laplacian pyramid"
        " levels (Karras et al. 2018), x1000 (lower is more realistic); task fidelity: people agreement,"
        " OpenCV's HOG people boxes of the decoded image matched one to one to the reference's at IoU >= 0.5"
        " (2 matched / all boxes, pooled over the frames; 1 where none has one), and ORB share, the"
        " reference's ORB keypoints found again (mutual best match within 3 pixels)"
        % ((", on centre crops of at most {:,} pixels".format(s["butteraugli_max_pixels"])
            if s.get("butteraugli_max_pixels") else "") if s.get("butteraugli") else " (not measured)"),
        ""]

    names = _rawdiff_names(results, cv)
    lines += ["## rawdiff operating points", "",
              "Quality q codes the first q stages of the quantizer; each quality is encoded on its own.", ""]
    rows = []
    for name in names:
        for p in cv[name]:
            rows.append([codecs[name]["label"], format_setting(p["setting"]), "%.4f" % p["bpp"], "%.0f" % p["bytes"]]
                        + [_num(k, p.get(k)) for k in keys]
                        + ["%.3f" % p["encode_s"] if p.get("encode_s") is not None else "—",
                           "%.3f" % p["decode_s"] if p.get("decode_s") is not None else "—"])
    lines += _table(["path", "quality", "bpp", "bytes/frame"] + [METRIC_LABEL[k] for k in keys]
                    + ["encode s/frame", "decode s/frame"], rows) + [""]
    lines += _target_section(results, names) + _bd_section(results, cv, names, keys)
    for name in names:
        for p in cv[name]:
            lines += ["## Matched rates: %s, quality %s, %.4f bpp" % (codecs[name]["label"], p["setting"], p["bpp"]),
                      "", "Each codec's setting and quality at rawdiff's rate, and the rate it needs for rawdiff's "
                      "quality (in brackets: more bits than rawdiff, positive = rawdiff is smaller; < and > "
                      "are bounds where the sweep does not reach).", ""]
            header = (["codec", "setting at this rate"] + ["%s" % METRIC_LABEL[k] for k in keys]
                      + ["bpp for %s %s" % (METRIC_LABEL[k].split(" (")[0], _num(k, p.get(k)))
                         for k in keys if k not in UNRATED])
            first = ["**%s**" % codecs[name]["label"], "—"] + ["**%s**" % _num(k, p.get(k)) for k in keys]
            first += ["%.3f" % p["bpp"] for k in keys if k not in UNRATED]
            lines += _table(header, [first] + matched_rate_rows(results, cv, p, keys)) + [""]

    lines += _stage_section(results) + _colour_section(results) + _sweep_section(results, cv, keys)
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


def _verdict(v: Optional[bool]) -> str:
    return "—" if v is None else ("pass" if v else "**fail**")


def target_rows(results: Dict[str, Any], name: str) -> List[Dict[str, Any]]:
    """:func:`rawdiff.eval.rd.target_check` of rawdiff's curve ``name`` against WebP, or []
    when WebP was not run."""
    return target_check(results, name) if TARGET_ANCHOR in results["codecs"] else []


def _target_section(results: Dict[str, Any], names: Sequence[str]) -> List[str]:
    fast = [n for n in names if results["codecs"][n].get("path", "fast") == "fast"]
    lines = ["## Target: WebP at the same bytes, up to %.2f bpp" % TARGET_MAX_BPP, ""]
    if TARGET_ANCHOR not in results["codecs"]:
        return lines + ["WebP was not run (`--codecs` without webp, or cwebp missing).", ""]
    lines += ["At each operating point up to %.2f bpp: rawdiff's MS-SSIM above WebP's, its butteraugli below "
              "WebP's, its PSNR at most %.0f dB below WebP's, at the same bytes. WebP's figures are interpolated "
              "per frame on WebP's sweep of that frame at the size of rawdiff's stream of that frame (PCHIP in "
              "log rate), then both are averaged over the frames where WebP's sweep reaches that size (its "
              "lowest setting, quality 0, writes more on the others). The last columns: WebP's curve of means "
              "at rawdiff's mean rate, for comparison." % (TARGET_MAX_BPP, TARGET_PSNR_MARGIN_DB), ""]
    for name in fast:
        rows = []
        for r in target_rows(results, name):
            def pair(k: str, r: Dict[str, Any] = r) -> str:
                return "%s / %s" % (_num(k, r["rawdiff_" + k]), _num(k, r["anchor_" + k]))

            rows.append(["%s" % r["quality"], "%.4f" % r["bpp"], "%d / %d" % (r["frames_reached"], r["frames"]),
                         pair("ms_ssim"), _verdict(r["pass_ms_ssim"]), pair("butteraugli"),
                         _verdict(r["pass_butteraugli"]), pair("psnr"), _verdict(r["pass_psnr"]),
                         "**%s**" % ("—" if r["pass"] is None else "PASS" if r["pass"] else "FAIL")
                         if r["frames_reached"] else "not reached",
                         " / ".join(_num(k, r["curve_" + k]) for k in ("ms_ssim", "butteraugli", "psnr"))])
        lines += ["%s:" % results["codecs"][name]["label"], ""]
        lines += _table(["quality", "bpp", "frames WebP reaches", "MS-SSIM rawdiff / WebP", "higher",
                         "butteraugli rawdiff / WebP", "lower", "PSNR (dB) rawdiff / WebP",
                         "within %.0f dB" % TARGET_PSNR_MARGIN_DB, "all targets",
                         "WebP mean curve: MS-SSIM / butteraugli / PSNR"], rows) if rows else \
            ["No operating point at or below %.2f bpp." % TARGET_MAX_BPP]
        lines.append("")
    return lines


def bd_rows(results: Dict[str, Any], cv: Dict[str, Curve], name: str, keys: Sequence[str]) -> List[List[str]]:
    """One row per baseline: BD-rate of rawdiff's curve ``name`` against it on each of
    ``keys``, with the range of that metric it integrates over."""
    rows = []
    for base, info in results["codecs"].items():
        if info["kind"] != "baseline" or base not in cv:
            continue
        cells = []
        for k in keys:
            v, span = bd_rate(cv[base], cv[name], k), bd_range(cv[base], cv[name], k)
            cells.append(_pct(v) + ("" if span is None else " (%s–%s)" % (_num(k, span[0]), _num(k, span[1]))))
        rows.append([info["label"]] + cells)
    return rows


def _bd_section(results: Dict[str, Any], cv: Dict[str, Curve], names: Sequence[str], keys: Sequence[str]) -> List[str]:
    bd_keys = [k for k in keys if k not in UNRATED]
    lines = ["## BD-rate", "",
             "Bjontegaard delta rate (VCEG-M33) of rawdiff's operating points against each codec: the mean "
             "difference of log rate over the quality range both curves cover (in brackets), with piecewise "
             "cubic (PCHIP) interpolation of log rate in quality as in VCEG-AL22 / JCTVC-C108 instead of one "
             "cubic polynomial; on each curve's Pareto front. Negative: rawdiff needs fewer bits.", ""]
    curved = [n for n in names if len(cv[n]) >= 2]
    for name in curved:
        lines += ["%s:" % results["codecs"][name]["label"], ""]
        lines += _table(["against"] + ["BD-rate %s" % METRIC_LABEL[k] for k in bd_keys],
                        bd_rows(results, cv, name, bd_keys)) + [""]
    if not curved:
        lines += ["rawdiff has one operating point per path here (one quality), so it has no curve to integrate; "
                  "the 'bpp for ...' columns of the matched-rate tables are the one-point equivalent.", ""]
    if "jpeg" in cv:
        rows = [[info["label"]] + [_pct(bd_rate(cv["jpeg"], cv[base], k)) for k in bd_keys]
                for base, info in results["codecs"].items()
                if info["kind"] == "baseline" and base in cv and base != "jpeg"]
        if rows:
            lines += ["Standard codecs against JPEG (a check of the sweeps):", ""]
            lines += _table(["codec"] + ["BD-rate %s" % METRIC_LABEL[k] for k in bd_keys], rows) + [""]
    return lines


def _pct(v: Optional[float]) -> str:
    return "—" if v is None else "%+.1f %%" % v


def _colour_section(results: Dict[str, Any]) -> List[str]:
    rows = results.get("colour") or []
    if not rows:
        return []
    frames = results["frames"]

    def cell(v: Optional[float], fmt: str = "%.2f") -> str:
        return "—" if v is None else fmt % v

    means = [[m["model"], "%s" % m["quality"], cell(m["psnr"]),
              cell(m["colour_fit_gain_db"]) + " (max %.2f)" % m["colour_fit_gain_db_max"], cell(m["raw_isp_psnr"]),
              cell(m["raw_isp_gap_db"], "%+.2f"), cell(m["raw_psnr"])] for m in colour_means(results)]
    columns = list(dict.fromkeys((r["model"], r.get("quality")) for r in rows))
    gain = {(r["frame"], r["model"], r.get("quality")): r["colour_fit_gain_db"] for r in rows}
    per_frame = [[frame_name(f["path"])] + [cell(gain.get((i, m, q))) for m, q in columns]
                 for i, f in enumerate(frames)]
    many = len({m for m, _ in columns}) > 1
    return (["## Colour and RAW output (fast path)", "",
             "Colour-fit gain: the PSNR a 3x3 colour matrix plus offset, fitted from the decoded image to the "
             "reference, would add (what colour errors cost). RAW output: the reference ISP applied to the "
             "reconstructed RAW frame (`rawdiff decompress --output raw`), against the reference, and its "
             "difference to the fast RGB output; RAW-domain PSNR: the normalised mosaic against the frame's. "
             "Means over the frames:", ""]
            + _table(["model", "quality", "PSNR (dB)", "colour-fit gain (dB)", "ISP on RAW output (dB)",
                      "vs fast RGB (dB)", "RAW-domain PSNR (dB)"], means)
            + ["", "Colour-fit gain (dB) of each frame:", ""]
            + _table(["frame"] + [("%s q%s" % (m, q)) if many else "q%s" % q for m, q in columns], per_frame)
            + [""])


def _stage_section(results: Dict[str, Any]) -> List[str]:
    lines = []
    for m in results["models"]:
        stats = m.get("stage_stats") or []
        if not stats:
            continue
        rows = [["%d" % st["stage"], "f%d" % st["grid_factor"], "%d" % st["codebook_size"],
                 "%.0f" % st["indices_per_frame"], "%d (%.1f %%)" % (st["codes_used"], 100.0 * st["usage"]),
                 "%.3f" % st["histogram_entropy_bits"], "%.3f" % st["prior_bits_per_index"],
                 "%.3f" % st["coded_bits_per_index"], "%.2f" % st["log2_k"], "%.0f" % st["bytes_per_frame"],
                 "%.4f" % st["bpp"]] for st in stats]
        lines += ["## Stages: %s" % m["label"], "",
                  "Per quantizer stage, over the evaluated frames (each frame's stream of quality %d): codes used of "
                  "K, entropy of the index histogram, ideal bits per index under the model's prior, bits per index "
                  "actually coded (the stage's payload bytes), against the log2 K bits of a fixed-length code; the "
                  "stage's bytes and bits per RAW pixel. Header: %s bytes a frame besides the payloads."
                  % (max(m["qualities"]), "%.0f" % m["header_bytes_per_frame"]
                     if m.get("header_bytes_per_frame") is not None else "—"), ""]
        lines += _table(["stage", "grid", "K", "indices/frame", "codes used", "histogram entropy",
                         "prior bits/index", "coded bits/index", "log2 K", "bytes/frame", "bpp"], rows) + [""]
        means = m.get("mean_layer_stats") or []
        if means:
            lines += ["Mean layers (the cells' plane means: luma and two colour differences a cell; the first layer "
                      "codes each level against the stages' prediction, a later one the bits it adds):", ""]
            lines += _table(["layer", "after stage", "exponent", "new bits", "coded bits/value", "bytes/frame", "bpp"],
                            [["%d" % r["layer"], "%d" % r["after_stage"], "%d" % r["exponent"],
                              "—" if r["new_bits"] is None else "%d" % r["new_bits"],
                              "%.3f" % r["coded_bits_per_value"], "%.0f" % r["bytes_per_frame"], "%.4f" % r["bpp"]]
                             for r in means]) + [""]
        t = m.get("truncation") or {}
        if t.get("checked"):
            lines += ["Truncation: %d of %d streams of quality %d cut to a lower quality are byte for byte the "
                      "stream encoded at that quality%s." % (
                          t["identical"], t["checked"], max(m["qualities"]),
                          "" if t["identical"] == t["checked"] else "; differing (frame, quality): %s"
                          % t["differing"][:10]), ""]
    return lines


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


def _plot(ax, results: Dict[str, Any], cv: Dict[str, Curve], key: str) -> None:
    from matplotlib import ticker

    for name, info in results["codecs"].items():
        pts = [p for p in cv.get(name, []) if p.get(key) is not None]
        if not pts:
            continue
        x, y = [p["bpp"] for p in pts], [p[key] for p in pts]
        if info["kind"] == "rawdiff":
            line, = ax.plot(x, y, marker="*", markersize=11, linestyle="-", label=info["label"], zorder=3)
            for p in pts:
                ax.annotate("q%s" % p["setting"], (p["bpp"], p[key]), textcoords="offset points", xytext=(4, -10),
                            fontsize=7, color=line.get_color())
        else:
            ax.plot(x, y, marker="o", markersize=3.5, linewidth=1.0, label=info["label"])
    ax.axvline(TARGET_MAX_BPP, color="0.6", linestyle=":", linewidth=1.0)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("bits per RAW pixel")
    ax.set_ylabel(METRIC_LABEL[key] + ("" if HIGHER_IS_BETTER[key] else " (lower is better)"))
    ax.grid(True, which="both", alpha=0.3)


def rd_plots(results: Dict[str, Any], out_dir: str) -> List[str]:
    """``rd.png``: PSNR, MS-SSIM and butteraugli against bpp (log scale) side by side, every
    operating point of rawdiff marked with its quality, the baselines' sweeps, and a dotted
    line at the target range's end (0.15 bpp); and one PNG per metric. Returns the names."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    cv = curves(results)
    keys = _metric_keys(cv)
    n = len(results["frames"])
    written = []
    main_keys = [k for k in ("psnr", "ms_ssim", "butteraugli") if k in keys]
    if main_keys:
        fig, axes = plt.subplots(1, len(main_keys), figsize=(5.2 * len(main_keys), 4.4), squeeze=False)
        for ax, key in zip(axes[0], main_keys):
            _plot(ax, results, cv, key)
            ax.set_title(METRIC_LABEL[key].split(" (")[0])
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
        fig.suptitle("rawdiff operating points against standard codecs, %d frame%s" % (n, "" if n == 1 else "s"))
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        fig.savefig(os.path.join(out_dir, "rd.png"), dpi=110)
        plt.close(fig)
        written.append("rd.png")
    for key in keys:
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        _plot(ax, results, cv, key)
        ax.set_title("%s vs rate, %d frames" % (METRIC_LABEL[key], n))
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
