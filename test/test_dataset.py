"""rawdiff.data.dataset: crops, flips that keep the CFA right, padding, the DataModule."""

import cv2
import numpy as np
import pytest
import torch

from rawdiff.data import prepare as prep
from rawdiff.data.dataset import RawRGBDataModule, RawRGBDataset, read_index
from rawdiff.data.layout import target_path
from rawdiff.raw.frame import CFA_PATTERNS, RawFrame, flip_cfa, plane_offsets, planes_to_mosaic
from rawdiff.raw.io import write_raw

CODES = {"R": 1, "G1": 2, "G2": 3, "B": 4}


def _write_pair(folder, name, frame, rgb):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name + ".npy")
    write_raw(frame, path)
    assert cv2.imwrite(target_path(str(path)), np.ascontiguousarray(rgb[:, :, ::-1]))
    return path


def _id_pair(h, w, cfa):
    """A mosaic whose value is the pixel's id, and a target whose colour encodes the same position."""
    ids = np.arange(h * w, dtype=np.uint16).reshape(h, w)
    rows, cols = np.mgrid[0:h, 0:w]
    rgb = np.stack([rows, cols, np.zeros_like(rows)], axis=2).astype(np.uint8)
    return RawFrame(ids, cfa=cfa, black_level=0, white_level=65535), rgb


def _labelled(h, w, cfa):
    """A mosaic whose value names the colour of its CFA site (R=1, G1=2, G2=3, B=4, x1000)."""
    mosaic = np.zeros((h, w), np.uint16)
    for name, (r, c) in plane_offsets(cfa).items():
        mosaic[r::2, c::2] = CODES[name] * 1000
    return RawFrame(mosaic, cfa=cfa, black_level=0, white_level=65535), np.zeros((h, w, 3), np.uint8)


def _ids_from(item, cfa):
    """Pixel ids of the returned planes, laid out as a mosaic, and (row, col) from the target."""
    _, _, hflip, vflip = item["crop"].tolist()
    mosaic = planes_to_mosaic(item["raw"].numpy(), flip_cfa(cfa, horizontal=bool(hflip), vertical=bool(vflip)))
    ids = np.rint(mosaic.astype(np.float64) * 65535).astype(np.int64)
    rgb = np.rint(item["rgb"].numpy() * 255).astype(np.int64)
    return ids, rgb[0], rgb[1]


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_flips_keep_the_plane_order(tmp_path, cfa):
    path = _write_pair(tmp_path, "lab", *_labelled(12, 16, cfa))
    ds = RawRGBDataset([str(path)], crop_size=8, train=True)
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        item = ds[0]
        seen.add(tuple(item["crop"][2:].tolist()))
        planes = np.rint(item["raw"].numpy() * 65535).astype(int)
        for k, name in enumerate(("R", "G1", "G2", "B")):
            assert np.all(planes[k] == CODES[name] * 1000), (cfa, name, item["crop"])
        assert item["crop"][0] % 2 == 0 and item["crop"][1] % 2 == 0
    assert seen == {(0, 0), (0, 1), (1, 0), (1, 1)}


@pytest.mark.parametrize("cfa", ["RGGB", "GBRG"])
def test_raw_and_rgb_stay_aligned(tmp_path, cfa):
    h, w = 20, 30
    path = _write_pair(tmp_path, "ids", *_id_pair(h, w, cfa))
    ds = RawRGBDataset([str(path)], crop_size=(8, 12), train=True)
    torch.manual_seed(1)
    for _ in range(30):
        item = ds[0]
        assert item["raw"].shape == (4, 4, 6) and item["rgb"].shape == (3, 8, 12)
        ids, rows, cols = _ids_from(item, cfa)
        np.testing.assert_array_equal(ids, rows * w + cols)  # every RAW pixel sits under its target pixel
        top, left, hflip, vflip = item["crop"].tolist()
        expected = np.arange(h * w).reshape(h, w)[top:top + 8, left:left + 12]
        expected = expected[:, ::-1] if hflip else expected
        expected = expected[::-1] if vflip else expected
        np.testing.assert_array_equal(ids, expected)


def test_padding_mirrors_whole_tiles(tmp_path):
    h, w = 10, 14
    path = _write_pair(tmp_path, "small", *_id_pair(h, w, "GRBG"))
    ds = RawRGBDataset([str(path)], crop_size=32, train=True)
    torch.manual_seed(2)
    for _ in range(8):
        item = ds[0]
        assert item["raw"].shape == (4, 16, 16) and item["rgb"].shape == (3, 32, 32)
        ids, rows, cols = _ids_from(item, "GRBG")
        np.testing.assert_array_equal(ids, rows * w + cols)
        # each site keeps its colour: the parity of the source row / column is that of the
        # output position (flipped when the crop was flipped)
        hflip, vflip = item["crop"][2].item(), item["crop"][3].item()
        out_rows, out_cols = np.mgrid[0:32, 0:32]
        np.testing.assert_array_equal((ids // w) % 2, (out_rows % 2) ^ vflip)
        np.testing.assert_array_equal((ids % w) % 2, (out_cols % 2) ^ hflip)
        top, left = item["crop"][0].item(), item["crop"][1].item()
        assert top < 0 and left < 0


def test_pad_mode_none_uses_the_whole_frame(tmp_path):
    path = _write_pair(tmp_path, "small", *_id_pair(10, 14, "RGGB"))
    item = RawRGBDataset([str(path)], crop_size=32, train=False, pad_mode="none")[0]
    assert item["rgb"].shape == (3, 10, 14)


def test_eval_mode_is_a_deterministic_centre_crop(tmp_path):
    h, w = 22, 34
    path = _write_pair(tmp_path, "ids", *_id_pair(h, w, "BGGR"))
    ds = RawRGBDataset([str(path)], crop_size=8, train=False)
    a, b = ds[0], ds[0]
    assert torch.equal(a["raw"], b["raw"]) and torch.equal(a["rgb"], b["rgb"])
    assert a["crop"].tolist() == [6, 12, 0, 0]
    whole = RawRGBDataset([str(path)], crop_size=None, train=False)[0]
    assert whole["rgb"].shape == (3, h, w) and whole["raw"].shape == (4, h // 2, w // 2)
    ids, rows, cols = _ids_from(whole, "BGGR")
    np.testing.assert_array_equal(ids, np.arange(h * w).reshape(h, w))


def test_bad_crop_size():
    with pytest.raises(ValueError, match="even"):
        RawRGBDataset([], crop_size=7)
    with pytest.raises(ValueError, match="even"):
        RawRGBDataset([], crop_size=(8, 9))


def test_cache_reads_each_frame_once(tmp_path, monkeypatch):
    path = _write_pair(tmp_path, "ids", *_id_pair(12, 12, "RGGB"))
    ds = RawRGBDataset([str(path)], crop_size=4)
    calls = []
    real = RawRGBDataset._read
    monkeypatch.setattr(RawRGBDataset, "_read", staticmethod(lambda p: calls.append(p) or real(p)))
    for _ in range(5):
        ds[0]
    assert len(calls) == 1
    nocache = RawRGBDataset([str(path)], crop_size=4, cache=False)
    nocache[0], nocache[0]
    assert len(calls) == 3


def test_missing_target(tmp_path):
    frame, _ = _id_pair(8, 8, "RGGB")
    write_raw(frame, tmp_path / "x.npy")
    with pytest.raises(FileNotFoundError, match="target"):
        RawRGBDataset([str(tmp_path / "x.npy")], crop_size=4)[0]


# --- on a prepared dataset ------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    src = tmp_path_factory.mktemp("photos")
    for i in range(4):
        small = np.random.default_rng(i).integers(0, 256, size=(3, 3, 3)).astype(np.uint8)
        rgb = cv2.resize(small, (72 + 4 * i, 64), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(src / ("p%d.png" % i)), rgb)
    out = tmp_path_factory.mktemp("data")
    prep.prepare([str(src)], str(out), progress=False, verbose=False)
    return out


def test_crop_equals_crop_of_whole_frame_target(prepared):
    paths = read_index(str(prepared / "train.txt"))
    ds = RawRGBDataset(str(prepared / "train.txt"), crop_size=32, train=True)
    torch.manual_seed(3)
    from rawdiff.raw import read_raw

    for i in range(len(ds)):
        item = ds[i]
        top, left, hflip, vflip = item["crop"].tolist()
        frame = read_raw(paths[i])
        whole = cv2.imread(target_path(paths[i]))[:, :, ::-1].astype(np.float32) / 255
        rgb = whole[top:top + 32, left:left + 32]
        mosaic = frame.normalize()[top:top + 32, left:left + 32]
        cfa = frame.cfa
        if hflip:
            rgb, mosaic, cfa = rgb[:, ::-1], mosaic[:, ::-1], flip_cfa(cfa, horizontal=True)
        if vflip:
            rgb, mosaic, cfa = rgb[::-1], mosaic[::-1], flip_cfa(cfa, vertical=True)
        np.testing.assert_array_equal(item["rgb"].numpy(), rgb.transpose(2, 0, 1))
        planes = planes_to_mosaic(item["raw"].numpy(), cfa)
        np.testing.assert_array_equal(planes, mosaic)


def test_datamodule(prepared):
    dm = RawRGBDataModule(root=str(prepared), crop_size=16, batch_size=2)
    assert dm.train_index == str(prepared / "train.txt")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["raw"].shape == (2, 4, 8, 8) and batch["raw"].dtype == torch.float32
    assert batch["rgb"].shape == (2, 3, 16, 16)
    assert 0.0 <= float(batch["raw"].min()) and float(batch["raw"].max()) <= 1.0
    assert len(batch["path"]) == 2
    val = next(iter(dm.val_dataloader()))
    assert val["rgb"].shape[1:] == (3, 16, 16)
    whole = RawRGBDataModule(root=str(prepared), crop_size=16, val_crop_size=None)
    assert whole.val_batch_size == 1
    item = next(iter(whole.test_dataloader()))
    assert item["rgb"].shape[2:] == (64, item["rgb"].shape[3])
    with pytest.raises(ValueError):
        RawRGBDataModule()
    with pytest.raises(FileNotFoundError):
        RawRGBDataModule(train_index=str(prepared / "nope.txt")).train_dataloader()


def test_an_epoch_of_so_many_crops(prepared):
    frames = len(read_index(str(prepared / "train.txt")))
    dm = RawRGBDataModule(root=str(prepared), crop_size=16, batch_size=3, sampling="sqrt_pixels", epoch_crops=12)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(loader) == 4 and sum(len(b["path"]) for b in loader) == 12 != frames
    plain = RawRGBDataModule(root=str(prepared), crop_size=16, batch_size=1, sampling="sqrt_pixels")
    plain.setup("fit")
    assert len(plain.train_dataloader()) == frames
    for bad in ({"epoch_crops": 0, "sampling": "pixels"}, {"epoch_crops": 8, "sampling": "frame"}):
        with pytest.raises(ValueError, match="epoch_crops"):
            RawRGBDataModule(root=str(prepared), **bad)


def test_registered_for_configs():
    from rawdiff.config import get_target

    assert get_target("rawrgb") is RawRGBDataModule
