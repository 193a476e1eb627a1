"""The `rawdiff` command line: isp on every input kind, compress/decompress/info, and one
clear line (no traceback) for bad input."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from synthetic import textured_photo

from rawdiff.cli import main
from rawdiff.raw import read_raw
from rawdiff.raw.io import write_csi2, write_raw
from rawdiff.raw.isp import render
from rawdiff.raw.unprocess import unprocess


@pytest.fixture(scope="module")
def frame():
    f, _ = unprocess(textured_photo(64, 96, 5), seed=5, noise=False)
    return f


def _png(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[:, :, ::-1]


def test_isp_on_a_16bit_png_with_sidecar(tmp_path, frame):
    src = write_raw(frame, str(tmp_path / "frame.png"))
    assert main(["isp", str(src), "-o", str(tmp_path / "out.png")]) == 0
    assert np.array_equal(_png(tmp_path / "out.png"), render(read_raw(str(src))))


def test_isp_on_a_packed_raw12_file(tmp_path, frame):
    src = write_csi2(frame, str(tmp_path / "frame.raw12"), bits=12)
    os.remove(str(src)[: -len(".raw12")] + ".json")  # geometry from the command line only
    args = ["isp", str(src), "--format", "raw12p", "--width", "96", "--height", "64", "--cfa", frame.cfa,
            "--black-level", str(frame.black_level), "--white-level", "4095", "-o", str(tmp_path / "o.png")]
    assert main(args) == 0
    out = _png(tmp_path / "o.png")
    assert out.shape == (64, 96, 3)
    # RAW12 is lossless for a 12-bit frame, but the file carries no colour metadata: auto WB
    ref = render(frame.copy(wb_gains=None, color_matrix=None))
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


def test_isp_on_a_dng(tmp_path):
    from test_dng import write_dng

    mosaic = np.full((32, 48), 1000, np.uint16)
    path = tmp_path / "x.dng"
    write_dng(path, mosaic)
    assert main(["isp", str(path), "-o", str(tmp_path / "x.png")]) == 0
    assert _png(tmp_path / "x.png").shape == (32, 48, 3)


def test_compress_decompress_info(tmp_path, frame, fixture_model, capsys):
    src = write_raw(frame, str(tmp_path / "f.npy"))
    rdc = tmp_path / "f.rdc"
    assert main(["compress", str(src), "-o", str(rdc), "--model", fixture_model]) == 0
    printed = capsys.readouterr().out
    bpp = 8.0 * os.path.getsize(rdc) / (96 * 64)
    assert "%.4f bpp" % bpp in printed
    assert main(["decompress", str(rdc), "-o", str(tmp_path / "f.png"), "--model", fixture_model]) == 0
    assert _png(tmp_path / "f.png").shape == (64, 96, 3)
    capsys.readouterr()
    assert main(["info", str(rdc)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["width"] == 96 and info["height"] == 64 and info["bytes"] == os.path.getsize(rdc)
    for st in info["stages"]:  # each stage's adaptive coding, its values named
        named = st["adaptive_coding"]
        assert [named["strength_exponent"], named["pool"], named["parent_level"], named["aging"]] == st["adapt"]


@pytest.mark.parametrize("name,named", [
    ("frame_v7_rggb_adaptive", ["strength_exponent", "pool"]),
    ("frame_v8_rggb_levels", ["strength_exponent", "pool", "parent_level"]),
    ("frame_v9_rggb_aging", ["strength_exponent", "pool", "parent_level", "aging"])])
def test_info_names_the_adaptive_values_each_version_carries(name, named, capsys):
    golden = os.path.join(os.path.dirname(__file__), "golden", name + ".rdc")
    assert main(["info", golden]) == 0
    info = json.loads(capsys.readouterr().out)
    for st in info["stages"]:
        assert sorted(st["adaptive_coding"]) == sorted(named)
        assert [st["adaptive_coding"][k] for k in named] == st["adapt"]


@pytest.mark.parametrize("make_bad,expect", [
    (lambda d: str(d / "missing.npy"), "not found"),
    (lambda d: _write(d / "junk.rdc", b"hello world"), "not a rawdiff bitstream"),
    (lambda d: _write(d / "frame.xyz", b"\x00" * 16), "xyz"),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, make_bad, expect, fixture_model):
    bad = make_bad(tmp_path)
    cmd = "info" if bad.endswith(".rdc") else "isp"
    args = [cmd, bad] + (["-o", str(tmp_path / "o.png")] if cmd == "isp" else [])
    proc = subprocess.run([sys.executable, "-m", "rawdiff.cli"] + args, capture_output=True, text=True)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert expect in lines[0].lower() or expect in lines[0]


def test_decompress_of_a_corrupted_file(tmp_path, frame, fixture_model):
    src = write_raw(frame, str(tmp_path / "f.npy"))
    rdc = tmp_path / "f.rdc"
    assert main(["compress", str(src), "-o", str(rdc), "--model", fixture_model]) == 0
    data = bytearray(rdc.read_bytes())
    data[-10] ^= 0xFF
    rdc.write_bytes(bytes(data))
    proc = subprocess.run([sys.executable, "-m", "rawdiff.cli", "decompress", str(rdc), "-o",
                           str(tmp_path / "x.png"), "--model", fixture_model], capture_output=True, text=True)
    assert proc.returncode == 1 and "CRC" in proc.stderr and "Traceback" not in proc.stderr


def _write(path, data):
    path.write_bytes(data)
    return str(path)


def test_train_overrides_right_after_the_configs_are_overrides(monkeypatch):
    """`--base A.yaml B.yaml key=value`: argparse hands key=value to --base (nargs=*)."""
    import rawdiff.train

    seen = {}
    monkeypatch.setattr(rawdiff.train, "train", lambda bases, overrides=(), **kw: seen.update(b=bases, o=overrides))
    assert main(["train", "--base", "a.yaml", "b.yaml", "model.params.x=1", "data.params.y=2"]) == 0
    assert seen == {"b": ["a.yaml", "b.yaml"], "o": ["model.params.x=1", "data.params.y=2"]}
    assert main(["train", "--base", "a.yaml", "--export", "out", "model.params.x=1"]) == 0
    assert seen == {"b": ["a.yaml"], "o": ["model.params.x=1"]}


def test_train_takes_hyphenated_flags_and_the_seed_s_underscore_spellings(monkeypatch):
    import rawdiff.train

    seen = []
    monkeypatch.setattr(rawdiff.train, "train", lambda bases, overrides=(), **kw: seen.append(kw))
    assert main(["train", "--base", "a.yaml", "--max-epochs", "2", "--max-steps", "3",
                 "--log-every-n-steps", "4"]) == 0
    assert main(["train", "--base", "a.yaml", "--max_epochs", "2", "--max_steps", "3",
                 "--log_every_n_steps", "4"]) == 0
    assert seen[0] == seen[1]
    assert (seen[0]["max_epochs"], seen[0]["max_steps"], seen[0]["log_every_n_steps"]) == (2, 3, 4)


def test_a_config_without_a_data_section_is_one_line_and_exit_1(tmp_path, capsys):
    cfg = tmp_path / "model_only.yaml"
    cfg.write_text("model: {target: vqgan, params: {}}\n")
    assert main(["train", "--base", str(cfg), "--logdir", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rawdiff train: error: config ")
    assert "model_only.yaml has no 'data' section" in err
    assert not (tmp_path / "runs").exists()  # refused before a run folder is made


def test_a_key_error_of_the_code_itself_is_a_traceback_not_a_user_error(monkeypatch):
    import rawdiff.train

    def broken(bases, overrides=(), **kw):
        return {}["run_dir"]

    monkeypatch.setattr(rawdiff.train, "train", broken)
    with pytest.raises(KeyError, match="run_dir"):
        main(["train", "--base", "a.yaml"])


def test_argument_and_input_mistakes_are_one_line_naming_them(tmp_path, frame, fixture_model, capsys):
    src, rdc = write_raw(frame, str(tmp_path / "f.npy")), tmp_path / "f.rdc"
    assert main(["compress", str(src), "-o", str(rdc), "--model", fixture_model]) == 0
    with pytest.raises(SystemExit):
        main(["compress", str(src), "-o", str(rdc), "--quality", "-1"])
    assert "argument --quality: must be >= 1, got -1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compress", "", "-o", str(rdc)])
    assert "argument input: the input path is empty" in capsys.readouterr().err
    cases = [
        (["decompress", str(rdc), "-o", str(tmp_path / "o.png"), "--realism", "0.5", "--model", fixture_model],
         "--realism given for the fast path: it is for --mode diffusion"),
        (["decompress", str(rdc), "-o", str(tmp_path / "o.png"), "--steps", "2", "--realism", "0", "--model",
          fixture_model], "--steps and --realism given for the fast path: they are for --mode diffusion"),
        (["compress", str(src), "-o", str(tmp_path / "g.rdc"), "--model", fixture_model, "--device", "banana"],
         "device 'banana' is not a device name (auto, cpu, cuda, cuda:1, ...)"),
        (["compress", str(src), "-o", str(tmp_path / "g.rdc"), "--model", fixture_model, "--black-level", "-3"],
         "black_level must be >= 0"),
    ]
    not_npy = tmp_path / "text.npy"
    not_npy.write_text("hello\n")
    cases.append((["compress", str(not_npy), "-o", str(tmp_path / "g.rdc"), "--model", fixture_model],
                  "not a NumPy .npy file (it starts with b'hello\\n', not the .npy magic)"))
    for argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "g.rdc").exists()
