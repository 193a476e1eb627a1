"""Build a paired RAW / RGB dataset with train/val/test splits (``rawdiff prepare-data``).

    paths --collect_sources--> Source, ... --reader_for(kind)--> RawFrame, ...
          --write_raw, reference ISP--> frames/<source>/<frame>.npy + <frame>.rgb.png
          --split_groups--> train.txt, val.txt, test.txt + manifest.json

Sources (:mod:`rawdiff.data.sources`) are photos, videos, DNG/camera RAW files, ``.npy``
mosaics and bags, or folders and ``.txt`` lists of them. Their frames come from the reader
of their kind (:mod:`rawdiff.data.readers`): photos and videos are unprocessed into RAW
(:mod:`rawdiff.data.frames`); bags are read by :mod:`rawdiff.ros.bag` (the Bayer
``sensor_msgs/Image`` messages of ``topic``, every ``every``-th, at most ``max_frames``),
which the program that wants bags imports.

Each RAW frame is written as ``frames/<source>/<frame>.npy`` with its JSON sidecar
(:func:`rawdiff.raw.io.write_raw`), and its RGB target, rendered by the reference ISP
(:func:`rawdiff.raw.isp.render`) from the *whole* frame, as ``<frame>.rgb.png`` next to it
(:mod:`rawdiff.data.layout`: the files, the split by source group, the index files).
``manifest.json`` records every source (origin, licence, split, frame files, unprocessing
parameters), the skipped ones with the reason, the settings and a summary.

The split (:func:`rawdiff.data.layout.split_groups`) keeps the groups of sources that are
held in a split (``Source.split``) where they are and cuts the others by the rule;
``max_test_frames`` and ``max_val_frames`` cap the frames the rule puts in test and val,
and ``test_crop`` cuts each of
those frames to at most (rows, columns), centred (:mod:`rawdiff.data.cuts`), so that a
test split of large photos stays cheap to evaluate.

Re-running on the same folder skips the sources already done with the same settings
(``frames/<source>/source.json`` is written last), adds new ones and re-writes the split
and the index; a source done with other settings is refused (:class:`PrepareError`)
unless ``overwrite=True``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from rawdiff.data.corpus import NEW_TEST_FRAMES, NEW_VAL_FRAMES, TEST_CROP, Source, find_sources
from rawdiff.data.cuts import cut_frames
from rawdiff.data.frames import Unprocessor
from rawdiff.data.layout import (
    FORMAT_VERSION,
    FRACTIONS,
    HELD_TEST_INDEX,
    MANIFEST,
    SOURCE_DONE,
    SPLITS,
    TARGET_SUFFIX,
    jsonable,
    source_dir,
    split_groups,
    target_path,
    write_index,
    write_json,
)
from rawdiff.data.readers import ReadOptions, SkipSource, reader_for
from rawdiff.data.sources import LIST_SUFFIXES, PrepareError, collect_sources
from rawdiff.raw.frame import check_cfa
from rawdiff.raw.io import write_raw
from rawdiff.raw.isp import render


class _Context:
    """One run: the output folder, the settings recorded with every source, the readers' options."""

    def __init__(self, out_dir: str, seed: int, every: Optional[int], max_frames: Optional[int],
                 min_size: int, bits: int, noise: bool, cfa: str, raw_overrides: Dict[str, Any],
                 conversion: Dict[str, Any], unprocess_options: Dict[str, Any], clean_target: bool = False,
                 start: int = 0):
        self.out_dir = out_dir
        self.seed = seed
        self.params = jsonable({
            "version": FORMAT_VERSION, "seed": seed, "every": every, "max_frames": max_frames,
            "min_size": min_size, "bits": bits, "noise": noise, "cfa": cfa,
            "raw_overrides": raw_overrides, "conversion": conversion, "unprocess": unprocess_options,
            "clean_target": clean_target,
        })
        if start:  # recorded only when set: folders prepared before keep matching their settings
            self.params["start"] = start
        self.options = ReadOptions(
            seed=seed, every=every, max_frames=max_frames, min_size=min_size, raw_overrides=raw_overrides,
            conversion=conversion, start=start,
            make_unprocessor=functools.partial(Unprocessor, bits, noise, cfa, unprocess_options, clean_target))


def _source_identity(src: Source) -> Dict[str, Any]:
    try:
        size = os.path.getsize(src.path)
    except OSError:
        size = None
    return {"path": os.path.abspath(src.path), "bytes": size, "kind": src.kind, "topic": src.topic}


def _done_entry(src: Source, ctx: _Context, overwrite: bool) -> Optional[dict]:
    """The saved entry of a source done before with the same settings, else None."""
    marker = os.path.join(ctx.out_dir, source_dir(src.name), SOURCE_DONE)
    if not os.path.isfile(marker):
        return None
    try:
        with open(marker, encoding="utf-8") as fh:
            saved = json.load(fh)
    except (OSError, ValueError):
        return None
    same = saved.get("params") == ctx.params and saved.get("identity") == jsonable(_source_identity(src))
    if not same:
        if overwrite:
            return None
        what = "settings" if saved.get("params") != ctx.params else "input file"
        raise PrepareError(
            "%s: source %s was prepared with other %s (%s); use another output folder or overwrite=True "
            "(--overwrite)" % (ctx.out_dir, src.name, what, marker))
    entry = saved.get("entry") or {}
    for fr in entry.get("frames", []):
        for key in ("raw", "target"):
            if not os.path.isfile(os.path.join(ctx.out_dir, fr[key])):
                return None
    return entry


def _prepare_source(src: Source, ctx: _Context) -> dict:
    """Write all frames of one source; returns its manifest entry (frames may be empty)."""
    import cv2

    folder_rel = source_dir(src.name)
    folder = os.path.join(ctx.out_dir, folder_rel)
    if os.path.isdir(folder):
        shutil.rmtree(folder)  # partial or outdated output of this source
    entry = dict(src.to_dict())
    entry["frames"] = []
    try:
        for stem, index, frame, meta in reader_for(src.kind)(src, ctx.options):
            os.makedirs(folder, exist_ok=True)
            extra = dict(frame.extra or {})
            clean = extra.pop("_clean", None)
            frame = frame.copy(frame_id=frame.frame_id or src.name, extra=dict(extra, source=src.name, index=index))
            raw_rel = "%s/%s.npy" % (folder_rel, stem)
            raw_abs = os.path.join(ctx.out_dir, raw_rel)
            write_raw(frame, raw_abs)
            rgb = render(frame if clean is None else clean)  # the whole frame, before any crop
            if not cv2.imwrite(target_path(raw_abs), np.ascontiguousarray(rgb[:, :, ::-1])):
                raise PrepareError("could not write %s" % target_path(raw_abs))
            entry["frames"].append({
                "raw": raw_rel, "target": target_path(raw_rel), "index": index,
                "height": frame.height, "width": frame.width, "cfa": frame.cfa, "meta": jsonable(meta),
            })
    except SkipSource as exc:
        if not entry["frames"]:
            entry["skipped"] = str(exc)
        else:
            entry["note"] = (entry.get("note", "") + "; stopped: %s" % exc).lstrip("; ")
    os.makedirs(folder, exist_ok=True)
    write_json(os.path.join(folder, SOURCE_DONE),
                {"params": ctx.params, "identity": _source_identity(src), "entry": entry})
    return entry


def prepare(
    sources: Iterable[Union[str, Source]],
    out_dir: str,
    seed: int = 0,
    topic: Optional[str] = None,
    every: Optional[int] = None,
    max_frames: Optional[int] = None,
    min_size: int = 64,
    bits: int = 12,
    noise: bool = True,
    cfa: str = "random",
    fractions: Sequence[float] = FRACTIONS,
    raw_overrides: Optional[Dict[str, Any]] = None,
    conversion: Optional[Dict[str, Any]] = None,
    unprocess_options: Optional[Dict[str, Any]] = None,
    clean_target: bool = False,
    max_test_frames: Optional[int] = None,
    max_val_frames: Optional[int] = None,
    test_crop: Optional[Sequence[int]] = None,
    start: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    verbose: bool = True,
) -> dict:
    """Build the paired dataset in ``out_dir``; returns the manifest (also ``manifest.json``).

    Args:
        sources: :class:`Source` objects and/or paths (folders, files, ``.txt`` lists).
        seed: seeds the unprocessing of every source (with its name) and the split.
        topic: the Bayer image topic of bag sources.
        every, max_frames: frame sampling of videos and bags (defaults: video every 25th,
            at most 32; bag every message, all).
        start: the first video frame taken (default 0): frames ``start + k * every``, e.g.
            frames of a video between those a corpus took.
        min_size: frames with a side below this many pixels are skipped.
        bits, noise, cfa: unprocessing: white level ``2**bits - 1``, shot/read noise, the
            CFA pattern (``"random"``: drawn per source from the seed).
        fractions: train/val/test shares of the source groups.
        raw_overrides: keyword overrides for :func:`rawdiff.raw.read_raw` (DNG/mosaic sources).
        conversion: keyword arguments of :func:`rawdiff.ros.conversions.image_to_frame`
            for bag sources (``cfa``, ``black_level``, ``white_level``, ``input_format``).
        unprocess_options: more keyword arguments for ``unprocess``.
        clean_target: render the RGB target of an unprocessed photo from the same camera
            without noise (a denoising target) instead of from the noisy RAW frame itself.
        max_test_frames, max_val_frames: the most frames the split rule puts in test / val
            (held groups aside; a group that does not fit goes on to val / train).
        test_crop: (rows, columns), even: test frames of groups the rule split are cut to
            at most this size (centred); None keeps them whole.
        overwrite: redo sources prepared before with other settings instead of refusing.
    """
    started = time.time()
    out_dir = os.fspath(out_dir)
    if every is not None and int(every) < 1:
        raise PrepareError("every must be >= 1, got %r" % every)
    if int(start) < 0:
        raise PrepareError("start must be >= 0, got %r" % start)
    if max_frames is not None and int(max_frames) < 1:
        raise PrepareError("max_frames must be >= 1, got %r" % max_frames)
    if cfa != "random":
        cfa = check_cfa(cfa)
    for what, cap in (("max_test_frames", max_test_frames), ("max_val_frames", max_val_frames)):
        if cap is not None and int(cap) < 0:
            raise PrepareError("%s must be >= 0, got %r" % (what, cap))
    cut = _check_crop(test_crop)
    srcs = collect_sources(sources, topic=topic)
    if not srcs:
        raise PrepareError("no sources given")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise PrepareError("output %s exists and is not a folder" % out_dir)
    os.makedirs(out_dir, exist_ok=True)
    ctx = _Context(out_dir, int(seed), None if every is None else int(every),
                   None if max_frames is None else int(max_frames), int(min_size), int(bits), bool(noise),
                   cfa, {k: v for k, v in (raw_overrides or {}).items() if v is not None},
                   {k: v for k, v in (conversion or {}).items() if v is not None}, dict(unprocess_options or {}),
                   bool(clean_target), int(start))
    log = sys.stderr

    done = {src.name: _done_entry(src, ctx, overwrite) for src in srcs}  # refuse before any work
    for kind in sorted({src.kind for src in srcs if done[src.name] is None}):
        reader_for(kind)  # so is a kind of source that no registered reader reads
    entries: List[dict] = []
    reused = 0
    bar = _progress(srcs, progress)
    for src in bar:
        entry = done[src.name]
        if entry is not None:
            reused += 1
            # what the source says of itself now (licence, group, held split), not then
            entry = dict(entry, **{k: v for k, v in src.to_dict().items() if k != "note"})
        else:
            entry = _prepare_source(src, ctx)
        if verbose and entry.get("skipped"):
            _write_note(bar, "prepare: skipped %s (%s): %s" % (src.name, src.path, entry["skipped"]), log)
        entries.append(entry)
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str("%d frames" % sum(len(e["frames"]) for e in entries))

    used = [e for e in entries if e["frames"]]
    held = _held_splits(used)
    group_frames: Dict[str, int] = {}
    for e in used:
        group_frames[e["group"]] = group_frames.get(e["group"], 0) + len(e["frames"])
    splits = split_groups([e["group"] for e in used], seed=ctx.seed, fractions=fractions, held=held,
                          frames=group_frames, max_test_frames=max_test_frames, max_val_frames=max_val_frames)
    index: Dict[str, List[str]] = {s: [] for s in SPLITS}
    n_cut = 0
    for e in entries:
        e["split"] = splits.get(e["group"]) if e["frames"] else None
        n_cut += cut_frames(e, out_dir, cut if e["split"] == "test" and e["group"] not in held else None)
        if e["split"]:
            index[e["split"]].extend(fr["raw"] for fr in e["frames"])
    write_index(out_dir, index, held_test=[fr["raw"] for e in entries if e["split"] == "test" and e["group"] in held
                                           for fr in e["frames"]])

    def megapixels(items: Iterable[dict]) -> float:
        return round(sum(fr["height"] * fr["width"] for e in items for fr in e["frames"]) / 1e6, 3)

    n_frames = sum(len(e["frames"]) for e in used)
    pixels = sum(fr["height"] * fr["width"] for e in used for fr in e["frames"])
    origins: Dict[str, List[dict]] = {}
    for e in used:
        origins.setdefault(e["origin"], []).append(e)
    summary = {
        "frames": n_frames,
        "sources": len(used),
        "groups": len(set(splits)),
        "held_groups": len(held),
        "skipped": len(entries) - len(used),
        "reused": reused,
        "megapixels": round(pixels / 1e6, 3),
        "split_frames": {s: len(index[s]) for s in SPLITS},
        "split_sources": {s: sum(1 for e in used if e["split"] == s) for s in SPLITS},
        "split_megapixels": {s: megapixels(e for e in used if e["split"] == s) for s in SPLITS},
        "cut_test_frames": n_cut,
        "origins": {origin: {"sources": len(items), "frames": sum(len(e["frames"]) for e in items),
                             "megapixels": megapixels(items), "licences": sorted({e["licence"] for e in items})}
                    for origin, items in origins.items()},
        "seconds": round(time.time() - started, 1),
    }
    manifest = {
        "format": "rawdiff-dataset",
        "version": FORMAT_VERSION,
        "created_by": "rawdiff.data.prepare",
        "params": ctx.params,
        "fractions": list(fractions),
        "split_rule": {"held_groups": sorted(held), "max_test_frames": max_test_frames,
                       "max_val_frames": max_val_frames, "test_crop": list(cut) if cut else None},
        "index": dict({s: s + ".txt" for s in SPLITS}, **({"test_held": HELD_TEST_INDEX} if held else {})),
        "naming": "frames/<source>/<frame>.npy (+ .json sidecar); RGB target <frame>%s" % TARGET_SUFFIX,
        "summary": summary,
        "sources": entries,
    }
    write_json(os.path.join(out_dir, MANIFEST), manifest)
    if verbose:
        print("prepare: %d frames from %d sources (%d groups, %d held), %.1f Mpixel; train %d/%d, val %d/%d, "
              "test %d/%d (frames/sources; %d test frames cut); %d skipped, %d reused; %s in %.0f s"
              % (n_frames, len(used), summary["groups"], len(held), pixels / 1e6,
                 summary["split_frames"]["train"], summary["split_sources"]["train"],
                 summary["split_frames"]["val"], summary["split_sources"]["val"],
                 summary["split_frames"]["test"], summary["split_sources"]["test"], n_cut,
                 summary["skipped"], reused, out_dir, summary["seconds"]), file=log)
    return manifest


def _check_crop(test_crop: Optional[Sequence[int]]) -> Optional[Tuple[int, int]]:
    if test_crop is None:
        return None
    try:
        rows, cols = (int(v) for v in test_crop)
    except (TypeError, ValueError):
        raise PrepareError("test_crop must be (rows, columns), got %r" % (test_crop,)) from None
    if min(rows, cols) < 2 or rows % 2 or cols % 2:
        raise PrepareError("test_crop must be even and >= 2 (whole 2x2 CFA tiles), got %r" % (test_crop,))
    return rows, cols


def _held_splits(entries: Iterable[dict]) -> Dict[str, str]:
    """The split each held group keeps; :class:`PrepareError` when its sources disagree."""
    held: Dict[str, str] = {}
    for e in entries:
        split = e.get("held_split")
        if not split:
            continue
        if held.setdefault(e["group"], split) != split:
            raise PrepareError("group %s: its sources are held in different splits (%s and %s)"
                               % (e["group"], held[e["group"]], split))
    return held


def _progress(items: List[Source], enabled: bool):
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return items
    return tqdm(items, desc="prepare", unit="source", file=sys.stderr, dynamic_ncols=True)


def _write_note(bar, text: str, log) -> None:
    if hasattr(bar, "write"):
        bar.write(text, file=log)
    else:
        print(text, file=log)


def prepare_default_corpus(out_dir: str, seed: int = 0, **kwargs) -> dict:
    """:func:`prepare` on :func:`rawdiff.data.corpus.find_sources` (``make data``), with the
    corpus's split rule: at most ``NEW_TEST_FRAMES`` frames of added sources in test, each
    cut to at most ``TEST_CROP``, and at most ``NEW_VAL_FRAMES`` in val."""
    sources = find_sources(verbose=kwargs.get("verbose", True))
    if not sources:
        raise PrepareError("no default corpus source found on this machine (install the packages of "
                           "`python -m rawdiff.data.corpus`, e.g. opencv-doc or scikit-image)")
    kwargs.setdefault("max_test_frames", NEW_TEST_FRAMES)
    kwargs.setdefault("max_val_frames", NEW_VAL_FRAMES)
    kwargs.setdefault("test_crop", TEST_CROP)
    return prepare(sources, out_dir, seed=seed, **kwargs)


# --------------------------------------------------------------------------------------
# command line glue (``rawdiff prepare-data``)


def add_arguments(parser) -> None:
    """The options of ``rawdiff prepare-data``."""
    parser.add_argument("--source", nargs="+", default=[],
                        help="folders (recursive), photos, .txt lists, videos, DNGs, .npy mosaics, bags")
    parser.add_argument("--default", action="store_true", help="the default corpus from packaged images")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--topic", help="Bayer image topic of bag sources")
    parser.add_argument("--every", type=int, help="take every N-th video frame / bag message "
                        "(default 25 / 1)")
    parser.add_argument("--max-frames", type=int, help="at most N frames per video / bag (default 32 / all)")
    parser.add_argument("--start", type=int, default=0, help="first video frame taken (default 0)")
    parser.add_argument("--min-size", type=int, default=64, help="skip frames smaller than this (px)")
    parser.add_argument("--cfa", default="random", help="CFA of unprocessed photos: random|RGGB|BGGR|GRBG|GBRG")
    parser.add_argument("--bag-cfa", help="CFA for mono16/packed bag images")
    parser.add_argument("--input-format", choices=["raw10p", "raw12p"], help="packed bag images")
    parser.add_argument("--black-level", type=float, help="black level of bag/DNG/mosaic frames")
    parser.add_argument("--white-level", type=float, help="white level of bag/DNG/mosaic frames")
    parser.add_argument("--clean-target", action="store_true",
                        help="render targets of unprocessed photos without the added noise")
    parser.add_argument("--overwrite", action="store_true", help="redo sources prepared with other settings")


def run(args) -> int:
    """Run ``rawdiff prepare-data`` from parsed :func:`add_arguments` options."""
    common = dict(seed=args.seed, every=getattr(args, "every", None), start=getattr(args, "start", 0),
                  max_frames=getattr(args, "max_frames", None), min_size=getattr(args, "min_size", 64),
                  cfa=getattr(args, "cfa", "random"), overwrite=getattr(args, "overwrite", False),
                  clean_target=getattr(args, "clean_target", False))
    levels = {"black_level": getattr(args, "black_level", None), "white_level": getattr(args, "white_level", None)}
    if args.default:
        prepare_default_corpus(args.out, **common)
        return 0
    if not args.source:
        raise PrepareError("give --default or at least one --source PATH")
    conversion = dict(levels, cfa=getattr(args, "bag_cfa", None), input_format=getattr(args, "input_format", None))
    prepare(args.source, args.out, topic=getattr(args, "topic", None), raw_overrides=levels,
            conversion=conversion, **common)
    return 0


# ``target_path``, ``LIST_SUFFIXES`` and ``TARGET_SUFFIX`` are still imported from here by
# rawdiff.data.dataset and rawdiff.eval.evaluate; their home is rawdiff.data.layout / .sources.
__all__ = [
    "FRACTIONS", "LIST_SUFFIXES", "SPLITS", "TARGET_SUFFIX", "PrepareError", "add_arguments", "prepare",
    "prepare_default_corpus", "run", "target_path",
]
