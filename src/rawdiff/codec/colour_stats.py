"""Colour statistics of the coded signal, sent in the bitstream, and their use on the decoder.

A VQ code grid at a few hundredths of a bit per pixel cannot hold every frame's colour
exactly: a codebook of a few hundred entries desaturates colourful scenes and shifts their
casts a little, and the colour matrix of the camera then amplifies those errors. The encoder
therefore measures, at the resolution of the code grid (one cell per code, f x f pixels),
the mean and the covariance of the white-balanced signal it codes (nine numbers, 36 bytes);
the decoder measures the same on what it decoded and maps its output onto them with the
affine map that carries one Gaussian onto the other (the linear Monge-Kantorovich map,
Pitie and Kokaram 2007), before the reference ISP's colour stage::

    encoder: white-balanced planes --pool to code cells--> mean m_s, covariance C_s  (header)
    decoder: camera RGB --pool to code cells--> m_d, C_d
             x' = m_s + A (x - m_d),  A = C_d^-1/2 (C_d^1/2 C_s C_d^1/2)^1/2 C_d^-1/2

At the resolution of a code cell a faithful decoder keeps the signal's statistics (blur
removes detail inside the cells, not their colour), so the map corrects colour casts and
lost saturation without sharpening. Numpy only: the vehicle computes the statistics.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

#: The map's singular values are kept in this range: a decoded frame far from the sent
#: statistics (a flat decode of a textured frame) is corrected only so much.
GAIN_RANGE = (1.0 / 3.0, 3.0)
#: Added to both covariances' diagonals (a flat frame has none to speak of).
EPSILON = 1e-6


def _cells(rgb: np.ndarray, cell: int) -> np.ndarray:
    """H x W x 3 -> (cells, 3): the means of whole ``cell`` x ``cell`` blocks (all of the
    frame when it is smaller than one block)."""
    h, w = rgb.shape[0] // cell * cell, rgb.shape[1] // cell * cell
    if h == 0 or w == 0:
        return rgb.reshape(-1, 3).mean(axis=0, keepdims=True)
    blocks = rgb[:h, :w].reshape(h // cell, cell, w // cell, cell, 3)
    return blocks.mean(axis=(1, 3), dtype=np.float64).reshape(-1, 3)


def _statistics(cells: np.ndarray) -> Tuple[float, ...]:
    mean = cells.mean(axis=0)
    centred = cells - mean
    cov = centred.T @ centred / len(cells)  # the population covariance (np.cov is 20x slower)
    return tuple(float(v) for v in mean) + tuple(float(cov[i, j]) for i, j in _UPPER)


_UPPER = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


def _plane_cells(plane: np.ndarray, cell: int) -> np.ndarray:
    h, w = plane.shape[0] // cell * cell, plane.shape[1] // cell * cell
    if h == 0 or w == 0:
        return np.array([plane.mean(dtype=np.float64)])
    # strided adds, columns then rows: a few vectorised passes over the plane (a reshape and
    # sum over short axes is 40x slower in numpy)
    plane = plane[:h, :w]
    cols = sum(plane[:, i::cell] for i in range(cell))
    sums = sum(cols[i::cell] for i in range(cell))
    return sums.reshape(-1).astype(np.float64) / (cell * cell)


def planes_statistics(planes: np.ndarray, factor: int) -> Tuple[float, ...]:
    """Mean (R, G, B) and covariance (RR, RG, RB, GG, GB, BB) of the white-balanced signal
    over the code cells of a frame at downsampling ``factor``; ``planes`` are the encoder's
    4 x H/2 x W/2 planes R, G1, G2, B (a cell is factor/2 plane pixels). Pooled plane by
    plane (the vehicle computes this for every frame)."""
    cell = max(1, int(factor) // 2)
    planes = np.asarray(planes, dtype=np.float32)
    r, g, b = (_plane_cells(p, cell) for p in (planes[0], planes[1] + planes[2], planes[3]))
    return _statistics(np.stack([r, 0.5 * g, b], axis=-1))


def rgb_statistics(rgb: np.ndarray, factor: int) -> Tuple[float, ...]:
    """The same statistics of a full-resolution H x W x 3 camera RGB image (f x f cells)."""
    return _statistics(_cells(np.asarray(rgb, dtype=np.float32), max(1, int(factor))))


class CellMoments:
    """The statistics of :func:`rgb_statistics` gathered piece by piece (a frame decoded in
    tiles whose corners lie on the code-cell grid): sums over whole cells, so the result is
    the whole frame's."""

    def __init__(self, factor: int):
        self.cell = max(1, int(factor))
        self.n = 0
        self.s1 = np.zeros(3)
        self.s2 = np.zeros((3, 3))

    def add(self, rgb: np.ndarray) -> None:
        h, w = rgb.shape[0] // self.cell * self.cell, rgb.shape[1] // self.cell * self.cell
        if h == 0 or w == 0:
            return
        cells = _cells(np.asarray(rgb[:h, :w], dtype=np.float32), self.cell)
        self.n += len(cells)
        self.s1 += cells.sum(axis=0)
        self.s2 += cells.T @ cells

    def statistics(self) -> Tuple[float, ...]:
        if self.n == 0:
            raise ValueError("no whole code cell was seen")
        mean = self.s1 / self.n
        cov = self.s2 / self.n - np.outer(mean, mean)
        return tuple(float(v) for v in mean) + tuple(float(cov[i, j]) for i, j in _UPPER)


def _unpack(stats) -> Tuple[np.ndarray, np.ndarray]:
    s = np.asarray(stats, dtype=np.float64).reshape(-1)
    if s.size != 9 or not np.all(np.isfinite(s)):
        raise ValueError("colour statistics must be 9 finite numbers (mean R, G, B; covariance RR, RG, RB, "
                         "GG, GB, BB), got %r" % (list(s),))
    cov = np.zeros((3, 3))
    for value, (i, j) in zip(s[3:], _UPPER):
        cov[i, j] = cov[j, i] = value
    return s[:3], cov


def _sqrtm(c: np.ndarray, power: float) -> np.ndarray:
    """``c ** power`` of a symmetric positive semi-definite matrix (negative eigenvalues of
    rounding set to 0; the callers add EPSILON before they invert)."""
    w, v = np.linalg.eigh(c)
    return (v * np.clip(w, 1e-30 if power < 0 else 0.0, None) ** power) @ v.T


def transport_map(source, decoded) -> Tuple[np.ndarray, np.ndarray]:
    """``(A, b)`` with ``x' = A x + b`` carrying the ``decoded`` statistics onto ``source``
    (both as :func:`planes_statistics` gives them)."""
    ms, cs = _unpack(source)
    md, cd = _unpack(decoded)
    cs, cd = cs + EPSILON * np.eye(3), cd + EPSILON * np.eye(3)
    root = _sqrtm(cd, 0.5)
    inv_root = _sqrtm(cd, -0.5)
    a = inv_root @ _sqrtm(root @ cs @ root, 0.5) @ inv_root
    u, sv, vt = np.linalg.svd(a)
    a = (u * np.clip(sv, *GAIN_RANGE)) @ vt
    return a, ms - a @ md


def apply_map(rgb: np.ndarray, colour_map) -> np.ndarray:
    """``A x + b`` of every pixel of H x W x 3 ``rgb``, clipped to [0, 1], float32 (per pixel:
    a frame mapped in pieces is the frame mapped whole)."""
    a, b = colour_map
    out = np.asarray(rgb, dtype=np.float32) @ a.T.astype(np.float32) + b.astype(np.float32)
    return np.clip(out, 0.0, 1.0)


def match_statistics(rgb: np.ndarray, source, factor: int) -> np.ndarray:
    """Decoded H x W x 3 camera RGB (float, [0, 1]) mapped onto the ``source`` statistics
    sent by the encoder, clipped to [0, 1], float32."""
    return apply_map(rgb, transport_map(source, rgb_statistics(rgb, factor)))


__all__ = ["GAIN_RANGE", "CellMoments", "apply_map", "match_statistics", "planes_statistics", "rgb_statistics",
           "transport_map"]
