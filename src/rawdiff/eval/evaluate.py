"""The measuring of ``rawdiff eval``: rawdiff against standard codecs on held-out RAW frames.

    RAW frame --Codec.compress--> bytes --decompress(fast | diffusion, steps)--> RGB --+
        |                                                                            +--> PSNR, MS-SSIM,
        +--reference ISP (or the prepared X.rgb.png)--> reference --+                |    butteraugli,
                                                   |                +----------------+    spectral distance
                                                   +--JPEG/WebP/JPEG XL/AVIF sweep--> RGB

Rate is in bits per RAW pixel, ``8 x bytes / (RAW width x height)``, from the real
payload or file size; every image is measured against the reference-ISP image of its
frame (the target the model was trained on). :func:`evaluate` returns the results (every
point of every frame, codebook usage, colour, timings, notes) and draws
``side_by_side.png``; :mod:`rawdiff.eval.rd` does the RD maths on them,
:mod:`rawdiff.eval.report` writes ``report.md`` and the plots, and
:mod:`rawdiff.eval.cli` is the command line::

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

from rawdiff.codec import bitstream
from rawdiff.data.layout import TARGET_SUFFIX, target_path
from rawdiff.data.sources import LIST_SUFFIXES
from rawdiff.eval import report
from rawdiff.raw import read_raw
from rawdiff.raw.io import PACKED_SUFFIXES, RAWPY_SUFFIXES
from rawdiff.raw.isp import render

#: names of :data:`rawdiff.eval.baselines.BASELINES` (kept here so that ``rawdiff --help``
#: does not import torch)
CODECS = ("jpeg", "webp", "jxl", "avif")
DEFAULT_STEPS = (1, 2, 4, 8, 20)
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- frames


def find_frames(data: Sequence[str]) -> List[str]:
    """RAW frame files named by ``data``: index files (``.txt``/``.lst``, one path a line,
    relative to the index file), folders (searched recursively for camera RAW files,
    ``.npy`` mosaics, and PNG/TIFF/packed files that have a ``.json`` sidecar), or files."""
    from rawdiff.data.dataset import read_index

    frames: List[str] = []
    for item in data:
        suffix = os.path.splitext(item)[1].lower()
        if os.path.isdir(item):
            for root, dirs, files in os.walk(item):
                dirs.sort()
                for name in sorted(files):
                    stem, ext = os.path.splitext(name)
                    ext = ext.lower()
                    path = os.path.join(root, name)
                    if ext in RAWPY_SUFFIXES or ext == ".npy":
                        frames.append(path)
                    elif ((ext in (".png", ".tif", ".tiff") or ext in PACKED_SUFFIXES)
                          and not name.endswith(TARGET_SUFFIX) and os.path.isfile(os.path.join(root, stem + ".json"))):
                        frames.append(path)
        elif suffix in LIST_SUFFIXES and os.path.isfile(item):
            frames.extend(read_index(item))
        elif os.path.isfile(item):
            frames.append(item)
        else:
            raise FileNotFoundError("%s does not exist" % item)
    frames = list(dict.fromkeys(frames))
    if not frames:
        raise ValueError("no RAW frames found in %s" % " ".join(data))
    return frames


def load_frame(path: str, max_pixels: Optional[int] = None):
    """``(frame, reference, info)``: the RAW frame (even size; the centre crop of at most
    ``max_pixels`` pixels when given) and its reference RGB image: the prepared target
    ``X.rgb.png`` next to ``X`` when there is one (``info["reference"] == "target"``), else
    the reference ISP's rendering (``"isp"``); ``info["cropped_from"]`` is the size before
    cropping, or None."""
    import cv2

    from rawdiff.metrics import centre_crop

    frame = read_raw(path)
    if frame.height % 2 or frame.width % 2:  # the CFA needs even sizes; the phase is kept
        frame = frame.copy(mosaic=frame.mosaic[: frame.height // 2 * 2, : frame.width // 2 * 2])
    ref, kind = None, "isp"
    target = target_path(path)
    if os.path.isfile(target):
        bgr = cv2.imread(target, cv2.IMREAD_COLOR)
        if bgr is not None and bgr.shape[:2] == frame.shape:
            ref, kind = np.ascontiguousarray(bgr[:, :, ::-1]), "target"
    if ref is None:
        ref = render(frame)
    info = {"reference": kind, "cropped_from": None}
    if max_pixels and frame.height * frame.width > max_pixels:
        info["cropped_from"] = [frame.height, frame.width]
        frame = frame.copy(mosaic=np.ascontiguousarray(centre_crop(frame.mosaic, max_pixels)))
        ref = np.ascontiguousarray(centre_crop(ref, max_pixels))
    return frame, ref, info


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
        self.ref = self.ref_t = None

    def set_reference(self, ref: np.ndarray) -> None:
        from rawdiff.metrics import to_tensor

        self.ref, self.ref_t = ref, to_tensor(ref)

    def __call__(self, img: np.ndarray) -> Dict[str, Optional[float]]:
        import torch

        from rawdiff import metrics

        # one thread: these small convolutions and FFTs gain little from more, and on a
        # shared machine torch's spinning threads made them several times slower
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            t = metrics.to_tensor(img)
            out = {"psnr": metrics.psnr(t, self.ref_t), "ms_ssim": float(metrics.ms_ssim(t, self.ref_t)[0]),
                   "spectral": metrics.spectral_distance(t, self.ref_t), "butteraugli": None,
                   "butteraugli_3norm": None}
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


def _codebook(codec, grids: List[np.ndarray], payload_bytes: List[int], header_bytes: List[int]) -> Dict[str, Any]:
    """Usage of the codebook on the evaluated frames (issue 3: dead codes waste bits)."""
    k = codec.codebook_size
    hist = np.bincount(np.concatenate([g.ravel() for g in grids]), minlength=k).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    entropy = float(-(p * np.log2(p)).sum())
    n = int(hist.sum())
    return {"indices": n, "codes_used": int((hist > 0).sum()), "usage": float((hist > 0).sum() / k),
            "histogram_entropy_bits": entropy, "perplexity": float(2.0 ** entropy),
            "prior_bits_per_index": float(codec.prior.bits_per_index(grids)),
            "coded_bits_per_index": 8.0 * sum(payload_bytes) / n, "log2_k": math.log2(k),
            "header_bytes_per_frame": float(np.mean(header_bytes))}


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


class _Evaluation:
    """One run: the models and baselines, and what has been measured so far."""

    def __init__(self, models: Sequence[str], steps: Sequence[int], codecs: Sequence[str], meter: _Meter,
                 seed: int, device: str, notes: List[str]):
        from rawdiff.codec import Codec
        from rawdiff.eval.baselines import get_baselines

        self.baselines, skipped = get_baselines(codecs)
        notes.extend(skipped)
        self.meter, self.seed, self.notes = meter, seed, notes
        self.models: List[Tuple[str, Any, List[int]]] = []  # (label, codec, diffusion steps)
        for d in models:
            codec = Codec.load(d, device=device)
            label = os.path.basename(os.path.normpath(d)) or d
            if label in [m[0] for m in self.models]:
                label = "%s-%s" % (label, codec.model_id[:8])
            usable: List[int] = []
            if steps:
                try:
                    codec.diffusion()  # loads the weights now, so that no decode time includes it
                    usable = sorted(set(int(s) for s in steps))
                except (ValueError, ImportError) as exc:
                    notes.append("diffusion path skipped for %s: %s" % (label, exc))
            self.models.append((label, codec, usable))
        self.codecs: Dict[str, Dict[str, Any]] = {
            "rawdiff-fast": {"kind": "rawdiff", "label": "rawdiff fast", "setting_name": "model"}}
        for s in sorted({s for _, _, st in self.models for s in st}):
            self.codecs["rawdiff-diffusion-%d" % s] = {"kind": "rawdiff", "label": "rawdiff diffusion %d steps" % s,
                                                       "setting_name": "model"}
        for b in self.baselines:
            self.codecs[b.name] = {"kind": "baseline", "label": b.label, "setting_name": b.setting_name,
                                   "settings": list(b.settings)}
        self.frames: List[Dict[str, Any]] = []
        self.points: List[Dict[str, Any]] = []
        self.colour: List[Dict[str, Any]] = []  # per frame and model: colour_and_raw()
        self.stats = {label: ([], [], []) for label, _, _ in self.models}  # grids, payload, header bytes

    @property
    def tasks_per_frame(self) -> int:
        return sum(1 + len(st) for _, _, st in self.models) + len(self.baselines)

    def _add(self, codec: str, setting: Any, nbytes: int, img: np.ndarray, enc_s: Optional[float],
             dec_s: Optional[float]) -> Dict[str, Optional[float]]:
        m = self.meter(img)
        f = self.frames[-1]
        self.points.append(dict({"frame": len(self.frames) - 1, "codec": codec, "setting": setting,
                                 "bytes": int(nbytes), "bpp": 8.0 * nbytes / (f["width"] * f["height"]),
                                 "encode_s": enc_s, "decode_s": dec_s}, **m))
        return m

    def frame(self, path: str, max_pixels: Optional[int], bar, figure_path: Optional[str]) -> Optional[Dict]:
        """Measure every codec on one frame; with ``figure_path``, draw its side-by-side
        picture there and return its caption."""
        from rawdiff.metrics import ToolError, ToolMissing

        name = os.path.basename(os.path.dirname(path)) if os.path.basename(path) == "frame.npy" else \
            os.path.basename(path)
        bar.set_postfix_str("%s: reading" % name[:40])
        try:
            frame, ref, info = load_frame(path, max_pixels)
        except (ValueError, OSError) as exc:  # one unreadable file in a folder must not stop the run
            self.notes.append("frame skipped: %s" % (exc,))
            bar.update(self.tasks_per_frame)
            return None
        raw_pixels = frame.width * frame.height
        self.frames.append(dict({"path": path, "width": frame.width, "height": frame.height}, **info))
        self.meter.set_reference(ref)
        panels: List[Tuple[str, np.ndarray]] = [("reference ISP\n%dx%d" % (frame.width, frame.height), ref)]

        fig_bytes = None
        for mi, (label, codec, usable) in enumerate(self.models):
            bar.set_postfix_str("%s: rawdiff %s" % (name[:40], label))
            if len(self.frames) == 1:  # warm-up: first calls pay for lazy initialisation
                codec.decompress(codec.compress(frame), mode="fast")
            t0 = time.perf_counter()
            payload = codec.compress(frame)
            t1 = time.perf_counter()
            rgb = codec.decompress(payload, mode="fast")
            t2 = time.perf_counter()
            m = self._add("rawdiff-fast", label, len(payload), rgb, t1 - t0, t2 - t1)
            self.colour.append(dict({"frame": len(self.frames) - 1, "model": label},
                                    **colour_and_raw(codec, frame, payload, rgb, ref)))
            _, grid = codec.parse(payload)
            _, entropy_payload = bitstream.unpack(payload)
            for lst, v in zip(self.stats[label], (grid, len(entropy_payload), len(payload) - len(entropy_payload))):
                lst.append(v)
            bar.update(1)
            if mi == 0:
                fig_bytes = len(payload)
                panels.append(("rawdiff fast (%s)\n%d B, %.3f bpp, %.1f dB"
                               % (label, len(payload), 8.0 * len(payload) / raw_pixels, m["psnr"]), rgb))
            for s in usable:
                bar.set_postfix_str("%s: diffusion %d steps" % (name[:40], s))
                t0 = time.perf_counter()
                img = codec.decompress(payload, mode="diffusion", steps=s, seed=self.seed)
                m = self._add("rawdiff-diffusion-%d" % s, label, len(payload), img, None, time.perf_counter() - t0)
                bar.update(1)
                if mi == 0 and s == usable[-1]:
                    panels.append(("rawdiff diffusion, %d steps\n%.1f dB" % (s, m["psnr"]), img))

        best = None  # (rank, label, image): the best standard codec at rawdiff's size
        for b in self.baselines:
            bar.set_postfix_str("%s: %s" % (name[:40], b.name))
            try:
                encoded = b.sweep(ref)
            except (ToolError, ToolMissing) as exc:
                self.notes.append("%s failed on %s: %s" % (b.name, path, exc))
                encoded = []
            for e in encoded:
                m = self._add(b.name, e.setting, e.nbytes, e.decoded, e.encode_s, e.decode_s)
                if figure_path is None or fig_bytes is None:
                    continue
                # among files no larger than rawdiff's payload the highest MS-SSIM, else the smallest file
                rank = (1, m["ms_ssim"]) if e.nbytes <= fig_bytes else (0, -e.nbytes)
                if best is None or rank > best[0]:
                    text = "%s %s %s%s\n%d B, %.3f bpp, %.1f dB" % (
                        b.label.split(" (")[0], b.setting_name, report.format_setting(float(e.setting)),
                        "" if rank[0] else " (smallest)", e.nbytes, 8.0 * e.nbytes / raw_pixels, m["psnr"])
                    best = (rank, text, e.decoded)
            bar.update(1)

        if figure_path is None or fig_bytes is None:
            return None
        if best is not None:
            panels.append(best[1:])
        report.side_by_side(panels, figure_path)
        return {"path": figure_path, "frame": path, "caption": (
            "Frame %s: %s. Below: 1:1 centre crops. The standard codec is the best (highest MS-SSIM) setting of "
            "any codec whose file is no larger than rawdiff's payload." % (
                name, "; ".join(p[0].replace("\n", ", ") for p in panels)))}

    def model_rows(self) -> List[Dict[str, Any]]:
        rows = []
        for label, codec, _ in self.models:
            grids, payload_bytes, header_bytes = self.stats[label]
            rows.append({"label": label, "dir": codec.model_dir, "model_id": codec.model_id, "factor": codec.factor,
                         "codebook_size": codec.codebook_size, "prior_kind": codec.prior.kind,
                         "codebook": _codebook(codec, grids, payload_bytes, header_bytes) if grids else None})
        return rows


def evaluate(models: Sequence[str], data: Sequence[str], out_dir: str, steps: Sequence[int] = DEFAULT_STEPS,
             codecs: Sequence[str] = CODECS, butteraugli: bool = True, butteraugli_max_pixels: Optional[int] = 1000000,
             max_frames: Optional[int] = None, max_pixels: Optional[int] = None, seed: int = 0, device: str = "auto",
             figure_frame: int = 0, progress: bool = True) -> Dict[str, Any]:
    """Evaluate and return the results (:mod:`rawdiff.eval.rd` and :mod:`rawdiff.eval.report`
    use them); writes ``side_by_side.png`` into ``out_dir``."""
    from tqdm import tqdm

    paths = find_frames(data)
    paths = paths[:max_frames] if max_frames else paths
    notes: List[str] = []
    meter = _Meter(butteraugli, butteraugli_max_pixels, notes)
    ev = _Evaluation(models, steps, codecs, meter, seed, device, notes)
    os.makedirs(out_dir, exist_ok=True)
    figure = None
    start = time.perf_counter()
    with tqdm(total=len(paths) * ev.tasks_per_frame, desc="rawdiff eval", unit="step", disable=not progress,
              dynamic_ncols=True) as bar:
        for fi, path in enumerate(paths):
            fig = ev.frame(path, max_pixels, bar, os.path.join(out_dir, "side_by_side.png")
                           if fi == figure_frame else None)
            figure = fig or figure
    if not ev.frames:
        raise ValueError("no frame could be evaluated (%s)" % "; ".join(n for n in notes if n.startswith("frame")))
    return _clean({
        "format_version": FORMAT_VERSION,
        "settings": {"data": list(data), "max_frames": max_frames, "max_pixels": max_pixels, "steps": list(steps),
                     "seed": seed, "codecs": [b.name for b in ev.baselines], "butteraugli": meter.butteraugli,
                     "butteraugli_max_pixels": butteraugli_max_pixels, "figure_frame": figure_frame},
        "environment": _environment(str(ev.models[0][1].device)),
        "models": ev.model_rows(), "codecs": ev.codecs, "frames": ev.frames, "points": ev.points,
        "colour": ev.colour,
        "figure": figure, "notes": list(dict.fromkeys(notes)), "wall_s": time.perf_counter() - start,
    })
