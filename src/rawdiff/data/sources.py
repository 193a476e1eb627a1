"""From paths to sources: what a file is, and the sources a folder or a list holds.

    folder | .txt/.lst list | file --collect_sources--> [Source(kind, name, ...), ...]

A file's kind comes from its suffix: photos (``.jpg``, ``.png``, ...), videos (``.avi``,
``.mp4``, ...), DNG and camera RAW (what rawpy reads), ``.npy`` mosaics and 16-bit
PNG/TIFF mosaics with a ``.json`` sidecar (``raw``), bags (``.bag``, which need a topic).
RGB targets written by ``prepare`` (``*.rgb.png``) are never sources.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Optional, Union

from rawdiff.data.corpus import BAG, DNG, PHOTO, RAW, VIDEO, Source
from rawdiff.data.layout import TARGET_SUFFIX
from rawdiff.raw.io import RAWPY_SUFFIXES, sidecar_path

IMAGE_SUFFIXES = frozenset((".jpg", ".jpeg", ".png", ".ppm", ".pnm", ".pgm", ".pbm", ".tif", ".tiff",
                            ".bmp", ".webp", ".jp2"))
VIDEO_SUFFIXES = frozenset((".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv"))
BAG_SUFFIXES = frozenset((".bag",))
LIST_SUFFIXES = frozenset((".txt", ".lst"))


class PrepareError(ValueError):
    """A problem with the sources or the output folder (the CLI prints it on one line)."""


def _classify(path: str, explicit: bool) -> Optional[str]:
    suffix = os.path.splitext(path)[1].lower()
    if suffix in RAWPY_SUFFIXES:
        return DNG
    if suffix in BAG_SUFFIXES:
        return BAG
    if suffix in VIDEO_SUFFIXES:
        return VIDEO
    if suffix == ".npy":
        return RAW
    if suffix in IMAGE_SUFFIXES:
        if path.endswith(TARGET_SUFFIX):  # a target written by prepare: not a source
            return None
        if suffix in (".png", ".tif", ".tiff") and os.path.isfile(str(sidecar_path(path))):
            return RAW
        return PHOTO
    if explicit:
        raise PrepareError("%s: unknown source type %r (photos, videos, DNG/camera RAW, .npy mosaics, "
                           ".bag, folders or .txt lists)" % (path, suffix))
    return None


def collect_sources(paths: Iterable[Union[str, Source]], topic: Optional[str] = None,
                    origin: str = "user", licence: str = "") -> List[Source]:
    """Turn command-line paths into sources.

    A folder gives every photo, video, DNG/camera RAW, ``.npy`` mosaic and bag under it
    (recursively, sorted; ``*.rgb.png`` targets excluded); a ``.txt``/``.lst`` file lists
    paths, one a line (``#`` comments; relative to the list's folder); any other file is
    one source. Bags need ``topic``. Names are ``<folder>/<relative path>`` for files found
    in a folder and the file name otherwise, made unique with ``~2``, ``~3``...
    """
    out: List[Source] = []
    seen_names: Dict[str, int] = {}
    seen_paths = set()

    def add(path: str, kind: str, name: str) -> None:
        real = os.path.realpath(path)
        if real in seen_paths:
            return
        seen_paths.add(real)
        if kind == BAG and not topic:
            raise PrepareError("%s: a bag source needs --topic (the Bayer image topic)" % path)
        base = "%s/%s" % (origin, name)
        count = seen_names.get(base, 0) + 1
        seen_names[base] = count
        unique = base if count == 1 else "%s~%d" % (base, count)
        out.append(Source(path=path, origin_package=origin, licence=licence, kind=kind, name=unique,
                          topic=topic if kind == BAG else None))

    def visit(item: str, depth: int = 0) -> None:
        if depth > 8:
            raise PrepareError("%s: list files nested too deeply" % item)
        if os.path.isdir(item):
            root = os.path.normpath(item)
            label = os.path.basename(os.path.abspath(root)) or "root"
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for fname in sorted(filenames):
                    path = os.path.join(dirpath, fname)
                    kind = _classify(path, explicit=False)
                    if kind is not None:
                        add(path, kind, "%s/%s" % (label, os.path.relpath(path, root).replace(os.sep, "/")))
            return
        if not os.path.exists(item):
            raise PrepareError("source not found: %s" % item)
        if os.path.splitext(item)[1].lower() in LIST_SUFFIXES:
            base = os.path.dirname(os.path.abspath(item))
            with open(item, encoding="utf-8") as fh:
                for line in fh:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        visit(line if os.path.isabs(line) else os.path.join(base, line), depth + 1)
            return
        add(item, _classify(item, explicit=True), os.path.basename(item))

    for item in paths:
        if isinstance(item, Source):
            if item.kind == BAG and not (item.topic or topic):
                raise PrepareError("%s: a bag source needs --topic (the Bayer image topic)" % item.path)
            if item.kind == BAG and not item.topic:
                item = Source(**{**_source_fields(item), "topic": topic})
            out.append(item)
        else:
            visit(os.fspath(item))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise PrepareError("source names are not unique: %s" % ", ".join(dup))
    return out


def _source_fields(src: Source) -> Dict[str, Any]:
    return {"path": src.path, "origin_package": src.origin_package, "licence": src.licence,
            "kind": src.kind, "name": src.name, "group": src.group, "topic": src.topic, "note": src.note}


__all__ = ["BAG_SUFFIXES", "IMAGE_SUFFIXES", "LIST_SUFFIXES", "VIDEO_SUFFIXES", "PrepareError", "collect_sources"]
