"""The measuring of ``rawdiff eval``: rawdiff's operating points against standard codecs on
held-out RAW frames.

    RAW frame --Codec.compress(quality q)--> bytes --decompress(fast | diffusion, steps)--> RGB --+
        |        every q of the model                                                           +--> PSNR, MS-SSIM,
        |        (or --qualities)                                                               |    butteraugli,
        +--reference ISP (or the prepared X.rgb.png)--> reference --+                           |    spectral distance
                                                   |                +---------------------------+
                                                   +--JPEG/WebP/JPEG XL/AVIF sweep--> RGB

Rate is in bits per RAW pixel, ``8 x bytes / (RAW width x height)``, from the real
payload or file size; every image is measured against the reference-ISP image of its
frame (the target the model was trained on). Each quality is encoded on its own (and
timed); the stream of the highest quality, cut to each lower one
(:func:`rawdiff.codec.bitstream.truncate`), is checked byte for byte against it, and its
stages give each stage's coded bits per index (the payload's real bytes) next to the
prior's ideal bits and log2 K.

:mod:`rawdiff.eval.frames` finds the frames and their references, :mod:`rawdiff.eval.stages`
gathers the per-stage figures. :func:`evaluate` returns the results (every point of every
frame, per-stage figures, colour, timings, notes) and draws ``side_by_side.png`` (rawdiff
at two qualities, WebP at the same bytes beside each); :mod:`rawdiff.eval.rd` does the RD
maths on them (BD-rates, the WebP target check), :mod:`rawdiff.eval.report` writes
``report.md`` and the plots, :mod:`rawdiff.eval.operating_points` writes the measured
points into the model directory, and :mod:`rawdiff.eval.cli` is the command line::

    rawdiff eval --model models/default data/corpus/test.txt --out eval-out

torch, OpenCV, the codec and the baselines are imported when a run starts: the command
line imports this module to build its parser, and ``rawdiff --help`` must stay light.
"""

from __future__ import annotations

import math
import os
import platform
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rawdiff.eval import report
from rawdiff.eval.frames import find_frames, load_frame
from rawdiff.eval.rd import PEOPLE_COUNTS
from rawdiff.raw.isp import render

#: names of :data:`rawdiff.eval.baselines.BASELINES` (kept here so that ``rawdiff --help``
#: does not import torch)
CODECS = ("jpeg", "webp", "jxl", "avif")
#: diffusion steps by default: none (the fast path; ``--steps 1 4`` adds diffusion decodes at every quality)
DEFAULT_STEPS: Tuple[int, ...] = ()
FORMAT_VERSION = 2
#: the standard codec beside rawdiff in the side-by-side picture (the first baseline when it is not run)
FIGURE_CODEC = "webp"


# --------------------------------------------------------------------------- measuring


def colour_and_raw(codec, frame, payload: bytes, rgb: np.ndarray, ref: np.ndarray) -> Dict[str, Optional[float]]:
    """Colour and RAW-output figures of one frame's fast decode ``rgb``:

    - ``colour_fit_gain_db``: PSNR gained by the best 3x3 + offset colour fit to ``ref``
      (what colour errors cost; ~0 when the codec renders colour as the reference ISP);
    - ``raw_isp_psnr``: the reference ISP on the reconstructed RAW frame, against ``ref``, and
      ``raw_isp_gap_db`` its difference to the fast RGB output's PSNR;
    - ``raw_psnr``: PSNR of the reconstructed normalised mosaic against the frame's (peak 1).
    RAW figures are None for a model that decodes sRGB only."""
    from rawdiff.metrics import colour_fit_gain, psnr_uint8

    psnr = psnr_uint8(rgb, ref)
    out: Dict[str, Optional[float]] = {"psnr": psnr, "colour_fit_gain_db": colour_fit_gain(rgb, ref),
                                       "raw_isp_psnr": None, "raw_isp_gap_db": None, "raw_psnr": None}
    if codec.out == "rgb":
        return out
    raw = codec.decompress_raw(payload, mode="fast")
    out["raw_isp_psnr"] = psnr_uint8(render(raw), ref)
    out["raw_isp_gap_db"] = out["raw_isp_psnr"] - psnr
    out["raw_psnr"] = psnr_uint8(raw.normalize(), frame.normalize(), peak=1.0)
    return out


class _Meter:
    """The metrics of one image against its reference; butteraugli is switched off (with a
    note) the first time its tool is missing."""

    def __init__(self, butteraugli: bool, butteraugli_max_pixels: Optional[int], notes: List[str]):
        self.butteraugli = butteraugli
        self.max_pixels = butteraugli_max_pixels
        self.notes = notes
        self.ref = self.ref_t = self.task = self.swd = None

    def set_reference(self, ref: np.ndarray) -> None:
        from rawdiff.metrics import SlicedWassersteinReference, to_tensor
        from rawdiff.task_fidelity import TaskReference

        self.ref, self.ref_t = ref, to_tensor(ref)
        self.task = TaskReference(ref)  # people boxes and ORB keypoints of the reference
        self.swd = SlicedWassersteinReference(self.ref_t)  # its patches and projections, once

    def __call__(self, img: np.ndarray) -> Dict[str, Optional[float]]:
        import torch

        from rawdiff import metrics
        from rawdiff.task_fidelity import dice_share

        # one thread: these small convolutions and FFTs gain little from more, and on a
        # shared machine torch's spinning threads made them several times slower
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            t = metrics.to_tensor(img)
            out = {"psnr": metrics.psnr(t, self.ref_t), "ms_ssim": float(metrics.ms_ssim(t, self.ref_t)[0]),
                   "spectral": metrics.spectral_distance(t, self.ref_t),
                   "swd": self.swd.distance(t),
                   "grid": metrics.grid_strength(img) if min(img.shape[:2]) > 2 * metrics.GRID_PERIOD else None,
                   "orb": self.task.orb_share(img), "butteraugli": None, "butteraugli_3norm": None}
            out.update(zip(PEOPLE_COUNTS, self.task.people_match(img)))
            out["people"] = dice_share(*(out[k] for k in PEOPLE_COUNTS))
        finally:
            torch.set_num_threads(threads)
        if self.butteraugli:
            try:
                out["butteraugli"], out["butteraugli_3norm"] = metrics.butteraugli(self.ref, img, self.max_pixels)
            except metrics.ToolMissing as exc:
                self.butteraugli = False
                self.notes.append("butteraugli not measured: %s" % exc)
            except metrics.ToolError as exc:
                self.notes.append("butteraugli failed on one image: %s" % exc)
        return out


def _environment(device: str) -> Dict[str, str]:
    import torch

    from rawdiff.metrics import run_tool

    env = {"python": platform.python_version(), "torch": torch.__version__, "device": device,
           "torch threads": str(torch.get_num_threads()), "cpu": platform.processor() or platform.machine(),
           "cpu count": str(os.cpu_count())}
    for tool, argv in (("cwebp", ["cwebp", "-version"]), ("cjxl", ["cjxl", "--version"]),
                       ("avifenc", ["avifenc", "--version"])):
        try:
            env[tool] = run_tool(argv, timeout=30).strip().splitlines()[0]
        except Exception:  # a version string is a nicety
            pass
    return env


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, inf/nan to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


# --------------------------------------------------------------------------- the run


def at_bytes(baseline, rgb: np.ndarray, nbytes: int, iterations: int = 8):
    """``(encoded, reached)``: ``baseline``'s coding of ``rgb`` whose file is the largest of
    at most ``nbytes`` bytes, by bisection of its setting between the ends of its sweep
    (``iterations`` encodings at most besides the two ends); ``reached`` is False, with the
    codec's smallest file, when even its lowest setting writes more."""
    lo, hi = float(baseline.settings[0]), float(baseline.settings[-1])
    best = baseline.encode(rgb, lo)
    if best.nbytes > nbytes:
        return best, False
    top = baseline.encode(rgb, hi)
    if top.nbytes <= nbytes:
        return top, True
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        e = baseline.encode(rgb, mid)
        if e.nbytes <= nbytes:
            lo = mid
            best = e if e.nbytes >= best.nbytes else best
        else:
            hi = mid
    return best, True


class _Model:
    """One model under evaluation: its codec, the qualities and diffusion steps measured, the
    names of its curves, and its streams' per-stage figures and truncation check."""

    def __init__(self, label: str, codec, qualities: Sequence[int], steps: Sequence[int], suffix: str,
                 realism: Sequence[Optional[float]] = (None,)):
        from rawdiff.eval.stages import StageStats

        self.label, self.codec, self.qualities, self.steps = label, codec, list(qualities), list(steps)
        self.fast = "rawdiff-fast" + suffix
        #: (steps, realism) -> curve name; realism None: the model's default
        self.diffusion = {(s, r): "rawdiff-diffusion-%d%s%s" % (s, "" if r is None else "-r%g" % r, suffix)
                          for s in self.steps for r in realism}
        self.stats = StageStats(codec, self.qualities[-1])

    def row(self) -> Dict[str, Any]:
        c = self.codec
        return {"label": self.label, "dir": c.model_dir, "model_id": c.model_id, "factor": c.factor,
                "codebook_size": c.codebook_size, "prior_kind": c.prior.kind, "out": c.out,
                "stages": [list(st) for st in c.stages], "qualities": self.qualities,
                "default_quality": c.default_quality, "recorded_operating_points": c.operating_points,
                "curves": {"fast": self.fast,
                           "diffusion": {curve_key(s, r): n for (s, r), n in self.diffusion.items()}},
                "stage_stats": self.stats.rows(), "mean_layer_stats": self.stats.mean_rows(),
                "header_bytes_per_frame": self.stats.header_bytes_per_frame(),
                "truncation": self.stats.truncation}


def curve_key(steps: int, realism: Optional[float]) -> str:
    """``"4"`` for 4 steps at the model's default realism, ``"4@r0.5"`` at realism 0.5."""
    return "%d" % steps if realism is None else "%d@r%g" % (steps, realism)


def parse_qualities(text: Optional[str]) -> Optional[List[int]]:
    """``"1,3,5"`` as ``[1, 3, 5]`` (None or empty: every quality); a clear error otherwise."""
    if text is None or not str(text).strip():
        return None
    out = []
    for part in str(text).split(","):
        try:
            q = int(part.strip())
        except ValueError:
            raise ValueError("qualities must be whole numbers separated by commas, e.g. 1,3,5; got %r" % text) from None
        if q < 1:
            raise ValueError("quality must be 1 or more, got %d" % q)
        out.append(q)
    return sorted(set(out))


class _Evaluation:
    """One run: the models and baselines, and what has been measured so far."""

    def __init__(self, models: Sequence[str], qualities: Optional[Sequence[int]], steps: Sequence[int],
                 codecs: Sequence[str], meter: _Meter, seed: int, device: str, notes: List[str],
                 realism: Sequence[Optional[float]] = (None,)):
        from rawdiff.codec import Codec
        from rawdiff.eval.baselines import get_baselines

        self.baselines, skipped = get_baselines(codecs)
        notes.extend(skipped)
        self.meter, self.seed, self.notes = meter, seed, notes
        self.models: List[_Model] = []
        labels: List[str] = []
        for d in models:
            codec = Codec.load(d, device=device)
            label = os.path.basename(os.path.normpath(d)) or d
            if label in labels:
                label = "%s-%s" % (label, codec.model_id[:8])
            labels.append(label)
            qs = list(range(1, codec.qualities + 1)) if not qualities else sorted(set(qualities))
            for q in qs:
                try:
                    codec.check_quality(q)
                except ValueError as exc:
                    raise ValueError("model %s: %s" % (d, exc)) from None
            usable: List[int] = []
            if steps:
                try:
                    codec.diffusion()  # loads the weights now, so that no decode time includes it
                    usable = sorted(set(int(s) for s in steps))
                except (ValueError, ImportError) as exc:
                    notes.append("diffusion path skipped for %s: %s" % (label, exc))
            self.models.append(_Model(label, codec, qs, usable, ":" + label if len(models) > 1 else "",
                                      realism))
        self.codecs: Dict[str, Dict[str, Any]] = {}
        for m in self.models:
            tail = "" if len(self.models) == 1 else " (%s)" % m.label
            self.codecs[m.fast] = {"kind": "rawdiff", "label": "rawdiff fast" + tail, "setting_name": "quality",
                                   "model": m.label, "path": "fast"}
            for (s, r), name in m.diffusion.items():
                at = "" if r is None else ", realism %g" % r
                self.codecs[name] = {"kind": "rawdiff", "label": "rawdiff diffusion %d steps%s%s" % (s, at, tail),
                                     "setting_name": "quality", "model": m.label, "path": "diffusion", "steps": s,
                                     "realism": m.codec.realism_for(r)}
        for b in self.baselines:
            self.codecs[b.name] = {"kind": "baseline", "label": b.label, "setting_name": b.setting_name,
                                   "settings": list(b.settings)}
        self.frames: List[Dict[str, Any]] = []
        self.points: List[Dict[str, Any]] = []
        self.colour: List[Dict[str, Any]] = []  # per frame, model and quality: colour_and_raw()

    @property
    def tasks_per_frame(self) -> int:
        return sum(len(m.qualities) * (1 + len(m.diffusion)) for m in self.models) + len(self.baselines)

    def _add(self, codec: str, setting: Any, nbytes: int, img: np.ndarray, enc_s: Optional[float],
             dec_s: Optional[float], **extra: Any) -> Dict[str, Optional[float]]:
        m = self.meter(img)
        f = self.frames[-1]
        self.points.append(dict({"frame": len(self.frames) - 1, "codec": codec, "setting": setting,
                                 "bytes": int(nbytes), "bpp": 8.0 * nbytes / (f["width"] * f["height"]),
                                 "encode_s": enc_s, "decode_s": dec_s}, **extra, **m))
        return m

    def _model(self, m: _Model, frame, ref: np.ndarray, name: str, bar, keep: Sequence[int]) -> Dict[int, Any]:
        """Every quality of one model on one frame; returns ``{q: (bytes, image, metrics)}``
        for the qualities in ``keep`` (the picture's), and the last diffusion image of the lowest of them."""
        codec, fi = m.codec, len(self.frames) - 1
        if fi == 0:  # warm-up: first calls pay for lazy initialisation
            codec.decompress(codec.compress(frame, quality=m.qualities[-1]), mode="fast")
        payloads: Dict[int, bytes] = {}
        kept: Dict[Any, Any] = {}
        for q in m.qualities:
            bar.set_postfix_str("%s: rawdiff %s q%d" % (name[:40], m.label, q))
            t0 = time.perf_counter()
            payload = codec.compress(frame, quality=q)
            t1 = time.perf_counter()
            rgb = codec.decompress(payload, mode="fast")
            t2 = time.perf_counter()
            metrics = self._add(m.fast, q, len(payload), rgb, t1 - t0, t2 - t1, model=m.label, quality=q)
            self.colour.append(dict({"frame": fi, "model": m.label, "quality": q},
                                    **colour_and_raw(codec, frame, payload, rgb, ref)))
            payloads[q] = payload
            if q in keep:
                kept[q] = (len(payload), rgb, metrics)
            bar.update(1)
            for (s, r), curve in m.diffusion.items():
                bar.set_postfix_str("%s: diffusion %d steps q%d" % (name[:40], s, q))
                t0 = time.perf_counter()
                img = codec.decompress(payload, mode="diffusion", steps=s, seed=self.seed, realism=r)
                metrics = self._add(curve, q, len(payload), img, None, time.perf_counter() - t0,
                                    model=m.label, quality=q)
                if keep and q == min(keep):  # the picture: diffusion where the fast path is blurred most
                    kept["diffusion"] = (s, codec.realism_for(r), q, img, metrics)
                bar.update(1)
        top = payloads[m.qualities[-1]]
        m.stats.add_stream(top, frame.width * frame.height)
        m.stats.check_truncation(top, payloads, fi)
        return kept

    def frame(self, path: str, max_pixels: Optional[int], bar, figure_path: Optional[str],
              figure_qualities: Sequence[int]) -> Optional[Dict]:
        """Measure every codec on one frame; with ``figure_path``, draw its side-by-side
        picture there and return what it shows."""
        from rawdiff.metrics import ToolError, ToolMissing

        name = report.frame_name(path)
        bar.set_postfix_str("%s: reading" % name[:40])
        try:
            frame, ref, info = load_frame(path, max_pixels)
        except (ValueError, OSError) as exc:  # one unreadable file in a folder must not stop the run
            self.notes.append("frame skipped: %s" % (exc,))
            bar.update(self.tasks_per_frame)
            return None
        self.frames.append(dict({"path": path, "width": frame.width, "height": frame.height}, **info))
        self.meter.set_reference(ref)
        kept: Dict[Any, Any] = {}
        for mi, m in enumerate(self.models):
            got = self._model(m, frame, ref, name, bar, figure_qualities if figure_path and mi == 0 else ())
            kept = kept or got
        for b in self.baselines:
            bar.set_postfix_str("%s: %s" % (name[:40], b.name))
            try:
                encoded = b.sweep(ref)
            except (ToolError, ToolMissing) as exc:
                self.notes.append("%s failed on %s: %s" % (b.name, path, exc))
                encoded = []
            for e in encoded:
                self._add(b.name, e.setting, e.nbytes, e.decoded, e.encode_s, e.decode_s)
            bar.update(1)
        if not figure_path or not kept:
            return None
        return self._figure(frame, ref, name, path, kept, figure_path)

    def _figure(self, frame, ref: np.ndarray, name: str, path: str, kept: Dict[Any, Any],
                figure_path: str) -> Dict[str, Any]:
        """The reference, rawdiff at the picture's qualities and, next to each, the standard
        codec (WebP, else the first baseline) at the largest file no larger than rawdiff's."""
        from rawdiff.metrics import ToolError, ToolMissing

        pixels = frame.width * frame.height
        base = next((b for b in self.baselines if b.name == FIGURE_CODEC), self.baselines[0] if self.baselines
                    else None)
        panels: List[Tuple[str, np.ndarray]] = [("reference ISP\n%dx%d" % (frame.width, frame.height), ref)]
        shown: List[Dict[str, Any]] = [{"image": "reference ISP"}]

        def panel(title: str, nbytes: int, img: np.ndarray, metrics: Dict[str, Optional[float]], **what) -> None:
            panels.append(("%s\n%d B, %.3f bpp, %.1f dB, MS-SSIM %.3f" % (
                title, nbytes, 8.0 * nbytes / pixels, metrics["psnr"], metrics["ms_ssim"]), img))
            shown.append(dict(what, image=title, bytes=nbytes, bpp=8.0 * nbytes / pixels, **metrics))

        for q in sorted(k for k in kept if isinstance(k, int)):
            nbytes, rgb, metrics = kept[q]
            panel("rawdiff q%d" % q, nbytes, rgb, metrics, codec="rawdiff-fast", quality=q)
            if base is None:
                continue
            try:
                e, reached = at_bytes(base, ref, nbytes)
            except (ToolError, ToolMissing) as exc:
                self.notes.append("%s at rawdiff's bytes failed on %s: %s" % (base.name, path, exc))
                continue
            panel("%s %s %.3g%s" % (base.label.split(" (")[0], base.setting_name, e.setting,
                                  "" if reached else " (its smallest)"),
                  e.nbytes, e.decoded, self.meter(e.decoded), codec=base.name, setting=e.setting, matches_q=q,
                  reached=reached)
        if "diffusion" in kept:
            s, r, q, img, metrics = kept["diffusion"]
            nbytes = kept[q][0]
            panel("rawdiff q%d, diffusion %d steps, realism %g" % (q, s, r), nbytes, img, metrics,
                  codec="rawdiff-diffusion", quality=q, steps=s, realism=r)
        report.side_by_side(panels, figure_path, panel_width=360 if len(panels) > 3 else 480, crop=256)
        return {"path": figure_path, "frame": path, "panels": shown, "caption": (
            "Frame %s: %s. Below each: a 1:1 centre crop. Beside each rawdiff quality, %s at the largest file "
            "no larger than rawdiff's (its setting found by bisection)." % (
                name, "; ".join(p[0].replace("\n", ", ") for p in panels), base.label if base else "no codec"))}


def evaluate(models: Sequence[str], data: Sequence[str], out_dir: str, qualities: Optional[Sequence[int]] = None,
             steps: Sequence[int] = DEFAULT_STEPS, codecs: Sequence[str] = CODECS, butteraugli: bool = True,
             butteraugli_max_pixels: Optional[int] = 1000000, max_frames: Optional[int] = None,
             max_pixels: Optional[int] = None, seed: int = 0, device: str = "auto", figure_frame: int = 0,
             figure_qualities: Optional[Sequence[int]] = None, progress: bool = True,
             realism: Sequence[Optional[float]] = (None,)) -> Dict[str, Any]:
    """Evaluate every model at ``qualities`` (default: all of each model's) and return the
    results (:mod:`rawdiff.eval.rd` and :mod:`rawdiff.eval.report` use them); writes
    ``side_by_side.png`` into ``out_dir`` (the first model at ``figure_qualities``, default
    its lowest and highest quality evaluated)."""
    from tqdm import tqdm

    paths = find_frames(data)
    paths = paths[:max_frames] if max_frames else paths
    notes: List[str] = []
    meter = _Meter(butteraugli, butteraugli_max_pixels, notes)
    ev = _Evaluation(models, qualities, steps, codecs, meter, seed, device, notes, list(realism) or [None])
    first = ev.models[0].qualities
    shown = sorted(set(figure_qualities)) if figure_qualities else sorted({first[0], first[-1]})
    if any(q not in first for q in shown):
        raise ValueError("figure qualities %s are not among the qualities evaluated %s" % (shown, first))
    os.makedirs(out_dir, exist_ok=True)
    figure = None
    start = time.perf_counter()
    with tqdm(total=len(paths) * ev.tasks_per_frame, desc="rawdiff eval", unit="step", disable=not progress,
              dynamic_ncols=True) as bar:
        for fi, path in enumerate(paths):
            fig = ev.frame(path, max_pixels, bar, os.path.join(out_dir, "side_by_side.png")
                           if fi == figure_frame else None, shown)
            figure = fig or figure
    if not ev.frames:
        raise ValueError("no frame could be evaluated (%s)" % "; ".join(n for n in notes if n.startswith("frame")))
    for m in ev.models:
        t = m.stats.truncation
        if t["differing"]:
            notes.append("model %s: %d of %d streams cut to a lower quality differ from encoding at it "
                         "(frame, quality): %s" % (m.label, len(t["differing"]), t["checked"], t["differing"][:10]))
    return _clean({
        "format_version": FORMAT_VERSION,
        "settings": {"data": list(data), "max_frames": max_frames, "max_pixels": max_pixels,
                     "qualities": list(qualities) if qualities else None, "steps": list(steps), "seed": seed,
                     "realism": list(realism),
                     "codecs": [b.name for b in ev.baselines], "butteraugli": meter.butteraugli,
                     "butteraugli_max_pixels": butteraugli_max_pixels, "figure_frame": figure_frame,
                     "figure_qualities": shown},
        "environment": _environment(str(ev.models[0].codec.device)),
        "models": [m.row() for m in ev.models], "codecs": ev.codecs, "frames": ev.frames, "points": ev.points,
        "colour": ev.colour,
        "figure": figure, "notes": list(dict.fromkeys(notes)), "wall_s": time.perf_counter() - start,
    })
