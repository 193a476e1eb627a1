"""The default training corpus: photos that packages already put on a Debian 12 machine.

Nothing is downloaded. :func:`find_sources` looks in four places and keeps only real
colour photographs (and one real video), chosen by a curated list per package, because
the same folders also hold logos, charts, text, digits, masks, synthetic test patterns,
near-duplicates and grayscale calibration shots:

==================  ==============================================  =====================
package             what is used                                    licence (as stated)
==================  ==============================================  =====================
opencv-doc          27 colour photos of examples/data + vtest.avi   Apache-2.0 AND
                    (pedestrians, 795 frames, one source)           BSD-3-Clause
scikit-image        astronaut, chelsea, coffee, rocket,             per image, from the
                    motorcycle_left/right (files in skimage/data)   skimage.data docs
libjxl-testdata     flower.png, hdr_room.png (16-bit BT.2020 HLG),  BSD-3-clause-Google /
                    wesaturate/500px *_srgb8.png (3)                CC0
scikit-learn        china.jpg, flower.jpg                           CC-BY-2.0
==================  ==============================================  =====================

Left out on purpose: opencv-doc's logos (LinuxLogo, WindowsLogo, opencv-logo*), drawings
and charts (HappyFish, ml, pic1-6, cards, detect_blob, gradient, chessboard, pca_test1),
text (imageText*, text_*, notes, sudoku, digits, alphabet), masks/templates (mask, templ,
tmpl, aloeGT), a painting (starry_night), a tampered copy (ela_modified), the grayscale
calibration and flow shots (left01..14, right01..14, basketball*, box*, blox, ellipses,
Blender_Suzanne*), and the animated videos (Megamind*, tree.avi); scikit-image's
grayscale, microscopy, medical, astronomy and synthetic images; libjxl-testdata's PngSuite
patterns, wide-gamut test charts, the 64x64 crops (tiny), the grayscale/alpha variants and
the many re-encodings of ``flower`` (duplicates). Pairs of views of one scene (stereo or
flow pairs: aloeL/R, left/right, leuvenA/B, graf1/3, aero1/3, rubberwhale1/2,
motorcycle_left/right) share a ``group``, so a split never separates them.

``python -m rawdiff.data.corpus`` prints what is found.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

OPENCV_DATA = "/usr/share/doc/opencv-doc/examples/data"
LIBJXL_TESTDATA = "/usr/share/libjxl-testdata"

PHOTO = "photo"
VIDEO = "video"
DNG = "dng"
RAW = "raw"
BAG = "bag"
KINDS = (PHOTO, VIDEO, DNG, RAW, BAG)


@dataclass(frozen=True)
class Source:
    """One source of the corpus: a photo, a video (all its frames), a DNG or a bag.

    Attributes:
        path: the file.
        origin_package: where it came from (a Debian or Python package, or ``"user"``).
        licence: the licence the package states for it ("" when none is stated).
        kind: ``photo``, ``video``, ``dng``, ``raw`` (a mosaic ``read_raw`` reads) or ``bag``.
        name: a stable unique id, e.g. ``opencv-doc/aloeL.jpg``; it seeds the source's
            unprocessing and names its output folder. Defaults to ``origin/basename``.
        group: the split key; sources with the same group always land in the same split
            (two views of one scene). Defaults to ``name``.
        topic: the image topic of a ``bag`` source.
        note: free text (provenance, colour space).
    """

    path: str
    origin_package: str
    licence: str = ""
    kind: str = PHOTO
    name: str = ""
    group: str = ""
    topic: Optional[str] = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError("source kind %r is not one of %s" % (self.kind, ", ".join(KINDS)))
        if not self.name:
            object.__setattr__(self, "name", "%s/%s" % (self.origin_package, os.path.basename(self.path)))
        if not self.group:
            object.__setattr__(self, "group", self.name)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "path": self.path,
            "origin": self.origin_package,
            "licence": self.licence,
            "kind": self.kind,
            "group": self.group,
            "topic": self.topic,
            "note": self.note,
        }


# --- opencv-doc --------------------------------------------------------------------------

_OPENCV_LICENCE = "Apache-2.0 AND BSD-3-Clause (debian/copyright, Files: *)"
# (file, group) ; group "" = its own
_OPENCV_PHOTOS: Tuple[Tuple[str, str], ...] = (
    ("aero1.jpg", "aero"), ("aero3.jpg", "aero"),
    ("aloeL.jpg", "aloe"), ("aloeR.jpg", "aloe"),
    ("apple.jpg", ""), ("baboon.jpg", ""), ("board.jpg", ""), ("building.jpg", ""),
    ("butterfly.jpg", ""), ("chicky_512.png", ""), ("ela_original.jpg", ""), ("fruits.jpg", ""),
    ("graf1.png", "graf"), ("graf3.png", "graf"),
    ("home.jpg", ""),
    ("left.jpg", "left-right"), ("right.jpg", "left-right"),
    ("leuvenA.jpg", "leuven"), ("leuvenB.jpg", "leuven"),
    ("licenseplate_motion.jpg", ""), ("messi5.jpg", ""), ("orange.jpg", ""),
    ("rubberwhale1.png", "rubberwhale"), ("rubberwhale2.png", "rubberwhale"),
    ("smarties.png", ""), ("squirrel_cls.jpg", ""), ("stuff.jpg", ""),
)
_OPENCV_VIDEOS = ("vtest.avi",)

# --- scikit-image -------------------------------------------------------------------------

# file -> (licence as the skimage.data docstrings state it, group)
_SKIMAGE_PHOTOS: Dict[str, Tuple[str, str]] = {
    "astronaut.png": ("public domain (NASA; skimage.data.astronaut)", ""),
    "chelsea.png": ("CC0 (Stefan van der Walt; skimage.data.chelsea)", ""),
    "coffee.png": ("CC0 (Rachel Michetti; skimage.data.coffee)", ""),
    "rocket.jpg": ("public domain (SpaceX; skimage.data.rocket)", ""),
    "motorcycle_left.png": ("not stated (Middlebury 2014 stereo benchmark; skimage.data.stereo_motorcycle)",
                            "motorcycle"),
    "motorcycle_right.png": ("not stated (Middlebury 2014 stereo benchmark; skimage.data.stereo_motorcycle)",
                             "motorcycle"),
}

# --- libjxl-testdata ----------------------------------------------------------------------

_JXL_GOOGLE = "BSD-3-clause-Google (debian/copyright, Files: *)"
_JXL_CC0 = "CC0 (debian/copyright, external/wesaturate/*)"
_LIBJXL_PHOTOS: Tuple[Tuple[str, str, str], ...] = (
    ("jxl/flower/flower.png", _JXL_GOOGLE, ""),
    ("jxl/hdr_room.png", _JXL_GOOGLE, "16-bit, BT.2020 primaries, HLG transfer (cICP 9/18)"),
    ("external/wesaturate/500px/cvo9xd_keong_macan_srgb8.png", _JXL_CC0, ""),
    ("external/wesaturate/500px/tmshre_riaphotographs_srgb8.png", _JXL_CC0, ""),
    ("external/wesaturate/500px/u76c0g_bliznaca_srgb8.png", _JXL_CC0, ""),
)

# --- scikit-learn -------------------------------------------------------------------------

_SKLEARN_PHOTOS: Dict[str, str] = {
    "china.jpg": "CC-BY-2.0 (danielbuechele on Flickr; sklearn/datasets/images/README.txt)",
    "flower.jpg": "CC-BY-2.0 (vultilion on Flickr; sklearn/datasets/images/README.txt)",
}


def _package_dir(module: str, *sub: str) -> Optional[str]:
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return os.path.join(os.path.dirname(mod.__file__), *sub)


def _add(found: List[Source], notes: List[str], path: str, **kwargs) -> None:
    if os.path.isfile(path):
        found.append(Source(path=path, **kwargs))
    else:
        notes.append("missing %s" % path)


def _opencv(found: List[Source], notes: List[str]) -> None:
    if not os.path.isdir(OPENCV_DATA):
        notes.append("opencv-doc: %s not found (apt-get install opencv-doc); skipped" % OPENCV_DATA)
        return
    for name, group in _OPENCV_PHOTOS:
        src_name = "opencv-doc/" + name
        _add(found, notes, os.path.join(OPENCV_DATA, name), origin_package="opencv-doc",
             licence=_OPENCV_LICENCE, kind=PHOTO, name=src_name,
             group="opencv-doc/" + group if group else src_name)
    for name in _OPENCV_VIDEOS:
        _add(found, notes, os.path.join(OPENCV_DATA, name), origin_package="opencv-doc",
             licence=_OPENCV_LICENCE, kind=VIDEO, name="opencv-doc/" + name)


def _skimage(found: List[Source], notes: List[str]) -> None:
    root = _package_dir("skimage", "data")
    if root is None or not os.path.isdir(root):
        notes.append("scikit-image: not installed; skipped")
        return
    for name, (licence, group) in sorted(_SKIMAGE_PHOTOS.items()):
        src_name = "scikit-image/" + name
        _add(found, notes, os.path.join(root, name), origin_package="scikit-image", licence=licence,
             kind=PHOTO, name=src_name, group="scikit-image/" + group if group else src_name)


def _libjxl(found: List[Source], notes: List[str]) -> None:
    if not os.path.isdir(LIBJXL_TESTDATA):
        notes.append("libjxl-testdata: %s not found (apt-get install libjxl-testdata); skipped"
                     % LIBJXL_TESTDATA)
        return
    for rel, licence, note in _LIBJXL_PHOTOS:
        _add(found, notes, os.path.join(LIBJXL_TESTDATA, rel), origin_package="libjxl-testdata",
             licence=licence, kind=PHOTO, name="libjxl-testdata/" + rel, note=note)


def _sklearn(found: List[Source], notes: List[str]) -> None:
    root = _package_dir("sklearn", "datasets", "images")
    if root is None or not os.path.isdir(root):
        notes.append("scikit-learn: not installed; skipped")
        return
    for name, licence in sorted(_SKLEARN_PHOTOS.items()):
        _add(found, notes, os.path.join(root, name), origin_package="scikit-learn", licence=licence,
             kind=PHOTO, name="scikit-learn/" + name)


def find_sources(verbose: bool = True, file=None) -> List[Source]:
    """The default corpus's sources present on this machine, in a fixed order.

    Prints (to ``file``, default stderr, when ``verbose``) what was found per package and
    what is missing. Missing packages or files are skipped with a note, never an error.
    """
    found: List[Source] = []
    notes: List[str] = []
    for collect in (_opencv, _skimage, _libjxl, _sklearn):
        collect(found, notes)
    if verbose:
        out = file if file is not None else sys.stderr
        by_origin: Dict[str, List[Source]] = {}
        for src in found:
            by_origin.setdefault(src.origin_package, []).append(src)
        for origin, items in by_origin.items():
            kinds = ", ".join("%d %s" % (sum(s.kind == k for s in items), k)
                              for k in KINDS if any(s.kind == k for s in items))
            where = os.path.commonpath([os.path.dirname(s.path) for s in items])
            print("corpus: %-16s %s from %s" % (origin, kinds, where), file=out)
        for note in notes:
            print("corpus: note: %s" % note, file=out)
        print("corpus: %d sources (%d groups)" % (len(found), len({s.group for s in found})), file=out)
    return found


def slug(name: str) -> str:
    """A file-system safe folder name for a source name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace("/", "__")).strip("_") or "source"


def main(argv=None) -> int:
    sources = find_sources(verbose=True)
    for src in sources:
        print("%-6s %-62s %s" % (src.kind, src.name, src.licence))
    return 0


if __name__ == "__main__":
    sys.exit(main())
