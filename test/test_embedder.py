import pytest
import torch

from rawdiff.models.embedder import Embedder, pad_planes
from rawdiff.models.losses import VQLoss


@pytest.mark.parametrize("ch_mult,stem,factor", [((1, 2), 2, 8), ((1, 2, 2), 2, 16), ((1,), 1, 2)])
def test_factor_and_shapes(ch_mult, stem, factor):
    net = Embedder(ch=8, ch_mult=ch_mult, stem=stem, n_embed=16, embed_dim=4)
    assert net.factor == factor
    planes = torch.rand(2, 4, 32, 48)
    rgb, _, idx, _ = net(planes)
    assert idx.shape == (2, 64 // factor, 96 // factor)
    assert rgb.shape == (2, 3, 64, 96)
    assert net.decode_indices(idx).shape == rgb.shape


def test_decoder_to_raw_is_a_switch():
    net = Embedder(ch=8, ch_mult=(1, 2), stem=2, n_embed=16, embed_dim=4, out="raw")
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
    net = Embedder(ch=8, ch_mult=(1, 2), stem=2, n_embed=16, embed_dim=4)
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
