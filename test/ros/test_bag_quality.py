"""``rawdiff bag encode --quality Q``: every frame of a log, and of a collection on Ray, coded
at Q; a log at the highest quality cut frame by frame is the log at a lower one; a quality
outside the model's range is one line before any work; a collection rerun at another
quality codes its files again."""

import os

import pytest

rosbag = pytest.importorskip("rosbag")
rospy = pytest.importorskip("rospy")
pytest.importorskip("rawdiff.msg")

from ros_harness import FIXTURE_MODEL, bayer_image  # noqa: E402

from rawdiff.cli import main  # noqa: E402
from rawdiff.codec import truncate  # noqa: E402
from rawdiff.codec.bitstream import read_header  # noqa: E402

H, W = 48, 64
TOPIC = "/camera/image_raw"
ENCODE = ["bag", "encode", "--topic", TOPIC, "--model", FIXTURE_MODEL, "-q"]


@pytest.fixture(scope="module")
def codec():
    from rawdiff.codec import Codec

    return Codec.load(FIXTURE_MODEL, device="cpu", backend="torch")


def make_bag(path, n, first=1000):
    with rosbag.Bag(str(path), "w") as bag:
        for i in range(n):
            t = rospy.Time(first + i, 0)
            bag.write(TOPIC, bayer_image(H, W, stamp=t, frame_id="cam", seed=i), t)


def messages(path, topic):
    with rosbag.Bag(str(path)) as bag:
        return [msg for _, msg, _ in bag.read_messages(topics=[topic])]


def qualities(path):
    return [read_header(bytes(m.data)).quality for m in messages(path, "/compressed_codes")]


def test_bag_encode_codes_every_frame_at_the_quality_and_a_cut_log_equals_a_lower_one(tmp_path, capsys, codec):
    from rawdiff.ros.transcode import encode_image

    top = codec.qualities
    assert top >= 2, "needs a staged model (test/fixtures/model)"
    raw = tmp_path / "raw.bag"
    make_bag(raw, 3)
    out = {}
    for quality in (1, top):
        out[quality] = tmp_path / ("q%d.bag" % quality)
        assert main(ENCODE + [str(raw), str(out[quality]), "--quality", str(quality), "--backend", "torch"]) == 0
        assert "at quality %d of %d" % (quality, top) in capsys.readouterr().out
        assert qualities(out[quality]) == [quality] * 3
    frames = messages(raw, TOPIC)
    low, high = messages(out[1], "/compressed_codes"), messages(out[top], "/compressed_codes")
    for frame, a, b in zip(frames, low, high):
        assert bytes(a.data) == bytes(encode_image(codec, frame, quality=1)[0].data)
        assert truncate(bytes(b.data), 1) == bytes(a.data)  # cutting the log down = coding at 1
    # without --quality: the model's default
    assert main(ENCODE + [str(raw), str(tmp_path / "default.bag")]) == 0
    assert "at quality %d of %d" % (codec.default_quality, top) in capsys.readouterr().out
    assert qualities(tmp_path / "default.bag") == [codec.default_quality] * 3
    # --static-tables: the same codes in streams of format version 6 or before (here 4: no detail
    # statistics), for receivers not yet updated
    assert main(ENCODE + [str(raw), str(tmp_path / "static.bag"), "--quality", "1", "--static-tables"]) == 0
    static = messages(tmp_path / "static.bag", "/compressed_codes")
    assert [read_header(bytes(m.data)).version for m in static] == [4] * 3
    assert [read_header(bytes(m.data)).version for m in low] == [9] * 3  # adaptive coding, its counts aged
    for a, b in zip(low, static):
        for x, y in zip(codec.parse(bytes(a.data))[1], codec.parse(bytes(b.data))[1]):
            assert (x == y).all()


@pytest.mark.parametrize("extra", [[], ["--out-dir", "{tmp}/coll"]])
def test_a_quality_outside_the_model_is_one_line_before_any_work(tmp_path, capsys, codec, extra):
    raw = tmp_path / "raw.bag"
    make_bag(raw, 1)
    paths = [str(raw)] + ([str(tmp_path / "o.bag")] if not extra else [])
    extra = [a.format(tmp=tmp_path) for a in extra]
    assert main(ENCODE + paths + extra + ["--quality", str(codec.qualities + 1)]) == 1
    err = capsys.readouterr().err.strip().splitlines()  # (a log line of the encoder's backend may come first)
    assert err[-1] == ("rawdiff bag encode: error: quality %d is not one of this model's operating points 1..%d"
                       % (codec.qualities + 1, codec.qualities)), err
    assert not [line for line in err if "Traceback" in line or line.startswith("  ")]
    assert not (tmp_path / "o.bag").exists() and not (tmp_path / "coll").exists()
    with pytest.raises(SystemExit):  # argparse: not a positive integer
        main(ENCODE + paths + extra + ["--quality", "0"])


def test_a_collection_is_coded_at_the_quality_and_a_rerun_at_another_codes_it_again(tmp_path, capsys, codec):
    pytest.importorskip("ray")
    logs, out = tmp_path / "logs", tmp_path / "codes"
    logs.mkdir()
    make_bag(logs / "a.bag", 2, 1000)
    make_bag(logs / "b.bag", 3, 2000)
    run = ENCODE + [str(logs), "--out-dir", str(out), "--workers", "1"]
    assert main(run + ["--quality", "2"]) == 0
    first = capsys.readouterr().out
    assert "quality 2 of %d" % codec.qualities in first.splitlines()[0]
    assert qualities(out / "a.bag") == [2, 2] and qualities(out / "b.bag") == [2, 2, 2]
    assert main(run + ["--quality", "2"]) == 0  # the same quality: complete, left alone
    assert next(line for line in capsys.readouterr().out.splitlines() if line.startswith("complete")).split()[1] == "2"
    before = os.stat(str(out / "a.bag")).st_mtime_ns
    assert main(run + ["--quality", "1"]) == 0  # another quality: coded again
    again = capsys.readouterr().out
    assert next(line for line in again.splitlines() if line.startswith("encoded")).split()[2] == "2"
    assert qualities(out / "a.bag") == [1, 1] and qualities(out / "b.bag") == [1, 1, 1]
    assert os.stat(str(out / "a.bag")).st_mtime_ns != before
