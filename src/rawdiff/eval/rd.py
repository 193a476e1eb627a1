"""Rate-distortion maths over the results of a ``rawdiff eval`` run: pure functions, no files.

    results["points"] --curves()--> per codec, per setting: mean bpp and metrics over the frames
        --pareto()--> the points that beat every cheaper point
        --quality_at_rate() / rate_at_quality()--> matched rates (one curve at one point)
        --bd_rate(), bd_range()--> Bjontegaard delta rate (one curve against another) and
                                   the quality range it integrates over
        --operating_points()--> per quality of a model: mean bpp, PSNR, MS-SSIM (model.json)
    results["points"] --target_check()--> per rawdiff point up to 0.15 bpp: WebP at the same
                                          bytes (per frame), pass/fail on MS-SSIM, butteraugli, PSNR
    results["colour"] --colour_means()--> per model and quality, the colour / RAW-output figures

Curves are interpolated piecewise-cubically (monotone PCHIP, Fritsch & Carlson 1980) in
log rate. BD-rate follows Bjontegaard (VCEG-M33, 2001) with the piecewise cubic
interpolation of VCEG-AL22 / JCTVC-C108 instead of one cubic polynomial: the mean
difference of log rate over the quality range where both curves exist, as a percentage
(``+100`` means twice the bits for the same quality). Rate at a quality uses each curve's
Pareto front (points that improve on every cheaper point), so the curve is monotone.

The target check compares at the same bytes frame by frame: on each frame, the anchor's
(WebP's) sweep of that frame is interpolated (PCHIP in log rate, as above) at the rate of
rawdiff's stream of that frame; the means over the frames where the anchor's sweep reaches
that rate are compared. The same comparison on the mean curves (the anchor's curve of
means at rawdiff's mean rate) is given beside it.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rawdiff.task_fidelity import dice_share

#: (key, label, higher is better)
METRICS = (("psnr", "PSNR (dB)", True), ("ms_ssim", "MS-SSIM", True),
           ("butteraugli", "butteraugli", False), ("spectral", "spectral distance", False),
           ("swd", "SWD x1000", False), ("grid", "grid", False), ("people", "people agreement", True),
           ("orb", "ORB share", True))
#: figures no rate is matched or BD-rate taken on: realism (spectral distance, SWD), block
#: artefacts (grid: luma steps at 8-pixel cell edges against the others, 1 = none) and task
#: fidelity (HOG people boxes matched at IoU 0.5, Dice share; ORB keypoints found again)
UNRATED = ("spectral", "swd", "grid", "people", "orb")
#: a point's people boxes: matched, in the reference, in the decoded image. A curve's people
#: agreement pools them over its frames (2 sum matched / sum of all boxes), so that a false
#: box on a frame without people weighs as one box, not as a whole frame's agreement
PEOPLE_COUNTS = ("people_matched", "people_reference", "people_decoded")
METRIC_LABEL = {k: label for k, label, _ in METRICS}
HIGHER_IS_BETTER = {k: hib for k, _, hib in METRICS}

Curve = List[Dict[str, Any]]


def curves(results: Dict[str, Any]) -> Dict[str, Curve]:
    """Per codec, its points averaged over the frames, sorted by rate.

    A setting is kept only when it was measured on as many frames as the codec's best
    covered setting (a failed point must not move an average onto other frames). The people
    agreement is pooled over the frames from their box counts (:data:`PEOPLE_COUNTS`) where
    the points have them, the other figures are means.
    """
    groups: Dict[str, Dict[str, List[Dict[str, Any]]]] = {}
    for p in results["points"]:
        groups.setdefault(p["codec"], {}).setdefault(json.dumps(p["setting"]), []).append(p)
    out = {}
    for codec, by_setting in groups.items():
        full = max(len(v) for v in by_setting.values())
        pts = []
        for rows in by_setting.values():
            if len(rows) < full:
                continue
            avg = {"setting": rows[0]["setting"], "frames": len(rows)}
            for key in ("bpp", "bytes", "encode_s", "decode_s") + tuple(k for k, _, _ in METRICS) + PEOPLE_COUNTS:
                vals = [r.get(key) for r in rows]
                avg[key] = None if any(v is None for v in vals) else float(np.mean(vals))
            if all(r.get(k) is not None for r in rows for k in PEOPLE_COUNTS):
                avg["people"] = dice_share(*(sum(r[k] for r in rows) for k in PEOPLE_COUNTS))
            pts.append(avg)
        out[codec] = sorted(pts, key=lambda p: p["bpp"])
    return out


def pareto(curve: Curve, key: str, higher_is_better: Optional[bool] = None) -> Curve:
    """The points of ``curve`` whose ``key`` beats every cheaper point's (by rate)."""
    hib = HIGHER_IS_BETTER.get(key, True) if higher_is_better is None else higher_is_better
    sign = 1.0 if hib else -1.0
    front, best = [], -math.inf
    for p in sorted((p for p in curve if p.get(key) is not None and math.isfinite(p[key])), key=lambda p: p["bpp"]):
        if sign * p[key] > best:
            if front and p["bpp"] == front[-1]["bpp"]:
                front.pop()
            front.append(p)
            best = sign * p[key]
    return front


def _pchip(x: Sequence[float], y: Sequence[float]):
    # scipy on first use: the command line imports this module to build its parser
    from scipy.interpolate import PchipInterpolator

    return PchipInterpolator(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))


def quality_at_rate(curve: Curve, bpp: float, key: str) -> Tuple[Optional[float], str]:
    """``key`` of ``curve`` at rate ``bpp``: ``(value, "ok")``, or ``(None, "below"|"above")``
    when ``bpp`` lies outside the rates the curve reaches, ``(None, "none")`` without data."""
    pts, last = [], None
    for p in curve:
        if p.get(key) is None or not math.isfinite(p[key]) or p["bpp"] <= 0:
            continue
        if last is not None and p["bpp"] == last:
            continue
        pts.append(p)
        last = p["bpp"]
    if not pts:
        return None, "none"
    lo, hi = pts[0]["bpp"], pts[-1]["bpp"]
    if bpp < lo * (1 - 1e-9):
        return None, "below"
    if bpp > hi * (1 + 1e-9):
        return None, "above"
    if len(pts) == 1:
        return float(pts[0][key]), "ok"
    f = _pchip([math.log(p["bpp"]) for p in pts], [p[key] for p in pts])
    return float(f(math.log(min(max(bpp, lo), hi)))), "ok"


def rate_at_quality(curve: Curve, value: float, key: str,
                    higher_is_better: Optional[bool] = None) -> Tuple[Optional[float], str]:
    """The rate at which ``curve`` reaches quality ``value``: ``(bpp, "ok")``; outside its
    range ``(bound, "below")`` (it needs less than its lowest rate ``bound``) or
    ``(bound, "above")`` (more than its highest rate); ``(None, "none")`` without data."""
    hib = HIGHER_IS_BETTER.get(key, True) if higher_is_better is None else higher_is_better
    sign = 1.0 if hib else -1.0
    front = pareto(curve, key, hib)
    if not front or value is None or not math.isfinite(value):
        return None, "none"
    qs = [sign * p[key] for p in front]
    q = sign * value
    if q < qs[0] - 1e-12:
        return front[0]["bpp"], "below"
    if q > qs[-1] + 1e-12:
        return front[-1]["bpp"], "above"
    if len(front) == 1:
        return front[0]["bpp"], "ok"
    f = _pchip(qs, [math.log(p["bpp"]) for p in front])
    return float(math.exp(f(min(max(q, qs[0]), qs[-1])))), "ok"


def bd_rate(anchor: Curve, test: Curve, key: str = "psnr",
            higher_is_better: Optional[bool] = None) -> Optional[float]:
    """Bjontegaard delta rate of ``test`` against ``anchor`` in percent (negative: ``test``
    needs fewer bits for the same ``key``), or None when the curves have fewer than two
    points each or do not overlap in quality."""
    hib = HIGHER_IS_BETTER.get(key, True) if higher_is_better is None else higher_is_better
    sign = 1.0 if hib else -1.0
    fa, ft = pareto(anchor, key, hib), pareto(test, key, hib)
    if len(fa) < 2 or len(ft) < 2:
        return None
    qa, qt = [sign * p[key] for p in fa], [sign * p[key] for p in ft]
    lo, hi = max(qa[0], qt[0]), min(qa[-1], qt[-1])
    if not hi > lo:
        return None
    ia = _pchip(qa, [math.log(p["bpp"]) for p in fa]).integrate(lo, hi)
    it = _pchip(qt, [math.log(p["bpp"]) for p in ft]).integrate(lo, hi)
    return float((math.exp((it - ia) / (hi - lo)) - 1.0) * 100.0)


def bd_range(anchor: Curve, test: Curve, key: str = "psnr",
             higher_is_better: Optional[bool] = None) -> Optional[Tuple[float, float]]:
    """The range of ``key`` (low, high) that :func:`bd_rate` integrates over: where both
    curves' Pareto fronts exist; None where it gives no BD-rate."""
    hib = HIGHER_IS_BETTER.get(key, True) if higher_is_better is None else higher_is_better
    fa, ft = pareto(anchor, key, hib), pareto(test, key, hib)
    if len(fa) < 2 or len(ft) < 2:
        return None
    lo = max(min(p[key] for p in fa), min(p[key] for p in ft))
    hi = min(max(p[key] for p in fa), max(p[key] for p in ft))
    return (float(lo), float(hi)) if hi > lo else None


def operating_points(results: Dict[str, Any], name: str) -> List[Dict[str, Any]]:
    """Per quality of rawdiff's curve ``name``: the means over the frames of its rate, PSNR
    and MS-SSIM, and the number of frames."""
    return [{"quality": int(p["setting"]), "bpp": p["bpp"], "psnr": p["psnr"], "ms_ssim": p["ms_ssim"],
             "frames": p["frames"]} for p in curves(results).get(name, [])]


#: the targets of the scalable-rate work: up to MAX_BPP, rawdiff's MS-SSIM above WebP's and its
#: butteraugli below WebP's at the same bytes, its PSNR at most PSNR_MARGIN_DB below WebP's
TARGET_ANCHOR, TARGET_MAX_BPP, TARGET_PSNR_MARGIN_DB = "webp", 0.15, 1.0
TARGET_KEYS = ("ms_ssim", "butteraugli", "psnr")


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    return float(np.mean(values)) if values and all(v is not None for v in values) else None


def target_check(results: Dict[str, Any], name: str, anchor: str = TARGET_ANCHOR, max_bpp: float = TARGET_MAX_BPP,
                 psnr_margin: float = TARGET_PSNR_MARGIN_DB) -> List[Dict[str, Any]]:
    """At each point of rawdiff's curve ``name`` whose mean rate is at most ``max_bpp``: the
    anchor's MS-SSIM, butteraugli and PSNR at the same bytes, interpolated per frame on the
    anchor's sweep of that frame, against rawdiff's, both averaged over the frames where the
    sweep reaches rawdiff's rate; pass/fail of each target (None: not measured) and of all
    (``pass``). ``status``: ``all`` (every frame reached), ``partial`` or ``not reached``.
    ``curve_*``: the anchor's mean curve at rawdiff's mean rate, for comparison."""
    sweeps: Dict[int, Curve] = {}
    for p in results["points"]:
        if p["codec"] == anchor:
            sweeps.setdefault(p["frame"], []).append(p)
    for f in sweeps:
        sweeps[f].sort(key=lambda p: p["bpp"])
    cv = curves(results)
    rows = []
    for mean_point in cv.get(name, []):
        if mean_point["bpp"] > max_bpp * (1 + 1e-9):
            continue
        mine = [p for p in results["points"] if p["codec"] == name and p["setting"] == mean_point["setting"]]
        pairs = []
        for p in mine:
            at = {k: quality_at_rate(sweeps.get(p["frame"], []), p["bpp"], k) for k in TARGET_KEYS}
            if at["ms_ssim"][1] == "ok":
                pairs.append((p, {k: v[0] for k, v in at.items()}))
        row: Dict[str, Any] = {"quality": mean_point["setting"], "bpp": mean_point["bpp"], "frames": len(mine),
                               "frames_reached": len(pairs), "anchor": anchor,
                               "status": "all" if pairs and len(pairs) == len(mine) else
                               "partial" if pairs else "not reached"}
        for k in TARGET_KEYS:
            row["rawdiff_" + k] = _mean([p.get(k) for p, _ in pairs])
            row["anchor_" + k] = _mean([v[k] for _, v in pairs])
            row["curve_" + k] = quality_at_rate(cv.get(anchor, []), mean_point["bpp"], k)[0]
        passes = {"ms_ssim": lambda r, a: r > a, "butteraugli": lambda r, a: r < a,
                  "psnr": lambda r, a: r >= a - psnr_margin}
        for k, ok in passes.items():
            r, a = row["rawdiff_" + k], row["anchor_" + k]
            row["pass_" + k] = None if r is None or a is None else bool(ok(r, a))
        verdicts = [row["pass_" + k] for k in TARGET_KEYS]
        row["pass"] = None if any(v is None for v in verdicts) else all(verdicts)
        rows.append(row)
    return rows


def colour_means(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Per model and quality (in the order measured): the mean of each colour / RAW-output
    figure over the frames, and the largest colour-fit gain (``colour_fit_gain_db_max``)."""
    out: List[Dict[str, Any]] = []
    rows = results.get("colour") or []
    for label, quality in dict.fromkeys((r["model"], r.get("quality")) for r in rows):
        mine = [r for r in rows if r["model"] == label and r.get("quality") == quality]
        means: Dict[str, Any] = {"model": label, "quality": quality, "frames": len(mine)}
        for key in ("psnr", "colour_fit_gain_db", "raw_isp_psnr", "raw_isp_gap_db", "raw_psnr"):
            values = [r[key] for r in mine if r.get(key) is not None]
            means[key] = float(np.mean(values)) if values else None
        means["colour_fit_gain_db_max"] = max(r["colour_fit_gain_db"] for r in mine)
        out.append(means)
    return out
