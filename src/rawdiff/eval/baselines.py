"""Standard image codecs as baselines: what a vehicle would otherwise send.

    RAW frame --reference ISP--> sRGB (uint8) --codec at setting s--> file (bytes) --decoder--> sRGB

Each baseline codes the reference-ISP image at each setting of a sweep and reports the
real size of the file its encoder wrote (headers and all) and the decoded image:

- ``jpeg``: OpenCV ``imencode``/``imdecode``, quality 1..100, 4:2:0 (libjpeg's default);
- ``webp``: ``cwebp -q`` / ``dwebp``, quality 0..100, 4:2:0 (lossy WebP);
- ``jxl``: ``cjxl -d`` / ``djxl``, butteraugli distance 25..0.5, XYB;
- ``avif``: ``avifenc --min Q --max Q -y 420`` / ``avifdec`` (libaom), quantizer 63..0.

The tools are Debian's (``libjxl-tools``, ``webp``, ``libavif-bin``); a missing one makes
:meth:`Baseline.missing` return a note instead of failing the evaluation. Encoders run
single-threaded at their default effort, so that timings compare on one core; decoders
write uncompressed PPM (PNG without compression for ``avifdec``), so that decode times are
mostly decoding.

Sweeps run from the lowest rate to the highest; their low ends reach the rates rawdiff
works at (about 0.1 bit per pixel), where JPEG and WebP cannot go.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from rawdiff.metrics import ToolError, ToolMissing, find_tool, read_rgb, run_tool, write_png


@dataclass
class Encoded:
    """One point of a sweep: the setting, the coded file (its bytes, as the encoder wrote
    them), the decoded image, timings (wall time of the encoder and the decoder, including
    process start for the tools)."""

    setting: float
    data: bytes
    decoded: np.ndarray
    encode_s: float
    decode_s: float

    @property
    def nbytes(self) -> int:
        return len(self.data)


class Baseline:
    """A codec with a quality sweep. Subclasses set the class attributes and implement
    :meth:`_code` (one setting)."""

    name = ""
    label = ""
    setting_name = ""
    #: the default sweep, from the lowest rate to the highest
    settings: Tuple[float, ...] = ()
    tools: Tuple[str, ...] = ()

    def missing(self) -> Optional[str]:
        """None when the codec can run, else why not (one line)."""
        for tool in self.tools:
            try:
                find_tool(tool)
            except ToolMissing as exc:
                return "%s skipped: %s" % (self.name, exc)
        return None

    def encode(self, rgb: np.ndarray, setting: float) -> Encoded:
        """Code ``rgb`` (uint8 HxWx3) at one setting."""
        return self.sweep(rgb, [setting])[0]

    def sweep(self, rgb: np.ndarray, settings: Optional[Sequence[float]] = None) -> List[Encoded]:
        """Code ``rgb`` at every setting (default: :attr:`settings`)."""
        rgb = _check_rgb(rgb)
        settings = list(self.settings if settings is None else settings)
        with tempfile.TemporaryDirectory(prefix="rawdiff-%s-" % self.name) as tmp:
            src = os.path.join(tmp, "input.png")
            if self.tools:
                write_png(src, rgb)
            out = []
            for s in settings:
                enc = self._code(rgb, src, float(s), tmp)
                if enc.decoded.shape != rgb.shape:
                    raise ToolError("%s at %s %g decoded to shape %s, expected %s"
                                    % (self.name, self.setting_name, s, enc.decoded.shape, rgb.shape))
                out.append(enc)
        return out

    def _code(self, rgb: np.ndarray, src: str, setting: float, tmp: str) -> Encoded:
        raise NotImplementedError

    def _code_with_tools(self, src: str, setting: float, tmp: str, encode_argv: List[str],
                         decode_argv: List[str], coded: str, decoded: str) -> Encoded:
        for path in (coded, decoded):
            if os.path.exists(path):
                os.remove(path)
        t0 = time.perf_counter()
        run_tool(encode_argv)
        t1 = time.perf_counter()
        if not os.path.isfile(coded):
            raise ToolError("%s wrote no file at %s %g" % (self.tools[0], self.setting_name, setting))
        with open(coded, "rb") as f:
            data = f.read()
        run_tool(decode_argv)
        t2 = time.perf_counter()
        return Encoded(setting, data, read_rgb(decoded), t1 - t0, t2 - t1)

    def __repr__(self) -> str:
        return "%s(%s %s)" % (type(self).__name__, self.setting_name, list(self.settings))


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("baselines code uint8 H x W x 3 RGB images, got %s %s" % (rgb.dtype, rgb.shape))
    return np.ascontiguousarray(rgb)


def _fmt(setting: float) -> str:
    return ("%d" % setting) if float(setting).is_integer() else ("%g" % setting)


class JPEG(Baseline):
    name, label, setting_name = "jpeg", "JPEG (OpenCV)", "quality"
    settings = (1, 3, 5, 10, 20, 30, 50, 70, 85, 95)

    def _code(self, rgb, src, setting, tmp):
        import cv2

        q = int(round(setting))
        if not 0 <= q <= 100:
            raise ValueError("JPEG quality must be in 0..100, got %g" % setting)
        t0 = time.perf_counter()
        ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        t1 = time.perf_counter()
        if not ok:
            raise ToolError("OpenCV could not encode JPEG at quality %d" % q)
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        t2 = time.perf_counter()
        return Encoded(setting, buf.tobytes(), np.ascontiguousarray(bgr[:, :, ::-1]), t1 - t0, t2 - t1)


class WebP(Baseline):
    name, label, setting_name = "webp", "WebP (cwebp)", "quality"
    settings = (0, 5, 10, 20, 30, 50, 70, 85, 95)
    tools = ("cwebp", "dwebp")

    def _code(self, rgb, src, setting, tmp):
        coded, decoded = os.path.join(tmp, "out.webp"), os.path.join(tmp, "out.ppm")
        return self._code_with_tools(src, setting, tmp, ["cwebp", "-quiet", "-q", _fmt(setting), src, "-o", coded],
                                     ["dwebp", "-quiet", coded, "-ppm", "-o", decoded], coded, decoded)


class JPEGXL(Baseline):
    name, label, setting_name = "jxl", "JPEG XL (cjxl)", "distance"
    # cjxl 0.7 accepts distances up to 25
    settings = (25, 15, 10, 6, 4, 2.5, 1.5, 1, 0.5)
    tools = ("cjxl", "djxl")

    def _code(self, rgb, src, setting, tmp):
        coded, decoded = os.path.join(tmp, "out.jxl"), os.path.join(tmp, "out.ppm")
        return self._code_with_tools(
            src, setting, tmp, ["cjxl", src, coded, "-d", _fmt(setting), "--num_threads=1", "--quiet"],
            ["djxl", coded, decoded, "--num_threads=1", "--bits_per_sample=8"], coded, decoded)


class AVIF(Baseline):
    # avifenc 0.11 has no -q: the quantizer (0 = lossless .. 63) is set with --min = --max
    name, label, setting_name = "avif", "AVIF (avifenc, aom)", "quantizer"
    settings = (63, 58, 52, 46, 40, 32, 24, 16, 8)
    tools = ("avifenc", "avifdec")

    def _code(self, rgb, src, setting, tmp):
        q = int(round(setting))
        if not 0 <= q <= 63:
            raise ValueError("AVIF quantizer must be in 0..63, got %g" % setting)
        coded, decoded = os.path.join(tmp, "out.avif"), os.path.join(tmp, "out.png")
        return self._code_with_tools(
            src, setting, tmp, ["avifenc", "--min", q, "--max", q, "-y", "420", "-j", "1", src, coded],
            ["avifdec", "-d", "8", "-j", "1", "--png-compress", "0", coded, decoded], coded, decoded)


BASELINES: Dict[str, type] = {cls.name: cls for cls in (JPEG, WebP, JPEGXL, AVIF)}


def get_baselines(names: Optional[Sequence[str]] = None) -> Tuple[List[Baseline], List[str]]:
    """The runnable baselines among ``names`` (default: all) and a note for each skipped one."""
    names = list(BASELINES) if names is None else list(names)
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError("unknown codec %s (choose from %s)" % (", ".join(unknown), ", ".join(BASELINES)))
    ready, notes = [], []
    for n in dict.fromkeys(names):
        codec = BASELINES[n]()
        why = codec.missing()
        if why is None:
            ready.append(codec)
        else:
            notes.append(why)
    return ready, notes
