"""Paired RAW / RGB training data: a torch ``Dataset`` and a Lightning ``DataModule``.

An index file (``train.txt`` ...; :mod:`rawdiff.data.prepare` writes them) lists RAW frame
files, one a line, relative to the index file's folder (absolute paths are used as they
are). The RGB target of ``x.npy`` is ``x.rgb.png`` next to it
(:func:`rawdiff.data.prepare.target_path`).

Each item is a dict::

    raw   float32 4 x h/2 x w/2   normalised [0, 1] planes R, G1, G2, B (black level removed)
    rgb   float32 3 x h x w        the target in [0, 1]
    wb_gains      float32 3        the white-balance gains (R, G, B) the reference ISP used for
                                   the target (as-shot, else gray-world over the whole frame)
    color_matrix  float32 3 x 3    its camera -> linear sRGB matrix
    path  str                      the RAW file
    crop  int64 (top, left, hflip, vflip): where the crop lies in the frame (negative when
          the frame was padded), and the flips applied

Training mode takes a random crop at *even* offsets (the CFA phase of the crop is the
frame's) and random horizontal / vertical flips; a flipped mosaic gets the pattern
:func:`~rawdiff.raw.frame.flip_cfa` gives, so the packed planes keep the order R, G1, G2, B.
Evaluation mode takes the centre crop (even offsets) without flips, or the whole frame with
``crop_size=None`` (frames of different sizes then need ``batch_size=1``).

A frame smaller than the crop is padded (``pad_mode="reflect"``) by mirroring whole 2x2
tiles, identically in the mosaic and in the target, so the CFA stays valid and the pair
stays aligned; ``pad_mode="none"`` shrinks the crop to the frame instead.

Decoding dominates, so frames are kept in memory once read (the normalised mosaic as
float32 and the target as uint8, about 7 bytes a pixel), up to ``cache_bytes`` per
process. ``cache="preload"`` reads everything up front, before DataLoader workers fork, so
the workers share it.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rawdiff.config import register
from rawdiff.data.prepare import target_path
from rawdiff.raw.frame import flip_cfa, mosaic_to_planes

CropSize = Union[int, Sequence[int], None]
DEFAULT_CACHE_BYTES = 4 << 30

def read_index(index_file: str) -> List[str]:
    """Absolute paths of the frames an index file lists (relative lines: to its folder)."""
    root = os.path.dirname(os.path.abspath(index_file))
    try:
        with open(index_file, encoding="utf-8") as fh:
            lines = [line.strip() for line in fh]
    except FileNotFoundError:
        raise FileNotFoundError("index file not found: %s" % index_file) from None
    return [p if os.path.isabs(p) else os.path.join(root, p) for p in lines if p and not p.startswith("#")]


def _crop_hw(crop_size: CropSize) -> Optional[Tuple[int, int]]:
    if crop_size is None:
        return None
    if isinstance(crop_size, (int, np.integer)):
        hw = (int(crop_size), int(crop_size))
    else:
        values = [int(v) for v in crop_size]
        if len(values) != 2:
            raise ValueError("crop_size must be an int or (height, width), got %r" % (crop_size,))
        hw = (values[0], values[1])
    if min(hw) < 2 or hw[0] % 2 or hw[1] % 2:
        raise ValueError("crop_size must be even and >= 2 (whole 2x2 CFA tiles), got %r" % (crop_size,))
    return hw


def _tile_pad_index(n: int, target: int) -> Tuple[np.ndarray, int]:
    """Row (or column) indices that pad ``n`` (even) to ``target`` by mirroring 2x2 tiles.

    Returns the indices and the number of padded pixels before the frame.
    """
    blocks = n // 2
    need = target // 2 - blocks
    before, after = need // 2, need - need // 2
    tiles = np.pad(np.arange(blocks), (before, after), mode="reflect" if blocks > 1 else "edge")
    return (2 * tiles[:, None] + np.arange(2)[None, :]).reshape(-1), 2 * before


class RawRGBDataset(Dataset):
    """RAW planes and RGB targets of the frames an index file lists.

    Args:
        index: an index file, or a list of RAW frame paths.
        crop_size: int or (h, w), even; None for whole frames.
        train: random crops and flips (True) or centre crops without flips (False).
        flips: override the flips (default: ``train``).
        pad_mode: ``"reflect"`` (mirror 2x2 tiles) or ``"none"`` for frames smaller than the crop.
        cache: keep decoded frames in memory (True), not (False), or ``"preload"``.
        cache_bytes: the most a process keeps in its cache.
    """

    def __init__(self, index: Union[str, Sequence[str]], crop_size: CropSize = 512, train: bool = True,
                 flips: Optional[bool] = None, pad_mode: str = "reflect", cache: Union[bool, str] = True,
                 cache_bytes: int = DEFAULT_CACHE_BYTES):
        if isinstance(index, (str, os.PathLike)):
            self.index_file: Optional[str] = os.fspath(index)
            self.paths = read_index(self.index_file)
        else:
            self.index_file = None
            self.paths = [os.fspath(p) for p in index]
        self.crop = _crop_hw(crop_size)
        self.train = bool(train)
        self.flips = self.train if flips is None else bool(flips)
        if pad_mode not in ("reflect", "none"):
            raise ValueError("pad_mode must be 'reflect' or 'none', got %r" % (pad_mode,))
        self.pad_mode = pad_mode
        if cache not in (True, False, "preload"):
            raise ValueError("cache must be True, False or 'preload', got %r" % (cache,))
        self.cache_enabled = bool(cache)
        self.cache_bytes = int(cache_bytes)
        self._cache: Dict[int, Tuple[np.ndarray, str, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._cached_bytes = 0
        if cache == "preload":
            self.preload()

    def __len__(self) -> int:
        return len(self.paths)

    # --- loading -------------------------------------------------------------------------

    def load(self, i: int) -> Tuple[np.ndarray, str, np.ndarray, np.ndarray, np.ndarray]:
        """(normalised float32 HxW mosaic, CFA, uint8 HxWx3 RGB target, wb gains, colour matrix)
        of frame ``i``, whole."""
        hit = self._cache.get(i)
        if hit is not None:
            return hit
        item = self._read(self.paths[i])
        size = item[0].nbytes + item[2].nbytes
        if self.cache_enabled and self._cached_bytes + size <= self.cache_bytes:
            self._cache[i] = item
            self._cached_bytes += size
        return item

    def preload(self) -> None:
        """Read every frame into the cache (up to ``cache_bytes``)."""
        self.cache_enabled = True
        for i in range(len(self)):
            self.load(i)

    @staticmethod
    def _read(path: str) -> Tuple[np.ndarray, str, np.ndarray, np.ndarray, np.ndarray]:
        import cv2

        from rawdiff.raw import read_raw
        from rawdiff.raw.isp import render_params

        frame = read_raw(path)
        target = target_path(path)
        bgr = cv2.imread(target, cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError("RGB target of %s not found or unreadable: %s" % (path, target))
        if bgr.shape[:2] != frame.shape:
            raise ValueError("%s: RAW frame %dx%d and RGB target %dx%d differ in size"
                             % (path, frame.width, frame.height, bgr.shape[1], bgr.shape[0]))
        h, w = frame.height & ~1, frame.width & ~1  # whole 2x2 tiles; the phase is kept
        mosaic = np.ascontiguousarray(frame.normalize()[:h, :w], dtype=np.float32)
        rgb = np.ascontiguousarray(bgr[:h, :w, ::-1])
        gains, ccm = render_params(frame)  # what the reference ISP rendered the target with
        return mosaic, frame.cfa, rgb, gains.astype(np.float32), ccm.astype(np.float32)

    # --- one item ------------------------------------------------------------------------

    @staticmethod
    def _randint(high: int) -> int:
        """Uniform in [0, high); torch's RNG, which DataLoader seeds per worker."""
        return int(torch.randint(high, (1,)).item()) if high > 1 else 0

    def __getitem__(self, i: int) -> Dict[str, Any]:
        mosaic, cfa, rgb, gains, ccm = self.load(i)
        h, w = mosaic.shape
        top = left = 0
        if self.crop is not None:
            ch, cw = self.crop
            if self.pad_mode == "none":
                ch, cw = min(ch, h), min(cw, w)
            elif h < ch or w < cw:
                rows, cols = np.arange(h), np.arange(w)
                if h < ch:
                    rows, top = _tile_pad_index(h, ch)
                    top = -top
                if w < cw:
                    cols, left = _tile_pad_index(w, cw)
                    left = -left
                mosaic = mosaic[np.ix_(rows, cols)]
                rgb = rgb[np.ix_(rows, cols)]
                h, w = mosaic.shape
            if self.train:
                dy = 2 * self._randint((h - ch) // 2 + 1)
                dx = 2 * self._randint((w - cw) // 2 + 1)
            else:
                dy, dx = (h - ch) // 4 * 2, (w - cw) // 4 * 2
            mosaic = mosaic[dy:dy + ch, dx:dx + cw]
            rgb = rgb[dy:dy + ch, dx:dx + cw]
            top, left = top + dy, left + dx
        hflip = vflip = False
        if self.flips:
            hflip, vflip = bool(self._randint(2)), bool(self._randint(2))
            if hflip:
                mosaic, rgb = mosaic[:, ::-1], rgb[:, ::-1]
            if vflip:
                mosaic, rgb = mosaic[::-1], rgb[::-1]
            cfa = flip_cfa(cfa, horizontal=hflip, vertical=vflip)
        planes = mosaic_to_planes(np.ascontiguousarray(mosaic), cfa)
        target = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
        return {
            "raw": torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float32)),
            "rgb": torch.from_numpy(target),
            "wb_gains": torch.from_numpy(gains.copy()),
            "color_matrix": torch.from_numpy(ccm.copy()),
            "path": self.paths[i],
            "crop": torch.tensor([top, left, int(hflip), int(vflip)], dtype=torch.int64),
        }


def _lightning_base():
    try:
        import lightning as L

        return L.LightningDataModule
    except ImportError:  # pragma: no cover - lightning is a requirement of training only
        return object


@register("rawrgb")
class RawRGBDataModule(_lightning_base()):
    """Train / val / test loaders from the three index files of a prepared dataset.

    Args:
        root: a folder with ``train.txt``, ``val.txt``, ``test.txt`` (``rawdiff prepare-data``).
        train_index, val_index, test_index: index files (override ``root``'s).
        crop_size: training crop (default 512, as the thesis).
        val_crop_size: evaluation centre crop; ``"same"`` = ``crop_size``, None = whole frames.
        batch_size, val_batch_size: batch sizes (``val_batch_size`` defaults to ``batch_size``,
            or to 1 for whole frames).
        num_workers: DataLoader workers (persistent, so their caches last across epochs).
        cache, cache_bytes, pad_mode: see :class:`RawRGBDataset`.
        sampling: how an epoch draws the training frames: ``"frame"`` each once (shuffled);
            ``"pixels"`` with replacement, each with a chance proportional to its area (every
            pixel equally likely to be in a crop); ``"sqrt_pixels"`` to the square root of
            its area, between the two: a 20 Mpixel photo is drawn 8 times as often as a
            0.3 Mpixel frame rather than 67 times. Epochs have as many crops as frames,
            or ``epoch_crops`` (the area samplings): on a GPU a batch can hold more crops than
            the corpus has frames, and an epoch of one batch would drain the loaders' prefetch
            at every step.
    """

    def __init__(self, root: Optional[str] = None, train_index: Optional[str] = None,
                 val_index: Optional[str] = None, test_index: Optional[str] = None,
                 crop_size: CropSize = 512, val_crop_size: Union[CropSize, str] = "same",
                 batch_size: int = 4, val_batch_size: Optional[int] = None, num_workers: int = 0,
                 cache: Union[bool, str] = True, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 pad_mode: str = "reflect", pin_memory: Optional[bool] = None, sampling: str = "frame",
                 epoch_crops: Optional[int] = None):
        super().__init__()
        if sampling not in SAMPLINGS:
            raise ValueError("sampling must be one of %s, got %r" % (", ".join(SAMPLINGS), sampling))
        if epoch_crops is not None and (int(epoch_crops) < 1 or sampling == "frame"):
            raise ValueError("epoch_crops must be at least 1, with a sampling by area (pixels, sqrt_pixels); got %r "
                             "with %s" % (epoch_crops, sampling))
        self.sampling = sampling
        self.epoch_crops = None if epoch_crops is None else int(epoch_crops)
        if root is None and not (train_index or val_index or test_index):
            raise ValueError("give root (a prepared dataset folder) or index files")

        def pick(given: Optional[str], name: str) -> Optional[str]:
            if given:
                return os.fspath(given)
            return os.path.join(os.fspath(root), name + ".txt") if root is not None else None

        self.root = root
        self.train_index = pick(train_index, "train")
        self.val_index = pick(val_index, "val")
        self.test_index = pick(test_index, "test")
        self.crop_size = crop_size
        self.val_crop_size = crop_size if val_crop_size == "same" else val_crop_size
        _crop_hw(self.crop_size), _crop_hw(self.val_crop_size)  # validate early
        self.batch_size = int(batch_size)
        if val_batch_size is None:
            val_batch_size = self.batch_size if self.val_crop_size is not None else 1
        self.val_batch_size = int(val_batch_size)
        self.num_workers = int(num_workers)
        self.cache = cache
        self.cache_bytes = int(cache_bytes)
        self.pad_mode = pad_mode
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self._datasets: Dict[str, RawRGBDataset] = {}

    def dataset(self, split: str) -> RawRGBDataset:
        """The :class:`RawRGBDataset` of ``"train"``, ``"val"`` or ``"test"`` (built once)."""
        if split not in self._datasets:
            index = {"train": self.train_index, "val": self.val_index, "test": self.test_index}[split]
            if not index or not os.path.isfile(index):
                raise FileNotFoundError("no %s index file (%s); run `rawdiff prepare-data` first" % (split, index))
            train = split == "train"
            self._datasets[split] = RawRGBDataset(
                index, crop_size=self.crop_size if train else self.val_crop_size, train=train,
                pad_mode=self.pad_mode, cache=self.cache, cache_bytes=self.cache_bytes)
        return self._datasets[split]

    def setup(self, stage: Optional[str] = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "",
                                                                                     ("train", "val", "test"))
        for split in wanted:
            index = {"train": self.train_index, "val": self.val_index, "test": self.test_index}[split]
            if split == "train" or (index and os.path.isfile(index)):
                self.dataset(split)

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        ds = self.dataset(split)
        sampler = None
        if shuffle and self.sampling != "frame":
            areas = np.array([frame_area(p) for p in ds.paths], dtype=np.float64)
            weights = areas if self.sampling == "pixels" else np.sqrt(areas)
            count = self.epoch_crops or len(ds)
            sampler = torch.utils.data.WeightedRandomSampler(torch.from_numpy(weights), count, replacement=True)
            shuffle = False
        drawn = len(sampler) if sampler is not None else len(ds)
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, sampler=sampler, num_workers=self.num_workers,
                          drop_last=(shuffle or sampler is not None) and drawn > batch_size,
                          pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.val_batch_size, shuffle=False)


SAMPLINGS = ("frame", "pixels", "sqrt_pixels")


def frame_area(path: str) -> int:
    """Pixels of a prepared frame, from its file's header (the array is not read)."""
    if path.endswith(".npy"):
        shape = np.load(path, mmap_mode="r").shape
    else:
        from rawdiff.raw import read_raw

        shape = read_raw(path).mosaic.shape
    return int(shape[0]) * int(shape[1])


__all__ = ["RawRGBDataModule", "RawRGBDataset", "read_index", "target_path"]
