"""Detail statistics: how much fine detail a frame has, measured by the encoder, a few bytes.

    white-balanced planes (R, G1, G2, B; linear, [0, 1]) --sqrt--> a perceptual domain
    f0 = mean over 8x8-pixel blocks of the planes of log mean (G1 - G2)^2 / 2   (the finest:
         the two greens are diagonal neighbours of the mosaic)
    f1 = the same of (y - B y)^2,  f2 = of (B y - B^3 y)^2,  y the planes' luma, B a 3x3
         binomial blur
    each quantised to a byte: round((f + 16) * 16), 0..255 (steps of 1/16 in the log)

Why: the realism path's texture stage (:mod:`rawdiff.models.texture`) predicts, from the
decoded image, the energy of the detail the codes dropped. At the lowest operating points the
decoded image cannot tell a textured scene from a smooth one (the network's guess of a
frame's mean log energy was 0.67 to 0.90 off, rms, on the validation split, too low on
foliage and fruit, too high on flat synthetic images), while these three numbers, taken on
the planes the vehicle codes anyway, predict it to 0.17 to 0.22 (a linear fit on the training
split, model.json's ``texture.level``). As AV1 sends its film grain's parameters instead of
letting the decoder guess them, the stream carries them (bitstream format version 6, three
bytes and a count); the decoder sets the level of its texture's energies from them and keeps
the network's map of where the texture goes. The fast path ignores them.

Numpy only (the vehicle's encoder has no torch): 10.5 ms at 1936x1112 on one core of a
2-core AMD EPYC (``compress`` of such a frame: 0.102 s without them, 0.112 s with them).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: the number of statistics (f0, f1, f2)
FEATURES = 3
#: side of the blocks (in plane pixels) whose energies are averaged in the log
BLOCK = 8
#: a block's energy floor (the log of a perfectly flat block)
FLOOR = 1e-8
#: the quantiser: a byte code c stands for c / STEPS + LOW
LOW = -16.0
STEPS = 16.0


def _blur(x: np.ndarray) -> np.ndarray:
    """A 3x3 binomial blur (1 2 1 / 4 each way), the borders reflected."""
    p = np.pad(x, 1, mode="reflect")
    v = (p[:-2] + 2 * p[1:-1] + p[2:]) * np.float32(0.25)
    return (v[:, :-2] + 2 * v[:, 1:-1] + v[:, 2:]) * np.float32(0.25)


def _block_log_mean(energy: np.ndarray, block: int = BLOCK) -> float:
    """The mean over the whole ``block`` x ``block`` blocks of the log of each block's mean
    ``energy`` (a frame smaller than a block: one block of the whole)."""
    h, w = energy.shape
    if min(h, w) < block:
        means = np.array([energy.astype(np.float64).mean()])
    else:
        bh, bw = h // block, w // block
        e = energy[: bh * block, : bw * block].astype(np.float64)
        means = e.reshape(bh, block, bw, block).mean(axis=(1, 3))
    return float(np.log(np.maximum(means, FLOOR)).mean())


#: the smallest colour plane (pixels a side) the statistics are measured on: frames of 2 x that
MIN_PLANE = 3


def detail_statistics(planes: np.ndarray) -> np.ndarray:
    """(f0, f1, f2), float64, of 4 x H x W white-balanced planes (R, G1, G2, B) in [0, 1]
    (the planes a colour-exact codec's encoder takes: :meth:`rawdiff.codec.Codec.model_planes`);
    a ValueError for another shape or planes of fewer than 3 x 3 pixels."""
    planes = np.asarray(planes)
    if planes.ndim != 3 or planes.shape[0] != 4:
        raise ValueError("detail statistics need 4 x H x W planes, got shape %s" % (planes.shape,))
    if min(planes.shape[1:]) < MIN_PLANE:
        raise ValueError("detail statistics need planes of at least %d x %d pixels, got %s"
                         % (MIN_PLANE, MIN_PLANE, planes.shape[1:]))
    s = np.sqrt(np.clip(planes, 0.0, 1.0, dtype=np.float32))
    g1, g2 = s[1], s[2]
    y = np.float32(0.299) * s[0] + np.float32(0.587 / 2) * (g1 + g2) + np.float32(0.114) * s[3]
    low = _blur(y)
    coarse = _blur(_blur(low))
    d = g1 - g2
    return np.array([_block_log_mean(d * d * np.float32(0.5)), _block_log_mean(np.square(y - low)),
                     _block_log_mean(np.square(low - coarse))])


def quantize(stats: Sequence[float]) -> tuple:
    """The byte codes of ``stats`` (clipped to the quantiser's range)."""
    return tuple(int(c) for c in np.clip(np.round((np.asarray(stats, dtype=np.float64) - LOW) * STEPS), 0, 255))


def dequantize(codes: Sequence[int]) -> np.ndarray:
    """The statistics the byte ``codes`` stand for, float64."""
    return np.asarray(codes, dtype=np.float64) / STEPS + LOW


def frame_detail(planes: np.ndarray) -> tuple:
    """The byte codes a stream carries for these planes (:func:`quantize` of
    :func:`detail_statistics`)."""
    return quantize(detail_statistics(planes))


__all__ = ["BLOCK", "FEATURES", "LOW", "MIN_PLANE", "STEPS", "dequantize", "detail_statistics", "frame_detail",
           "quantize"]
