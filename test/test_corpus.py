"""rawdiff.data.corpus: the default corpus from packaged photos."""

import io
import os

import cv2
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


def test_missing_packages_are_skipped_with_a_note(monkeypatch, tmp_path):
    monkeypatch.setattr(corpus, "OPENCV_DATA", str(tmp_path / "no-opencv"))
    monkeypatch.setattr(corpus, "LIBJXL_TESTDATA", str(tmp_path / "no-jxl"))
    monkeypatch.setattr(corpus, "_package_dir", lambda module, *sub: None)
    log = io.StringIO()
    assert corpus.find_sources(verbose=True, file=log) == []
    text = log.getvalue()
    for pkg in ("opencv-doc", "libjxl-testdata", "scikit-image", "scikit-learn"):
        assert pkg in text and "skipped" in text
