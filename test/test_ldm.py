"""The latent diffusion decoder: UNet shapes, the latent it diffuses, a tiny training run
through ``rawdiff train``, the exported model directory and seeded decoding by the codec."""

import glob
import json
import os

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from rawdiff.models.unet import UNet, WindowAttention


@pytest.mark.parametrize("hw", [(8, 8), (13, 7), (5, 22)])
def test_unet_takes_any_size_and_starts_at_zero(hw):
    net = UNet(4, cond_channels=6, model_channels=8, ch_mult=(1, 2, 2), attention_window=2, heads=2,
               context_dim=12)
    x, cond = torch.randn(2, 4, *hw), torch.randn(2, 6, *hw)
    out = net(x, torch.tensor([0, 99]), cond, torch.randn(2, 5, 12))
    assert out.shape == x.shape and not out.any()  # zero-initialised output layer
    torch.nn.init.normal_(net.conv_out.weight)
    out = net(x, torch.tensor([0, 99]), cond, torch.randn(2, 5, 12))
    out.square().mean().backward()
    assert net.conv_in.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="6-channel concat"):
        net(x, torch.tensor([0, 1]))


def test_window_attention_is_attention_per_tile():
    torch.manual_seed(0)
    layer = WindowAttention(8, heads=2, window=4).eval()
    x = torch.randn(1, 8, 4, 8)
    with torch.no_grad():
        whole = layer.attn(x)
        tiled = layer(x)
        assert torch.allclose(tiled[..., :4], layer.attn(x[..., :4]), atol=1e-6)
        assert torch.allclose(tiled[..., 4:], layer.attn(x[..., 4:]), atol=1e-6)
        assert not torch.allclose(tiled, whole, atol=1e-4)
        small = torch.randn(1, 8, 3, 4)  # fits one window: plain attention, no padding
        assert torch.allclose(layer(small), layer.attn(small))
        assert layer(torch.randn(2, 8, 5, 9)).shape == (2, 8, 5, 9)


def tiny_denoiser(**diffusion):
    from rawdiff.models.ldm import LatentDenoiser

    return LatentDenoiser(16, 4, unet={"model_channels": 8, "ch_mult": [1, 2], "attention_window": 4, "heads": 2},
                          conditioning={"channels": 4, "context_dim": 8, "context_grid": 2},
                          diffusion=dict({"schedule": "cosine", "num_timesteps": 50, "latent_scale": 3.0}, **diffusion))


@pytest.mark.parametrize("residual", [True, False])
def test_target_and_restore_invert_on_the_sphere(residual):
    net = tiny_denoiser(residual=residual)
    z_e = torch.randn(2, 4, 3, 5)
    z_q = F.normalize(torch.randn(2, 4, 3, 5), dim=1)
    x0 = net.target(z_e, z_q)
    assert torch.allclose(net.restore(x0, z_q), F.normalize(z_e, dim=1), atol=1e-6)


def test_untrained_denoiser_gives_back_the_codes():
    """Zero output and v prediction: x0 = alpha_T x_T ~ 0, so the residual is ~0 and the
    decoder input is z_q: an untrained model decodes like the fast path."""
    net = tiny_denoiser().eval()
    idx = torch.randint(0, 16, (1, 6, 7))
    z_q = F.normalize(torch.randn(1, 4, 6, 7), dim=1)
    z = net.sample(idx, z_q, 1, torch.Generator().manual_seed(0))
    assert z.shape == z_q.shape
    assert (z - z_q).abs().max() < 0.05


def test_latent_scale_must_be_known():
    net = tiny_denoiser(latent_scale="auto")
    with pytest.raises(ValueError, match="latent_scale"):
        net.target(torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2))


@pytest.fixture(scope="module")
def ldm_model(tiny_ldm):
    """The tiny LDM (conftest): trained for 4 steps by ``rawdiff train``, and its model directory."""
    out, summary = tiny_ldm
    assert summary["global_step"] == 4 and summary["model_dir"] == out
    return out, summary


def test_training_exports_a_diffusion_model_directory(ldm_model, fixture_model):
    from safetensors.torch import load_file

    from rawdiff.codec.modeldir import compute_model_id, read_model_dir

    out, summary = ldm_model
    info = read_model_dir(out)
    assert os.path.isfile(os.path.join(out, "diffusion.safetensors"))
    with open(os.path.join(fixture_model, "model.json")) as f:
        embedder_meta = json.load(f)
    meta = info["meta"]
    assert meta["model_id"] == compute_model_id(out) != embedder_meta["model_id"]
    assert meta["embedder_model_id"] == embedder_meta["model_id"]
    assert meta["diffusion"]["training"]["global_step"] == 4 and meta["diffusion"]["latent_scale"] > 0
    for name in ("embedder.safetensors", "prior.safetensors"):  # the embedder stays as it was
        with open(os.path.join(out, name), "rb") as a, open(os.path.join(fixture_model, name), "rb") as b:
            assert a.read() == b.read()
    assert info["config"]["model"]["target"] == "vqgan" and info["config"]["diffusion"]["model"]["target"] == "ldm"
    state = load_file(os.path.join(out, "diffusion.safetensors"))
    assert "latent_scale" in state and any(k.startswith("unet.") for k in state)
    assert "Diffusion decoder" in open(os.path.join(out, "MODEL_CARD.md")).read()
    (csv,) = glob.glob(os.path.join(summary["run_dir"], "csv", "**", "metrics.csv"), recursive=True)
    metrics = open(csv).readline()
    assert "val/psnr_diffusion" in metrics and "val/psnr_ceiling" in metrics


@pytest.fixture(scope="module")
def frame(tiny_corpus):
    from rawdiff.data.dataset import read_index
    from rawdiff.raw import RawFrame, read_raw

    f = read_raw(read_index(os.path.join(tiny_corpus, "test.txt"))[0])
    # a size that is no multiple of the code cell (f8): padded for coding, cropped back
    return RawFrame(np.ascontiguousarray(f.mosaic[:90, :118]), cfa=f.cfa, black_level=f.black_level,
                    white_level=f.white_level)


def test_diffusion_decoding_is_seeded(ldm_model, fixture_model, frame):
    from rawdiff.codec import Codec
    from rawdiff.codec.bitstream import BitstreamError

    codec = Codec.load(ldm_model[0], device="cpu")
    payload = codec.compress(frame)
    a = codec.decompress(payload, mode="diffusion", steps=2, seed=0)
    b = codec.decompress(payload, mode="diffusion", steps=2, seed=0)
    c = codec.decompress(payload, mode="diffusion", steps=2, seed=1)
    assert a.shape == (90, 118, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # the fast path is the embedder's, unchanged
    embedder_codec = Codec.load(fixture_model, device="cpu")
    assert np.array_equal(codec.decompress(payload), embedder_codec.decompress(embedder_codec.compress(frame)))
    # the embedder's streams decode here (the same codes and prior: streams_of), to the same sample;
    # the embedder's own codec has no diffusion decoder and refuses this model's streams
    assert np.array_equal(codec.decompress(embedder_codec.compress(frame), mode="diffusion", steps=2, seed=0), a)
    with pytest.raises(BitstreamError, match="model mismatch"):
        embedder_codec.decompress(payload)
    with pytest.raises(ValueError, match="steps 0"):
        codec.decompress(payload, mode="diffusion", steps=0)


def test_guidance_and_samplers(ldm_model, frame):
    from rawdiff.codec import Codec

    codec = Codec.load(ldm_model[0], device="cpu")
    grid = codec.encode_indices(frame)
    dec = codec.diffusion()
    base = dec.decode(grid, steps=3, seed=0, sampler="ddim")
    guided = dec.decode(grid, steps=3, seed=0, sampler="ddim", guidance_scale=2.0)
    # the decoder's output over whole code cells (a 90x118 frame has 12x15 codes at f8), in [0, 1]
    assert tuple(base.shape) == tuple(guided.shape) == (3, 96, 120)
    assert 0 <= float(base.min()) and float(base.max()) <= 1
    assert not np.array_equal(base.numpy(), guided.numpy())
    with pytest.raises(ValueError, match="sampler must be one of"):
        dec.decode(grid, steps=1, sampler="euler")


def test_cli_decompress_diffusion(ldm_model, frame, tmp_path):
    import cv2

    from rawdiff.cli import main
    from rawdiff.codec import Codec

    rdc = tmp_path / "f.rdc"
    rdc.write_bytes(Codec.load(ldm_model[0], device="cpu").compress(frame))
    png = tmp_path / "f.png"
    assert main(["decompress", str(rdc), "-o", str(png), "--model", ldm_model[0], "--mode", "diffusion",
                 "--steps", "1", "--seed", "3", "--device", "cpu"]) == 0
    assert cv2.imread(str(png)).shape == (90, 118, 3)


# ------------------------------------------------------------------ diffusion on staged codes


def test_diffusion_trains_on_every_quality_of_the_staged_embedder(fixture_model):
    """The LDM on a staged embedder: in training each batch's decoder input is a random
    prefix of the stages (every operating point gets diffusion), the conditioning is the
    first stage's codes at every quality; in validation every stage."""
    from rawdiff.models.ldm import LDM

    ldm = LDM(fixture_model, unet={"model_channels": 8, "ch_mult": [1, 2], "attention_window": 4, "heads": 2},
              conditioning={"channels": 4, "context_dim": 8, "context_grid": 2},
              diffusion={"schedule": "cosine", "num_timesteps": 50, "latent_scale": 3.0})
    emb = ldm.embedder
    assert emb.staged and emb.stages == [(2, 16), (2, 16), (1, 32)]
    assert ldm.denoiser.conditioner is not None
    torch.manual_seed(0)
    batch = {"raw": torch.rand(2, 4, 28, 36), "wb_gains": torch.tensor([[2.0, 1.0, 1.5]] * 2)}
    with torch.no_grad():
        planes = batch["raw"] * torch.tensor([2.0, 1.0, 1.0, 1.5])[None, :, None, None]
        codes = emb.encode_codes(planes.clamp(0, 1))
    prefixes = [emb.lookup_codes(codes[:n], (7, 9)) for n in (1, 2, 3)]
    ldm.train()
    assert not emb.training  # frozen: training the LDM leaves the embedder in eval mode
    seen = set()
    for _ in range(24):
        z_e, cond, z_q, quality = ldm.encode(batch)
        assert quality is None  # the fixture's decoder is not told the operating point
        assert z_e.shape == (2, 4, 7, 9) and cond.shape == (2, 7, 9) and z_q.shape == (2, 4, 7, 9)
        assert torch.equal(cond, emb.condition_indices(codes, (7, 9)))
        match = [n for n, zp in zip((1, 2, 3), prefixes) if torch.allclose(z_q, zp, atol=1e-6)]
        assert len(match) == 1
        seen.add(match[0])
        loss, _ = ldm.denoiser.loss(z_e, cond, z_q)
        assert torch.isfinite(loss)
    assert seen == {1, 2, 3}
    ldm.eval()
    _, _, z_q, _ = ldm.encode(batch)
    assert torch.allclose(z_q, prefixes[2], atol=1e-6)


def test_diffusion_decodes_every_quality(ldm_model, frame):
    from rawdiff.codec import Codec, bitstream

    codec = Codec.load(ldm_model[0], device="cpu")
    top = codec.compress(frame)
    images = []
    for q in range(1, codec.qualities + 1):
        payload = bitstream.truncate(top, q)
        assert payload == codec.compress(frame, quality=q)
        header, codes = codec.parse(payload)
        rgb = codec.decompress(payload, mode="diffusion", steps=2, seed=0)
        assert rgb.shape == (90, 118, 3) and rgb.dtype == np.uint8
        assert np.array_equal(rgb, codec.decompress(payload, mode="diffusion", steps=2, seed=0))
        # what the diffusion decoder draws for the first q stages, rendered
        out = codec.diffusion().decode(codes, steps=2, seed=0, shape=header.code_shape)
        assert tuple(out.shape) == (3, 96, 120)
        assert np.array_equal(rgb, codec.render(np.ascontiguousarray(out.numpy().transpose(1, 2, 0)), header))
        images.append(rgb)
    assert not np.array_equal(images[0], images[-1])


def test_diffusion_weights_stored_in_half_precision(ldm_model, fixture_model, tiny_corpus, frame, tmp_path):
    """``codec.diffusion_weights: float16``: the denoiser written in half precision (half the
    bytes; single values such as the latent scale in float32), the float32 export of the same
    checkpoint rounded, and a codec that decodes with it close to the float32 one."""
    from safetensors.torch import load_file

    from rawdiff.codec import Codec
    from rawdiff.export.model_dir import check_weight_storage
    from rawdiff.train import train

    config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config", "models",
                          "ldm_tiny.yaml")
    half, full = str(tmp_path / "half"), str(tmp_path / "full")
    summary = train([config], ["model.params.embedder=%s" % fixture_model, "data.params.root=%s" % tiny_corpus,
                               "codec.diffusion_weights=float16"], max_steps=1, logdir=str(tmp_path / "runs"),
                    export=half)
    train([], ["codec.diffusion_weights=float32"], resume=summary["run_dir"], do_train=False, export=full)
    path = os.path.join(half, "diffusion.safetensors")
    s16, s32 = load_file(path), load_file(os.path.join(full, "diffusion.safetensors"))
    assert sorted(s16) == sorted(s32)
    for k, v in s32.items():
        if v.is_floating_point() and v.numel() > 1:
            assert v.dtype == torch.float32 and s16[k].dtype == torch.float16 and torch.equal(s16[k], v.half()), k
        else:
            assert torch.equal(s16[k], v), k  # single values (scales) and integers as they were
    assert os.path.getsize(path) < 0.6 * os.path.getsize(os.path.join(ldm_model[0], "diffusion.safetensors"))
    images = []
    for model_dir in (half, full):
        codec = Codec.load(model_dir, device="cpu")
        images.append(codec.decompress(codec.compress(frame), mode="diffusion", steps=2, realism=1.0).astype(float))
    mse = np.mean((images[0] - images[1]) ** 2)
    assert mse == 0 or 10 * np.log10(255.0 ** 2 / mse) > 40
    with pytest.raises(ValueError, match="codec.diffusion_weights must be one of float32, float16"):
        check_weight_storage("float8", "diffusion_weights")
