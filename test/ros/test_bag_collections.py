"""Collections of logs on Ray: ``rawdiff bag encode|decode IN... --out-dir DIR``.

Real bags and MCAP files, a real local Ray started and stopped by the command (one or two
CPUs), the fixture model. A run killed with SIGKILL is resumed; bad files are one line
each and the rest is done; outputs are checked by message counts, not existence."""

import io
import os
import signal
import subprocess
import sys
import time

import pytest

rosbag = pytest.importorskip("rosbag")
rospy = pytest.importorskip("rospy")
pytest.importorskip("rawdiff.msg")
ray = pytest.importorskip("ray")
mcap_writer = pytest.importorskip("mcap.writer")

from mcap.reader import make_reader  # noqa: E402
from ros_harness import FIXTURE_MODEL, bayer_image  # noqa: E402

from rawdiff.cli import main  # noqa: E402
from rawdiff.outputs import part_path  # noqa: E402
from rawdiff.ros.collection import plan_jobs, stale_parts  # noqa: E402
from rawdiff.ros.logs import log_info, open_log  # noqa: E402

H, W = 32, 48
TOPIC = "/camera/image_raw"
ENCODE = ["bag", "encode", "--topic", TOPIC, "--model", FIXTURE_MODEL, "-q"]


@pytest.fixture(autouse=True)
def ray_is_stopped_after_each_test():
    yield
    assert not ray.is_initialized(), "the command left Ray running"


def make_bag(path, n, first, topic=TOPIC):
    """``n`` RAW frames stamped ``first``, ``first + 1``, ... seconds (stamps unique across a
    collection) and a String topic beside them."""
    from std_msgs.msg import String

    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with rosbag.Bag(str(path), "w") as bag:
        for i in range(n):
            t = rospy.Time(first + i, 0)
            bag.write(topic, bayer_image(H, W, stamp=t, frame_id="cam", seed=i), t)
            bag.write("/gps", String(data="fix %d" % i), t + rospy.Duration(0, 500))


def make_mcap(path, n, first):
    """The same as :func:`make_bag`, as an MCAP file written with the mcap library."""
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    def data(msg):
        buffer = io.BytesIO()
        msg.serialize(buffer)
        return buffer.getvalue()

    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(str(path), "wb") as f:
        writer = mcap_writer.Writer(f, chunk_size=8192)
        writer.start(profile="ros1", library="test")
        image = writer.register_channel(TOPIC, "ros1", writer.register_schema(
            "sensor_msgs/Image", "ros1msg", Image._full_text.encode()), {})
        gps = writer.register_channel("/gps", "ros1", writer.register_schema(
            "std_msgs/String", "ros1msg", String._full_text.encode()), {})
        for i in range(n):
            t = (first + i) * 10**9
            writer.add_message(image, t, data(bayer_image(H, W, stamp=rospy.Time(first + i, 0), frame_id="cam",
                                                          seed=i)), t, i)
            writer.add_message(gps, t + 500, data(String(data="fix %d" % i)), t + 500, i)
        writer.finish()


def frame_stamps(path, topic):
    """Header stamps (seconds) of ``topic`` in a log, in order."""
    with open_log(str(path)) as log:
        out = []
        for record in log.records([topic]):
            msg = log.message_class(record)()
            msg.deserialize(record.data)
            out.append(msg.header.stamp.secs)
        return out


def cli(args, unprivileged=False, **kwargs):
    """``rawdiff ARGS`` in a child process (its own process group). ``unprivileged``: without
    root's power to ignore file permissions, so that modes mean what they say."""
    prefix = []
    if unprivileged and os.geteuid() == 0:
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    return subprocess.Popen(prefix + [sys.executable, "-m", "rawdiff.cli"] + list(args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs)


def kill_session(proc, timeout=30.0):
    """SIGKILL to every process of the session that ``proc`` leads (the command and the Ray
    it started, which puts its processes in groups of their own) until none is alive."""
    deadline = time.monotonic() + timeout
    while True:
        proc.poll()  # reaps the command once it is killed
        listing = subprocess.run(["ps", "-o", "pid=,stat=", "-s", str(proc.pid)], stdout=subprocess.PIPE,
                                 text=True).stdout.split("\n")
        found = [line.split()[0] for line in listing if line.split() and not line.split()[1].startswith("Z")]
        if not found:
            return
        assert time.monotonic() < deadline, "processes of session %d survive SIGKILL: %s" % (proc.pid, found)
        for pid in found:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def table_row(out, name):
    line = next(line for line in out.splitlines() if line.startswith(name + " "))
    return line.split()


def test_a_collection_of_bags_and_mcap_files_is_transcoded_and_a_rerun_redoes_only_incomplete_outputs(
        tmp_path, capsys):
    logs = tmp_path / "logs"
    make_bag(logs / "a.bag", 3, 1000)
    make_bag(logs / "day2" / "b.bag", 4, 2000)
    make_mcap(logs / "day2" / "c.mcap", 3, 3000)
    make_mcap(logs / "day3" / "deep" / "d.mcap", 2, 4000)
    make_bag(tmp_path / "single.bag", 2, 5000)
    (logs / "notes.txt").write_text("not a log")
    out = tmp_path / "codes"
    expected = {"a.bag": 3, "day2/b.bag": 4, "day2/c.mcap": 3, "day3/deep/d.mcap": 2, "single.bag": 2}
    sources = {"a.bag": logs / "a.bag", "day2/b.bag": logs / "day2" / "b.bag", "day2/c.mcap": logs / "day2" / "c.mcap",
               "day3/deep/d.mcap": logs / "day3" / "deep" / "d.mcap", "single.bag": tmp_path / "single.bag"}

    assert main(ENCODE + [str(logs), str(tmp_path / "single.bag"), "--out-dir", str(out), "--workers", "2"]) == 0
    first = capsys.readouterr().out
    assert "5 files, 2 workers (local Ray)" in first
    assert table_row(first, "encoded")[2:4] == ["5", str(sum(expected.values()))]
    assert table_row(first, "failed")[1] == "0"
    for name, n in expected.items():
        info = log_info(str(out / name))
        assert info.counts == {"/compressed_codes": n, "/gps": n}, name
        assert frame_stamps(out / name, "/compressed_codes") == frame_stamps(sources[name], TOPIC)

    # a rerun: one output removed, one replaced by a valid log with fewer messages than its
    # input (an existing file is not a complete one), and a killed run's temporary file
    os.remove(str(out / "a.bag"))
    short = out / "day2" / "b.bag"
    with rosbag.Bag(str(out / "day2" / "b.bag")) as full, rosbag.Bag(str(tmp_path / "short.bag"), "w") as cut:
        for i, (topic, msg, t) in enumerate(full.read_messages()):
            if i < 3:
                cut.write(topic, msg, t)
    os.replace(str(tmp_path / "short.bag"), str(short))
    stale = part_path(str(out / "day3" / "deep" / "d.mcap"))
    with open(stale, "wb") as f:
        f.write(b"\x89MCAP0\r\nhalf")
    kept = {name: os.stat(str(out / name)).st_mtime_ns for name in ("day2/c.mcap", "single.bag")}

    assert main(ENCODE + [str(logs), str(tmp_path / "single.bag"), "--out-dir", str(out), "--workers", "1"]) == 0
    second = capsys.readouterr().out
    assert table_row(second, "encoded")[2:4] == ["2", "7"]  # a.bag (3 frames) and day2/b.bag (4)
    assert table_row(second, "complete")[1:3] == ["3", "7"]
    assert {name: os.stat(str(out / name)).st_mtime_ns for name in kept} == kept  # complete: left alone
    assert log_info(str(short)).counts == {"/compressed_codes": 4, "/gps": 4}
    assert not os.path.exists(stale) and not list(out.rglob(".*"))

    # the codes back to images, every output as MCAP
    rgb = tmp_path / "rgb"
    assert main(["bag", "decode", str(out), "--out-dir", str(rgb), "--model", FIXTURE_MODEL, "--workers", "2",
                 "--out-format", "mcap", "-q"]) == 0
    assert table_row(capsys.readouterr().out, "decoded")[2:4] == ["5", str(sum(expected.values()))]
    for name, n in expected.items():
        mcap_name = os.path.splitext(name)[0] + ".mcap"
        info = log_info(str(rgb / mcap_name))
        assert info.counts == {"/camera/image_decoded": n, "/gps": n}
        assert info.topics["/camera/image_decoded"] == "sensor_msgs/Image"
        assert frame_stamps(rgb / mcap_name, "/camera/image_decoded") == frame_stamps(sources[name], TOPIC)


def test_bad_files_are_one_line_each_in_the_summary_and_the_rest_is_done(tmp_path):
    logs, out = tmp_path / "logs", tmp_path / "out"
    make_bag(logs / "good1.bag", 2, 100)
    make_mcap(logs / "good2.mcap", 2, 200)
    make_bag(logs / "cut.bag", 3, 300)
    data = (logs / "cut.bag").read_bytes()
    (logs / "cut.bag").write_bytes(data[: len(data) // 2])
    make_mcap(logs / "cut.mcap", 3, 400)
    data = (logs / "cut.mcap").read_bytes()
    (logs / "cut.mcap").write_bytes(data[: len(data) - 100])
    make_mcap(tmp_path / "src.mcap", 6, 500)  # bytes changed inside its second chunk
    data = (tmp_path / "src.mcap").read_bytes()
    with open(str(tmp_path / "src.mcap"), "rb") as f:
        chunk = make_reader(f).get_summary().chunk_indexes[1]
    mid = chunk.chunk_start_offset + chunk.chunk_length // 2
    (logs / "damaged.mcap").write_bytes(data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 32]) + data[mid + 32:])
    make_bag(logs / "other_topic.bag", 2, 600, topic="/camera/left")
    (logs / "garbage.bag").write_bytes(b"not a bag at all")
    make_bag(logs / "locked" / "x.bag", 2, 700)
    os.chmod(str(logs / "locked"), 0)
    make_bag(logs / "ro" / "y.bag", 2, 800)
    (out / "ro").mkdir(parents=True)
    os.chmod(str(out / "ro"), 0o555)  # an output folder that is not writable
    try:
        proc = cli(ENCODE + [str(logs), str(tmp_path / "missing.bag"), "--out-dir", str(out), "--workers", "2"],
                   unprivileged=True)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        os.chmod(str(logs / "locked"), 0o755)
        os.chmod(str(out / "ro"), 0o755)
    assert proc.returncode == 1, stdout + stderr
    failed = [line for line in stdout.splitlines() if line.startswith("failed: ")]
    expect = {
        "cut.bag": "has no index: it is truncated",
        "cut.mcap": "is truncated (it does not end with the MCAP magic)",
        "damaged.mcap": "cannot read on (a truncated or damaged MCAP file?)",
        "other_topic.bag": "topic '/camera/image_raw' is not in",
        "garbage.bag": "is not a rosbag",
        "locked": "cannot read folder",
        "ro/y.bag": "is not writable",
        "missing.bag": "does not exist",
    }
    assert len(failed) == len(expect), stdout
    for name, message in expect.items():
        lines = [line for line in failed if line.startswith("failed: %s" % os.path.join(
            str(tmp_path if name == "missing.bag" else logs), name))]
        assert len(lines) == 1 and message in lines[0], (name, failed)
    assert table_row(stdout, "encoded")[2:4] == ["2", "4"] and table_row(stdout, "failed")[1] == str(len(expect))
    assert stderr.strip().splitlines()[-1] == "rawdiff bag encode: error: %d of 10 files failed (listed above)" \
        % len(expect)
    assert "Traceback" not in stderr
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["good1.bag", "good2.mcap"]  # nothing of the failed files, no temporary file
    assert log_info(str(out / "good2.mcap")).counts == {"/compressed_codes": 2, "/gps": 2}


def test_a_run_killed_midway_resumes_and_every_frame_is_in_the_outputs_exactly_once(tmp_path):
    logs, out = tmp_path / "logs", tmp_path / "out"
    frames = {}
    for i in range(6):
        name = "f%d.%s" % (i, "mcap" if i % 3 == 2 else "bag")
        (make_mcap if name.endswith("mcap") else make_bag)(logs / name, 12, 10000 * (i + 1))
        frames[name] = frame_stamps(logs / name, TOPIC)
    proc = cli(ENCODE + [str(logs), "--out-dir", str(out), "--workers", "1"])
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_dir() and any(p.suffix in (".bag", ".mcap") and not p.name.startswith(".") for p in out.iterdir()):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed: %s" % (proc.communicate(),)
    kill_session(proc)  # the command, its Ray and the worker writing a file, at once
    proc.communicate()
    done_before = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert 1 <= len(done_before) < len(frames)

    proc = cli(ENCODE + [str(logs), "--out-dir", str(out), "--workers", "2"])
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout + stderr
    assert table_row(stdout, "complete")[1] == str(len(done_before))
    assert table_row(stdout, "encoded")[2] == str(len(frames) - len(done_before))
    assert sorted(p.name for p in out.iterdir()) == sorted(frames)  # no temporary file left
    everything = []
    for name, stamps in frames.items():
        got = frame_stamps(out / name, "/compressed_codes")
        assert got == stamps, name  # in order, none lost, none twice
        everything += got
    assert len(everything) == len(set(everything)) == 6 * 12


def test_an_output_folder_that_cannot_be_made_fails_every_file_in_one_line_without_starting_ray(tmp_path, capsys):
    make_bag(tmp_path / "logs" / "a.bag", 1, 1)
    make_mcap(tmp_path / "logs" / "b.mcap", 1, 2)
    (tmp_path / "file").write_text("a file, not a folder")
    assert main(ENCODE + [str(tmp_path / "logs"), "--out-dir", str(tmp_path / "file" / "out")]) == 1
    captured = capsys.readouterr()
    failed = [line for line in captured.out.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 2 and all("is a file" in line for line in failed), captured.out
    assert "nothing to run" in captured.out
    assert captured.err.strip().splitlines() == ["rawdiff bag encode: error: 2 of 2 files failed (listed above)"]


@pytest.mark.parametrize("args, message", [
    (["{bag}"], "give IN OUT for one log, or IN... --out-dir DIR for a collection (got 1 path)"),
    (["{bag}", "{tmp}/o.bag", "--workers", "2"], "--workers goes with --out-dir"),
    (["{bag}", "{tmp}/o.bag", "--address", "auto"], "--address goes with --out-dir"),
    (["{bag}", "--out-dir", "{tmp}/o", "--workers", "2", "--address", "auto"], "not both"),
    (["{bag}", "--out-dir", "{tmp}/o", "--address", "127.0.0.1:{port}"], "cannot reach the Ray cluster at"),
    (["{bag}", "--out-dir", "{tmp}/o", "--model", "{tmp}/nomodel"], "model directory"),
])
def test_collection_usage_errors_are_one_line(tmp_path, capsys, args, message):
    from ros_harness import free_port

    make_bag(tmp_path / "a.bag", 1, 1)
    paths = {"bag": tmp_path / "a.bag", "tmp": tmp_path, "port": free_port()}
    assert main(ENCODE + [a.format(**paths) for a in args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rawdiff bag encode: error: ") and message in err[0], err
    assert not (tmp_path / "o").exists()


def test_plan_maps_folders_below_the_output_folder_and_reports_what_cannot_be_used(tmp_path):
    logs = tmp_path / "logs"
    for name in ("a.bag", "x/b.mcap", "x/.c.1234abcd.part.bag", "x/readme.md"):
        (logs / name).parent.mkdir(parents=True, exist_ok=True)
        (logs / name).write_bytes(b"")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.bag").write_bytes(b"")
    (logs / "out" / "old.bag").parent.mkdir()
    (logs / "out" / "old.bag").write_bytes(b"")  # outputs of an earlier run inside the input folder
    jobs, failed = plan_jobs([str(logs), str(logs / "a.bag"), str(tmp_path / "other")], str(logs / "out"),
                             out_format="mcap")
    assert [(os.path.relpath(j.input, str(tmp_path)), os.path.relpath(j.output, str(logs / "out"))) for j in jobs] \
        == [("logs/a.bag", "a.mcap"), ("logs/x/b.mcap", "x/b.mcap")]  # named twice: once; out/ not searched
    assert len(failed) == 1 and failed[0]["input"] == str(tmp_path / "other" / "a.bag")
    assert "is also the output of %s" % (logs / "a.bag") in failed[0]["error"]


def test_stale_parts_are_the_temporary_names_of_the_outputs_writer(tmp_path):
    part = part_path(str(tmp_path / "drive.bag"))
    with open(part, "wb"):
        pass
    assert stale_parts(str(tmp_path / "drive.bag")) == [part]
    assert stale_parts(str(tmp_path / "drive.mcap")) == stale_parts(str(tmp_path / "drive2.bag")) == []


def test_the_summary_says_how_much_larger_decoding_made_the_files_and_counts_one_file_as_one():
    from rawdiff.ros.bag_transcode import ratio_text
    from rawdiff.ros.collection import Job, format_table, new_result

    assert ratio_text(151200, 1000) == "151.2:1" and ratio_text(1000, 301500) == "x301.5"
    assert ratio_text(0, 10) == ratio_text(10, 0) == "-"
    job = Job("codes.bag", "out/codes.bag")
    result = dict(new_result(job, "done"), frames=32, bytes_in=140800, bytes_out=42450000)
    table = format_table([result], "decode", 2.0, "1 worker (local Ray)")
    assert table.splitlines()[0].startswith("rawdiff bag decode: 1 file, ")
    done = next(line for line in table.splitlines() if line.startswith("decoded now"))
    assert "x301.5" in done and "0.0:1" not in done and "levels:" not in table
    encoded = [dict(new_result(Job("a.bag", "out/a.bag"), "done"), frames=6, peak=0.05, clipped=7, clipped_frames=2),
               dict(new_result(Job("b.bag", "out/b.bag"), "done"), frames=6, peak=0.9)]
    levels = [line for line in format_table(encoded, "encode", 2.0, "2 workers").splitlines() if "levels" in line]
    assert levels == ["levels: a.bag: 7 pixels in 2 frames above the white level, clipped to it (is --white-level "
                      "right?)", "levels: a.bag: the brightest pixel of the 6 frames is at 5.0 % of the range up to "
                      "the white level: if the sensor has fewer bits than its images, give its levels (--black-level, "
                      "--white-level)"]
