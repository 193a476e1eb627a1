"""Choosing a model directory's deblocking filter (``rawdiff fit-deblock``).

For each operating point, every candidate filter (:data:`rawdiff.codec.deblock.CANDIDATES`)
is run on the model's own fast decodes of the frames given (the validation split), and the
one kept is the candidate whose grid figures (:func:`rawdiff.metrics.grid_strength`, the
cells' 8-pixel grid and the coarse stages' 16-pixel one) come closest to the reference
images' own, among those that cost no fidelity: mean MS-SSIM at most ``ms_ssim_slack`` and
mean PSNR at most ``psnr_slack`` dB below the unfiltered decodes' (no filter where none comes
closer than the unfiltered decodes). The settings go into
model.json's ``deblock`` with a record of the choice; the filter is decoder-side, so the
model_id and every stream stay as they were.
"""

from __future__ import annotations

import time
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from rawdiff.codec.deblock import CANDIDATES, Deblock, deblock, entry_of
from rawdiff.codec.modeldir import check_deblock_entry, read_model_dir, set_model_entry

#: grid periods compared with the references' (the cells, and the 16-pixel coarse stages)
PERIODS = (8, 16)


def _figures(ref, img: np.ndarray) -> Tuple[float, float, float, float]:
    """PSNR, MS-SSIM and the grid figures of ``img`` against ``ref`` (a tensor, made once)."""
    from rawdiff import metrics

    t = metrics.to_tensor(img)
    return (metrics.psnr(t, ref), float(metrics.ms_ssim(t, ref)[0])) + tuple(
        metrics.grid_strength(img, p) for p in PERIODS)


def fit_deblock(examples: Sequence[Tuple[np.ndarray, np.ndarray]], cell: int,
                candidates: Sequence[Tuple[int, float, float]] = CANDIDATES, ms_ssim_slack: float = 5e-4,
                psnr_slack: float = 0.01, progress: Optional[Callable[[int, int], None]] = None
                ) -> Tuple[List[Optional[Deblock]], dict]:
    """The filter of each operating point (None: none) for (reference, unfiltered fast decodes at every
    operating point) pairs (:func:`rawdiff.texture_fit.decoded_examples` with
    ``deblock=False``), and a record: per operating point the unfiltered and the chosen
    filter's mean PSNR, MS-SSIM and grid figures, and the references' grid figures."""
    examples = [(ref, fast) for ref, fast in examples if min(ref.shape[:2]) > 2 * max(PERIODS)]
    if not examples:
        raise ValueError("deblock fit: no frame larger than %d pixels a side" % (2 * max(PERIODS)))
    from rawdiff.metrics import grid_strength, to_tensor

    start = time.time()
    qualities = examples[0][1].shape[0]
    references = [to_tensor(ref) for ref, _ in examples]
    reference_grid = np.array([np.mean([grid_strength(ref, p) for ref, _ in examples]) for p in PERIODS])

    def figures(q: int, setting: Optional[Deblock]) -> np.ndarray:
        """Mean figures over the frames of operating point q's decodes, through ``setting``."""
        return np.mean([_figures(r, deblock(fast[q], cell, setting)) for r, (_, fast) in zip(references, examples)],
                       axis=0)

    def grid_distance(fig: np.ndarray) -> float:
        return float(np.abs(fig[2:] - reference_grid).max())

    chosen, points = [], []
    for q in range(qualities):
        base = figures(q, None)
        best = (grid_distance(base), None, base)
        for taps, clip, beta in candidates:
            setting = Deblock(int(taps), float(clip), float(beta))
            if not 1 <= setting.taps <= cell // 2:
                continue
            fig = figures(q, setting)
            if fig[0] < base[0] - psnr_slack or fig[1] < base[1] - ms_ssim_slack:
                continue
            distance = grid_distance(fig)
            if distance < best[0] - 1e-9:
                best = (distance, setting, fig)
        _, setting, fig = best
        chosen.append(setting)
        points.append({"quality": q + 1, "unfiltered": _rounded(base), "filtered": _rounded(fig),
                       "filter": None if setting is None else list(setting)})
        if progress is not None:
            progress(q + 1, qualities)
    record = {"frames": len(examples), "seconds": round(time.time() - start, 1), "ms_ssim_slack": ms_ssim_slack,
              "psnr_slack": psnr_slack, "reference_grid": dict(zip(("grid8", "grid16"), _round(reference_grid))),
              "points": points}
    return chosen, record


def _round(values) -> list:
    return [round(float(v), 4) for v in values]


def _rounded(fig) -> dict:
    return dict(zip(("psnr", "ms_ssim", "grid8", "grid16"), _round(fig)))


def write_deblock(model_dir: str, settings: Sequence[Optional[Deblock]], record: dict) -> dict:
    """Write model.json's ``deblock`` entry (atomically; the model_id stays)."""
    meta = read_model_dir(model_dir)["meta"]
    entry = entry_of(settings)
    check_deblock_entry(entry, len(meta.get("stages") or [None]), int(meta["factor"]))
    entry["fit"] = record
    set_model_entry(model_dir, "deblock", entry)
    return entry


__all__ = ["fit_deblock", "write_deblock"]
