import pytest
import torch

from rawdiff.models.embedder import Embedder, pad_planes
from rawdiff.models.losses import VQLoss


@pytest.mark.parametrize("ch_mult,stem,factor", [((1, 2), 2, 8), ((1, 2, 2), 2, 16), ((1,), 1, 2)])
def test_factor_and_shapes(ch_mult, stem, factor):
    net = Embedder(ch=8, ch_mult=ch_mult, stem=stem, codebook_size=16, embed_dim=4)
    assert net.factor == factor
    planes = torch.rand(2, 4, 32, 48)
    rgb, _, idx, _ = net(planes)
    assert idx.shape == (2, 64 // factor, 96 // factor)
    assert rgb.shape == (2, 3, 64, 96)
    assert net.decode_indices(idx).shape == rgb.shape


def test_decoder_to_raw_is_a_switch():
    net = Embedder(ch=8, ch_mult=(1, 2), stem=2, codebook_size=16, embed_dim=4, out="raw")
    planes = torch.rand(1, 4, 16, 16)
    out, _, _, _ = net(planes)
    assert out.shape == planes.shape
    with pytest.raises(ValueError, match="out must be"):
        Embedder(out="yuv")


def test_pad_planes_reaches_the_multiple_and_reports_the_size():
    x = torch.rand(1, 4, 13, 30)
    padded, size = pad_planes(x, 8)
    assert padded.shape[-2:] == (16, 32) and size == (13, 30)
    assert torch.equal(padded[..., :13, :30], x)


def test_generator_and_discriminator_losses_backpropagate():
    net = Embedder(ch=8, ch_mult=(1, 2), stem=2, codebook_size=16, embed_dim=4)
    loss = VQLoss(disc_start=0, disc_channels=8, disc_layers=2)
    planes, target = torch.rand(2, 4, 32, 32), torch.rand(2, 3, 64, 64)
    x_hat, q_loss, _, _ = net(planes)
    g, logs = loss.generator_loss(x_hat, target, q_loss, step=1, last_layer=net.last_layer())
    g.backward()
    assert {"l1", "ms_ssim", "g_loss", "d_weight", "fm"} <= set(logs)
    assert net.encoder.conv_in.weight.grad is not None
    d, _ = loss.discriminator_loss(x_hat, target)
    assert d.item() > 0


def test_no_adversarial_term_before_disc_start():
    loss = VQLoss(disc_start=100, disc_channels=8)
    _, logs = loss.generator_loss(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32), torch.tensor(0.0), 5, None)
    assert "g_loss" not in logs


PLAIN = {"stem": 4, "ch": 8, "ch_mult": [1], "norm": "none", "act": "relu"}


def test_the_encoder_can_have_its_own_shape():
    net = Embedder(ch=8, ch_mult=(1, 2), stem=2, codebook_size=16, embed_dim=4, encoder=PLAIN)
    assert net.factor == 8 and net.encoder_stem == 4 and net.encoder.plain
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in net.encoder.modules())
    planes = torch.rand(2, 4, 32, 48)
    rgb, _, idx, _ = net(planes)
    assert idx.shape == (2, 8, 12) and rgb.shape == (2, 3, 64, 96)
    # the decoder is the symmetric one: same keys as without an encoder of its own
    plain_keys = {k for k in net.state_dict() if not k.startswith("encoder.")}
    sym = Embedder(ch=8, ch_mult=(1, 2), stem=2, codebook_size=16, embed_dim=4)
    assert plain_keys == {k for k in sym.state_dict() if not k.startswith("encoder.")}


def test_encoder_and_decoder_must_agree_on_the_factor():
    with pytest.raises(ValueError, match="encoder downsamples by 16 but the decoder upsamples by 8"):
        Embedder(ch=8, ch_mult=(1, 2), stem=2, encoder={"stem": 4, "ch_mult": [1, 2]})
    with pytest.raises(ValueError, match="unknown embedder.encoder keys"):
        Embedder(ch=8, ch_mult=(1, 2), encoder={"channels": 8})
    with pytest.raises(ValueError, match="encoder norm must be"):
        Embedder(ch=8, ch_mult=(1, 2), encoder={"norm": "batch"})
    with pytest.raises(ValueError, match="a plain encoder .* has no attention"):
        Embedder(ch=8, ch_mult=(1, 2), attention=True, encoder=PLAIN)
    with pytest.raises(ValueError, match="activation must be one of relu, silu"):
        Embedder(ch=8, ch_mult=(1, 2), encoder=dict(PLAIN, act="gelu"))


@pytest.mark.parametrize("ch_mult,stem", [([1], 4), ([1, 2], 2)])
def test_plain_encoder_codes_do_not_depend_on_the_frame_size(ch_mult, stem):
    """Without GroupNorm a crop is coded as the same part of the whole frame (away from the
    borders the convolutions see), which a model trained on crops relies on."""
    torch.manual_seed(0)
    net = Embedder(ch=8, ch_mult=(1, 2), stem=2, codebook_size=16, embed_dim=4,
                   encoder=dict(PLAIN, ch_mult=ch_mult, stem=stem)).eval()
    planes = torch.rand(1, 4, 256, 256)
    window = (Ellipsis, slice(64, 192), slice(64, 192))  # code cells 16..48 of 64
    with torch.no_grad():
        whole, crop = net.encode(planes), net.encode(planes[window])
        grouped = Embedder(ch=8, ch_mult=(1, 2), stem=2, codebook_size=16, embed_dim=4).eval()
        g_whole, g_crop = grouped.encode(planes), grouped.encode(planes[window])
    inner = (Ellipsis, slice(10, 22), slice(10, 22))  # farther from the crop's border than the receptive field
    assert torch.allclose(crop[inner], whole[..., 16:48, 16:48][inner], atol=1e-5)
    assert not torch.allclose(g_crop[inner], g_whole[..., 16:48, 16:48][inner], atol=1e-3)


def test_global_context_starts_as_the_plain_encoder_and_sees_the_whole_frame():
    torch.manual_seed(0)
    plain = Embedder(ch=8, ch_mult=(1, 2), stem=2, codebook_size=16, embed_dim=4, encoder=PLAIN).eval()
    ctx = Embedder(ch=8, ch_mult=(1, 2), stem=2, codebook_size=16, embed_dim=4,
                   encoder=dict(PLAIN, global_context=True)).eval()
    missing, unexpected = ctx.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["encoder.context.0.bias", "encoder.context.0.weight", "encoder.context.2.bias",
                               "encoder.context.2.weight"] and not unexpected
    planes = torch.rand(1, 4, 128, 128)
    with torch.no_grad():
        assert torch.allclose(ctx.encode(planes), plain.encode(planes), atol=1e-6)  # zero-initialised
        torch.nn.init.normal_(ctx.encoder.context[-1].weight, std=0.5)
        far = planes.clone()
        far[..., 96:, 96:] *= 0.25  # a far corner, outside the receptive field of code (0, 0)
        assert torch.allclose(plain.encode(far)[..., 0, 0], plain.encode(planes)[..., 0, 0])
        assert not torch.allclose(ctx.encode(far)[..., 0, 0], ctx.encode(planes)[..., 0, 0])
    with pytest.raises(ValueError, match="global_context is for the plain encoder"):
        Embedder(ch=8, ch_mult=(1, 2), encoder={"global_context": True})


# ------------------------------------------------------------------ staged (residual) quantizer

STAGED = dict(ch=8, ch_mult=(1, 2), stem=2, embed_dim=4, stages=[[2, 16], [2, 16], [1, 32]])


@pytest.fixture(scope="module")
def staged_net():
    torch.manual_seed(0)
    net = Embedder(refine=4, **STAGED)
    net.train()
    net(torch.rand(2, 4, 28, 36))  # codebooks initialised from data
    return net.eval()


def test_staged_embedder_codes_every_stage_on_odd_grids(staged_net):
    net = staged_net
    assert net.staged and net.stages == [(2, 16), (2, 16), (1, 32)] and net.codebook_size == 16
    planes = torch.rand(1, 4, 28, 36)  # a 7 x 9 code grid: the coarse stages are 4 x 5
    with torch.no_grad():
        codes = net.encode_codes(planes)
        assert [tuple(c.shape) for c in codes] == [(1, 4, 5), (1, 4, 5), (1, 7, 9)]
        assert all(torch.equal(a, b) for a, b in zip(net.encode_codes(planes, 2), codes[:2]))
        for n in (1, 2, 3):
            # the decoder's input at quality n, and forward's reconstruction at that quality
            rgb = net.decode(net.lookup_codes(codes[:n], (7, 9)))
            assert rgb.shape == (1, 3, 56, 72)
            fwd, _, fwd_codes, _ = net(planes, stages=n)
            assert torch.allclose(fwd, rgb, atol=1e-5)
            assert all(torch.equal(a, b) for a, b in zip(fwd_codes, codes))
        assert torch.allclose(net.decode_indices(codes), net.decode(net.lookup_codes(codes, (7, 9))))
        # more stages, a different picture (each stage adds to the latent)
        assert not torch.allclose(net.decode(net.lookup_codes(codes[:1], (7, 9))), net.decode_indices(codes))
    with pytest.raises(ValueError, match="a model of 3 quantizer stages has a grid per stage: use encode_codes"):
        net.encode_indices(planes)
    with pytest.raises(ValueError, match=r"stages must be in \[1, 3\], got 4"):
        net.encode_codes(planes, 4)


def test_the_diffusion_condition_is_the_first_stage_on_the_finest_grid(staged_net):
    net = staged_net
    with torch.no_grad():
        codes = net.encode_codes(torch.rand(1, 4, 28, 36))
    cond = net.condition_indices(codes, (7, 9))
    assert cond.shape == (1, 7, 9)
    for r in range(7):
        for c in range(9):
            assert cond[0, r, c] == codes[0][0, r // 2, c // 2]
    assert torch.equal(net.condition_indices(codes[:1], (7, 9)), cond)  # the same at every quality


def test_a_plain_codebook_is_one_stage():
    torch.manual_seed(0)
    net = Embedder(ch=8, ch_mult=(1, 2), stem=2, codebook_size=16, embed_dim=4).eval()
    assert not net.staged and net.stages == [(1, 16)]
    planes = torch.rand(1, 4, 28, 36)
    with torch.no_grad():
        codes = net.encode_codes(planes)
        assert len(codes) == 1 and torch.equal(codes[0], net.encode_indices(planes))
        assert torch.equal(net.encode_codes(planes, 1)[0], codes[0])
        assert torch.allclose(net.decode_indices(codes), net.decode_indices(codes[0]))
        assert torch.equal(net.condition_indices(codes, (7, 9)), codes[0])
    with pytest.raises(ValueError, match="this model has one quantizer stage, 2 asked for"):
        net.encode_codes(planes, 2)
    with pytest.raises(ValueError, match="this model has one quantizer stage, got 2 code grids"):
        net.lookup_codes([codes[0], codes[0]])


def test_the_refine_head_starts_as_the_identity():
    torch.manual_seed(0)
    plain = Embedder(**STAGED).eval()
    refined = Embedder(refine=4, **STAGED).eval()
    missing, unexpected = refined.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["refine.conv1.bias", "refine.conv1.weight", "refine.conv2.bias",
                               "refine.conv2.weight"] and not unexpected
    planes = torch.rand(1, 4, 16, 16)
    with torch.no_grad():
        assert torch.equal(refined(planes)[0], plain(planes)[0])
        torch.nn.init.normal_(refined.refine.conv2.weight, std=0.1)
        assert not torch.allclose(refined(planes)[0], plain(planes)[0])
    with pytest.raises(ValueError, match="refine is a head on RGB outputs; out: raw has none"):
        Embedder(refine=4, out="raw", **STAGED)


def test_shipped_weights_leave_out_the_training_only_buffers(staged_net):
    from rawdiff.export.model_dir import embedder_state
    from rawdiff.models.embedder import load_embedder

    state = embedder_state(staged_net)
    assert "quantize.initialised" not in state and not any(k.endswith("idle_steps") for k in state)
    assert not any(k.endswith("code_cost") for k in state)  # all zero: the default, not shipped
    assert "quantize.codebooks.2.embedding.weight" in state and "refine.conv2.weight" in state
    params = {"embedder": dict(STAGED, refine=4)}
    loaded = load_embedder(params, state)
    planes = torch.rand(1, 4, 28, 36)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(loaded.encode_codes(planes), staged_net.encode_codes(planes)))
    with pytest.raises(ValueError, match=r"missing \['quantize.codebooks.2.embedding.weight'\]"):
        load_embedder(params, {k: v for k, v in state.items() if k != "quantize.codebooks.2.embedding.weight"})
    with pytest.raises(ValueError, match=r"unexpected \['quantize.codebooks.2.embedding.weight'\]"):
        load_embedder({"embedder": dict(STAGED, stages=[[2, 16], [2, 16]], refine=4)}, state)


def test_weights_without_code_costs_load_as_a_nearest_code_search():
    from rawdiff.models.embedder import load_embedder

    params = {"embedder": dict(ch=8, ch_mult=(1, 2), stem=2, embed_dim=4, stages=[[2, 16], [1, 16]])}
    full = Embedder(**params["embedder"])
    state = {k: v for k, v in full.state_dict().items() if not k.endswith("code_cost")}
    net = load_embedder(params, state)
    assert all(torch.equal(vq.code_cost, torch.zeros_like(vq.code_cost)) for vq in net.quantize.codebooks)
    state.pop("decoder.conv_in.weight")
    with pytest.raises(ValueError, match="decoder.conv_in.weight"):
        load_embedder(params, state)


@torch.no_grad()
def test_a_wider_latent_starts_as_the_model_it_grew_from(fixture_model):
    """init from a model of 4 latent channels into one of 6: the encoder's first 4 channels
    and the decoder's output on them are the old model's."""
    from safetensors.torch import load_file

    from rawdiff.config import load_config
    from rawdiff.models.embedder import load_embedder
    from rawdiff.models.vqgan import VQGAN

    params = load_config(fixture_model + "/config.yaml")["model"]["params"]
    old = load_embedder(params, load_file(fixture_model + "/embedder.safetensors"))
    wide = dict(params["embedder"], embed_dim=6)
    new = VQGAN(embedder=wide, init=fixture_model).embedder.eval()
    torch.manual_seed(0)
    planes = torch.rand(1, 4, 16, 16)
    z_old, z_new = old.encode(planes), new.encode(planes)
    assert z_new.shape[1] == 6 and torch.allclose(z_new[:, :4], z_old, atol=1e-6)
    latent = torch.nn.functional.pad(torch.randn(1, 4, 4, 4), (0, 0, 0, 0, 0, 2))
    latent[:, 4:] = torch.randn(1, 2, 4, 4)  # the new channels are silent in the decoder at first
    assert torch.allclose(new.decode(latent), old.decode(latent[:, :4]), atol=1e-5)
    with pytest.raises(ValueError, match="cannot widen"):
        VQGAN(embedder=dict(params["embedder"], embed_dim=3), init=fixture_model)


@torch.no_grad()
def test_linear_paths_start_as_principal_components_and_a_least_squares_synthesis():
    torch.manual_seed(0)
    net = Embedder(ch=8, ch_mult=(1, 2), stem=2, embed_dim=6, stages=[[2, 16], [1, 16]], out="linear",
                   linear_paths=True, encoder=PLAIN)
    assert not net.quantize.normalize  # the transform's scale is kept
    # smooth planes: low-rank cells, so 6 components of the 64 hold nearly all of them
    planes = torch.nn.functional.interpolate(torch.rand(4, 4, 6, 6), size=(32, 32), mode="bilinear",
                                             align_corners=False)
    camera = torch.nn.functional.interpolate(planes[:, [0, 1, 3]], scale_factor=2.0, mode="bilinear",
                                             align_corners=False)
    net.init_linear_paths(planes, camera)
    w = net.analysis_weight
    assert torch.allclose(w @ w.t(), torch.eye(6), atol=1e-5)  # an orthonormal basis
    z = net.encode(planes)
    assert torch.allclose(z, net.analysis(planes), atol=1e-6)  # the network starts silent
    cells = torch.nn.functional.pixel_unshuffle(planes, 4)
    back = torch.einsum("dc,bdhw->bchw", w, z) + cells.mean(dim=(0, 2, 3))[None, :, None, None]
    assert float((back - cells).pow(2).mean()) < 0.2 * float(cells.var())  # most of the signal kept
    out = net.decode(z)
    assert out.shape == camera.shape
    err = float((out - camera).pow(2).mean())
    assert err < 0.1 * float(camera.var()), err  # least squares from the latent to the target
    # too few cells to fit 64 components: a clear error
    with pytest.raises(ValueError, match="at least"):
        net.init_linear_paths(planes[:1, :, :8, :8], camera[:1, :, :16, :16])
    with pytest.raises(ValueError, match="linear_paths"):
        Embedder(ch=8, ch_mult=(1, 2), stem=2, embed_dim=6, codebook_size=16, linear_paths=True)


@torch.no_grad()
def test_the_decoder_is_told_the_operating_point_and_the_encoder_can_be_the_analysis_alone():
    torch.manual_seed(0)
    net = Embedder(ch=8, ch_mult=(1, 2), stem=2, embed_dim=6, stages=[[2, 16], [1, 16], [1, 16]], out="linear",
                   linear_paths=True, quality_channel=True, encoder_network=False)
    assert net.encoder is None and net.decoder.conv_in.in_channels == 7
    planes = torch.rand(2, 4, 32, 32)
    net.init_linear_paths(planes.repeat(4, 1, 1, 1), torch.rand(8, 3, 64, 64))
    assert torch.equal(net.encode(planes), net.analysis(planes))
    net.train()
    net(planes)  # codebooks from data
    net.eval()
    codes = net.encode_codes(planes)
    for n in (1, 2, 3):
        z = net.lookup_codes(codes[:n], (8, 8))
        assert z.shape[1] == 7 and torch.all(z[:, 6] == n / 3)
        assert torch.allclose(net(planes, n)[0], net.decode(z), atol=1e-5)  # training sees what decoding does
    with pytest.raises(ValueError, match="linear_paths"):
        Embedder(ch=8, ch_mult=(1, 2), stem=2, embed_dim=6, stages=[[1, 16]], encoder_network=False)
