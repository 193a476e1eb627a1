"""The vector quantizer and the residual quantizer of the operating points."""

import pytest
import torch

from rawdiff.models.embedder import training_only
from rawdiff.models.quantize import ResidualQuantizer, VectorQuantizer, expand_to, pool_to, stage_shape


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


# ------------------------------------------------------------------ residual quantizer (operating points)

STAGES = [[2, 16], [2, 16], [1, 32], [1, 64]]


def trained_rq(z: torch.Tensor, stages=STAGES, steps: int = 1) -> ResidualQuantizer:
    """A residual quantizer whose codebooks were initialised from ``z`` (a training step),
    then in eval mode."""
    torch.manual_seed(0)
    rq = ResidualQuantizer(stages, z.shape[1], restart_after=0).train()
    for _ in range(steps):
        rq(z)
    return rq.eval()


@pytest.fixture(scope="module")
def latents():
    torch.manual_seed(1)
    # smooth latents on an odd grid (7 x 9: coarse stages cut their last row and column)
    z = torch.nn.functional.interpolate(torch.randn(2, 4, 3, 4), size=(7, 9), mode="bilinear", align_corners=False)
    return z + 0.2 * torch.randn_like(z)


def test_encode_then_lookup_is_the_forward_z_q_at_every_prefix(latents):
    rq = trained_rq(latents)
    codes = rq.encode_indices(latents)
    assert [tuple(c.shape) for c in codes] == [(2, 4, 5), (2, 4, 5), (2, 7, 9), (2, 7, 9)]
    assert all(c.dtype == torch.int64 for c in codes)
    with torch.no_grad():
        for n in range(1, len(STAGES) + 1):
            z_q, _, fwd_codes, _ = rq(latents, stages=n)
            assert len(fwd_codes) == len(STAGES)  # forward quantizes with every stage
            for a, b in zip(fwd_codes, codes):
                assert torch.equal(a, b)
            assert torch.allclose(rq.lookup(codes[:n], (7, 9)), z_q, atol=1e-6)
            if n > 2:  # a fine stage: the finest grid is the one it implies
                assert torch.allclose(rq.lookup(codes[:n]), z_q, atol=1e-6)
            prefix = rq.encode_indices(latents, stages=n)
            assert len(prefix) == n and all(torch.equal(a, b) for a, b in zip(prefix, codes))


@torch.no_grad()
def test_each_stage_codes_what_the_stages_before_it_left(latents):
    rq = trained_rq(latents)
    x = torch.nn.functional.normalize(latents, dim=1)
    codes = rq.encode_indices(latents)
    residual = x
    errors = [float(x.pow(2).mean())]
    for k, (scale, _) in enumerate(rq.stages):
        # stage k is the nearest code to the residual, pooled to its grid
        pooled = pool_to(residual, scale)
        flat = pooled.permute(0, 2, 3, 1).reshape(-1, 4)
        book = rq.codebooks[k].codebook()
        nearest = torch.cdist(flat, book).argmin(1).reshape(codes[k].shape)
        assert torch.equal(nearest, codes[k])
        residual = residual - expand_to(rq.codebooks[k].lookup(codes[k]), scale, (7, 9))
        assert torch.allclose(x - rq.lookup(codes[: k + 1], (7, 9)), residual, atol=1e-6)
        errors.append(float(residual.pow(2).mean()))
    # codebooks drawn from the residuals: every stage leaves less
    assert all(b < a for a, b in zip(errors, errors[1:])), errors


def test_stage_k_indices_do_not_depend_on_later_stages(latents):
    rq = trained_rq(latents)
    codes = rq.encode_indices(latents)
    z_q2 = rq.lookup(codes[:2])
    with torch.no_grad():
        for k in (2, 3):  # scramble the codebooks of stages 3 and 4
            rq.codebooks[k].embedding.weight.normal_(0, 3.0)
    again = rq.encode_indices(latents)
    assert all(torch.equal(a, b) for a, b in zip(again[:2], codes[:2]))
    assert not torch.equal(again[3], codes[3]) or not torch.equal(again[2], codes[2])
    assert torch.equal(rq.lookup(codes[:2]), z_q2)


@pytest.mark.parametrize("h, w", [(7, 9), (1, 1), (5, 2), (8, 8), (13, 3)])
@pytest.mark.parametrize("scale", [1, 2, 4])
def test_pool_and_expand_shapes_on_odd_grids(h, w, scale):
    z = torch.randn(2, 3, h, w)
    shape = stage_shape((h, w), scale)
    assert shape == (-(-h // scale), -(-w // scale))
    pooled = pool_to(z, scale)
    assert tuple(pooled.shape) == (2, 3) + shape
    assert tuple(expand_to(pooled, scale, (h, w)).shape) == (2, 3, h, w)
    # constants stay constant both ways (edges replicated, not zero-padded)
    c = torch.full((1, 2, h, w), 0.75)
    assert torch.allclose(pool_to(c, scale), torch.full((1, 2) + shape, 0.75))
    assert torch.allclose(expand_to(pool_to(c, scale), scale, (h, w)), c)
    if scale == 1:
        assert pooled is z


def test_pool_averages_cells_and_repeats_the_cut_edge():
    z = torch.arange(15, dtype=torch.float32).reshape(1, 1, 3, 5)  # rows 0..2, columns 0..4
    p = pool_to(z, 2)
    assert p.shape == (1, 1, 2, 3)
    assert float(p[0, 0, 0, 0]) == pytest.approx((0 + 1 + 5 + 6) / 4)
    # the last column of cells holds column 4 twice, the last row row 2 twice
    assert float(p[0, 0, 0, 2]) == pytest.approx((4 + 4 + 9 + 9) / 4)
    assert float(p[0, 0, 1, 2]) == pytest.approx(14.0)


def test_lookup_checks_the_grids():
    rq = ResidualQuantizer(STAGES, 4).eval()
    codes = [torch.zeros(1, 4, 5, dtype=torch.long), torch.zeros(1, 4, 5, dtype=torch.long),
             torch.zeros(1, 7, 9, dtype=torch.long)]
    assert rq.lookup(codes, (7, 9)).shape == (1, 4, 7, 9)
    assert rq.lookup(codes[0]).shape == (1, 4, 8, 10)  # one grid: the shape it implies
    with pytest.raises(ValueError, match=r"stage 3 codes are 7x9, expected 8x10 for a 8x10 grid"):
        rq.lookup(codes, (8, 10))
    with pytest.raises(ValueError, match=r"stage 1 codes are 4x5, expected 5x5 for a 9x9 grid"):
        rq.lookup(codes, (9, 9))
    with pytest.raises(ValueError, match=r"stage 1 codes are 4x5, expected 2x3 for a 4x6 grid"):
        rq.lookup(codes[:1], (4, 6))
    with pytest.raises(ValueError, match="0 code grids given; this quantizer has 4 stages"):
        rq.lookup([])
    with pytest.raises(ValueError, match="5 code grids given"):
        rq.lookup(codes + codes[2:] * 2)
    with pytest.raises(ValueError, match=r"code index out of range \[0, 32\)"):
        rq.lookup(codes[:2] + [torch.full((1, 7, 9), 32)], (7, 9))
    with pytest.raises(ValueError, match=r"stages must be in \[1, 4\], got 0"):
        rq.encode_indices(torch.randn(1, 4, 7, 9), stages=0)
    with pytest.raises(ValueError, match=r"stages must be in \[1, 4\], got 5"):
        rq(torch.randn(1, 4, 7, 9), stages=5)


@pytest.mark.parametrize(
    "stages, match",
    [
        ([[3, 16]], "stage 1: scale must be 1, 2 or 4, got 3"),
        ([[2, 16], [4, 16]], r"coarse to fine: stage 2 \(scale 4\) is coarser than stage 1 \(scale 2\)"),
        ([[1, 16], [2, 16]], "stage 2 \\(scale 2\\) is coarser"),
        ([], "1 to 16 stages, got 0"),
        ([[1, 4]] * 17, "1 to 16 stages, got 17"),
        ([[2]], r"stage 1 must be \[scale, codebook_size\], got \[2\]"),
        ([[2, 16, 3]], r"stage 1 must be \[scale, codebook_size\]"),
        ([[2, "many"]], r"stage 1 must be \[scale, codebook_size\]"),
        ([[2, 16], 8], r"stage 2 must be \[scale, codebook_size\], got 8"),
        ([[1, 1]], r"codebook_size 1 must be in \[2, 65536\]"),
    ],
)
def test_config_errors_name_the_stage(stages, match):
    with pytest.raises(ValueError, match=match):
        ResidualQuantizer(stages, 4)


def test_training_initialises_every_codebook_from_data_and_trains_every_stage(latents):
    torch.manual_seed(0)
    rq = ResidualQuantizer(STAGES, 4, restart_after=0).train()
    assert not bool(rq.initialised.any())
    z = latents.clone().requires_grad_(True)
    z_q, loss, codes, stats = rq(z, stages=1)  # the decoder sees one stage; every stage is trained
    assert bool(rq.initialised.all())
    (loss + z_q.sum()).backward()
    assert all(vq.embedding.weight.grad is not None and vq.embedding.weight.grad.abs().sum() > 0
               for vq in rq.codebooks)
    assert z.grad is not None and z.grad.abs().sum() > 0  # straight-through to the encoder
    assert {"perplexity", "perplexity_1", "perplexity_4"} <= set(stats)
    # codebooks start at the residuals (not at the N(0, 0.01) initialisation)
    assert float(rq.codebooks[0].embedding.weight.detach().norm(dim=1).mean()) > 0.3
    assert rq.num_stages == 4 and rq.codebook_size == 16
    # the flags and dead-code counters only matter while training
    keys = [k for k in rq.state_dict()]
    assert "initialised" in keys and "codebooks.3.idle_steps" in keys
    assert training_only("quantize.initialised") and training_only("quantize.codebooks.3.idle_steps")
    assert not training_only("quantize.codebooks.3.embedding.weight")


# ------------------------------------------------------------------ entropy-constrained search


def _entropy(idx: torch.Tensor, k: int) -> float:
    p = torch.bincount(idx.flatten(), minlength=k).float()
    p = p[p > 0] / p.sum()
    return float(-(p * torch.log2(p)).sum())


@torch.no_grad()
def test_entropy_constrained_search_takes_the_cheapest_code_where_detail_is_small():
    torch.manual_seed(3)
    # mostly flat latents (small residuals after the coarse stage) with a textured patch
    z = torch.nn.functional.interpolate(torch.randn(4, 4, 2, 2), size=(16, 16), mode="bilinear",
                                        align_corners=False)
    z[:, :, :6, :6] += 0.8 * torch.randn(4, 4, 6, 6)
    stages = [[2, 16], [1, 32]]
    entropies, skips = [], []
    for lam in (0.0, 0.02, 0.2):
        torch.manual_seed(0)
        rq = ResidualQuantizer(stages, 4, restart_after=0, rate_lambda=lam, skip_code=True).train()
        for _ in range(30):
            rq(z)
        rq.eval()
        fine = rq.codebooks[1]
        assert torch.equal(fine.codebook()[0], torch.zeros(4))  # the skip code stays the zero vector
        assert not rq.codebooks[0].skip_code  # the first stage has none
        if lam == 0.0:
            assert torch.equal(fine.code_cost, torch.zeros(32))
        codes = rq.encode_indices(z)
        # the search is argmin of distance + cost, checked by brute force
        x = torch.nn.functional.normalize(z, dim=1)
        residual = x - expand_to(rq.codebooks[0].lookup(codes[0]), 2, (16, 16))
        flat = residual.permute(0, 2, 3, 1).reshape(-1, 4)
        cost = torch.cdist(flat, fine.codebook()).pow(2) + fine.code_cost[None, :]
        assert torch.equal(cost.argmin(1).reshape(codes[1].shape), codes[1])
        entropies.append(_entropy(codes[1], 32))
        skips.append(float((codes[1] == 0).float().mean()))
    # a larger lambda buys fewer bits with more zero codes
    assert entropies[0] > entropies[1] > entropies[2], entropies
    assert skips[2] > skips[0], skips


def test_rate_lambda_and_skip_code_are_checked():
    with pytest.raises(ValueError, match="rate_lambda"):
        ResidualQuantizer(STAGES, 4, rate_lambda=2.0)
    with pytest.raises(ValueError, match="not l2-normalised"):
        VectorQuantizer(8, 2, skip_code=True)
