"""Photos in other colour spaces to sRGB, by the code points of ITU-T H.273 (cICP).

    PNG cICP chunk --png_cicp--> (primaries, transfer, matrix, full range)
    float RGB [0, 1] --inverse transfer (sRGB/BT.709 gamma, linear, PQ, HLG)--> linear
                     --primaries (BT.2020, P3) -> BT.709--> --sRGB OETF--> sRGB [0, 1]

A photo is unprocessed into a RAW frame from sRGB (:mod:`rawdiff.raw.unprocess`), so a
wide-gamut or HDR photo is brought to sRGB first. HLG and PQ are mapped so that reference
white (HLG 75 %, PQ 203 cd/m2, ITU-R BT.2408) becomes sRGB white; brighter highlights
clip. Code points: primaries 1 BT.709, 9 BT.2020, 12 P3 (D65); transfer 1/6/14/15 BT.709
family and 13 sRGB (read as sRGB), 8 linear, 16 PQ (SMPTE ST 2084), 18 HLG (ARIB STD-B67).
"""

from __future__ import annotations

import os
import struct
from typing import Optional, Tuple

import numpy as np

# Linear RGB of other primaries -> linear BT.709/sRGB (D65).
_BT2020_TO_709 = np.array([[1.6604910, -0.5876411, -0.0728499],
                           [-0.1245505, 1.1328999, -0.0083494],
                           [-0.0181508, -0.1005789, 1.1187297]])
_P3_TO_709 = np.array([[1.2249401, -0.2249404, 0.0000000],
                       [-0.0420569, 1.0420571, 0.0000000],
                       [-0.0196376, -0.0786361, 1.0982735]])
_PRIMARIES = {1: None, 9: _BT2020_TO_709, 12: _P3_TO_709}
_SRGB_LIKE_TRANSFERS = (1, 6, 13, 14, 15)  # BT.709, BT.601, sRGB, BT.2020 10/12-bit
_LINEAR, _PQ, _HLG = 8, 16, 18


def png_cicp(path: str) -> Optional[Tuple[int, int, int, int]]:
    """The ``cICP`` chunk (primaries, transfer, matrix, full range) of a PNG, or None."""
    try:
        with open(path, "rb") as fh:
            if fh.read(8) != b"\x89PNG\r\n\x1a\n":
                return None
            while True:
                head = fh.read(8)
                if len(head) < 8:
                    return None
                length, ctype = struct.unpack(">I4s", head)
                if ctype == b"cICP" and length == 4:
                    return tuple(fh.read(4))  # type: ignore[return-value]
                if ctype in (b"IDAT", b"IEND"):
                    return None
                fh.seek(length + 4, os.SEEK_CUR)
    except OSError:
        return None


def _hlg_inverse_oetf(e: np.ndarray) -> np.ndarray:
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    e = np.clip(e, 0.0, 1.0)
    return np.where(e <= 0.5, e * e / 3.0, (np.exp((e - c) / a) + b) / 12.0)


def _pq_eotf_nits(e: np.ndarray) -> np.ndarray:
    m1, m2, c1, c2, c3 = 0.1593017578125, 78.84375, 0.8359375, 18.8515625, 18.6875
    p = np.power(np.clip(e, 0.0, 1.0), 1.0 / m2)
    return 10000.0 * np.power(np.maximum(p - c1, 0.0) / (c2 - c3 * p), 1.0 / m1)


def _srgb_encode(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)


def to_srgb(rgb: np.ndarray, cicp: Optional[Tuple[int, int, int, int]]) -> Tuple[np.ndarray, str]:
    """Float RGB in [0, 1] encoded as ``cicp`` says -> sRGB in [0, 1], and a note.

    HLG and PQ are mapped so that reference white (HLG 75 %, PQ 203 cd/m2) becomes sRGB
    white; brighter highlights clip.
    """
    if cicp is None:
        return rgb, ""
    primaries, transfer = int(cicp[0]), int(cicp[1])
    if primaries not in _PRIMARIES or transfer not in _SRGB_LIKE_TRANSFERS + (_LINEAR, _PQ, _HLG):
        return rgb, "cICP %d/%d not supported, read as sRGB" % (primaries, transfer)
    if primaries == 1 and transfer in _SRGB_LIKE_TRANSFERS:
        return rgb, ""
    if transfer in _SRGB_LIKE_TRANSFERS:
        linear = np.where(rgb <= 0.04045, rgb / 12.92, np.power((rgb + 0.055) / 1.055, 2.4))
    elif transfer == _LINEAR:
        linear = rgb
    elif transfer == _HLG:
        linear = _hlg_inverse_oetf(rgb) / float(_hlg_inverse_oetf(np.array(0.75)))
    else:
        linear = _pq_eotf_nits(rgb) / 203.0
    matrix = _PRIMARIES[primaries]
    if matrix is not None:
        linear = linear @ matrix.T
    names = {1: "BT.709", 9: "BT.2020", 12: "P3"}
    tnames = {_LINEAR: "linear", _PQ: "PQ", _HLG: "HLG"}
    note = "converted %s/%s to sRGB" % (names[primaries], tnames.get(transfer, "gamma"))
    return _srgb_encode(linear).astype(np.float32), note


__all__ = ["png_cicp", "to_srgb"]
