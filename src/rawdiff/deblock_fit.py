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

import json
import os
import time
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from rawdiff.codec.deblock import CANDIDATES, Deblock, deblock, entry_of
from rawdiff.codec.modeldir import check_deblock_entry
from rawdiff.outputs import write_text

#: grid periods compared with the references' (the cells, and the 16-pixel coarse stages)
PERIODS = (8, 16)


def _figures(ref: np.ndarray, img: np.ndarray) -> Tuple[float, float, float, float]:
    from rawdiff import metrics

    t, r = metrics.to_tensor(img), metrics.to_tensor(ref)
    return (metrics.psnr(t, r), float(metrics.ms_ssim(t, r)[0])) + tuple(
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
    from rawdiff.metrics import grid_strength

    start = time.time()
    qualities = examples[0][1].shape[0]
    reference_grid = [float(np.mean([grid_strength(ref, p) for ref, _ in examples])) for p in PERIODS]
    chosen, points = [], []
    for q in range(qualities):
        base = np.mean([_figures(ref, fast[q]) for ref, fast in examples], axis=0)
        best = (max(abs(base[2 + i] - reference_grid[i]) for i in range(len(PERIODS))), None, base)
        for taps, clip, beta in candidates:
            setting = Deblock(int(taps), float(clip), float(beta))
            if not 1 <= setting.taps <= cell // 2:
                continue
            fig = np.mean([_figures(ref, deblock(fast[q], cell, setting)) for ref, fast in examples], axis=0)
            if fig[0] < base[0] - psnr_slack or fig[1] < base[1] - ms_ssim_slack:
                continue
            distance = max(abs(fig[2 + i] - reference_grid[i]) for i in range(len(PERIODS)))
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
    meta_path = os.path.join(model_dir, "model.json")
    with open(meta_path) as f:
        meta = json.load(f)
    entry = entry_of(settings)
    check_deblock_entry(entry, len(meta.get("stages") or [None]), int(meta["factor"]))
    entry["fit"] = record
    meta["deblock"] = entry
    write_text(meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return entry


__all__ = ["fit_deblock", "write_deblock"]
