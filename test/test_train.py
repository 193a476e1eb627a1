"""`rawdiff train`: a tiny config trains end to end on the CPU, resumes, and runs on two
CPU processes with DDP."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from synthetic import ROOT

from rawdiff.codec import Codec, truncate
from rawdiff.raw import read_raw
from rawdiff.train import train

TINY = os.path.join(ROOT, "config", "models", "tiny.yaml")


def test_tiny_config_trains_exports_and_resumes(tiny_corpus, tmp_path):
    summary = train([TINY], ["data.params.root=" + tiny_corpus], max_steps=4, logdir=str(tmp_path),
                    log_every_n_steps=1)
    run = summary["run_dir"]
    with open(os.path.join(run, "config.yaml")) as f:
        merged = yaml.safe_load(f)
    assert merged["data"]["params"]["root"] == tiny_corpus
    assert merged["lightning"]["trainer"]["max_steps"] == 4
    assert os.path.isfile(os.path.join(run, "checkpoints", "last.ckpt"))
    assert os.path.isfile(os.path.join(run, "csv", "version_0", "metrics.csv"))

    codec = Codec.load(summary["model_dir"])
    frame = read_raw(os.path.join(tiny_corpus, open(os.path.join(tiny_corpus, "test.txt")).readline().strip()))
    rgb = codec.decompress(codec.compress(frame))
    assert rgb.shape == (frame.height, frame.width, 3)
    with open(os.path.join(summary["model_dir"], "MODEL_CARD.md")) as f:
        assert "bits per index" in f.read()

    # resumed until a wall-time limit stops it between the periodic checkpoints (every 5 steps)
    resumed = train([], ["lightning.trainer.max_time=00:00:00:08", "lightning.trainer.check_val_every_n_epoch=1000"],
                    resume=run, max_steps=100000, logdir=str(tmp_path))
    assert resumed["run_dir"] == run and resumed["global_step"] > summary["global_step"]
    state = torch.load(os.path.join(run, "checkpoints", "last.ckpt"), map_location="cpu", weights_only=True)
    assert state["global_step"] == resumed["global_step"]  # the last checkpoint is where it stopped
    assert os.path.isfile(os.path.join(run, "csv", "version_0", "metrics.csv"))  # earlier logs kept


def test_linear_paths_train_export_and_code_progressively(tiny_corpus, tmp_path):
    """The shipped model's kind (linear paths, no encoder network, quality channel, entropy-
    constrained stages with a zero code) on the tiny config: fitted on the first batch,
    trained under bf16 autocast, exported, and its streams cut to a lower quality are the
    streams of that quality."""
    overrides = ["data.params.root=" + tiny_corpus, "data.params.crop_size=128", "model.params.embedder.embed_dim=8",
                 "model.params.embedder.linear_paths=true", "model.params.embedder.encoder_network=false",
                 "model.params.embedder.quality_channel=true", "model.params.embedder.rate_lambda=0.02",
                 "model.params.embedder.skip_code=true", "lightning.trainer.precision=bf16-mixed",
                 "codec.default_quality=2"]
    summary = train([TINY], overrides, max_steps=3, logdir=str(tmp_path))
    codec = Codec.load(summary["model_dir"])
    net = codec.embedder
    assert net.encoder is None and net.linear_paths and net.quantize.quality_channel
    assert codec.default_quality == 2  # from the config's codec node into model.json
    assert float(net.analysis_weight.abs().sum()) > 0  # fitted, and shipped
    assert any(float(vq.code_cost.abs().sum()) > 0 for vq in net.quantize.codebooks)
    frame = read_raw(os.path.join(tiny_corpus, open(os.path.join(tiny_corpus, "test.txt")).readline().strip()))
    top = codec.compress(frame, quality=len(net.stages))
    for q in range(1, len(net.stages)):
        assert truncate(top, q) == codec.compress(frame, quality=q)
    assert codec.decompress(top).shape == (frame.height, frame.width, 3)


def test_missing_config_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="--base"):
        train([], logdir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="last.ckpt"):
        train([], resume=str(tmp_path), logdir=str(tmp_path))


def test_two_cpu_processes_with_ddp(tiny_corpus, tmp_path):
    cmd = [os.path.join(os.path.dirname(sys.executable), "rawdiff"), "train", "--base", TINY,
           "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--max-steps", "3",
           "--logdir", str(tmp_path), "data.params.root=" + tiny_corpus]
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_PORT=str(29500 + os.getpid() % 1000))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes" in proc.stderr or "GLOBAL_RANK: 1" in proc.stderr + proc.stdout
    runs = [d for d in os.listdir(tmp_path) if d.endswith("_tiny")]
    assert len(runs) == 1
    model_dir = os.path.join(tmp_path, runs[0], "model")
    codec = Codec.load(model_dir)
    assert codec.stages == [(2, 16), (2, 16), (1, 32)]  # the tiny config's quantizer stages
    bits = codec.prior.bits([np.zeros((1, 1), np.int64), np.zeros((1, 1), np.int64), np.zeros((2, 2), np.int64)])
    assert len(bits) == 3 and np.all(np.isfinite(bits))
