"""The vehicle runtime: RAW frame -> encoder.onnx -> range coder -> bitstream, without torch.

Each test runs the command line in a subprocess where importing torch (or Lightning) fails,
as on a vehicle installed from ``requirements-vehicle.txt``, and compares its bytes with
the full install's.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from vehicle_site import vehicle_env

from rawdiff.codec import Codec
from rawdiff.raw.io import write_raw
from rawdiff.raw.unprocess import unprocess

REPO = Path(__file__).resolve().parents[1]
FIXTURE_MODEL = REPO / "test" / "fixtures" / "model"


@pytest.fixture(scope="module")
def raw_file(tmp_path_factory):
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:96, 0:128] / 128.0
    rgb = np.clip(np.stack([0.3 + 0.5 * xx, 0.5 * yy + 0.2, 0.6 - 0.4 * xx * yy], -1)
                  + 0.02 * rng.standard_normal((96, 128, 3)), 0, 1).astype(np.float32)
    frame, _ = unprocess(rgb, seed=9, cfa="BGGR", black_level=256, white_level=4095)
    return write_raw(frame, tmp_path_factory.mktemp("vehicle-in") / "frame.png")


def _run(env, *args):
    return subprocess.run([sys.executable, "-m", "rawdiff.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_the_blocker_really_blocks_torch(tmp_path):
    r = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True,
                       env=vehicle_env(tmp_path))
    assert r.returncode != 0 and "vehicle install" in r.stderr


@pytest.mark.parametrize("backend", ["onnx", "auto"])
def test_compress_without_torch_gives_the_full_install_s_bytes(tmp_path, onnx_model, raw_file, backend):
    out = tmp_path / "vehicle.rdc"
    r = _run(vehicle_env(tmp_path), "compress", raw_file, "-o", out, "--model", onnx_model, "--backend", backend)
    assert r.returncode == 0, r.stderr
    from rawdiff.raw import read_raw

    full = Codec.load(onnx_model, device="cpu", backend="onnx").compress(read_raw(raw_file))
    assert out.read_bytes() == full
    # and `rawdiff info` reads it there too
    info = _run(vehicle_env(tmp_path), "info", out)
    assert info.returncode == 0 and '"wb_source"' in info.stdout


def test_without_torch_and_without_encoder_onnx_the_error_says_what_to_do(tmp_path, raw_file):
    r = _run(vehicle_env(tmp_path), "compress", raw_file, "-o", tmp_path / "x.rdc", "--model", FIXTURE_MODEL,
             "--backend", "onnx")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert re.search(r"has no encoder.onnx; run `rawdiff export-onnx", r.stderr)


def test_decoding_without_torch_fails_in_one_line_naming_torch(tmp_path, onnx_model, raw_file):
    rdc = tmp_path / "f.rdc"
    assert _run(vehicle_env(tmp_path), "compress", raw_file, "-o", rdc, "--model", onnx_model,
                "--backend", "onnx").returncode == 0
    r = _run(vehicle_env(tmp_path), "decompress", rdc, "-o", tmp_path / "f.png", "--model", onnx_model)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "needs torch" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_requirements_vehicle_lists_the_runtime_and_nothing_of_training():
    names = [re.split(r"[=<>\[ ]", line.strip())[0].lower()
             for line in (REPO / "requirements-vehicle.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert {"numpy", "onnxruntime", "constriction", "safetensors", "rawpy"} <= set(names)
    assert not set(names) & {"torch", "lightning", "torchmetrics", "scipy", "scikit-image", "tensorboard"}
