"""Outputs checked before work and written atomically, by the library and by every command."""

import json
import os
import stat
import subprocess
import sys

import cv2
import numpy as np
import pytest
from synthetic import textured_photo

from rawdiff.cli import main
from rawdiff.outputs import atomic_output, check_folder, check_output, write_bytes
from rawdiff.raw.io import write_raw
from rawdiff.raw.unprocess import unprocess

needs_permissions = pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")


@pytest.fixture(scope="module")
def frame():
    f, _ = unprocess(textured_photo(64, 96, 7), seed=7, noise=False)
    return f


def _leftovers(folder):
    return sorted(p for p in os.listdir(folder) if ".part" in p)


# ------------------------------------------------------------------ the library


def test_check_output_names_the_problem(tmp_path):
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ValueError, match=r"output .*dir\.png is a directory; give a file name, e\.g\. .*out\.png"):
        check_output(tmp_path / "dir.png", (".png",))
    with pytest.raises(ValueError, match=r"output .*noext has no suffix; give one of \.png, \.jpg"):
        check_output(tmp_path / "noext", (".png", ".jpg"))
    with pytest.raises(ValueError, match=r"suffix \.txt is not one of \.rdc"):
        check_output(tmp_path / "a.txt", (".rdc",))
    src = tmp_path / "in.png"
    src.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"output .*in\.png is the input .*in\.png; give another name"):
        check_output(tmp_path / "sub" / ".." / "in.png", (".png",), [src])
    (tmp_path / "afile").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"cannot make output folder .*afile/deeper: .*afile is a file"):
        check_output(tmp_path / "afile" / "deeper" / "o.png", (".png",))
    assert check_output(tmp_path / "new" / "deeper" / "o.png", (".png",)) == str(tmp_path / "new" / "deeper" / "o.png")
    assert not (tmp_path / "new").exists()  # checking makes nothing


@needs_permissions
def test_a_read_only_folder_is_named_as_such(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(ValueError, match=r"output folder .*ro is not writable"):
            check_output(ro / "o.png", (".png",))
        with pytest.raises(ValueError, match=r"cannot make output folder .*ro/sub: .*ro is not writable"):
            check_folder(ro / "sub")
    finally:
        ro.chmod(stat.S_IRWXU)


def test_a_folder_the_process_may_not_write_is_named_as_such(tmp_path, monkeypatch, raw_png):
    """The same check as above where the tests run as root: the permission is asked of
    os.access, so denying it there stands for a read-only folder."""
    import rawdiff.outputs

    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(rawdiff.outputs.os, "access", lambda p, mode: False if str(p) == str(ro) else real(p, mode))
    assert main(["isp", str(raw_png), "-o", str(ro / "o.png")]) == 1
    assert not (ro / "o.png").exists()
    with pytest.raises(ValueError, match=r"output folder .*ro is not writable"):
        check_output(ro / "o.png", (".png",))


def test_atomic_output_leaves_the_old_file_or_the_new_one_never_half(tmp_path):
    path = tmp_path / "deep" / "out.bin"
    write_bytes(path, b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(path) as part:
            assert part.endswith(".bin") and os.path.dirname(part) == str(tmp_path / "deep")
            with open(part, "wb") as f:
                f.write(b"half")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old" and _leftovers(tmp_path / "deep") == []
    with pytest.raises(OSError, match="was not written"):
        with atomic_output(tmp_path / "never.bin"):
            pass
    assert not (tmp_path / "never.bin").exists()


def test_write_raw_is_atomic_for_the_mosaic_and_its_sidecar(tmp_path, frame, monkeypatch):
    import tifffile

    path = write_raw(frame, tmp_path / "out" / "f.tif")
    before = (path.read_bytes(), (tmp_path / "out" / "f.json").read_text())

    def broken(name, *a, **k):
        with open(name, "wb") as f:
            f.write(b"II*\0 half a TIFF")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", broken)
    with pytest.raises(OSError, match="disk full"):
        write_raw(frame.copy(white_level=4000), tmp_path / "out" / "f.tif")
    assert (path.read_bytes(), (tmp_path / "out" / "f.json").read_text()) == before
    assert _leftovers(tmp_path / "out") == []


# ------------------------------------------------------------------ the commands


def _cli(*args):
    r = subprocess.run([sys.executable, "-m", "rawdiff.cli", *map(str, args)], capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr.strip().splitlines()


@pytest.fixture()
def raw_png(tmp_path, frame):
    return write_raw(frame, tmp_path / "f.png")


@pytest.mark.parametrize("command", ["isp", "compress"])
def test_an_output_that_is_an_input_or_its_sidecar_is_refused_and_nothing_is_touched(tmp_path, raw_png, command,
                                                                                     fixture_model):
    before = {p: (tmp_path / p).read_bytes() for p in ("f.png", "f.json")}
    model = ["--model", fixture_model] if command == "compress" else []
    for target in ("f.png", "f.json"):
        assert main([command, str(raw_png), "-o", str(tmp_path / target)] + model) == 1
    assert {p: (tmp_path / p).read_bytes() for p in ("f.png", "f.json")} == before


@pytest.mark.parametrize("out, message", [
    ("noext", "has no suffix; give one of .png"),
    ("sub", "is a directory; give a file name"),
    ("x.rdc", "suffix .rdc is not one of .png"),
])
def test_decompress_checks_the_output_before_loading_the_model(tmp_path, raw_png, fixture_model, out, message):
    (tmp_path / "sub").mkdir()
    rdc = tmp_path / "f.rdc"
    assert main(["compress", str(raw_png), "-o", str(rdc), "--model", fixture_model]) == 0
    # a model directory that does not exist: the output is checked first, so it is what fails
    code, _, err = _cli("decompress", rdc, "-o", tmp_path / out, "--model", tmp_path / "no-model")
    assert code == 1 and len(err) == 1 and message in err[0], err


@pytest.mark.parametrize("command", ["isp", "compress", "decompress"])
def test_every_command_makes_a_missing_output_folder(tmp_path, raw_png, fixture_model, command):
    rdc = tmp_path / "f.rdc"
    assert main(["compress", str(raw_png), "-o", str(rdc), "--model", fixture_model]) == 0
    source = rdc if command == "decompress" else raw_png
    suffix = ".rdc" if command == "compress" else ".png"
    out = tmp_path / "a" / "b" / ("out" + suffix)
    model = [] if command == "isp" else ["--model", fixture_model]
    assert main([command, str(source), "-o", str(out)] + model) == 0
    assert out.is_file() and _leftovers(out.parent) == []


def test_eval_checks_its_out_folder_first(tmp_path, fixture_model, capsys):
    (tmp_path / "taken").write_bytes(b"x")
    assert main(["eval", str(tmp_path), "--model", fixture_model, "--out", str(tmp_path / "taken" / "report")]) == 1
    assert "cannot make --out folder" in capsys.readouterr().err


def test_a_failed_decode_leaves_no_file(tmp_path, raw_png, fixture_model):
    rdc = tmp_path / "f.rdc"
    assert main(["compress", str(raw_png), "-o", str(rdc), "--model", fixture_model]) == 0
    data = bytearray(rdc.read_bytes())
    data[-5] ^= 1
    rdc.write_bytes(bytes(data))
    out = tmp_path / "new" / "o.png"
    assert main(["decompress", str(rdc), "-o", str(out), "--model", fixture_model]) == 1
    assert not out.exists() and not (tmp_path / "new").exists()


# ------------------------------------------------------------------ papercuts of the command line


def test_info_into_a_closed_pipe_is_quiet(tmp_path, raw_png, fixture_model):
    rdc = tmp_path / "f.rdc"
    assert main(["compress", str(raw_png), "-o", str(rdc), "--model", fixture_model]) == 0
    r = subprocess.run("%s -m rawdiff.cli info %s | head -1" % (sys.executable, rdc), shell=True,
                       capture_output=True, text=True)
    assert r.stdout == "{\n" and r.stderr == "", r.stderr
    # a reader that is gone before anything is written: the write itself meets the closed pipe
    r = subprocess.run("%s -m rawdiff.cli info %s | true" % (sys.executable, rdc), shell=True, capture_output=True,
                       text=True)
    assert r.stderr == "", r.stderr


@pytest.mark.parametrize("args, message", [
    (["isp", "{dir}", "-o", "{tmp}/o.png"], "is a directory, not a RAW file"),
    (["decompress", "{dir}", "-o", "{tmp}/o.png"], "is a directory, not a bitstream file"),
    (["info", "{dir}"], "is a directory, not a bitstream file"),
    (["compress", "{raw}", "-o", "{tmp}/o.rdc", "--model", "{tmp}/missing-model"],
     "model directory {tmp}/missing-model does not exist"),
    (["compress", "{raw}", "-o", "{tmp}/o.rdc", "--model", "{dir}"], "is not a model directory: it has no config.yaml"),
    (["isp", "{packed}", "--format", "raw12p", "--width", "96", "-o", "{tmp}/o.png"],
     "needs height; give it as --height H (read_raw: height=H)"),
    (["isp", "{raw}", "--width", "96", "-o", "{tmp}/o.png"], "--width only applies to packed CSI-2 data"),
    (["isp", "{raw}", "--white-level", "1e30", "-o", "{tmp}/o.png"],
     "white_level 1e+30 is above the largest value of the 16-bit mosaic"),
    (["isp", "{packed}", "--format", "raw12p", "--width", "96", "--height", "64", "--cfa", "RGGB",
      "--white-level", "5000", "-o", "{tmp}/o.png"], "white_level 5000 is above the largest value of the 12-bit"),
])
def test_command_line_errors_name_the_option_as_typed(tmp_path, raw_png, fixture_model, args, message):
    (tmp_path / "d").mkdir()
    (tmp_path / "p.raw12").write_bytes(bytes(96 * 64 * 3 // 2))
    paths = {"dir": tmp_path / "d", "tmp": tmp_path, "raw": raw_png, "packed": tmp_path / "p.raw12"}
    code, _, err = _cli(*[a.format(**paths) for a in args])
    assert code == 1 and len(err) == 1 and "Traceback" not in "".join(err), err
    assert message.format(**paths) in err[0], err


def test_a_sidecar_whose_size_contradicts_the_mosaic_is_refused(tmp_path, raw_png):
    side = tmp_path / "f.json"
    meta = json.loads(side.read_text())
    meta.update(width=100, height=64)
    side.write_text(json.dumps(meta))
    code, _, err = _cli("isp", raw_png, "-o", tmp_path / "o.png")
    assert code == 1 and "f.json: width 100 contradicts the mosaic, which is 96x64" in err[0], err
    meta.update(width=96)
    side.write_text(json.dumps(meta))
    assert _cli("isp", raw_png, "-o", tmp_path / "o.png")[0] == 0


def test_pixels_above_the_white_level_are_clipped_and_counted_in_one_warning(tmp_path, frame):
    mosaic = frame.mosaic.copy()
    mosaic[:2, :5] = 4095 + 100  # 10 hot pixels above white
    src = write_raw(frame.copy(mosaic=mosaic), tmp_path / "hot.png")
    code, out, err = _cli("isp", src, "-o", tmp_path / "o.png")
    assert code == 0 and len(err) == 1, err
    assert "hot.png: 10 pixels (0.163 %) are above white_level 4095 (up to 4195) and are clipped to it" in err[0]
    clean = write_raw(frame, tmp_path / "clean.png")
    assert _cli("isp", clean, "-o", tmp_path / "c.png")[2] == []
    hot = cv2.imread(str(tmp_path / "o.png"))
    assert hot.shape == (64, 96, 3) and np.array_equal(hot[10:], cv2.imread(str(tmp_path / "c.png"))[10:])


def test_the_encoder_s_fallback_to_torch_is_said_on_the_command_line(tmp_path, raw_png, fixture_model):
    code, _, err = _cli("compress", raw_png, "-o", tmp_path / "f.rdc", "--model", fixture_model)
    assert code == 0
    assert err == ["rawdiff compress: encoding with torch: model directory %s has no encoder.onnx" % fixture_model]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_a_folder_the_file_system_refuses_is_named_before_any_work(tmp_path, monkeypatch):
    # /proc takes no new folders whatever os.access says (yes to root; made to say yes to anyone)
    monkeypatch.setattr(os, "access", lambda path, mode: True)
    with pytest.raises(ValueError, match=r"cannot make output folder /proc/rawdiff-test/deeper: /proc takes no new "
                                         r"folders \("):
        check_output("/proc/rawdiff-test/deeper/o.png", (".png",))
    assert check_output(tmp_path / "new" / "o.png", (".png",))
    assert sorted(os.listdir(tmp_path)) == []  # the probe leaves nothing behind
