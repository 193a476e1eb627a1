"""Output files: checked before any work, written whole or not at all.

    check_output(path, suffixes, inputs) --> path, or ValueError in one line: a directory,
        a missing or unsupported suffix, a folder that cannot be made or written, an output
        that is one of the inputs (or an input's JSON sidecar)
    with atomic_output(path) as part: write part --> os.replace(part, path)

Every command checks its outputs with :func:`check_output` before it reads a model or
decodes a frame, so a typo costs milliseconds, not a whole decode. A missing output folder
is made the same way by every command (:func:`atomic_output`, when the file is written;
the check has already made sure that its nearest existing ancestor is a writable folder and
takes a new folder: a folder of a unique name is made there and removed, since ``os.access``
may allow what the file system refuses: a virtual one such as /proc, NFS with root squashed,
some FUSE mounts).
Files are written under a temporary name in the destination folder (the real suffix
kept last, since OpenCV picks the image format by it) and renamed over the destination
when complete: ``os.replace`` is atomic within a filesystem, so a failure or an
interruption never leaves half a file, and an existing file is only ever replaced by a
complete one.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional, Sequence, Union

PathLike = Union[str, "os.PathLike[str]"]


def _same_file(a: str, b: str) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _nearest_existing(folder: str) -> str:
    while not os.path.exists(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return folder


def check_folder(folder: PathLike, what: str = "output folder") -> str:
    """``folder`` if it is, or can be made as, a writable folder; else ``ValueError``."""
    folder = os.path.abspath(os.fspath(folder))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError("%s %s is a file, not a folder" % (what, folder))
    existing = _nearest_existing(folder)
    if not os.path.isdir(existing):
        raise ValueError("cannot make %s %s: %s is a file" % (what, folder, existing))
    if not os.access(existing, os.W_OK | os.X_OK):
        if existing == folder:
            raise ValueError("%s %s is not writable" % (what, folder))
        raise ValueError("cannot make %s %s: %s is not writable" % (what, folder, existing))
    if existing != folder:  # os.access may allow what the file system refuses (/proc, NFS, FUSE)
        probe = os.path.join(existing, ".rawdiff-probe-%s" % uuid.uuid4().hex[:12])
        try:
            os.mkdir(probe)
        except OSError as exc:
            raise ValueError("cannot make %s %s: %s takes no new folders (%s)"
                             % (what, folder, existing, exc.strerror or exc)) from None
        os.rmdir(probe)
    return folder


def check_output(path: PathLike, suffixes: Optional[Sequence[str]] = None, inputs: Iterable[PathLike] = (),
                 what: str = "output") -> str:
    """Check an output file before any work; returns ``path`` as a string.

    ``suffixes``: the accepted suffixes (lower case, with the dot), or None for any;
    ``inputs``: files the command reads (an input's sidecar too), which the output must not
    overwrite. Raises ``ValueError`` naming the path and the problem."""
    name = os.fspath(path)
    if not name:
        raise ValueError("%s path is empty" % what)
    if os.path.isdir(name):
        example = os.path.join(name, "out" + (suffixes[0] if suffixes else ""))
        raise ValueError("%s %s is a directory; give a file name, e.g. %s" % (what, name, example))
    suffix = os.path.splitext(name)[1].lower()
    if suffixes is not None and suffix not in suffixes:
        accepted = ", ".join(suffixes)
        if not suffix:
            raise ValueError("%s %s has no suffix; give one of %s" % (what, name, accepted))
        raise ValueError("%s %s: suffix %s is not one of %s" % (what, name, suffix, accepted))
    for source in inputs:
        source = os.fspath(source)
        if source and _same_file(name, source):
            raise ValueError("%s %s is the input %s; give another name" % (what, name, source))
    check_folder(os.path.dirname(os.path.abspath(name)))  # renaming over a read-only file is the folder's
    return name


def part_path(path: PathLike) -> str:
    """A temporary name next to ``path`` that keeps its suffix: ``.NAME.<random>.part.SUFFIX``."""
    name = os.fspath(path)
    folder, base = os.path.split(os.path.abspath(name))
    stem, suffix = os.path.splitext(base)
    return os.path.join(folder, ".%s.%s.part%s" % (stem, uuid.uuid4().hex[:8], suffix))


@contextmanager
def atomic_output(path: PathLike) -> Iterator[str]:
    """``with atomic_output(path) as part:`` write the file at ``part``; on success it is
    renamed to ``path``, on an exception removed. Makes the folder when it is missing."""
    name = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(name)), exist_ok=True)
    part = part_path(name)
    try:
        yield part
        if not os.path.isfile(part):
            raise OSError("%s was not written" % name)
        os.replace(part, name)
    finally:
        if os.path.exists(part):
            os.remove(part)


def write_bytes(path: PathLike, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically (:func:`atomic_output`)."""
    with atomic_output(path) as part:
        with open(part, "wb") as f:
            f.write(data)
    return os.fspath(path)


def write_text(path: PathLike, text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_output`)."""
    return write_bytes(path, text.encode("utf-8"))


__all__ = ["atomic_output", "check_folder", "check_output", "part_path", "write_bytes", "write_text"]
