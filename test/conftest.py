"""Shared fixtures: the committed tiny model and a tiny paired corpus made by the project's
own preparation code from synthetic photos."""

import os

import cv2
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_MODEL = os.path.join(ROOT, "test", "fixtures", "model")


def textured_photo(h, w, seed):
    """An 8-bit RGB image with smooth colour regions and some edges and texture."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (4, 5, 3)).astype(np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(6):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(base, (x, y), int(rng.integers(4, max(5, min(h, w) // 3))), colour, -1)
    noise = rng.normal(0, 6, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def fixture_model():
    if not os.path.isfile(os.path.join(FIXTURE_MODEL, "model.json")):
        pytest.fail("the fixture model is missing: run `make fixtures`")
    return FIXTURE_MODEL


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A prepared dataset of 6 small photos (train/val/test index files)."""
    from rawdiff.data import prepare as prep

    src = tmp_path_factory.mktemp("photos")
    for i in range(6):
        assert cv2.imwrite(str(src / ("photo%d.png" % i)), textured_photo(96, 128, i)[:, :, ::-1])
    out = tmp_path_factory.mktemp("corpus")
    prep.prepare([str(src)], str(out), seed=0, progress=False, verbose=False)
    return str(out)
