"""Index prior and range coder: exact round trips, rates, robustness, state, golden bytes.

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
    quantize_probabilities,
)
from rawdiff.codec.prior_fit import cluster_codebook, fit_prior

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
