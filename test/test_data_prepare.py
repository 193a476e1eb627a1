"""rawdiff.data.prepare and its parts: paired RAW/RGB frames, split rules, index files, re-runs,
sources from paths, the frame-reader registry."""

import json
import os
import struct
import zlib

import cv2
import numpy as np
import pytest

from rawdiff.data import readers
from rawdiff.data.corpus import BAG, Source
from rawdiff.data.frames import load_photo
from rawdiff.data.layout import SPLITS, split_groups, target_path
from rawdiff.data.prepare import add_arguments, prepare, run
from rawdiff.data.sources import PrepareError, collect_sources
from rawdiff.raw import read_raw
from rawdiff.raw.cicp import png_cicp
from rawdiff.raw.frame import RawFrame
from rawdiff.raw.io import write_raw
from rawdiff.raw.isp import render


def _photo(h, w, seed):
    """A smooth colourful 8-bit RGB image."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(3, 4, 3)).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _write_png(path, rgb):
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    photos = root / "photos"
    (photos / "sub").mkdir(parents=True)
    for i in range(5):
        _write_png(photos / ("p%d.png" % i), _photo(64 + 2 * i, 80, i))
    _write_png(photos / "sub" / "odd.png", _photo(71, 67, 9))  # odd size -> 70x66
    gray = np.repeat(_photo(64, 64, 10)[:, :, :1], 3, axis=2)
    _write_png(photos / "gray.png", gray)  # grayscale -> skipped
    _write_png(photos / "tiny.png", _photo(40, 90, 11))  # < 64 px -> skipped
    (photos / "notes.md").write_text("not an image")  # ignored inside a folder
    video = root / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (80, 64))
    assert writer.isOpened()
    for i in range(10):
        writer.write(np.ascontiguousarray(_photo(64, 80, 100 + i)[:, :, ::-1]))
    writer.release()
    return root


@pytest.fixture(scope="module")
def prepared(sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    manifest = prepare([str(sources / "photos"), str(sources / "clip.avi")], str(out), seed=0, every=3,
                            progress=False, verbose=False)
    return out, manifest


def _index(out):
    return {s: (out / (s + ".txt")).read_text().split() for s in SPLITS}


def test_layout_and_index(prepared):
    out, manifest = prepared
    index = _index(out)
    listed = [p for paths in index.values() for p in paths]
    assert len(listed) == len(set(listed)) == manifest["summary"]["frames"]
    for rel in listed:
        assert not os.path.isabs(rel)
        assert (out / rel).is_file() and rel.endswith(".npy")
        assert (out / rel).with_suffix(".json").is_file()  # write_raw's sidecar
        assert os.path.isfile(target_path(str(out / rel)))
    saved = json.loads((out / "manifest.json").read_text())
    assert saved["summary"] == manifest["summary"]
    # 6 usable photos + 1 video with frames 0, 3, 6, 9
    assert manifest["summary"]["sources"] == 7
    assert manifest["summary"]["frames"] == 10
    video = next(e for e in manifest["sources"] if e["kind"] == "video")
    assert [fr["index"] for fr in video["frames"]] == [0, 3, 6, 9]
    for e in manifest["sources"]:
        assert set(e) >= {"name", "path", "origin", "licence", "kind", "group", "split", "frames"}
        for fr in e["frames"]:
            assert fr["meta"]["method"] == "unprocess" and fr["meta"]["white_level"] == 4095
            assert fr["height"] % 2 == 0 and fr["width"] % 2 == 0


def test_skips_are_recorded(prepared):
    _, manifest = prepared
    skipped = {os.path.basename(e["path"]): e["skipped"] for e in manifest["sources"] if e.get("skipped")}
    assert set(skipped) == {"gray.png", "tiny.png"}
    assert "grayscale" in skipped["gray.png"]
    assert "too small" in skipped["tiny.png"]
    assert all(e["split"] is None for e in manifest["sources"] if e.get("skipped"))
    assert manifest["summary"]["skipped"] == 2


def test_odd_sizes_cropped_to_even(prepared):
    out, manifest = prepared
    odd = next(e for e in manifest["sources"] if e["path"].endswith("odd.png"))
    frame = read_raw(out / odd["frames"][0]["raw"])
    assert frame.shape == (70, 66)
    assert frame.white_level == 4095 and frame.mosaic.max() <= 4095
    assert frame.wb_gains is not None and frame.color_matrix is not None


def test_no_source_in_two_splits(prepared):
    out, manifest = prepared
    index = _index(out)
    split_of_folder = {}
    for split, paths in index.items():
        for rel in paths:
            folder = os.path.dirname(rel)
            assert split_of_folder.setdefault(folder, split) == split
    assert all(index.values())  # 7 groups: every split has one
    for e in manifest["sources"]:
        for fr in e["frames"]:
            assert fr["raw"] in index[e["split"]]


def test_target_is_the_isp_render_of_the_whole_frame(prepared):
    out, manifest = prepared
    entry = next(e for e in manifest["sources"] if e["frames"])
    rel = entry["frames"][0]["raw"]
    frame = read_raw(out / rel)
    target = cv2.imread(target_path(str(out / rel)))[:, :, ::-1]
    np.testing.assert_array_equal(target, render(frame))


def test_deterministic_and_order_independent(prepared, sources, tmp_path):
    out, _ = prepared
    out2 = tmp_path / "again"
    prepare([str(sources / "clip.avi"), str(sources / "photos")], str(out2), seed=0, every=3,
                 progress=False, verbose=False)
    assert _index(out) == _index(out2)
    for rel in sum(_index(out).values(), []):
        np.testing.assert_array_equal(np.load(out / rel), np.load(out2 / rel))


def test_seed_changes_frames(sources, tmp_path):
    photo = str(sources / "photos" / "p0.png")
    a = prepare([photo], str(tmp_path / "a"), seed=0, progress=False, verbose=False)
    b = prepare([photo], str(tmp_path / "b"), seed=1, progress=False, verbose=False)
    ra = np.load(tmp_path / "a" / a["sources"][0]["frames"][0]["raw"])
    rb = np.load(tmp_path / "b" / b["sources"][0]["frames"][0]["raw"])
    assert not np.array_equal(ra, rb)


def test_rerun_skips_done_sources_and_refuses_other_settings(prepared, sources):
    out, manifest = prepared
    rel = _index(out)["train"][0]
    mtime = os.path.getmtime(out / rel)
    again = prepare([str(sources / "photos"), str(sources / "clip.avi")], str(out), seed=0, every=3,
                         progress=False, verbose=False)
    assert again["summary"]["reused"] == len(manifest["sources"])
    assert os.path.getmtime(out / rel) == mtime
    assert _index(out)["train"][0] == rel
    with pytest.raises(PrepareError, match="other settings"):
        prepare([str(sources / "clip.avi")], str(out), seed=0, every=2, progress=False, verbose=False)


def test_overwrite_redoes(sources, tmp_path):
    clip = str(sources / "clip.avi")
    prepare([clip], str(tmp_path), every=5, progress=False, verbose=False)
    m = prepare([clip], str(tmp_path), every=4, overwrite=True, progress=False, verbose=False)
    assert [fr["index"] for fr in m["sources"][0]["frames"]] == [0, 4, 8]
    assert m["summary"]["reused"] == 0
    assert sorted(os.listdir(tmp_path / "frames" / "user__clip.avi")) == sorted(
        ["source.json"] + ["f%06d%s" % (i, ext) for i in (0, 4, 8) for ext in (".npy", ".json", ".rgb.png")])


def test_start_takes_the_video_frames_between_those_taken_before(sources, tmp_path):
    m = prepare([str(sources / "clip.avi")], str(tmp_path), every=4, start=2, progress=False, verbose=False)
    assert [fr["index"] for fr in m["sources"][0]["frames"]][:2] == [2, 6]
    assert m["sources"][0]["frames"][0]["raw"].endswith("f000002.npy")
    with pytest.raises(PrepareError, match="start"):
        prepare([str(sources / "clip.avi")], str(tmp_path / "x"), start=-1, progress=False, verbose=False)


def test_max_frames_and_clean_target(sources, tmp_path):
    m = prepare([str(sources / "clip.avi")], str(tmp_path), every=1, max_frames=2, clean_target=True,
                     progress=False, verbose=False)
    frames = m["sources"][0]["frames"]
    assert [fr["index"] for fr in frames] == [0, 1]
    raw = read_raw(tmp_path / frames[0]["raw"])
    target = cv2.imread(str(tmp_path / frames[0]["target"]))[:, :, ::-1]
    assert not np.array_equal(target, render(raw))  # rendered from the noise-free twin


def test_raw_mosaic_sources_pass_through(tmp_path):
    src = tmp_path / "raws"
    src.mkdir()
    mosaic = np.random.default_rng(0).integers(0, 1024, size=(67, 81)).astype(np.uint16)
    write_raw(read_raw_frame(mosaic), src / "shot.npy")
    m = prepare([str(src)], str(tmp_path / "out"), progress=False, verbose=False)
    (entry,) = m["sources"]
    assert entry["kind"] == "raw"
    got = read_raw(tmp_path / "out" / entry["frames"][0]["raw"])
    np.testing.assert_array_equal(got.mosaic, mosaic[:66, :80])
    assert got.cfa == "GBRG" and got.black_level == 64.0 and got.white_level == 1023


def read_raw_frame(mosaic):
    return RawFrame(mosaic, cfa="GBRG", black_level=64, white_level=1023, wb_gains=[2.0, 1.0, 1.5])


# --- the split rule -------------------------------------------------------------------------


def test_split_proportions_and_determinism():
    groups = ["g%03d" % i for i in range(100)]
    a = split_groups(groups, seed=0)
    assert a == split_groups(list(reversed(groups)), seed=0)
    counts = {s: sum(v == s for v in a.values()) for s in SPLITS}
    assert counts == {"train": 60, "val": 20, "test": 20}
    b = split_groups(groups, seed=1)
    assert a != b
    assert {s: sum(v == s for v in b.values()) for s in SPLITS} == counts


@pytest.mark.parametrize("n", range(1, 12))
def test_split_few_groups(n):
    split = split_groups(["s%d" % i for i in range(n)], seed=3)
    counts = {s: sum(v == s for v in split.values()) for s in SPLITS}
    assert sum(counts.values()) == n
    assert counts["train"] >= 1
    if n >= 3:
        assert min(counts.values()) >= 1
        assert counts["train"] >= max(counts["val"], counts["test"])


def test_held_groups_keep_their_split_and_the_rule_cuts_the_others_alone():
    old = ["old%02d" % i for i in range(10)]
    held = {g: ("test" if i < 2 else "val" if i < 4 else "train") for i, g in enumerate(old)}
    new = ["new%02d" % i for i in range(20)]
    split = split_groups(old + new, seed=0, held=held)
    assert {g: split[g] for g in old} == held
    assert {g: split[g] for g in new} == split_groups(new, seed=0)
    with pytest.raises(ValueError, match="held split"):
        split_groups(old, held={"old00": "holdout"})


def test_test_frames_are_capped_and_big_groups_pass_over_to_val_or_train():
    groups = ["g%02d" % i for i in range(30)]
    plain = split_groups(groups, seed=2)
    first_test = sorted(g for g in groups if plain[g] == "test")
    frames = {g: 1 for g in groups}
    frames[first_test[0]] = 10  # a video: too many frames for the cap
    capped = split_groups(groups, seed=2, frames=frames, max_test_frames=4)
    test = [g for g in groups if capped[g] == "test"]
    assert len(test) == 4 and sum(frames[g] for g in test) == 4
    assert capped[first_test[0]] in ("val", "train")
    assert sum(v == "val" for v in capped.values()) == sum(v == "val" for v in plain.values())
    # no cap: the same split as before
    assert split_groups(groups, seed=2, frames=frames) == plain
    assert split_groups(groups, seed=2, frames=frames, max_test_frames=0) != plain
    assert "test" not in split_groups(groups, seed=2, max_test_frames=0).values()
    # val: the same cap; a group passed over goes to train
    first_val = sorted(g for g in groups if plain[g] == "val")[0]
    frames = {g: 1 for g in groups}
    frames[first_val] = 10
    capped = split_groups(groups, seed=2, frames=frames, max_val_frames=3)
    assert sum(v == "val" for v in capped.values()) == 3 and capped[first_val] == "train"
    assert {g for g in groups if capped[g] == "test"} == {g for g in groups if plain[g] == "test"}


def test_held_sources_and_the_test_cut(tmp_path):
    """Held sources keep their split and size; test frames the rule placed are cut, from the
    written frame and its target, and the cut follows the split across re-runs."""
    names = ["h_test", "h_val"] + ["n%d" % i for i in range(8)]
    for i, name in enumerate(names):
        _write_png(tmp_path / (name + ".png"), _photo(96, 128, 50 + i))
    srcs = [Source(str(tmp_path / (n + ".png")), "pkg", name="pkg/" + n,
                   split={"h_test": "test", "h_val": "val"}.get(n, "")) for n in names]
    out = tmp_path / "out"
    m = prepare(srcs, str(out), max_test_frames=1, test_crop=(40, 62), progress=False, verbose=False)
    by_name = {e["name"]: e for e in m["sources"]}
    assert by_name["pkg/h_test"]["split"] == "test" and by_name["pkg/h_val"]["split"] == "val"
    held_frame = by_name["pkg/h_test"]["frames"][0]
    assert (held_frame["height"], held_frame["width"]) == (96, 128) and "cut_from" not in held_frame
    new_test = [e for e in m["sources"] if e["split"] == "test" and not e["held_split"]]
    assert len(new_test) == 1  # 8 new groups: round(1.6) = 2 for test, capped at 1 frame
    fr = new_test[0]["frames"][0]
    assert (fr["height"], fr["width"]) == (40, 62)
    assert fr["cut_from"] == {"raw": fr["cut_from"]["raw"], "top": 28, "left": 32, "height": 96, "width": 128}
    assert fr["raw"].endswith("frame.crop62x40.npy") and fr["raw"] in _index(out)["test"]
    assert fr["cut_from"]["raw"] not in sum(_index(out).values(), [])
    whole = read_raw(out / fr["cut_from"]["raw"])
    part = read_raw(out / fr["raw"])
    np.testing.assert_array_equal(part.mosaic, whole.mosaic[28:68, 32:94])
    assert part.cfa == whole.cfa and part.extra["cut_from"] == [28, 32, 96, 128]
    np.testing.assert_array_equal(part.wb_gains, whole.wb_gains)
    whole_target = cv2.imread(target_path(str(out / fr["cut_from"]["raw"])))
    np.testing.assert_array_equal(cv2.imread(str(out / fr["target"])), whole_target[28:68, 32:94])
    assert m["summary"]["cut_test_frames"] == 1 and m["summary"]["held_groups"] == 2
    assert (out / "test_held.txt").read_text().split() == [held_frame["raw"]]
    assert m["split_rule"] == {"held_groups": ["pkg/h_test", "pkg/h_val"], "max_test_frames": 1,
                               "max_val_frames": None, "test_crop": [40, 62]}
    # re-run: everything reused, the same index; without the cut, the cut files go away
    index = _index(out)
    again = prepare(srcs, str(out), max_test_frames=1, test_crop=(40, 62), progress=False, verbose=False)
    assert again["summary"]["reused"] == len(names) and _index(out) == index
    prepare(srcs, str(out), max_test_frames=1, progress=False, verbose=False)
    assert not (out / fr["raw"]).exists() and not (out / fr["target"]).exists()
    prepare(srcs[2:], str(out), progress=False, verbose=False)  # nothing held any more
    assert not (out / "test_held.txt").exists()
    assert fr["cut_from"]["raw"] in _index(out)["test"]


def test_sources_of_one_group_held_in_two_splits_are_refused(tmp_path):
    for n in "ab":
        _write_png(tmp_path / (n + ".png"), _photo(64, 64, ord(n)))
    srcs = [Source(str(tmp_path / (n + ".png")), "pkg", name="pkg/" + n, group="pair", split=split)
            for n, split in (("a", "test"), ("b", "val"))]
    with pytest.raises(PrepareError, match="pair.*different splits"):
        prepare(srcs, str(tmp_path / "out"), progress=False, verbose=False)
    with pytest.raises(PrepareError, match="test_crop"):
        prepare(srcs[:1], str(tmp_path / "out"), test_crop=(41, 64), progress=False, verbose=False)


def test_groups_stay_together(tmp_path):
    for name in ("a", "b", "c", "d", "e", "f"):
        _write_png(tmp_path / (name + ".png"), _photo(64, 64, ord(name)))
    srcs = [Source(str(tmp_path / (n + ".png")), "test", name="test/" + n,
                   group="pair" if n in "ab" else "") for n in "abcdef"]
    m = prepare(srcs, str(tmp_path / "out"), progress=False, verbose=False)
    split = {e["name"]: e["split"] for e in m["sources"]}
    assert split["test/a"] == split["test/b"]
    assert m["summary"]["groups"] == 5


# --- collecting sources ----------------------------------------------------------------------


def test_collect_sources(sources, tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("# photos\n%s\n\n%s\n" % (sources / "photos" / "p1.png", os.path.relpath(
        sources / "clip.avi", tmp_path)))
    got = collect_sources([str(lst), str(sources / "photos" / "p2.png")])
    assert [(s.kind, os.path.basename(s.path)) for s in got] == [
        ("photo", "p1.png"), ("video", "clip.avi"), ("photo", "p2.png")]
    assert len({s.name for s in got}) == 3
    folder = collect_sources([str(sources / "photos")])
    assert "user/photos/sub/odd.png" in [s.name for s in folder]
    assert not any(s.path.endswith(".md") for s in folder)
    bag = tmp_path / "x.bag"
    bag.write_bytes(b"")
    with pytest.raises(PrepareError, match="topic"):
        collect_sources([str(bag)])
    assert collect_sources([str(bag)], topic="/cam")[0].topic == "/cam"
    with pytest.raises(PrepareError, match="not found"):
        collect_sources([str(tmp_path / "missing.png")])
    (tmp_path / "x.xyz").write_text("")
    with pytest.raises(PrepareError, match="unknown source type"):
        collect_sources([str(tmp_path / "x.xyz")])


def test_collect_sources_skips_prepared_targets(prepared):
    out, _ = prepared
    found = collect_sources([str(out)])
    assert found and all(s.kind == "raw" for s in found)  # the .npy frames; no .rgb.png targets


# --- the frame-reader registry ---------------------------------------------------------------


def test_a_kind_without_a_reader_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.delitem(readers._READERS, BAG, raising=False)  # as where rawdiff.ros.bag is not imported
    bag = tmp_path / "drive.bag"
    bag.write_bytes(b"")
    with pytest.raises(PrepareError, match="no reader for bag sources.*rawdiff.ros.bag"):
        prepare([str(bag)], str(tmp_path / "out"), topic="/cam", progress=False, verbose=False)
    assert not (tmp_path / "out" / "frames").exists()


def test_a_registered_reader_gives_the_frames_of_its_kind(tmp_path, monkeypatch):
    seen = {}

    def fake_bag_reader(src, options):
        seen.update(topic=src.topic, every=options.every, conversion=options.conversion)
        mosaic = np.random.default_rng(1).integers(0, 4096, size=(70, 66)).astype(np.uint16)
        yield "m000000", 0, RawFrame(mosaic, cfa="GRBG", white_level=4095), {"bag_time": 10.0}

    monkeypatch.setitem(readers._READERS, BAG, fake_bag_reader)
    bag = tmp_path / "drive.bag"
    bag.write_bytes(b"")
    m = prepare([str(bag)], str(tmp_path / "out"), topic="/cam", every=2, conversion={"white_level": 4095},
                progress=False, verbose=False)
    assert seen == {"topic": "/cam", "every": 2, "conversion": {"white_level": 4095}}
    (entry,) = m["sources"]
    assert entry["kind"] == "bag" and entry["frames"][0]["meta"] == {"bag_time": 10.0}
    got = read_raw(tmp_path / "out" / entry["frames"][0]["raw"])
    assert got.cfa == "GRBG" and got.shape == (70, 66)
    assert os.path.isfile(tmp_path / "out" / entry["frames"][0]["target"])


# --- colour of photos ------------------------------------------------------------------------


def _png_with_cicp(path, rgb16, cicp):
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb16[:, :, ::-1]))
    assert ok
    data = buf.tobytes()
    body = b"cICP" + bytes(cicp)
    chunk = struct.pack(">I", 4) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    path.write_bytes(data[:33] + chunk + data[33:])  # after the 8-byte signature and IHDR


def test_hlg_bt2020_png_converted(tmp_path):
    rgb = np.full((64, 64, 3), int(0.75 * 65535), np.uint16)  # HLG reference white
    rgb[:, :32, 0] = 20000
    path = tmp_path / "hlg.png"
    _png_with_cicp(path, rgb, (9, 18, 0, 1))
    assert png_cicp(str(path)) == (9, 18, 0, 1)
    srgb, note = load_photo(str(path))
    assert "BT.2020/HLG" in note
    np.testing.assert_allclose(srgb[0, -1], [1.0, 1.0, 1.0], atol=2e-3)
    plain = tmp_path / "plain.png"
    cv2.imwrite(str(plain), rgb[:, :, ::-1])
    assert png_cicp(str(plain)) is None
    srgb, note = load_photo(str(plain))
    assert note == "" and srgb[0, -1, 0] == pytest.approx(0.75, abs=1e-4)


def test_run_glue(sources, tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--source", str(sources / "photos" / "p3.png"), "--out", str(tmp_path),
                              "--seed", "5", "--cfa", "BGGR"])
    assert run(args) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["params"]["seed"] == 5
    assert manifest["sources"][0]["frames"][0]["cfa"] == "BGGR"
    with pytest.raises(PrepareError):
        run(parser.parse_args(["--out", str(tmp_path)]))
