"""Synthetic test images and paths shared by the core tests (imported by name, so it
must not be called conftest: test/ros has a conftest of its own)."""

import os

import cv2
import numpy as np

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


def declare_size(data: bytes, height: int, width: int, factor: int = 8) -> bytes:
    """A bitstream whose header declares another frame size (and the matching code grid),
    CRC recomputed: valid, as an attacker would write it."""
    import dataclasses

    from rawdiff.codec import bitstream

    header, payload = bitstream.unpack(data)
    chunks = bitstream.stage_payloads(header, payload)
    header = dataclasses.replace(header, height=height, width=width, code_height=-(-height // factor),
                                 code_width=-(-width // factor), payload_length=None)
    return bitstream.pack(header, chunks)


CORPUS_TEST_INDEX = os.path.join(ROOT, "data", "corpus", "test.txt")


def corpus_test_frames(count: int = 4):
    """``count`` RAW frames of the default corpus's test split (data/corpus/test.txt, made by
    `make data`), spread over the list so that they differ in size and content; without the
    corpus, frames unprocessed from synthetic photos of several sizes. Returns (name, frame)."""
    from rawdiff.raw import read_raw
    from rawdiff.raw.unprocess import unprocess

    if os.path.isfile(CORPUS_TEST_INDEX):
        from rawdiff.data.dataset import read_index

        paths = read_index(CORPUS_TEST_INDEX)
        if len(paths) >= count:
            picks = [paths[round(i * (len(paths) - 1) / max(1, count - 1))] for i in range(count)]
            return [(os.path.basename(os.path.dirname(p)), read_raw(p)) for p in picks]
    sizes = [(1112, 1936), (200, 300), (70, 102), (480, 640), (96, 128), (34, 50)][:count]
    return [("synthetic%dx%d" % hw, unprocess(textured_photo(hw[0], hw[1], i), seed=i)[0])
            for i, hw in enumerate(sizes)]
