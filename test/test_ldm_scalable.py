"""The diffusion decoder of a scalable embedder whose decoder is told its operating point
(linear paths, quality channel): per operating point scales, the realism knob from the fast
path to a whole sample, decoding every quality whole and in tiles through the codec, the
CLI and eval, half precision, and clear errors for a mismatched model or a bad realism."""

import csv
import glob
import os

import numpy as np
import pytest
import torch

from rawdiff.cli import main
from rawdiff.codec import Codec
from rawdiff.models.ldm import LatentDenoiser, check_realism, load_matching


def test_scales_are_measured_per_operating_point_and_validation_logs_realism(scalable_ldm):
    _, model_dir, run = scalable_ldm
    codec = Codec.load(model_dir, device="cpu")
    d = codec.diffusion().denoiser
    assert d.qualities == 3 and tuple(d.residual_scale.shape) == (3, 8) and bool((d.residual_scale > 0).all())
    assert bool((d.condition_scale > 0).all())
    assert codec.diffusion().realism == 0.5  # the config's default realism
    with open(glob.glob(os.path.join(run, "csv", "*", "metrics.csv"))[0]) as f:
        keys = set(next(csv.reader(f)))
    assert {"val/swd_fast_q1", "val/swd_diffusion_q1", "val/psnr_ceiling"} <= keys


def test_realism_gives_the_drawn_texture_to_the_finest_channels(scalable_ldm, frame):
    _, model_dir, _ = scalable_ldm
    codec = Codec.load(model_dir, device="cpu")
    dec = codec.diffusion()
    torch.manual_seed(0)
    # an untrained UNet predicts 0: give it weights, so that a sample differs from the codes
    for p in dec.denoiser.unet.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    header, codes = codec.parse(codec.compress(frame, quality=2))
    idx = [torch.from_numpy(c)[None] for c in codes]
    z_q = codec.embedder.lookup_codes(idx, header.code_shape)
    cond = codec.embedder.condition_indices(idx, header.code_shape)

    def latent(r):
        return dec.denoiser.sample(cond, z_q, 3, torch.Generator().manual_seed(7), realism=r, quality=2)

    none, half, whole = latent(0.0), latent(0.5), latent(1.0)
    assert torch.equal(none, z_q)  # realism 0: the codes, as the fast path decodes them
    assert not torch.allclose(whole[:, 4:8], z_q[:, 4:8], atol=1e-4)
    # 0.5 of the 8 channels: the trailing (finest) 4 drawn, the others the codes'
    assert torch.equal(half[:, :4], z_q[:, :4]) and torch.allclose(half[:, 4:8], whole[:, 4:8])
    # the decoder's input keeps the operating point of the codes (decode_at: coded)
    assert torch.allclose(whole[:, -1], torch.full_like(whole[:, -1], 2 / 3))
    payload = codec.compress(frame, quality=2)
    fast = codec.decompress(payload, mode="fast")
    assert np.array_equal(codec.decompress(payload, mode="diffusion", steps=3, seed=1, realism=0.0), fast)
    b = codec.decompress(payload, mode="diffusion", steps=3, seed=1, realism=1.0)
    assert b.shape == (90, 118, 3) and not np.array_equal(b, fast)
    assert np.array_equal(b, codec.decompress(payload, mode="diffusion", steps=3, seed=1, realism=1.0))
    from rawdiff.models.ldm import realism_mask

    assert realism_mask(0.25, 8).flatten().tolist() == [0, 0, 0, 0, 0, 0, 1, 1]
    assert realism_mask(0.3125, 8).flatten().tolist() == [0, 0, 0, 0, 0, 0.5, 1, 1]


def test_every_quality_decodes_whole_and_in_tiles(scalable_ldm, frame):
    _, model_dir, _ = scalable_ldm
    whole = Codec.load(model_dir, device="cpu")
    tiled = Codec.load(model_dir, device="cpu", tile=8)
    torch.manual_seed(1)  # weights that draw something, the same in both
    for a, b in zip(whole.diffusion().denoiser.unet.parameters(), tiled.diffusion().denoiser.unet.parameters()):
        a.data.add_(0.05 * torch.randn_like(a))
        b.data.copy_(a.data)
    assert tiled.tiled(whole.parse(whole.compress(frame))[0].code_shape)
    for q in range(1, whole.qualities + 1):
        payload = whole.compress(frame, quality=q)
        a = whole.decompress(payload, mode="diffusion", steps=2, seed=0)
        b = tiled.decompress(payload, mode="diffusion", steps=2, seed=0)
        assert a.shape == b.shape == (90, 118, 3)
        assert not np.array_equal(a, whole.decompress(payload, mode="fast"))
        # the UNet's receptive field is wider than its tiles' halo: close, not equal
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 4.0


def test_decode_at_finest_tells_the_decoder_all_detail_is_there():
    d = LatentDenoiser(16, 4, unet={"model_channels": 8, "ch_mult": [1], "attention_levels": []},
                       conditioning={"channels": 4, "context_dim": 8, "context_grid": 2},
                       diffusion={"decode_at": "finest"}, normalized=False, qualities=3)
    with pytest.raises(ValueError, match="scales are not set"):
        d.target(torch.zeros(1, 4, 2, 2), torch.zeros(1, 5, 2, 2), 1)
    z_e = torch.randn(2, 4, 4, 4)
    z_qs = [torch.cat([z_e * k / 4, torch.full((2, 1, 4, 4), n / 3)], 1) for n, k in ((1, 1), (2, 2), (3, 3))]
    d.measure_scales(z_e, z_qs)
    x0 = d.target(z_e, z_qs[0], 1)
    assert torch.allclose(x0.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-4)  # unit variance per channel
    back = d.restore(x0, z_qs[0], 1)
    assert torch.allclose(back[:, :4], z_e, atol=1e-5) and torch.equal(back[:, 4], torch.ones(2, 4, 4))
    with pytest.raises(ValueError, match="operating points 1..3"):
        d.target(z_e, z_qs[0], 4)
    with pytest.raises(ValueError, match="decode_at"):
        LatentDenoiser(16, 4, diffusion={"decode_at": "sharpest"}, qualities=3)


def test_realism_is_checked(scalable_ldm, frame, tmp_path):
    for bad in (-0.1, 1.5, "x", None):
        with pytest.raises(ValueError, match="realism"):
            check_realism(bad)
    _, model_dir, _ = scalable_ldm
    codec = Codec.load(model_dir, device="cpu")
    payload = codec.compress(frame, quality=1)
    with pytest.raises(ValueError, match="realism must be in"):
        codec.decompress(payload, mode="diffusion", steps=2, realism=2.0)
    rdc = tmp_path / "f.rdc"
    rdc.write_bytes(payload)
    png = tmp_path / "f.png"
    base = ["decompress", str(rdc), "-o", str(png), "--model", model_dir, "--mode", "diffusion", "--steps", "2",
            "--device", "cpu"]
    assert main(base + ["--realism", "0.25"]) == 0 and png.is_file()
    with pytest.raises(SystemExit) as exc:
        main(base + ["--realism", "1.5"])
    assert exc.value.code != 0


def test_weights_of_another_embedder_are_refused_by_name(scalable_ldm):
    _, model_dir, _ = scalable_ldm
    codec = Codec.load(model_dir, device="cpu")
    d = codec.diffusion().denoiser
    state = {k: v for k, v in d.state_dict().items() if k != "residual_scale"}
    state["latent_scale"] = torch.tensor(1.0)  # a single-rate decoder's scale
    with pytest.raises(ValueError, match="missing.*residual_scale.*unexpected.*latent_scale"):
        load_matching(d, state, "other")
    wrong = dict(d.state_dict())
    wrong["conditioner.embedding.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="shape.*conditioner.embedding.weight"):
        load_matching(d, wrong, "other")


def test_eval_measures_each_realism_as_its_own_curve(scalable_ldm, tiny_corpus, tmp_path, capsys):
    import json

    _, model_dir, _ = scalable_ldm
    out = tmp_path / "eval"
    rc = main(["eval", "--model", model_dir, os.path.join(tiny_corpus, "test.txt"), "--out", str(out),
               "--max-frames", "1", "--codecs", "jpeg", "--steps", "2", "--realism", "0", "1", "--no-butteraugli",
               "--no-progress", "--qualities", "1"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert results["models"][0]["curves"]["diffusion"] == {"2@r0": "rawdiff-diffusion-2-r0",
                                                           "2@r1": "rawdiff-diffusion-2-r1"}
    for name, r in (("rawdiff-diffusion-2-r0", 0.0), ("rawdiff-diffusion-2-r1", 1.0)):
        assert results["codecs"][name]["realism"] == r
        points = [p for p in results["points"] if p["codec"] == name]
        assert len(points) == 1 and "swd" in points[0] and "orb" in points[0]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--model", model_dir, os.path.join(tiny_corpus, "test.txt"), "--out", str(out),
              "--steps", "2", "--realism", "3"])
    assert exc.value.code != 0
    assert "--realism: realism must be in [0, 1]" in capsys.readouterr().err


def test_precision_is_chosen_at_run_time_and_checked(scalable_ldm, frame):
    from rawdiff.device import autocast_dtype

    assert autocast_dtype(torch.device("cpu")) is None  # the CPU decodes in float32 unless asked
    assert autocast_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        autocast_dtype(torch.device("cpu"), "fp8")
    _, model_dir, _ = scalable_ldm
    with pytest.raises(ValueError, match="precision must be one of"):
        Codec.load(model_dir, device="cpu", precision="half")
    full = Codec.load(model_dir, device="cpu")
    half = Codec.load(model_dir, device="cpu", precision="bf16")
    payload = full.compress(frame, quality=3)
    for mode in ("fast", "diffusion"):
        a = full.decompress(payload, mode=mode, steps=2)
        b = half.decompress(payload, mode=mode, steps=2)
        assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() < 3.0


def test_memory_format_is_chosen_at_run_time_and_checked(scalable_ldm, frame):
    from rawdiff.device import network_memory_format

    cpu = torch.device("cpu")
    assert network_memory_format(cpu) == torch.channels_last  # oneDNN's convolutions are faster in NHWC
    assert network_memory_format(cpu, "contiguous") == torch.contiguous_format
    assert network_memory_format(torch.device("cuda")) == torch.contiguous_format  # not measured there yet
    assert network_memory_format(torch.device("cuda"), "channels_last") == torch.channels_last
    with pytest.raises(ValueError, match="memory_format must be one of auto, channels_last, contiguous"):
        network_memory_format(cpu, "nhwc")
    _, model_dir, _ = scalable_ldm
    with pytest.raises(ValueError, match="memory_format must be one of"):
        Codec.load(model_dir, device="cpu", memory_format="nhwc")
    nhwc = Codec.load(model_dir, device="cpu")
    nchw = Codec.load(model_dir, device="cpu", memory_format="contiguous")

    def nhwc_weights(net):  # is each 3x3 convolution's weight laid out channels_last? (1x1 ones are both)
        return [m.weight.is_contiguous(memory_format=torch.channels_last) for m in net.modules()
                if isinstance(m, torch.nn.Conv2d) and m.weight.shape[1] > 1 and m.weight.shape[-1] > 1]

    assert nhwc_weights(nhwc.embedder.decoder) and all(nhwc_weights(nhwc.embedder.decoder))
    assert nhwc_weights(nhwc.diffusion().denoiser) and all(nhwc_weights(nhwc.diffusion().denoiser))
    assert not any(nhwc_weights(nchw.embedder.decoder)) and not any(nhwc_weights(nchw.diffusion().denoiser))
    payload = nhwc.compress(frame, quality=3)
    for mode in ("fast", "diffusion"):  # the same decoding up to float rounding
        a = nhwc.decompress(payload, mode=mode, steps=2)
        b = nchw.decompress(payload, mode=mode, steps=2)
        assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1
