import torch

from rawdiff.models.quantize import VectorQuantizer


def test_beta_weights_the_commitment_term_not_the_codebook_term():
    """van den Oord et al. 2017 eq. 3; taming's legacy=True swaps the two weights."""
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 4, beta=0.25, restart_after=0, normalize=False)
    z = torch.randn(1, 4, 3, 3, requires_grad=True)
    _, loss, idx, _ = vq(z)
    loss.backward()
    e = vq.embedding.weight[idx.flatten()].detach()  # N x D
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    n = flat.numel()
    expected_z_grad = 0.25 * 2.0 * (flat - e) / n
    got = z.grad.permute(0, 2, 3, 1).reshape(-1, 4)
    assert torch.allclose(got, expected_z_grad, atol=1e-6)
    # the codebook side gets the full (weight 1) gradient
    code_grad = torch.zeros_like(vq.embedding.weight).index_add_(0, idx.flatten(), 2.0 * (e - flat) / n)
    assert torch.allclose(vq.embedding.weight.grad, code_grad, atol=1e-6)


def test_straight_through_passes_gradients_to_the_encoder():
    vq = VectorQuantizer(8, 3, restart_after=0)
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    z_q, _, _, _ = vq(z)
    z_q.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_indices_lookup_and_encode_agree():
    vq = VectorQuantizer(32, 4).eval()
    z = torch.randn(2, 4, 5, 6)
    z_q, _, idx, _ = vq(z)
    assert torch.equal(vq.encode_indices(z), idx)
    assert torch.allclose(vq.lookup(idx), z_q, atol=1e-6)


def test_dead_codes_are_reseeded_from_encoder_outputs():
    torch.manual_seed(0)
    vq = VectorQuantizer(64, 4, restart_after=3).train()
    # every latent is (nearly) the same vector, so almost all codes go unused
    z = torch.ones(1, 4, 4, 4) + 0.001 * torch.randn(1, 4, 4, 4)
    before = vq.codebook().detach().clone()
    for _ in range(4):
        vq(z)
    after = vq.codebook().detach()
    moved = (after - before).norm(dim=1) > 1e-3
    assert moved.sum() >= 60
    target = torch.nn.functional.normalize(torch.ones(4), dim=0)
    assert torch.allclose(after[moved], target.expand_as(after[moved]), atol=0.05)


def test_perplexity_and_usage_are_reported():
    vq = VectorQuantizer(16, 4, restart_after=0).eval()
    _, _, _, stats = vq(torch.randn(4, 4, 8, 8))
    assert 1.0 <= float(stats["perplexity"]) <= 16.0
    assert 0.0 < float(stats["batch_usage"]) <= 1.0


def test_out_of_range_indices_are_refused():
    vq = VectorQuantizer(8, 2)
    try:
        vq.lookup(torch.tensor([[[8]]]))
    except ValueError as exc:
        assert "out of range" in str(exc)
    else:
        raise AssertionError("no error")
