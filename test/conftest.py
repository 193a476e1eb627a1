"""Shared fixtures: the committed tiny model and a tiny paired corpus made by the project's
own preparation code from synthetic photos."""

import os

import cv2
import pytest
from synthetic import FIXTURE_MODEL, ROOT, corpus_test_frames, textured_photo


@pytest.fixture(scope="session")
def fixture_model():
    if not os.path.isfile(os.path.join(FIXTURE_MODEL, "model.json")):
        pytest.fail("the fixture model is missing: run `make fixtures`")
    return FIXTURE_MODEL


@pytest.fixture(scope="session")
def tiny_ldm(fixture_model, tiny_corpus, tmp_path_factory):
    """A tiny LDM on the fixture embedder, trained for 4 steps by ``rawdiff train``
    (config/models/ldm_tiny.yaml): (exported model directory, training summary)."""
    from rawdiff.train import train

    tmp = tmp_path_factory.mktemp("ldm")
    out = str(tmp / "model")
    config = os.path.join(ROOT, "config", "models", "ldm_tiny.yaml")
    summary = train([config], ["model.params.embedder=%s" % fixture_model, "data.params.root=%s" % tiny_corpus],
                    logdir=str(tmp / "runs"), export=out, log_every_n_steps=1)
    return out, summary


@pytest.fixture(scope="session")
def scalable_ldm(tiny_corpus, tmp_path_factory):
    """(embedder directory, diffusion model directory, diffusion run): a tiny embedder of
    the shipped kind, then a tiny diffusion decoder on it, both by ``rawdiff train``."""
    from rawdiff.train import train

    tiny = os.path.join(ROOT, "config", "models", "tiny.yaml")
    ldm_tiny = os.path.join(ROOT, "config", "models", "ldm_tiny.yaml")
    tmp = tmp_path_factory.mktemp("scalable_ldm")
    emb = train([tiny], ["data.params.root=" + tiny_corpus, "data.params.crop_size=128",
                         "model.params.embedder.embed_dim=8", "model.params.embedder.linear_paths=true",
                         "model.params.embedder.encoder_network=false", "model.params.embedder.quality_channel=true",
                         "model.params.embedder.rate_lambda=0.02", "model.params.embedder.skip_code=true"],
                max_steps=2, logdir=str(tmp / "emb"))
    out = str(tmp / "model")
    summary = train([ldm_tiny], ["model.params.embedder=" + emb["model_dir"], "data.params.root=" + tiny_corpus,
                                 "model.params.diffusion.min_snr_gamma=0", "model.params.sampling.realism=0.5",
                                 "model.params.sampling.val_steps=2"],
                    logdir=str(tmp / "runs"), export=out, log_every_n_steps=1)
    return emb["model_dir"], out, summary["run_dir"]


@pytest.fixture(scope="session")
def frame(tiny_corpus):
    """A 90 x 118 crop of the tiny corpus' first test frame (RawFrame)."""
    import numpy as np

    from rawdiff.data.dataset import read_index
    from rawdiff.raw import RawFrame, read_raw

    f = read_raw(read_index(os.path.join(tiny_corpus, "test.txt"))[0])
    return RawFrame(np.ascontiguousarray(f.mosaic[:90, :118]), cfa=f.cfa, black_level=f.black_level,
                    white_level=f.white_level)


@pytest.fixture(scope="session")
def tiny_means_model(tiny_corpus, tmp_path_factory):
    """A tiny scalable-rate model with mean layers, trained from scratch for 4 steps by
    ``rawdiff train`` (config/models/tiny_means.yaml) and exported with means.safetensors."""
    from rawdiff.train import train

    tmp = tmp_path_factory.mktemp("means")
    out = str(tmp / "model")
    config = os.path.join(ROOT, "config", "models", "tiny_means.yaml")
    train([config], ["data.params.root=%s" % tiny_corpus], logdir=str(tmp / "runs"), export=out, log_every_n_steps=1)
    return out


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A prepared dataset of 6 small photos (train/val/test index files)."""
    from rawdiff.data import prepare as prep

    src = tmp_path_factory.mktemp("photos")
    for i in range(6):
        assert cv2.imwrite(str(src / ("photo%d.png" % i)), textured_photo(96, 128, i)[:, :, ::-1])
    out = tmp_path_factory.mktemp("corpus")
    prep.prepare([str(src)], str(out), seed=0, progress=False, verbose=False)
    return str(out)


@pytest.fixture(scope="session")
def onnx_model(fixture_model, tmp_path_factory):
    """A copy of the fixture model with encoder.onnx written by `rawdiff export-onnx`."""
    import shutil

    from rawdiff import cli

    model_dir = str(tmp_path_factory.mktemp("onnx") / "model")
    shutil.copytree(fixture_model, model_dir)
    assert cli.main(["export-onnx", "--model", model_dir]) == 0
    return model_dir


@pytest.fixture(scope="session")
def corpus_frames():
    """(name, RawFrame) of 4 frames of the corpus's test split (synthetic ones without it)."""
    return corpus_test_frames(4)
