"""The decoder stage of a scalable model: a synthesis per operating point fitted on the
coded latent, the decoder side retrained on frozen codes (same bitstream, same diffusion
decoder), the grid figure of rawdiff eval, and the training precision on a CPU without
native bfloat16."""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from synthetic import ROOT

from rawdiff import device
from rawdiff.codec import Codec
from rawdiff.codec.tiling import EXACT
from rawdiff.config import load_configs
from rawdiff.metrics import grid_strength
from rawdiff.models.embedder import Embedder, least_squares_synthesis
from rawdiff.models.ldm import load_frozen_embedder, same_codes
from rawdiff.models.vqgan import VQGAN
from rawdiff.train import train

TINY = os.path.join(ROOT, "config", "models", "tiny.yaml")
LDM_TINY = os.path.join(ROOT, "config", "models", "ldm_tiny.yaml")
SCALABLE = ["model.params.embedder.embed_dim=8", "model.params.embedder.linear_paths=true",
            "model.params.embedder.encoder_network=false", "model.params.embedder.quality_channel=true",
            "model.params.embedder.rate_lambda=0.02", "model.params.embedder.skip_code=true"]
STAGE = ["model.params.frozen_codes=true", "model.params.embedder.synthesis=per_quality"]


def scalable_embedder(**kw) -> Embedder:
    args = dict(ch=8, ch_mult=(1, 2), stem=2, embed_dim=8, stages=[[2, 16], [1, 16], [1, 16]],
                linear_paths=True, quality_channel=True, encoder_network=False, out="linear",
                synthesis="per_quality")
    args.update(kw)
    return Embedder(**args)


# --------------------------------------------------------------------------- units


def test_grid_strength_is_one_without_a_grid_and_grows_with_cell_edges():
    rng = np.random.default_rng(0)
    f = np.fft.fftfreq(256)
    lowpass = np.exp(-(f[:, None] ** 2 + f[None, :] ** 2) * (2 * np.pi * 3.0) ** 2 / 2)  # a blur of 3 pixels
    smooth = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(256, 256))) * lowpass))
    img = 128 + 30 * smooth / smooth.std()
    assert abs(grid_strength(img) - 1.0) < 0.1
    blocks = np.kron(rng.normal(scale=10.0, size=(32, 32)), np.ones((8, 8)))  # a step at every cell edge
    gridded = img + blocks
    assert grid_strength(gridded) > 1.5
    shifted = np.roll(gridded, 4, axis=(0, 1))  # the same edges off the 8-pixel lines do not count
    assert grid_strength(shifted) < 1.1
    rgb = np.repeat(gridded[..., None], 3, axis=2).astype(np.uint8)
    assert grid_strength(rgb) == pytest.approx(grid_strength(np.round(gridded)), rel=0.05)
    with pytest.raises(ValueError, match="larger than 2 x 8 pixels"):
        grid_strength(np.zeros((10, 40, 3), np.uint8))


def test_per_quality_synthesis_takes_each_samples_weights_by_its_quality_channel():
    torch.manual_seed(0)
    net = scalable_embedder()
    per = 3 * net.factor ** 2
    assert net.synthesis.out_channels == 3 * per and net.synthesis.weight.requires_grad
    with torch.no_grad():
        net.synthesis.weight.normal_()
        net.synthesis.bias.normal_()
    z = torch.randn(3, 8, 4, 5)
    z_q = torch.cat([z, torch.tensor([1.0, 3.0, 2.0]).view(3, 1, 1, 1).expand(3, 1, 4, 5) / 3], dim=1)
    assert net.quality_levels(z_q).tolist() == [1, 3, 2]
    out = net.synthesise(z_q)
    for b, n in enumerate([1, 3, 2]):
        sl = slice((n - 1) * per, n * per)
        expected = F.conv2d(z[b:b + 1], net.synthesis.weight[sl], net.synthesis.bias[sl], padding=1)
        assert torch.allclose(out[b:b + 1], expected, atol=1e-5)


def test_fit_synthesis_is_the_least_squares_estimate_from_each_points_codes():
    torch.manual_seed(0)
    net = scalable_embedder().eval()
    planes, rgb = torch.rand(4, 4, 32, 32), torch.rand(4, 3, 64, 64)
    net.init_linear_paths(planes, rgb)
    net.quantize.initialised.fill_(True)
    with torch.no_grad():
        for vq in net.quantize.codebooks:
            vq.embedding.weight.normal_(std=0.3)
    shared_w, shared_b = net.synthesis.weight.clone(), net.synthesis.bias.clone()
    assert torch.equal(shared_w[:192], shared_w[192:384])  # every point starts from the shared fit
    assert not bool(net.synthesis_fitted)
    net.fit_synthesis(planes, rgb)
    assert bool(net.synthesis_fitted)
    target = F.pixel_unshuffle(rgb, net.factor)
    z = net.analysis(planes)
    torch.set_grad_enabled(False)
    for n in (1, 2, 3):
        coded = net.lookup_codes(net.quantize.encode_indices(z, n))
        sl = slice((n - 1) * 192, n * 192)
        fitted = F.conv2d(coded[:, :8], net.synthesis.weight[sl], net.synthesis.bias[sl], padding=1)
        shared = F.conv2d(coded[:, :8], shared_w[sl], shared_b[sl], padding=1)
        assert float((fitted - target).pow(2).mean()) <= float((shared - target).pow(2).mean()) + 1e-7
        assert torch.allclose(net.synthesise(coded), fitted, atol=1e-5)
    torch.set_grad_enabled(True)
    w, b = least_squares_synthesis(z, target, 1e-3)
    assert w.shape == (192, 8, 3, 3) and b.shape == (192,)


def test_per_quality_synthesis_and_frozen_codes_need_what_they_use():
    with pytest.raises(ValueError, match="synthesis must be one of shared, per_quality"):
        scalable_embedder(synthesis="each")
    with pytest.raises(ValueError, match="per_quality needs linear_paths, quality_channel"):
        scalable_embedder(quality_channel=False)
    with pytest.raises(ValueError, match="frozen_codes .* needs init"):
        VQGAN(embedder=dict(ch=8, ch_mult=[1, 2], embed_dim=8, stages=[[1, 16]]), frozen_codes=True)


def test_bf16_training_falls_back_to_float32_on_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert device.training_precision("bf16-mixed", "auto") == "32-true"
    assert device.training_precision("bf16-mixed", "cpu") == "32-true"
    assert device.training_precision("16-mixed", "cpu") == "16-mixed"
    assert device.training_precision(None, "cpu") is None
    assert device.training_precision("bf16-mixed", "gpu") == "bf16-mixed"
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert device.training_precision("bf16-mixed", "cpu") == "bf16-mixed"


# --------------------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def stages(tiny_corpus, tmp_path_factory):
    """(first stage, decoder stage): a tiny scalable embedder by ``rawdiff train``, then its
    decoder stage on frozen codes, started from it."""
    tmp = tmp_path_factory.mktemp("decoder_stage")
    common = ["data.params.root=" + tiny_corpus, "data.params.crop_size=128"] + SCALABLE
    first = train([TINY], common, max_steps=2, logdir=str(tmp / "first"))["model_dir"]
    second = train([TINY], common + STAGE + ["model.params.init=" + first], max_steps=3,
                   logdir=str(tmp / "second"))["model_dir"]
    return first, second


def test_the_decoder_stage_keeps_the_codes_and_retrains_the_decoder(stages, frame):
    first, second = stages
    a, b = (load_file(os.path.join(d, "embedder.safetensors")) for d in (first, second))
    for key in a:
        if key.startswith(("quantize.", "analysis_")):
            assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["decoder.conv_out.weight"], b["decoder.conv_out.weight"])
    per = a["synthesis.weight"].shape[0]
    assert b["synthesis.weight"].shape[0] == 3 * per  # one synthesis per operating point, fitted apart
    assert not torch.equal(b["synthesis.weight"][:per], b["synthesis.weight"][per:2 * per])
    assert same_codes(a, load_frozen_embedder(second))
    # a stage from a per-quality model keeps its trained syntheses (fitted once, not again)
    again = VQGAN(**dict(load_configs([TINY], SCALABLE + STAGE + ["model.params.init=" + second])["model"]["params"]))
    assert bool(again.embedder.synthesis_fitted)
    assert torch.equal(again.embedder.synthesis.weight.detach(), b["synthesis.weight"])
    fresh = VQGAN(**dict(load_configs([TINY], SCALABLE + STAGE + ["model.params.init=" + first])["model"]["params"]))
    assert not bool(fresh.embedder.synthesis_fitted)
    c1, c2 = Codec.load(first, device="cpu"), Codec.load(second, device="cpu")
    for q in (1, 3):
        _, codes1 = c1.parse(c1.compress(frame, quality=q))
        _, codes2 = c2.parse(c2.compress(frame, quality=q))
        assert all(np.array_equal(x, y) for x, y in zip(codes1, codes2))
        rgb = c2.decompress(c2.compress(frame, quality=q))
        assert rgb.shape == frame.shape + (3,) and rgb.dtype == np.uint8
    # in tiles (each tile's synthesis picked by its quality channel) as whole
    payload = c2.compress(frame, quality=2)
    tiled = Codec.load(second, device="cpu", tile=8)  # 12 x 15 codes: four tiles
    tiled.tile_passes = EXACT
    assert np.abs(tiled.decompress(payload).astype(int) - c2.decompress(payload)).max() <= 1


def test_a_diffusion_decoder_of_the_codes_carries_over_with_its_scales(stages, tiny_corpus, tmp_path, frame):
    first, second = stages
    ldm = train([LDM_TINY], ["model.params.embedder=" + first, "data.params.root=" + tiny_corpus,
                             "model.params.sampling.val_steps=2"],
                max_steps=2, logdir=str(tmp_path / "ldm"))["model_dir"]
    moved = train([LDM_TINY], ["model.params.embedder=" + second, "data.params.root=" + tiny_corpus,
                               "model.params.init=" + ldm], do_train=False, logdir=str(tmp_path / "moved"),
                  export=str(tmp_path / "model"))["model_dir"]
    old, new = Codec.load(ldm, device="cpu").diffusion().denoiser, Codec.load(moved, device="cpu").diffusion().denoiser
    assert bool((new.residual_scale > 0).all())
    assert torch.equal(old.residual_scale, new.residual_scale) and torch.equal(old.condition_scale, new.condition_scale)
    with open(os.path.join(ldm, "model.json")) as f:
        ldm_id = json.load(f)["model_id"]
    with open(os.path.join(moved, "model.json")) as f:
        training = json.load(f)["diffusion"]["training"]
    assert training["global_step"] == 0 and training["init"]["model_id"] == ldm_id
    assert training["init"]["global_step"] == 2
    codec = Codec.load(moved, device="cpu")
    rgb = codec.decompress(codec.compress(frame, quality=2), mode="diffusion", steps=1, realism=1.0)
    assert rgb.shape == frame.shape + (3,)
    # an embedder with other codes does not keep them
    other = train([TINY], ["data.params.root=" + tiny_corpus, "data.params.crop_size=128"] + SCALABLE,
                  max_steps=1, seed=5, logdir=str(tmp_path / "other"))["model_dir"]
    assert not same_codes(load_file(os.path.join(other, "embedder.safetensors")), load_frozen_embedder(second))


def test_a_stage_on_frozen_codes_can_keep_the_prior_of_its_init_byte_for_byte(stages, tiny_corpus, tmp_path, frame):
    first, second = stages
    common = ["data.params.root=" + tiny_corpus, "data.params.crop_size=128"] + SCALABLE
    third = train([TINY], common + STAGE + ["model.params.init=" + second, "codec.keep_prior=true"], max_steps=1,
                  logdir=str(tmp_path / "third"))["model_dir"]
    with open(os.path.join(second, "prior.safetensors"), "rb") as a, open(os.path.join(third, "prior.safetensors"),
                                                                        "rb") as b:
        assert a.read() == b.read()
    metas = []
    for d in (second, third):
        with open(os.path.join(d, "model.json")) as f:
            metas.append(json.load(f))
    assert metas[1]["prior"] == dict(metas[0]["prior"], kept_from=metas[0]["model_id"])
    assert metas[1]["model_id"] != metas[0]["model_id"]  # its decoder trained on
    assert metas[1]["streams_of"] == [metas[0]["model_id"]]  # the same codes and prior: its streams decode
    codec = Codec.load(third, device="cpu")
    rgb = codec.decompress(codec.compress(frame, quality=3))
    assert rgb.shape == frame.shape + (3,)
    assert np.array_equal(codec.decompress(Codec.load(second, device="cpu").compress(frame, quality=3)), rgb)
    with pytest.raises(ValueError, match="codec.keep_prior keeps the prior of model.params.init"):
        train([TINY], common + ["codec.keep_prior=true"], max_steps=1, logdir=str(tmp_path / "codes"))
