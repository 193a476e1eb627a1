"""The texture stage of the realism path: bands and their noise, the energy network and its
fit, the synthesis (only where energy is missing, luma only, a seed reproduces it), the
model directory's checks, and the codec, CLI and realism split with a fitted stage."""

import json
import os
import shutil
from dataclasses import replace as dataclasses_replace

import numpy as np
import pytest
import torch

from rawdiff.cli import main
from rawdiff.codec import Codec
from rawdiff.codec.modeldir import TEXTURE_FILE, read_model_dir
from rawdiff.metrics import to_tensor, to_uint8
from rawdiff.models.texture import (
    LEGACY_SIGMAS,
    SIGMAS,
    Synthesis,
    TextureEnergy,
    add_texture,
    band_energies,
    band_noise_std,
    bands,
    energy_loss,
    gaussian_blur,
    local_energy,
    luma,
    split_realism,
    synthesize,
)
from rawdiff.raw.frame import RawFrame
from rawdiff.texture_fit import fit_texture, write_texture


@pytest.mark.parametrize("shape", [(1, 1, 97, 130), (2, 3, 13, 40), (1, 1, 5, 300), (1, 1, 1, 1)])
def test_the_cpu_filters_are_torch_s_to_float32_rounding(shape):
    # OpenCV on the CPU (float32, no gradients); torch's depthwise convolution and avg_pool2d
    # where gradients are wanted: the same values, borders and short sides included
    x = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    for sigma in (1.0, 2.0, 4.0):
        fast, ref = gaussian_blur(x, sigma), gaussian_blur(x.clone().requires_grad_(True), sigma).detach()
        assert fast.shape == x.shape and fast.dtype == torch.float32
        assert torch.allclose(fast, ref, rtol=1e-5, atol=1e-6), sigma
    fast = local_energy(x)
    ref = torch.nn.functional.avg_pool2d(x * x, 9, 1, 4, count_include_pad=False)
    assert fast.shape == x.shape and torch.allclose(fast, ref, rtol=1e-5, atol=1e-7)
    assert torch.allclose(local_energy(x.clone().requires_grad_(True)).detach(), ref)


def test_bands_split_fine_from_coarser_detail():
    flat = torch.full((1, 1, 40, 52), 0.3, dtype=torch.float64)
    assert all(float(b.abs().max()) < 1e-12 for b in bands(flat))
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    fine = ((yy + xx) % 2).to(torch.float64)[None, None]  # period 2: the finest detail there is
    coarse = (0.5 + 0.5 * torch.sin(2 * np.pi * xx.to(torch.float64) / 12))[None, None]  # period 12
    e_fine = [float(b[..., 8:-8, 8:-8].pow(2).mean()) for b in bands(fine)]
    e_coarse = [float(b[..., 8:-8, 8:-8].pow(2).mean()) for b in bands(coarse)]
    assert e_fine[0] > 20 * e_fine[1]
    assert e_coarse[1] > e_fine[1] and e_coarse[0] < e_fine[0] / 5


def test_band_noise_std_is_that_of_filtered_white_noise():
    white = torch.randn(1, 1, 512, 512, generator=torch.Generator().manual_seed(0))
    for sigmas in (SIGMAS, LEGACY_SIGMAS):
        for b, s in zip(bands(white, sigmas), band_noise_std(sigmas)):
            assert abs(float(b[..., 32:-32, 32:-32].std()) / s - 1) < 0.03


def test_energy_loss_is_least_at_the_geometric_mean_of_the_energy():
    target = torch.full((1, 2, 4, 4), 4e-4)
    target[..., ::2, :] = 1e-4  # two energies: geometric mean 2e-4, mean 2.5e-4
    losses = {k: float(energy_loss(torch.full((1, 2, 4, 4), np.log(2e-4) + k), target)) for k in (-0.2, 0.0, 0.2)}
    assert losses[0.0] < losses[-0.2] and losses[0.0] < losses[0.2]
    assert float(energy_loss(torch.full((1, 2, 4, 4), np.log(2.5e-4)), target)) > losses[0.0]


def _flat_and_blurred(seed: int, size: int = 96):
    """A reference with fine texture of known energy and its blurred decode, as uint8 images."""
    g = torch.Generator().manual_seed(seed)
    ref = (0.5 + 0.06 * torch.randn(1, 3, size, size, generator=g)).clamp(0, 1)
    ref = ref.mean(1, keepdim=True).repeat(1, 3, 1, 1)  # grey texture
    fast = gaussian_blur(ref, 3.0)
    as_u8 = [to_uint8(t) for t in (ref, fast)]
    return as_u8[0], np.stack([as_u8[1], as_u8[1]])


def test_fit_learns_the_energy_that_the_decodes_lack():
    examples = [_flat_and_blurred(s) for s in range(3)]
    net, record = fit_texture(examples, steps=150, crop=64, batch=4, lr=5e-3, log_every=0)
    assert record["steps"] == 150 and record["frames"] == 3
    ref, fast = examples[0]
    img = to_tensor(fast[0])
    truth = band_energies(to_tensor(ref)).mean(dim=(0, 2, 3))
    pred = net(img, torch.tensor([0.5])).exp().mean(dim=(0, 2, 3))
    # from exp(init) = 1e-4 to within a factor 1.6 of each band's energy
    assert torch.all((pred / truth - 1).abs() < 0.6), (pred, truth)


def test_a_small_frame_or_no_frame_is_refused():
    with pytest.raises(ValueError, match="no frames"):
        fit_texture([])
    with pytest.raises(ValueError, match="smaller than the crop"):
        fit_texture([_flat_and_blurred(0, 32)], crop=64)


def test_texture_goes_only_where_energy_is_missing_in_luma_and_a_seed_repeats_it():
    ref, fast = _flat_and_blurred(0)
    img = to_tensor(fast[0])
    img[:, 0] *= 0.9  # a colour, so that chroma is there to keep
    own = band_energies(img)
    assert torch.equal(add_texture(img, own, 1.0, torch.Generator().manual_seed(0)), img)
    expected = own + 4e-4
    a = add_texture(img, expected, 1.0, torch.Generator().manual_seed(0))
    b = add_texture(img, expected, 1.0, torch.Generator().manual_seed(0))
    c = add_texture(img, expected, 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    added = a - img
    torch.testing.assert_close(added[:, 0], added[:, 1])  # the same on every channel: luma texture
    # the finest band gets its deficit (and, the bands overlapping, some of the next band's)
    ratio = float(band_energies(a)[:, 0, 16:-16, 16:-16].mean() / expected[:, 0].mean())
    assert 1.0 < ratio < 2.5
    only_first = own.clone()
    only_first[:, 0] += 4e-4
    ratio = float(band_energies(add_texture(img, only_first, 1.0, torch.Generator()))[:, 0, 16:-16, 16:-16].mean()
                  / only_first[:, 0].mean())
    assert 0.8 < ratio < 1.2
    assert float(luma(a).mean() - luma(img).mean()) == pytest.approx(0.0, abs=2e-3)


def test_amplification_raises_the_image_s_own_detail_in_phase_and_noise_fills_the_rest():
    g = torch.Generator().manual_seed(3)
    img = (0.5 + 0.1 * gaussian_blur(torch.randn(1, 1, 128, 128, generator=g), 1.5)).repeat(1, 3, 1, 1)
    own = band_energies(img)
    inner = (Ellipsis, slice(24, -24), slice(24, -24))
    detail = luma(img) - gaussian_blur(luma(img), SIGMAS[-1])  # the sum of the bands

    def gained(out):  # energy of the result's bands over the image's own
        return band_energies(out)[inner].mean(dim=(0, 2, 3)) / own[inner].mean(dim=(0, 2, 3))

    # detail amplified by at most 1.5 (energy 2.25), the deficit to 4x left: the same for any seed
    amplified, with_noise = Synthesis(SIGMAS, (1.5,) * 3, (0, 0, 0)), Synthesis(SIGMAS, (1.5,) * 3, (1, 1, 1))
    a = add_texture(img, 4 * own, 1.0, torch.Generator().manual_seed(0), synthesis=amplified)
    b = add_texture(img, 4 * own, 1.0, torch.Generator().manual_seed(1), synthesis=amplified)
    assert torch.equal(a, b)
    added = luma(a) - luma(img)
    assert float(torch.corrcoef(torch.stack([added[inner].flatten(), detail[inner].flatten()]))[0, 1]) > 0.95
    assert torch.all((gained(a) - 2.25).abs() < 0.35), gained(a)
    # the gain: target energies gain^2 x expected; 2 x 2 = 4x the own energy, reached by amplification alone
    c = add_texture(img, own, 2.0, synthesis=Synthesis(SIGMAS, (4.0,) * 3, (0, 0, 0)))
    assert torch.all((gained(c) - 4.0).abs() < 0.6), gained(c)
    # noise fills what amplification left, now seeded (not each band to 4x: a band's measure filters the band's
    # noise once more, which keeps all of the finest band's and less of the coarser ones)
    d = add_texture(img, 4 * own, 1.0, torch.Generator().manual_seed(0), synthesis=with_noise)
    e = add_texture(img, 4 * own, 1.0, torch.Generator().manual_seed(1), synthesis=with_noise)
    assert not torch.equal(d, e)
    assert torch.all(gained(d) > gained(a) + 0.2) and float(gained(d)[0]) > 3.5, gained(d)
    with pytest.raises(ValueError, match="expected energies of 2 bands for a synthesis of 3"):
        add_texture(img, own[:, :2], 1.0)


def test_the_first_stages_synthesis_is_kept_for_their_entries():
    """gain x sqrt(deficit) of noise, as the first texture stages decoded (not the energy target)."""
    img = (0.5 + 0.05 * gaussian_blur(torch.randn(1, 1, 64, 80, generator=torch.Generator().manual_seed(5)), 2.0))
    img = img.repeat(1, 3, 1, 1)
    expected = band_energies(img, LEGACY_SIGMAS) + torch.tensor([3e-4, 1e-4]).view(1, 2, 1, 1)
    white = torch.randn(1, 1, 64, 80, generator=torch.Generator().manual_seed(6))
    own = band_energies(img, LEGACY_SIGMAS)
    old = sum((expected[:, i: i + 1] - own[:, i: i + 1]).clamp(min=0).sqrt() * b / s
              for i, (b, s) in enumerate(zip(bands(white, LEGACY_SIGMAS), band_noise_std(LEGACY_SIGMAS))))
    out = add_texture(img, expected, 0.5, white=white, synthesis=Synthesis.of_entry({"share": 0.25}))
    torch.testing.assert_close(out, (img + 0.5 * old).clamp(0, 1))
    # the energy-target synthesis of the same bands gives less at gain 0.5: a quarter of the energy, less the own
    new = add_texture(img, expected, 0.5, white=white, synthesis=Synthesis(LEGACY_SIGMAS))
    assert float((new - img).abs().mean()) < float((out - img).abs().mean())


def test_a_texture_entry_without_bands_is_that_of_the_first_stages():
    assert Synthesis.of_entry({"share": 0.25}) == Synthesis(LEGACY_SIGMAS, None, None, legacy=True)
    entry = {"sigmas": [1, 2, 4], "amplify": [1, 2, 2], "noise": [1, 1, 0]}
    assert Synthesis.of_entry(entry) == Synthesis((1.0, 2.0, 4.0), (1.0, 2.0, 2.0), (1.0, 1.0, 0.0))


def test_realism_split_gives_the_finest_scale_first():
    assert split_realism(0.3, None) == (0.0, 0.3)
    assert split_realism(0.0, 0.25) == (0.0, 0.0)
    assert split_realism(0.125, 0.25) == (0.5, 0.0)
    assert split_realism(0.25, 0.25) == (1.0, 0.0)
    tex, lat = split_realism(0.625, 0.25)
    assert tex == 1.0 and lat == pytest.approx(0.5)
    assert split_realism(1.0, 0.25) == (1.0, 1.0)


@pytest.fixture(scope="module")
def textured_model(scalable_ldm, tiny_corpus, tmp_path_factory):
    """A copy of the tiny diffusion model with a texture stage fitted by `rawdiff fit-texture`."""
    out = str(tmp_path_factory.mktemp("texture") / "model")
    shutil.copytree(scalable_ldm[1], out)
    assert main(["fit-texture", "--model", out, os.path.join(tiny_corpus, "train.txt"), "--steps", "20",
                 "--crop", "64", "--batch", "4", "--max-frames", "2", "--share", "0.5", "--gain", "1.5",
                 "--realism", "0.75", "--amplify", "1", "2", "2", "--noise", "1", "1", "0.5"]) == 0
    return out


def test_fit_texture_writes_the_stage_and_keeps_the_model_id(textured_model, scalable_ldm):
    meta = read_model_dir(textured_model)["meta"]
    before = read_model_dir(scalable_ldm[1])["meta"]
    assert meta["model_id"] == before["model_id"]
    entry = meta["texture"]
    assert entry["share"] == 0.5 and entry["gain"] == 1.5 and entry["realism"] == 0.75
    assert entry["sigmas"] == list(SIGMAS) and entry["amplify"] == [1.0, 2.0, 2.0] and entry["noise"] == [1.0, 1.0, 0.5]
    assert entry["fit"]["steps"] == 20 and entry["fit"]["frames"] == 2
    assert entry["parameters"] == sum(p.numel() for p in TextureEnergy().parameters())


def test_info_lists_the_texture_stage(textured_model, capsys):
    assert main(["info", "--model", textured_model]) == 0
    assert ("texture stage (33075 parameters, 3 bands; realism: texture up to 0.5, the default 0.75)"
            in capsys.readouterr().out)
    assert main(["info", "--model", textured_model, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["texture"] == {"share": 0.5, "gain": 1.5, "realism": 0.75, "parameters": 33075,
                               "sigmas": [1.0, 2.0, 4.0], "amplify": [1.0, 2.0, 2.0], "noise": [1.0, 1.0, 0.5]}


def test_the_realism_knob_raises_texture_first_then_the_latent(textured_model, frame):
    codec = Codec.load(textured_model)
    assert codec.default_realism() == 0.75
    assert codec.realism_split("fast", None) == (0.0, None)
    assert codec.realism_split("diffusion", 0.25) == (pytest.approx(0.75), 0.0)
    assert codec.realism_split("diffusion", None) == (1.5, pytest.approx(0.5))
    assert codec.realism_split("diffusion", 0.6, texture=False) == (0.0, 0.6)
    payload = codec.compress(frame, quality=1)
    fast = codec.decompress(payload)
    # realism 0: no texture, nothing drawn: the fast path exactly
    assert np.array_equal(codec.decompress(payload, mode="diffusion", realism=0.0), fast)
    a = codec.decompress(payload, mode="diffusion", realism=0.5, seed=3)
    assert np.array_equal(a, codec.decompress(payload, mode="diffusion", realism=0.5, seed=3))
    # realism 0.5 is all texture and no latent draw: the fast path's image plus luma texture
    diff = a.astype(np.int16) - fast.astype(np.int16)
    inside = (fast > 8).all(axis=2) & (fast < 247).all(axis=2)  # away from clipping
    assert np.abs(diff).max() > 0
    assert np.abs(diff[..., 0] - diff[..., 1])[inside].max() <= 1  # the same on every channel, but rounding
    # without the texture the realism is the latent's
    assert not np.array_equal(codec.decompress(payload, mode="diffusion", realism=0.5, texture=False), fast)
    assert np.array_equal(codec.decompress(payload, mode="diffusion", realism=0.0, texture=False), fast)
    raw = codec.decompress_raw(payload, mode="diffusion", realism=0.5)
    assert np.array_equal(raw.mosaic, codec.decompress_raw(payload, mode="fast").mosaic)


def test_texture_only_realism_is_the_fast_image_plus_texture_whole_and_in_tiles(textured_model, frame):
    for tile in (0, 8):
        codec = Codec.load(textured_model, tile=tile)
        payload = codec.compress(frame, quality=2)
        assert codec.tiled(codec.parse(payload)[0].code_shape) == bool(tile)
        fast = codec.decompress(payload)
        amplitude, latent = codec.realism_split("diffusion", 0.4)
        assert latent == 0.0 and amplitude == pytest.approx(0.8 * 1.5)
        assert np.array_equal(codec.decompress(payload, mode="diffusion", realism=0.4, seed=5),
                              codec.textured(fast, 2, 5, amplitude))


def _constant_net(energies):
    """A texture network that expects the same band energies everywhere."""
    net = TextureEnergy(bands=len(energies))
    with torch.no_grad():
        net.net[-1].bias.copy_(torch.log(torch.tensor(energies)))
    return net


def test_synthesis_gives_the_energy_the_network_expects_where_the_image_lacks_it():
    img = torch.full((1, 3, 96, 128), 0.5)
    img[..., 64:, :] = gaussian_blur(torch.rand(1, 3, 32, 128, generator=torch.Generator().manual_seed(2)), 0.5)
    net = _constant_net([4e-4, 1e-6, 1e-6])  # fine texture expected, none in the coarser bands
    out = synthesize(net, img, 0.5, 1.0, torch.Generator().manual_seed(0))
    e = band_energies(out)[:, 0]
    assert float(e[..., 16:48, 16:-16].mean()) == pytest.approx(4e-4, rel=0.2)  # flat: the whole of it
    own = band_energies(img)[:, 0, 72:88, 16:-16]
    assert float(own.mean()) > 4e-4  # the textured part has more than expected: nothing added
    torch.testing.assert_close(out[..., 76:84, 24:-24], img[..., 76:84, 24:-24])


@pytest.mark.parametrize("synthesis", [Synthesis(), Synthesis(SIGMAS, (1, 2, 3), (1, 1, 0)),
                                       Synthesis(LEGACY_SIGMAS, legacy=True)], ids=["noise", "amplified", "first"])
def test_synthesis_in_strips_is_the_whole_image_s(synthesis):
    net = TextureEnergy(bands=len(synthesis.sigmas))
    with torch.no_grad():  # energies that vary over the image, from a random last layer
        net.net[-1].weight.normal_(0, 0.5)
        net.net[-1].bias.fill_(np.log(2e-4))
    g = torch.Generator().manual_seed(4)
    img = gaussian_blur(torch.rand(1, 3, 301, 90, generator=g), 2.0)
    whole = synthesize(net, img, 0.3, 1.0, torch.Generator().manual_seed(1), synthesis=synthesis)
    for rows in (64, 100, 128):
        strips = synthesize(net, img, 0.3, 1.0, torch.Generator().manual_seed(1), strip_rows=rows, synthesis=synthesis)
        torch.testing.assert_close(strips, whole, atol=1e-4, rtol=0)  # float rounding, far below 1/255
    assert not torch.equal(whole, img)


def test_synthesis_of_a_frame_smaller_than_the_coarsest_band():
    net = TextureEnergy()
    img = torch.rand(1, 3, 6, 10, generator=torch.Generator().manual_seed(2))
    out = synthesize(net, img, 0.5, 1.0, torch.Generator().manual_seed(0), synthesis=Synthesis(SIGMAS, (1, 2, 2)))
    assert out.shape == img.shape and bool(torch.isfinite(out).all())


def test_a_bad_texture_stage_is_refused_by_name(textured_model, tmp_path):
    def copy(name):
        d = str(tmp_path / name)
        shutil.copytree(textured_model, d)
        return d

    def edit(d, fn):
        path = os.path.join(d, "model.json")
        with open(path) as f:
            meta = json.load(f)
        fn(meta)
        with open(path, "w") as f:
            json.dump(meta, f)

    d = copy("tampered")
    with open(os.path.join(d, TEXTURE_FILE), "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="texture.safetensors does not match model.json"):
        Codec.load(d)
    d = copy("missing")
    os.remove(os.path.join(d, TEXTURE_FILE))
    with pytest.raises(ValueError, match="names a texture stage but texture.safetensors is missing"):
        Codec.load(d)
    d = copy("unlisted")
    edit(d, lambda m: m.pop("texture"))
    with pytest.raises(ValueError, match="has no 'texture' entry"):
        Codec.load(d)
    d = copy("share")
    edit(d, lambda m: m["texture"].update(share=1.5))
    with pytest.raises(ValueError, match="model.json's texture share must be a number in"):
        Codec.load(d)
    d = copy("realism")
    edit(d, lambda m: m["texture"].update(realism="much"))
    with pytest.raises(ValueError, match="texture realism"):
        Codec.load(d)
    d = copy("channels")
    edit(d, lambda m: m["texture"].update(channels=16))
    codec = Codec.load(d)
    with pytest.raises(ValueError, match="does not hold a texture network of 16 channels"):
        codec.texture_network()
    edit(d, lambda m: m["texture"].update(channels="wide"))
    with pytest.raises(ValueError, match="texture channels must be an even integer"):
        Codec.load(d)
    for key, value, message in (("sigmas", [2, 1], "texture sigmas must be 1 to 4 increasing numbers"),
                                ("sigmas", [1, 2, 4, 8, 16], "texture sigmas must be 1 to 4"),
                                ("sigmas", [0.1, 2, 4], r"texture sigmas must be .* in \[0.5, 16\]"),
                                ("amplify", [1, 0.5, 2], "texture amplify must be 3 numbers in"),
                                ("amplify", 2, "texture amplify must be 3 numbers in"),
                                ("noise", [1, 1], "texture noise must be 3 numbers in")):
        d = copy("bad-" + key + str(len(str(value))))
        edit(d, lambda m, key=key, value=value: m["texture"].update({key: value}))
        with pytest.raises(ValueError, match=message):
            Codec.load(d)
    d = copy("no-sigmas")  # three-band settings without the bands: read as the first stages' two
    edit(d, lambda m: m["texture"].pop("sigmas"))
    with pytest.raises(ValueError, match=r"texture amplify must be 2 numbers .*no sigmas: the first stages' 2 bands"):
        Codec.load(d)
    d = copy("two-bands")  # a first-stage entry (two bands) naming a file of three
    edit(d, lambda m: [m["texture"].pop(k) for k in ("sigmas", "amplify", "noise")])
    codec = Codec.load(d)
    with pytest.raises(ValueError, match="does not hold a texture network of 32 channels and 2 bands"):
        codec.texture_network()


def test_a_first_stage_texture_entry_still_decodes(textured_model, frame, tmp_path):
    """model.json entries written before the bands were named: two bands, noise only."""
    from safetensors.torch import save_file

    from rawdiff.codec.modeldir import file_sha256

    d = str(tmp_path / "first")
    shutil.copytree(textured_model, d)
    net = _constant_net([4e-4, 1e-6])
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, os.path.join(d, TEXTURE_FILE))
    with open(os.path.join(d, "model.json")) as f:
        meta = json.load(f)
    for k in ("sigmas", "amplify", "noise"):
        meta["texture"].pop(k)
    meta["texture"]["sha256"] = file_sha256(os.path.join(d, TEXTURE_FILE))
    with open(os.path.join(d, "model.json"), "w") as f:
        json.dump(meta, f)
    codec = Codec.load(d)
    payload = codec.compress(frame, quality=1)
    out = codec.decompress(payload, mode="diffusion", realism=0.5, seed=2)
    assert out.shape == codec.decompress(payload).shape and not np.array_equal(out, codec.decompress(payload))


def test_cli_decompress_uses_the_texture_and_fit_refuses_bad_settings(textured_model, frame, tmp_path, tiny_corpus,
                                                                       capsys):
    from rawdiff.raw.io import write_raw

    src = str(tmp_path / "f.npy")
    write_raw(frame, src)
    rdc = str(tmp_path / "f.rdc")
    assert main(["compress", src, "-o", rdc, "--model", textured_model, "--quality", "1"]) == 0
    for r, name in (("0", "fast.png"), ("0.5", "tex.png")):
        assert main(["decompress", rdc, "-o", str(tmp_path / name), "--model", textured_model, "--mode", "diffusion",
                     "--realism", r]) == 0
    import cv2

    a, b = cv2.imread(str(tmp_path / "fast.png")), cv2.imread(str(tmp_path / "tex.png"))
    assert a.shape == b.shape and not np.array_equal(a, b)
    out = str(tmp_path / "bad")
    shutil.copytree(textured_model, out)
    for bad in (["--share", "1.5"], ["--gain", "150"], ["--gain", "0"], ["--amplify", "1", "0.5", "2"],
                ["--noise", "1"]):
        assert main(["fit-texture", "--model", out, os.path.join(tiny_corpus, "train.txt"), "--steps", "1",
                     "--crop", "64"] + bad) == 1
    err = capsys.readouterr().err
    assert "texture share must be a number in (0, 1), got 1.5" in err and "decoded" not in err
    assert "texture gain must be a number in (0, 100), got 150" in err
    assert "texture amplify must be 3 numbers in [1, 16] (one a band), got [1.0, 0.5, 2.0]" in err
    assert "texture noise must be 3 numbers in [0, 1] (one a band), got [1.0]" in err


def test_fit_texture_wants_a_diffusion_decoder(fixture_model, tiny_corpus, tmp_path, capsys):
    out = str(tmp_path / "m")
    shutil.copytree(fixture_model, out)
    assert main(["fit-texture", "--model", out, os.path.join(tiny_corpus, "train.txt"), "--steps", "1"]) == 1
    assert "has no diffusion decoder" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(out, TEXTURE_FILE))


def test_write_texture_records_the_networks_own_width(textured_model, tmp_path):
    d = str(tmp_path / "m")
    shutil.copytree(textured_model, d)
    net = TextureEnergy(channels=16)
    entry = write_texture(d, net, 0.5, 1.0, {"channels": 32})  # the network's width, not the record's
    assert entry["channels"] == 16 and entry["parameters"] == sum(p.numel() for p in net.parameters())
    codec = Codec.load(d)
    assert codec.texture_network().channels == 16


def test_write_texture_checks_its_settings(textured_model, tmp_path):
    d = str(tmp_path / "m")
    shutil.copytree(textured_model, d)
    before = open(os.path.join(d, "model.json")).read()
    with pytest.raises(ValueError, match="texture gain must be a number in"):
        write_texture(d, TextureEnergy(), 0.5, 0.0, {})
    with pytest.raises(ValueError, match="realism must be in"):
        write_texture(d, TextureEnergy(), 0.5, 1.0, {}, realism=2.0)
    with pytest.raises(ValueError, match=r"texture network of 2 bands for the 3 sigmas \[1.0, 2.0, 4.0\]"):
        write_texture(d, TextureEnergy(bands=2), 0.5, 1.0, {})
    assert open(os.path.join(d, "model.json")).read() == before


@pytest.mark.parametrize("model", ["textured_model", "levelled_model"])
def test_rendered_on_the_device_the_textured_decode_is_the_host_s(model, frame, request):
    """The texture stage on the device's levels (Codec.render_on_device) is the host's within
    the colour stage's rounding (a level, which the amplification can raise a little), with the
    level from the stream's detail statistics too."""
    model_dir = request.getfixturevalue(model)
    for tile in (0, 8):
        host, dev = Codec.load(model_dir, tile=tile), Codec.load(model_dir, tile=tile)
        host.render_on_device, dev.render_on_device = False, True
        payload = host.compress(frame, quality=2)
        assert dev.tiled(dev.parse(payload)[0].code_shape) == bool(tile)
        for realism in (0.5, None):
            a = host.decompress(payload, mode="diffusion", realism=realism, seed=4)
            b = dev.decompress(payload, mode="diffusion", realism=realism, seed=4)
            diff = np.abs(a.astype(int) - b)
            assert diff.max() <= 3 and (diff == 0).mean() > 0.98, (tile, realism, diff.max(), (diff == 0).mean())
            assert np.array_equal(b, dev.decompress(payload, mode="diffusion", realism=realism, seed=4))


# -- the level of the texture from the frame's detail statistics (rawdiff.codec.detail_stats)


def test_a_level_sets_the_mean_log_of_the_expected_energies_whole_and_in_strips():
    from rawdiff.models.texture import expected_energies, level_scale

    net = TextureEnergy()
    with torch.no_grad():  # energies that vary over the image
        net.net[-1].weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
        net.net[-1].bias.fill_(np.log(2e-4))
    img = gaussian_blur(torch.rand(1, 3, 203, 80, generator=torch.Generator().manual_seed(5)), 2.0)
    level = [-6.0, -7.5, -9.0]
    expected = expected_energies(net, img, 0.2)
    scaled = expected * level_scale(expected.log().mean(dim=(2, 3)), level)
    torch.testing.assert_close(scaled.log().mean(dim=(2, 3))[0], torch.tensor(level), atol=1e-4, rtol=0)
    whole = synthesize(net, img, 0.2, 1.0, torch.Generator().manual_seed(1), log_level=level)
    white = torch.randn((1, 1, 203, 80), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(whole, add_texture(img, scaled, 1.0, white=white))
    assert not torch.equal(whole, synthesize(net, img, 0.2, 1.0, torch.Generator().manual_seed(1)))
    for rows in (64, 100):
        strips = synthesize(net, img, 0.2, 1.0, torch.Generator().manual_seed(1), strip_rows=rows, log_level=level)
        torch.testing.assert_close(strips, whole, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="a texture level of 2 bands for energies of 3"):
        synthesize(net, img, 0.2, 1.0, torch.Generator().manual_seed(1), log_level=level[:2])


@pytest.fixture(scope="module")
def levelled_model(textured_model, tiny_corpus, tmp_path_factory):
    """The textured model with a level fitted by `rawdiff fit-texture --level-only` on all six frames."""
    out = str(tmp_path_factory.mktemp("level") / "model")
    shutil.copytree(textured_model, out)
    data = [os.path.join(tiny_corpus, name + ".txt") for name in ("train", "val", "test")]
    assert main(["fit-texture", "--model", out] + data + ["--level-only", "--share", "0.5", "--gain", "1.5",
                                                          "--realism", "0.75", "--amplify", "1", "2", "2",
                                                          "--noise", "1", "1", "0.5"]) == 0
    return out


def test_fit_level_only_keeps_the_network_and_the_encoder_sends_the_statistics(levelled_model, textured_model, frame):
    from rawdiff.codec import bitstream, truncate
    from rawdiff.codec.detail_stats import dequantize, frame_detail

    before, after = read_model_dir(textured_model)["meta"], read_model_dir(levelled_model)["meta"]
    assert "level" not in before["texture"]  # two frames are too few for its fit: the network's own level
    level = after["texture"]["level"]
    assert after["texture"]["sha256"] == before["texture"]["sha256"] and after["model_id"] == before["model_id"]
    assert level["frames"] == 6 and len(level["coefficients"]) == 3 and len(level["coefficients"][0]) == 4
    codec, plain = Codec.load(levelled_model), Codec.load(textured_model)
    assert codec.sends_detail and not plain.sends_detail
    payload = codec.compress(frame, quality=2)
    header = bitstream.read_header(payload)
    assert header.version == 9 and header.detail == frame_detail(codec.model_planes(frame))
    assert bitstream.read_header(truncate(payload, 1)).detail == header.detail
    assert plain.compress(frame, quality=2) == bitstream.pack(
        dataclasses_replace(header, detail=(), version=None, payload_length=None),
        bitstream.stage_payloads(*bitstream.unpack(payload)))  # the same codes, without the statistics
    np.testing.assert_allclose(codec.texture_level(header),
                               np.asarray(level["coefficients"]) @ np.append(dequantize(header.detail), 1.0))
    assert plain.texture_level(header) is None
    tiny = RawFrame(np.full((4, 4), 1000, np.uint16), cfa="RGGB", black_level=64, white_level=4095)
    with pytest.raises(ValueError, match="a 4x4 frame is too small: this model codes frames of at least 6x6 pixels"):
        codec.compress(tiny)
    assert len(plain.compress(tiny)) > 0  # a model without the statistics codes it


def test_the_level_moves_the_texture_and_leaves_the_fast_path(levelled_model, textured_model, frame):
    codec, plain = Codec.load(levelled_model), Codec.load(textured_model)
    payload = codec.compress(frame, quality=1)
    fast = codec.decompress(payload)
    assert np.array_equal(fast, plain.decompress(payload))  # a decoder without the level reads the stream too
    amplitude, _ = codec.realism_split("diffusion", 0.5)
    levelled = codec.decompress(payload, mode="diffusion", realism=0.5, seed=2)
    header, _ = codec.parse(payload)
    assert np.array_equal(levelled, codec.textured(fast, 1, 2, amplitude, codec.texture_level(header)))
    assert not np.array_equal(levelled, plain.decompress(payload, mode="diffusion", realism=0.5, seed=2))
    tiled = Codec.load(levelled_model, tile=8)
    assert tiled.tiled(header.code_shape)
    np.testing.assert_allclose(tiled.decompress(payload, mode="diffusion", realism=0.5, seed=2).astype(int),
                               levelled.astype(int), atol=1)


def test_a_stream_with_another_count_of_detail_statistics_is_refused(levelled_model, frame):
    from rawdiff.codec import bitstream

    codec = Codec.load(levelled_model)
    header, payload = bitstream.unpack(codec.compress(frame, quality=1))
    other = bitstream.pack(dataclasses_replace(header, detail=(1, 2), payload_length=None),
                           bitstream.stage_payloads(header, payload))
    with pytest.raises(bitstream.BitstreamError, match="carries 2 detail statistics; this build reads 3"):
        codec.decompress(other)


def test_a_bad_level_entry_is_refused_by_name(levelled_model, tmp_path):
    d = str(tmp_path / "m")
    shutil.copytree(levelled_model, d)
    with open(os.path.join(d, "model.json")) as f:
        meta = json.load(f)
    meta["texture"]["level"]["coefficients"][1] = [1.0, 2.0]
    with open(os.path.join(d, "model.json"), "w") as f:
        json.dump(meta, f)
    with pytest.raises(ValueError, match="texture level must hold 'coefficients': 3 lists"):
        Codec.load(d)


def test_info_says_the_level_comes_from_the_streams(levelled_model, capsys):
    assert main(["info", "--model", levelled_model]) == 0
    assert "the default 0.75; its level from the detail statistics the streams carry)" in capsys.readouterr().out
    assert main(["info", "--model", levelled_model, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["texture"]["level"]["frames"] == 6


def test_level_only_keeps_the_model_s_settings_unless_given(levelled_model, tiny_corpus, tmp_path, capsys):
    d = str(tmp_path / "m")
    shutil.copytree(levelled_model, d)
    data = [os.path.join(tiny_corpus, name + ".txt") for name in ("train", "val", "test")]
    before = read_model_dir(d)["meta"]["texture"]
    assert main(["fit-texture", "--model", d] + data + ["--level-only"]) == 0
    assert read_model_dir(d)["meta"]["texture"] == before
    assert main(["fit-texture", "--model", d] + data + ["--level-only", "--gain", "2"]) == 0
    assert read_model_dir(d)["meta"]["texture"] == dict(before, gain=2.0)
    assert main(["fit-texture", "--model", d, data[0], "--level-only", "--max-frames", "2"]) == 1
    assert "2 frames cannot fit 4 weights a band" in capsys.readouterr().err
    assert main(["fit-texture", "--model", d] + data + ["--level-only", "--gain", "0"]) == 1
    assert read_model_dir(d)["meta"]["texture"] == dict(before, gain=2.0)
