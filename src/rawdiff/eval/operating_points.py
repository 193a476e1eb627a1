"""Measured operating points into a model directory (``rawdiff eval --write-operating-points``).

    results of rawdiff eval --rd.operating_points()--> per quality: mean bpp, PSNR, MS-SSIM, frames
        --write_operating_points()--> DIR/model.json  "operating_points": [{quality, bpp, psnr,
                                                      ms_ssim, frames, split}, ...]
                                      DIR/MODEL_CARD.md  its "Operating points" section

``model_id`` hashes the weight files only (:mod:`rawdiff.codec.modeldir`), so the model
stays the same model: its bitstreams decode as before. ``default_quality`` is left as it
is. Each file is replaced atomically, after checking that the weights are still those that
were evaluated. :class:`rawdiff.codec.Codec` reads the points (``Codec.operating_points``)
and ``rawdiff info --model DIR`` lists them.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

from rawdiff.codec.modeldir import compute_model_id, read_model_dir, set_model_entry
from rawdiff.data.sources import LIST_SUFFIXES
from rawdiff.outputs import write_text

CARD_SECTION = "## Operating points (measured)"


def split_name(data: Sequence[str]) -> str:
    """What the points were measured on: an index file by its name without the suffix
    (``test`` for ``data/corpus/test.txt``), a folder or a frame by its name; joined by ``+``."""
    names = []
    for item in data:
        base = os.path.basename(os.path.normpath(item))
        stem, suffix = os.path.splitext(base)
        names.append(stem if suffix.lower() in LIST_SUFFIXES else base)
    return "+".join(names)


def entries(points: Sequence[Dict[str, Any]], split: str, max_pixels: Optional[int] = None) -> List[Dict[str, Any]]:
    """The ``operating_points`` entries of model.json from :func:`rawdiff.eval.rd.operating_points`
    (``max_pixels``: the centre crops the frames were cut to, when they were)."""
    out = []
    for p in points:
        e = {"quality": int(p["quality"]), "bpp": round(float(p["bpp"]), 5), "psnr": round(float(p["psnr"]), 3),
             "ms_ssim": round(float(p["ms_ssim"]), 5), "frames": int(p["frames"]), "split": split}
        if max_pixels:
            e["max_pixels"] = int(max_pixels)
        out.append(e)
    return out


def card_section(meta: Dict[str, Any]) -> List[str]:
    """The model card's lines for ``meta["operating_points"]``."""
    points = meta.get("operating_points") or []
    stages = meta.get("stages") or [[1, meta.get("codebook_size")]]
    default = int(meta.get("default_quality") or len(stages))
    lines = [CARD_SECTION, "",
             "Measured by `rawdiff eval --write-operating-points` (fast decoder, against the reference-ISP image); "
             "quality q codes the first q stages. Default quality: %d." % default, "",
             "| quality | bpp | PSNR (dB) | MS-SSIM | frames | split |", "|---|---|---|---|---|---|"]
    for p in points:
        lines.append("| %d%s | %.4f | %.2f | %.4f | %d | %s%s |" % (
            p["quality"], " (default)" if p["quality"] == default else "", p["bpp"], p["psnr"], p["ms_ssim"],
            p["frames"], p["split"], ", crops of %d pixels" % p["max_pixels"] if p.get("max_pixels") else ""))
    return lines


def _replace_section(card: str, lines: List[str]) -> str:
    """``card`` with its operating-points section (up to the next ``## `` heading) replaced by
    ``lines``, or with them appended."""
    text = "\n".join(lines) + "\n"
    at = card.find(CARD_SECTION)
    if at < 0:
        return card.rstrip("\n") + "\n\n" + text
    end = card.find("\n## ", at + len(CARD_SECTION))
    return card[:at] + text + (card[end:] if end >= 0 else "")


def write_operating_points(model_dir: str, model_id: str, points: Sequence[Dict[str, Any]], split: str,
                           max_pixels: Optional[int] = None) -> Dict[str, Any]:
    """Record ``points`` (:func:`rawdiff.eval.rd.operating_points` of the model ``model_id``)
    in ``model_dir``'s model.json and model card; returns the new model.json. Refused when the
    directory's weights are no longer those of ``model_id``, or a quality is missing."""
    info = read_model_dir(model_dir)
    meta = info["meta"]
    if meta["model_id"] != model_id or compute_model_id(model_dir) != model_id:
        raise ValueError("model directory %s holds model %s now, not the evaluated %s; evaluate it again"
                         % (model_dir, meta["model_id"], model_id))
    qualities = len(meta.get("stages") or [None])
    measured = sorted(int(p["quality"]) for p in points)
    if measured != list(range(1, qualities + 1)):
        raise ValueError("operating points of model %s need every quality 1..%d measured, got %s"
                         % (model_id, qualities, measured))
    raw = set_model_entry(model_dir, "operating_points", entries(points, split, max_pixels))
    card = os.path.join(model_dir, "MODEL_CARD.md")
    if os.path.isfile(card):
        with open(card) as f:
            write_text(card, _replace_section(f.read(), card_section(raw)))
    read_model_dir(model_dir)  # what Codec.load will read
    return raw
