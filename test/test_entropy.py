"""Index prior and range coder: exact round trips, rates, robustness, state, golden bytes;
the parent context of a residual quantizer's later stages and the staged prior.

Regenerate the golden entropy files only on purpose:

    RAWDIFF_REGEN_GOLDEN=1 pytest test/test_entropy.py -k golden
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawdiff.codec.entropy import (
    MAX_SYMBOLS,
    TOTAL,
    IndexPrior,
    StagedPrior,
    grid_contexts,
    quantize_probabilities,
)
from rawdiff.codec.prior_fit import cluster_codebook, cluster_parents, fit_prior

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("RAWDIFF_REGEN_GOLDEN") == "1"


def structured_grid(h: int, w: int, k: int, rng: np.random.Generator, perm: np.ndarray) -> np.ndarray:
    """Spatially correlated indices: a smooth field quantised to k/8 levels, 8 codes per level
    (half of the positions jitter among them), codes shuffled by ``perm``."""
    f = rng.standard_normal((h // 4 + 2, w // 4 + 2))
    f = np.kron(f, np.ones((4, 4)))[:h, :w]
    for _ in range(3):
        f = (f + np.roll(f, 1, 0) + np.roll(f, 1, 1) + np.roll(f, -1, 0) + np.roll(f, -1, 1)) / 5
    f = (f - f.min()) / (f.max() - f.min() + 1e-9)
    levels = max(1, k // 8)
    lv = np.minimum((f * levels).astype(np.int64), levels - 1)
    code = np.minimum(lv * 8 + rng.integers(0, 8, size=(h, w)) * (rng.random((h, w)) < 0.5), k - 1)
    return perm[code]


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    k = 256
    perm = rng.permutation(k)
    train = [structured_grid(24, 40, k, rng, perm) for _ in range(24)]
    test = [structured_grid(24, 40, k, rng, perm) for _ in range(4)]
    return k, train, test


@pytest.fixture(scope="module")
def priors(corpus):
    k, train, _ = corpus
    return {kind: fit_prior(train, k, kind=kind, num_clusters=8) for kind in ("uniform", "unigram", "context")}


# ------------------------------------------------------------------ quantisation


def test_quantize_probabilities():
    rng = np.random.default_rng(1)
    p = rng.random((5, 300)) ** 8
    p[0, :100] = 0.0
    f = quantize_probabilities(p)
    assert f.dtype == np.uint32 and f.shape == (5, 300)
    assert np.all(f >= 1) and np.all(f.astype(np.int64).sum(1) == TOTAL)
    assert np.array_equal(f, quantize_probabilities(p))  # deterministic
    # close to the requested distribution
    q = f / TOTAL
    assert np.abs(q - p / p.sum(1, keepdims=True)).max() < 1e-5
    assert np.all(quantize_probabilities(np.ones(1024)) == TOTAL // 1024)
    big = quantize_probabilities(np.ones(65536))
    assert big.sum() == TOTAL
    with pytest.raises(ValueError):
        quantize_probabilities(np.array([1.0]))
    with pytest.raises(ValueError):
        quantize_probabilities(np.array([1.0, -1.0, 3.0]))
    with pytest.raises(ValueError):
        quantize_probabilities(np.array([0.0, 0.0]))


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("kind", ["uniform", "unigram", "context"])
def test_round_trip_structured_and_edge_grids(priors, corpus, kind):
    k, _, test = corpus
    prior = priors[kind]
    rng = np.random.default_rng(2)
    grids = list(test) + [
        rng.integers(0, k, size=(24, 40)),
        np.zeros((5, 7), dtype=np.int64),
        np.full((3, 9), k - 1, dtype=np.uint16),
        rng.integers(0, k, size=(1, 1)),
        rng.integers(0, k, size=(1, 33)),
        rng.integers(0, k, size=(33, 1)),
    ]
    for g in grids:
        data = prior.encode(g)
        assert isinstance(data, bytes) and len(data) % 4 == 0
        out = prior.decode(data, g.shape)
        assert out.dtype == np.int64 and out.shape == g.shape
        np.testing.assert_array_equal(out, g)


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(2, 300),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    kind=st.sampled_from(["uniform", "unigram", "context"]),
    seed=st.integers(0, 2 ** 16),
    clusters=st.integers(1, 6),
)
def test_round_trip_property(k, h, w, kind, seed, clusters):
    rng = np.random.default_rng(seed)
    # a skewed training set, so that the tables are far from uniform
    train = [np.minimum(rng.geometric(0.3, size=(h, w)) - 1, k - 1) for _ in range(3)]
    prior = fit_prior(train, k, kind=kind, num_clusters=clusters, seed=seed)
    for g in (train[0], rng.integers(0, k, size=(h, w))):
        np.testing.assert_array_equal(prior.decode(prior.encode(g), (h, w)), g)


def test_large_codebook_round_trip():
    rng = np.random.default_rng(3)
    k = 65536
    train = [rng.integers(0, 4096, size=(16, 16)) * 16 for _ in range(2)]
    prior = fit_prior(train, k, kind="context", num_clusters=4)
    g = rng.integers(0, k, size=(8, 11))
    np.testing.assert_array_equal(prior.decode(prior.encode(g), g.shape), g)


def test_contexts_follow_the_causal_neighbours(priors, corpus):
    k, _, test = corpus
    prior = priors["context"]
    g = test[0]
    ctx = prior.contexts(g)
    c = prior.num_clusters
    h, w = g.shape
    for r in range(h):
        for col in range(w):
            above = prior.cluster[g[r - 1, col]] if r > 0 else c
            left = prior.cluster[g[r, col - 1]] if col > 0 else c
            assert ctx[r, col] == above * (c + 1) + left
    assert ctx.max() < prior.num_contexts
    assert np.all(priors["unigram"].contexts(g) == 0)


# ------------------------------------------------------------------ rates


def test_rates(priors, corpus):
    k, train, test = corpus
    bpi = {kind: prior.bits_per_index(test) for kind, prior in priors.items()}
    assert bpi["uniform"] == pytest.approx(math.log2(k), abs=1e-9)  # k = 256: exact
    assert bpi["unigram"] < bpi["uniform"]
    # spatially correlated grids: the neighbours help a lot
    assert bpi["context"] < bpi["unigram"] - 1.0
    for kind, prior in priors.items():
        n = sum(g.size for g in test)
        coded = prior.coded_bits_per_index(test)
        # the coder is within 64 bits per grid of the ideal code length
        assert bpi[kind] - 1e-9 <= coded + 2 * 32 / (n / len(test))
        assert coded <= bpi[kind] + 64.0 * len(test) / n
        assert prior.bits(test[0]) == pytest.approx(bpi[kind] * n / len(test), rel=0.2)


def test_alpha_is_cross_validated_and_fixed_alpha_works(corpus):
    k, train, test = corpus
    auto = fit_prior(train, k, kind="context", num_clusters=8)
    assert auto.smoothing[0] > 0 and auto.smoothing[1] == 0.5
    tiny = fit_prior(train, k, kind="context", num_clusters=8, alpha=1e-3)
    assert tiny.smoothing[0] == 1e-3
    assert auto.bits_per_index(test) <= tiny.bits_per_index(test)


def test_codebook_clusters(corpus):
    k, train, test = corpus
    rng = np.random.default_rng(5)
    codebook = rng.standard_normal((k, 8))
    cl = cluster_codebook(codebook, 8)
    assert cl.shape == (k,) and cl.min() >= 0 and cl.max() < 8
    prior = fit_prior(train, k, kind="context", num_clusters=8, codebook=codebook)
    assert np.array_equal(prior.cluster, cl)
    g = test[0]
    np.testing.assert_array_equal(prior.decode(prior.encode(g), g.shape), g)


def test_fit_is_deterministic(corpus):
    k, train, _ = corpus
    a = fit_prior(train, k, kind="context", num_clusters=8)
    b = fit_prior(np.stack(train), k, kind="context", num_clusters=8)
    assert a.fingerprint() == b.fingerprint()


def test_fit_arguments():
    g = np.zeros((4, 4), dtype=np.int64)
    with pytest.raises(ValueError, match="kind"):
        fit_prior([g], 4, kind="bigram")
    with pytest.raises(ValueError, match="codebook_size"):
        fit_prior([g], 1)
    with pytest.raises(ValueError, match="no grids"):
        fit_prior([], 4, kind="unigram")
    with pytest.raises(ValueError, match="outside"):
        fit_prior([g + 4], 4)
    with pytest.raises(ValueError, match="codebook"):
        fit_prior([g], 4, codebook=np.zeros((3, 2)))
    one = fit_prior(np.zeros((1, 1), dtype=np.int64), 4, kind="context", num_clusters=2)
    np.testing.assert_array_equal(one.decode(one.encode([[3]]), (1, 1)), [[3]])


# ------------------------------------------------------------------ errors and garbage


@pytest.mark.parametrize(
    "grid, match",
    [
        (np.zeros((2, 2, 2), dtype=np.int64), "2-D"),
        (np.zeros((0, 3), dtype=np.int64), "empty"),
        (np.zeros((2, 2), dtype=np.float32), "integer"),
        (np.full((2, 2), 256), "outside"),
        (np.full((2, 2), -1), "outside"),
    ],
)
def test_encode_rejects_bad_grids(priors, grid, match):
    with pytest.raises(ValueError, match=match):
        priors["context"].encode(grid)


def test_decode_rejects_bad_arguments(priors, corpus):
    _, _, test = corpus
    prior = priors["context"]
    data = prior.encode(test[0])
    with pytest.raises(ValueError, match="whole number"):
        prior.decode(data[:-1], test[0].shape)
    with pytest.raises(ValueError, match="shape"):
        prior.decode(data, (0, 5))
    with pytest.raises(ValueError, match="shape"):
        prior.decode(data, "big")
    with pytest.raises(ValueError, match="bytes"):
        prior.decode(12, (2, 2))
    with pytest.raises(ValueError, match="larger than"):
        prior.decode(data, (MAX_SYMBOLS, 2))
    # a corrupted header asking for a huge grid from a short payload fails at once
    with pytest.raises(ValueError, match="too short"):
        prior.decode(data[:8], (4000, 4000))
    with pytest.raises(ValueError, match="too short"):
        priors["uniform"].decode(b"", (4, 4))


def _decode_or_value_error(prior: IndexPrior, data: bytes, shape) -> None:
    try:
        out = prior.decode(data, shape)
    except ValueError as exc:
        assert str(exc)
        return
    assert out.shape == tuple(shape) and out.dtype == np.int64
    assert out.min() >= 0 and out.max() < prior.codebook_size


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=200), h=st.integers(1, 30), w=st.integers(1, 30),
       kind=st.sampled_from(["uniform", "unigram", "context"]))
def test_garbage_never_crashes(priors, data, h, w, kind):
    _decode_or_value_error(priors[kind], data, (h, w))


@settings(max_examples=150, deadline=None)
@given(cut=st.integers(0, 10_000), flip=st.integers(0, 10_000), bit=st.integers(0, 31),
       kind=st.sampled_from(["unigram", "context"]), mode=st.sampled_from(["flip", "cut", "both"]))
def test_corrupted_payloads_never_crash(priors, corpus, cut, flip, bit, kind, mode):
    _, _, test = corpus
    prior = priors[kind]
    g = test[1]
    words = np.frombuffer(prior.encode(g), dtype="<u4").copy()
    if mode in ("flip", "both"):
        words[flip % len(words)] ^= np.uint32(1 << bit)
    if mode in ("cut", "both"):
        words = words[: cut % len(words)]
    _decode_or_value_error(prior, words.tobytes(), g.shape)


def test_wrong_shape_or_prior_is_detected_or_harmless(priors, corpus):
    _, _, test = corpus
    g = test[2]
    data = priors["context"].encode(g)
    _decode_or_value_error(priors["context"], data, (g.shape[0] + 5, g.shape[1]))
    _decode_or_value_error(priors["unigram"], data, g.shape)
    # extra words after the stream are reported
    with pytest.raises(ValueError, match="corrupted"):
        priors["context"].decode(data + b"\xff\x00\xa5\x5a" * 3, g.shape)


# ------------------------------------------------------------------ state


@pytest.mark.parametrize("kind", ["uniform", "unigram", "context"])
def test_save_load_round_trip(priors, corpus, tmp_path, kind):
    _, _, test = corpus
    prior = priors[kind]
    path = tmp_path / ("prior_%s.safetensors" % kind)
    prior.save(str(path))
    loaded = IndexPrior.load(str(path))
    assert loaded.kind == prior.kind and loaded.num_clusters == prior.num_clusters
    assert np.array_equal(loaded.freqs, prior.freqs)
    if kind == "context":
        assert np.array_equal(loaded.cluster, prior.cluster)
    assert loaded.fingerprint() == prior.fingerprint()
    assert loaded.encode(test[0]) == prior.encode(test[0])
    np.testing.assert_equal(loaded.smoothing, prior.smoothing)
    # the file carries readable metadata
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = json.loads(f.metadata()["rawdiff.index_prior"])
    assert meta["kind"] == kind and meta["codebook_size"] == prior.codebook_size


def test_state_dict_is_plain_arrays_with_prefix(priors):
    prior = priors["context"]
    state = prior.state_dict(prefix="prior.")
    assert all(k.startswith("prior.") and isinstance(v, np.ndarray) for k, v in state.items())
    assert all(v.dtype != object for v in state.values())
    again = IndexPrior.from_state_dict(state, prefix="prior.")
    assert again.fingerprint() == prior.fingerprint()


def test_invalid_state_is_rejected(priors, tmp_path):
    state = priors["context"].state_dict()
    bad = dict(state, freqs=state["freqs"] + 1)
    with pytest.raises(ValueError, match="sum"):
        IndexPrior.from_state_dict(bad)
    with pytest.raises(ValueError, match="lacks"):
        IndexPrior.from_state_dict({k: v for k, v in state.items() if k != "freqs"})
    with pytest.raises(ValueError, match="version"):
        IndexPrior.from_state_dict(dict(state, format_version=np.array([9], dtype=np.uint32)))
    with pytest.raises(ValueError, match="cluster"):
        IndexPrior.from_state_dict(dict(state, cluster=state["cluster"] + 100))
    with pytest.raises(ValueError, match="tables"):
        IndexPrior.from_state_dict(dict(state, num_clusters=np.array([3], dtype=np.int32)))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 50)
    with pytest.raises(ValueError, match="cannot read"):
        IndexPrior.load(str(junk))


# ------------------------------------------------------------------ golden bytes


def _golden_case():
    rng = np.random.default_rng(2024)
    k = 64
    perm = rng.permutation(k)
    train = [structured_grid(12, 16, k, rng, perm) for _ in range(6)]
    grid = structured_grid(12, 16, k, rng, perm)
    return fit_prior(train, k, kind="context", num_clusters=3), grid


def test_golden_entropy_payload():
    """Pins the coder: the stored prior must encode the stored grid to the stored bytes
    (catches any change of constriction's coder or of the frequency convention)."""
    prior_path = GOLDEN / "entropy_context_prior.safetensors"
    doc_path = GOLDEN / "entropy_context.json"
    bin_path = GOLDEN / "entropy_context.bin"
    if REGEN:
        prior, grid = _golden_case()
        GOLDEN.mkdir(exist_ok=True)
        prior.save(str(prior_path))
        bin_path.write_bytes(prior.encode(grid))
        doc_path.write_text(json.dumps({"shape": list(grid.shape), "grid": grid.tolist(),
                                        "fingerprint": prior.fingerprint()}) + "\n")
    prior = IndexPrior.load(str(prior_path))
    doc = json.loads(doc_path.read_text())
    data = bin_path.read_bytes()
    grid = np.asarray(doc["grid"], dtype=np.int64)
    assert prior.fingerprint() == doc["fingerprint"]
    np.testing.assert_array_equal(prior.decode(data, tuple(doc["shape"])), grid)
    assert prior.encode(grid) == data
    # fitting is reproducible too
    refit, _ = _golden_case()
    assert refit.fingerprint() == doc["fingerprint"]


# ------------------------------------------------------------------ parent context (staged codes)

K1, K2, K3 = 16, 32, 32  # a stage on a grid twice as coarse, then two on the fine grid


def staged_codes(rng: np.random.Generator, h: int = 16, w: int = 22):
    """Codes of three stages as a residual quantizer gives them: stage 1 on a grid twice as
    coarse (ceil(h/2) x ceil(w/2)), stages 2 and 3 on the h x w grid. What a finer stage
    codes depends on the coarser code at the same place (its high bits), plus noise."""
    perm1 = np.random.default_rng(7).permutation(K1)
    p = structured_grid(-(-h // 2), -(-w // 2), K1, rng, perm1)
    up = np.repeat(np.repeat(p, 2, 0), 2, 1)[:h, :w]
    c2 = (up % 8) * 4 + rng.integers(0, 4, size=(h, w))
    c3 = (c2 // 4) * 4 + rng.integers(0, 2, size=(h, w)) * 2 + (rng.random((h, w)) < 0.1)
    return [p, c2, c3.astype(np.int64)]


@pytest.fixture(scope="module")
def staged_corpus():
    rng = np.random.default_rng(11)
    train = [staged_codes(rng) for _ in range(16)]
    test = [staged_codes(rng) for _ in range(3)] + [staged_codes(rng, 7, 9)]  # odd sizes too
    return train, test


def fit_staged(train, num_clusters: int = 4, parent_clusters: int = 4) -> StagedPrior:
    sizes, ratios = (K1, K2, K3), (None, 2, 1)
    stages = [fit_prior([c[0] for c in train], K1, kind="context", num_clusters=num_clusters)]
    for k in (1, 2):
        stages.append(fit_prior([c[k] for c in train], sizes[k], kind="context", num_clusters=num_clusters,
                                parents=[c[k - 1] for c in train], parent_size=sizes[k - 1],
                                parent_ratio=ratios[k], parent_clusters=parent_clusters))
    return StagedPrior(stages)


@pytest.fixture(scope="module")
def staged(staged_corpus):
    return fit_staged(staged_corpus[0])


def test_parent_context_round_trip(staged, staged_corpus):
    _, test = staged_corpus
    for codes in test:
        for k in (1, 2):
            prior, grid, parent = staged.stages[k], codes[k], codes[k - 1]
            data = prior.encode(grid, parent)
            np.testing.assert_array_equal(prior.decode(data, grid.shape, parent), grid)
            assert len(data) * 8 <= prior.bits(grid, parent) + 64


def test_contexts_use_the_parent_code_at_the_same_place(staged, staged_corpus):
    _, test = staged_corpus
    codes = test[3]  # 7 x 9: the parent grid 4 x 5 covers it with a cut last row and column
    for k, ratio in ((1, 2), (2, 1)):
        prior, g, parent = staged.stages[k], codes[k], codes[k - 1]
        assert prior.parent_ratio == ratio and prior.num_parent == 4
        assert prior.num_contexts == prior.num_parent * (prior.num_clusters + 1) ** 2
        ctx = prior.contexts(g, parent)
        c = prior.num_clusters
        for r in range(g.shape[0]):
            for col in range(g.shape[1]):
                above = prior.cluster[g[r - 1, col]] if r > 0 else c
                left = prior.cluster[g[r, col - 1]] if col > 0 else c
                pc = prior.parent_cluster[parent[r // ratio, col // ratio]]
                assert ctx[r, col] == pc * (c + 1) ** 2 + above * (c + 1) + left
        assert ctx.max() < prior.num_contexts
        np.testing.assert_array_equal(ctx % (c + 1) ** 2, grid_contexts(g, prior.cluster, c))


def test_the_parent_context_pays(staged_corpus):
    """On codes that depend on the coarser stage, the parent saves bits over the neighbours
    alone (the same clusters); and the parent clusters group parent codes that say the same."""
    train, test = staged_corpus
    with_parent = fit_staged(train, parent_clusters=8)
    alone = fit_prior([c[1] for c in train], K2, kind="context", num_clusters=4)
    n = sum(c[1].size for c in test)
    bits_parent = sum(with_parent.stages[1].bits(c[1], c[0]) for c in test) / n
    bits_alone = sum(alone.bits(c[1]) for c in test) / n
    print("stage 2 bits per index: %.3f with the parent, %.3f without" % (bits_parent, bits_alone))
    assert bits_parent < bits_alone - 0.5
    assert bits_parent < 2.6  # the stage codes its 2 bits of noise and a little more
    # parent codes p and p + 8 say the same about the codes under them (stage 2 uses p % 8)
    pc = with_parent.stages[1].parent_cluster
    same = np.mean([pc[p] == pc[p + 8] for p in range(8)])
    assert same >= 0.75


def test_decoding_with_another_parent_does_not_give_the_grid(staged, staged_corpus):
    _, test = staged_corpus
    codes = test[0]
    prior = staged.stages[1]
    data = prior.encode(codes[1], codes[0])
    other = (codes[0] + 3) % K1
    try:
        got = prior.decode(data, codes[1].shape, other)
    except ValueError as exc:
        assert "corrupted" in str(exc)
    else:
        assert not np.array_equal(got, codes[1])


def test_parent_arguments_are_checked(staged, staged_corpus, priors):
    _, test = staged_corpus
    codes = test[0]
    prior = staged.stages[1]
    data = prior.encode(codes[1], codes[0])
    with pytest.raises(ValueError, match="the parent grid is needed"):
        prior.encode(codes[1])
    with pytest.raises(ValueError, match="the parent grid is needed"):
        prior.decode(data, codes[1].shape)
    with pytest.raises(ValueError, match="has no parent context, but a parent grid was given"):
        staged.stages[0].encode(codes[0], codes[0])
    with pytest.raises(ValueError, match=r"parent grid 8x11 does not cover a 16x22 grid at ratio 1"):
        staged.stages[2].encode(codes[2], codes[0])
    with pytest.raises(ValueError, match=r"parent grid 16x22 does not cover a 16x22 grid at ratio 2"):
        prior.encode(codes[1], codes[2] % K1)
    with pytest.raises(ValueError, match=r"parent grid has index values in \[16, 16\], outside \[0, 16\)"):
        prior.decode(data, codes[1].shape, np.full_like(codes[0], K1))
    with pytest.raises(ValueError, match="parent_cluster must be"):
        IndexPrior(priors["unigram"].freqs, kind="unigram", parent_cluster=np.zeros(4, dtype=np.int32))
    with pytest.raises(ValueError, match="parent_ratio must be 1, 2 or 4, got 3"):
        IndexPrior(prior.freqs, kind="context", cluster=prior.cluster, num_clusters=prior.num_clusters,
                   parent_cluster=prior.parent_cluster, parent_ratio=3)
    with pytest.raises(ValueError, match="1 parent clusters needs"):
        IndexPrior(prior.freqs, kind="context", cluster=prior.cluster, num_clusters=prior.num_clusters,
                   parent_cluster=np.zeros(K1, dtype=np.int32))
    with pytest.raises(ValueError, match="2 parent grids for 3 grids"):
        fit_prior([c[1] for c in test[:3]], K2, parents=[c[0] for c in test[:2]], parent_size=K1, parent_ratio=2)
    with pytest.raises(ValueError, match="does not cover"):
        fit_prior([c[1] for c in test[:3]], K2, parents=[c[1] for c in test[:3]], parent_size=K2, parent_ratio=2)


def test_cluster_parents_groups_by_the_codes_below():
    rng = np.random.default_rng(4)
    parents = [rng.integers(0, 8, size=(5, 6)) for _ in range(8)]
    # codes below parent p: around 4 * (p // 2), so p = 0, 1 say the same, and 2, 3, ...
    grids = [4 * (np.repeat(np.repeat(p, 2, 0), 2, 1)[:9, :11] // 2) + rng.integers(0, 2, size=(9, 11))
             for p in parents]
    cl = cluster_parents(grids, parents, 16, 8, 2, 4)
    assert cl.shape == (8,) and set(cl.tolist()) == {0, 1, 2, 3}
    assert all(cl[2 * i] == cl[2 * i + 1] for i in range(4))
    # a parent code never seen joins a cluster (the heaviest), not a new one
    unseen = cluster_parents(grids, parents, 16, 9, 2, 4)
    assert unseen.shape == (9,) and unseen[8] in unseen[:8]


# ------------------------------------------------------------------ the staged prior


def test_staged_prior_round_trip_and_prefixes(staged, staged_corpus):
    _, test = staged_corpus
    for codes in test:
        chunks = staged.encode(codes)
        assert len(chunks) == 3 and all(isinstance(c, bytes) and len(c) % 4 == 0 for c in chunks)
        shapes = [g.shape for g in codes]
        got = staged.decode(chunks, shapes)
        for a, b in zip(got, codes):
            np.testing.assert_array_equal(a, b)
        # progressive: the first q stages code to the first q byte strings, and decode alone
        for q in (1, 2):
            assert staged.encode(codes[:q]) == chunks[:q]
            for a, b in zip(staged.decode(chunks[:q], shapes[:q]), codes[:q]):
                np.testing.assert_array_equal(a, b)
        bits = staged.bits(codes)
        assert len(bits) == 3 and all(8 * len(c) <= b + 64 for c, b in zip(chunks, bits))
        assert bits[1] == staged.stages[1].bits(codes[1], codes[0])


def test_staged_prior_errors(staged, staged_corpus):
    _, test = staged_corpus
    codes = test[0]
    chunks = staged.encode(codes)
    shapes = [g.shape for g in codes]
    with pytest.raises(ValueError, match="4 code grids for a prior of 3 stages"):
        staged.encode(codes + codes[:1])
    with pytest.raises(ValueError, match="0 code grids"):
        staged.encode([])
    with pytest.raises(ValueError, match=r"2 stage payloads \(3 shapes\) for a prior of 3 stages"):
        staged.decode(chunks[:2], shapes)
    with pytest.raises(ValueError, match="stage 2: entropy payload of 3 bytes is not a whole number"):
        staged.decode([chunks[0], chunks[1][:3], chunks[2]], shapes)
    with pytest.raises(ValueError, match="stage 3: "):
        staged.decode([chunks[0], chunks[1], b""], shapes)
    with pytest.raises(ValueError, match="at least one stage"):
        StagedPrior([])
    with pytest.raises(ValueError, match="the first stage has no parent stage"):
        StagedPrior(staged.stages[1:])
    with pytest.raises(ValueError, match="stage 3's parent context has 16 codes, stage 2 has 32"):
        StagedPrior([staged.stages[0], staged.stages[1], staged.stages[1]])
    assert len(staged) == 3 and staged.kind == "context"


def test_staged_prior_save_load(staged, staged_corpus, tmp_path):
    _, test = staged_corpus
    path = tmp_path / "staged.safetensors"
    staged.save(str(path))
    loaded = StagedPrior.load(str(path))
    assert len(loaded) == 3 and loaded.fingerprint() == staged.fingerprint()
    for a, b in zip(loaded.stages, staged.stages):
        assert a.fingerprint() == b.fingerprint() and a.parent_ratio == b.parent_ratio
        assert (a.parent_cluster is None) == (b.parent_cluster is None)
        if a.parent_cluster is not None:
            np.testing.assert_array_equal(a.parent_cluster, b.parent_cluster)
    assert loaded.encode(test[0]) == staged.encode(test[0])
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = json.loads(f.metadata()["rawdiff.index_prior"])
        keys = set(f.keys())
    assert meta["stages"] == 3 and meta["codebook_sizes"] == [K1, K2, K3]
    assert {"stages", "stage1.freqs", "stage2.parent_cluster", "stage3.parent_ratio"} <= keys
    assert "stage1.parent_cluster" not in keys
    # a stage's fingerprint covers its parent context
    assert staged.stages[1].fingerprint() != fit_prior(
        [c[1] for c in staged_corpus[0]], K2, kind="context", num_clusters=4).fingerprint()


def test_staged_prior_state_is_checked(staged):
    state = staged.state_dict()
    with pytest.raises(ValueError, match=r"declares 0 stages \(1..16\)"):
        StagedPrior.from_state_dict(dict(state, stages=np.array([0], dtype=np.int32)))
    with pytest.raises(ValueError, match=r"declares 17 stages"):
        StagedPrior.from_state_dict(dict(state, stages=np.array([17], dtype=np.int32)))
    with pytest.raises(ValueError, match="lacks 'stage4.format_version'"):
        StagedPrior.from_state_dict(dict(state, stages=np.array([4], dtype=np.int32)))
    with pytest.raises(ValueError, match="lacks 'stage2.freqs'"):
        StagedPrior.from_state_dict({k: v for k, v in state.items() if k != "stage2.freqs"})
    two = StagedPrior.from_state_dict(dict(state, stages=np.array([2], dtype=np.int32)))
    assert len(two) == 2 and two.stages[1].fingerprint() == staged.stages[1].fingerprint()


def test_a_one_stage_prior_file_loads_as_a_staged_prior(priors, corpus, tmp_path):
    """A model directory of one stage keeps the old prior file (IndexPrior.save); the golden
    one, written before stages existed, still decodes its payload."""
    prior = StagedPrior.load(str(GOLDEN / "entropy_context_prior.safetensors"))
    doc = json.loads((GOLDEN / "entropy_context.json").read_text())
    assert len(prior) == 1 and prior.fingerprint() == doc["fingerprint"]
    grid = np.asarray(doc["grid"], dtype=np.int64)
    data = (GOLDEN / "entropy_context.bin").read_bytes()
    np.testing.assert_array_equal(prior.decode([data], [grid.shape])[0], grid)
    assert prior.encode([grid]) == [data]
    for kind in ("uniform", "unigram", "context"):
        path = tmp_path / ("one_%s.safetensors" % kind)
        priors[kind].save(str(path))
        one = StagedPrior.load(str(path))
        assert len(one) == 1 and one.kind == kind and one.fingerprint() == priors[kind].fingerprint()
        g = corpus[2][0]
        assert one.encode([g]) == [priors[kind].encode(g)]


def _golden_staged_case():
    rng = np.random.default_rng(2025)
    train = [staged_codes(rng, 10, 14) for _ in range(6)]
    return fit_staged(train, num_clusters=3, parent_clusters=3), staged_codes(rng, 9, 13)


def test_golden_staged_entropy_payload():
    """Pins the coding of stages with a parent context: the stored staged prior must code
    the stored codes to the stored bytes, stage by stage."""
    prior_path = GOLDEN / "entropy_staged_prior.safetensors"
    doc_path = GOLDEN / "entropy_staged.json"
    bin_path = GOLDEN / "entropy_staged.bin"
    if REGEN:
        prior, codes = _golden_staged_case()
        prior.save(str(prior_path))
        chunks = prior.encode(codes)
        bin_path.write_bytes(b"".join(chunks))
        doc_path.write_text(json.dumps({"shapes": [list(g.shape) for g in codes], "codes": [g.tolist() for g in codes],
                                        "lengths": [len(c) for c in chunks],
                                        "fingerprint": prior.fingerprint()}) + "\n")
    prior = StagedPrior.load(str(prior_path))
    doc = json.loads(doc_path.read_text())
    data = bin_path.read_bytes()
    codes = [np.asarray(g, dtype=np.int64) for g in doc["codes"]]
    assert prior.fingerprint() == doc["fingerprint"]
    at = np.cumsum([0] + doc["lengths"])
    chunks = [data[a:b] for a, b in zip(at[:-1], at[1:])]
    assert at[-1] == len(data)
    for a, b in zip(prior.decode(chunks, [tuple(s) for s in doc["shapes"]]), codes):
        np.testing.assert_array_equal(a, b)
    assert prior.encode(codes) == chunks
    refit, _ = _golden_staged_case()
    assert refit.fingerprint() == doc["fingerprint"]
