"""The adaptive range coder: the compiled coder and the Python reference write the same
bytes, every coding decodes back, a stage prefix decodes alone, bad data gives a clear
ValueError (never a crash), and the golden bytes pin the coding."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawdiff.codec import adaptive
from rawdiff.codec.entropy import IndexPrior, StagedPrior, quantize_probabilities

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("RAWDIFF_REGEN_GOLDEN") == "1"


def tables(rng, contexts: int, k: int, concentration: float = 0.3) -> np.ndarray:
    return adaptive.cumulative(quantize_probabilities(rng.dirichlet(np.full(k, concentration), size=contexts)))


def both_ways(symbols, contexts, cum, strength, pool=0, level=0, parents=None, aging=0):
    """The compiled and the reference coding (asserted equal), their decodes (asserted right),
    and the estimate of its length (within the coder's few bits of termination). ``parents``:
    an adaptive.Parents, for the parent level."""
    s, c = np.asarray(symbols, dtype=np.int32), np.asarray(contexts, dtype=np.int32)
    params = (strength, pool, level)
    data = adaptive.encode(s, c, cum, *params, parents=parents, aging=aging)
    p = parents.values if parents is not None else None
    assert adaptive.encode_reference(s, c, cum, *params, parents=p, aging=aging) == data
    n = len(s)
    grid, read = adaptive.decode_reference(data, 1, n, c, np.zeros(0, np.int32), 0, cum, *params, parents=p,
                                           aging=aging)
    np.testing.assert_array_equal(grid.ravel(), s)
    np.testing.assert_array_equal(adaptive.decode(data, (1, n), c.reshape(1, n), None, 0, cum, *params,
                                                  parents=parents, aging=aging).ravel(), s)
    assert len(data) <= read - 7
    bits = adaptive.estimate(s, c, cum, [params], parents, aging=aging)[0]
    assert abs(bits - adaptive.estimate_reference(s, c, cum, [params], p, aging)[0]) <= 1e-6 * max(bits, 1.0)
    assert 8 * len(data) <= bits + 16
    # code 0's interval starts at 0 in every table: a coding that ends in zeros can drop their bytes
    assert s[-1] == 0 or bits - 16 <= 8 * len(data)
    return data


def following(rng, n, k, num_parents):
    """Symbols that mostly follow their parents (as a finer stage's codes follow the coarser
    stage's), the parents, and contexts that know nothing of them."""
    parents = rng.integers(0, num_parents, size=n)
    mapped = rng.integers(0, k, size=(num_parents, 2))  # each parent takes two codes
    symbols = np.where(rng.random(n) < 0.8, mapped[parents, rng.integers(0, 2, size=n)], rng.integers(0, k, size=n))
    return symbols, adaptive.Parents(parents, num_parents)


def test_the_compiled_coder_is_built():
    """`make setup` (pip install -e .) builds it; without it every stream codes about 100
    times slower in the reference."""
    assert adaptive.compiled()


@pytest.mark.parametrize("k,strength,pool", [(2, 0, 0), (2, 24, 9), (7, 4, 1), (64, 6, 3), (512, 8, 7),
                                             (1024, 12, 0), (1024, 0, 9)])
def test_compiled_and_reference_write_the_same_bytes(k, strength, pool):
    rng = np.random.default_rng(k + strength)
    cum = tables(rng, 5, k)
    for n in (1, 2, 17, 400):
        skew = rng.integers(0, k, size=3)  # a frame that takes a few codes often
        symbols = np.where(rng.random(n) < 0.7, skew[rng.integers(0, 3, size=n)], rng.integers(0, k, size=n))
        both_ways(symbols, rng.integers(0, 5, size=n), cum, strength, pool)


@pytest.mark.parametrize("k,strength,pool,level", [(2, 0, 0, 1), (2, 24, 9, 9), (7, 4, 0, 9), (64, 6, 5, 1),
                                                   (512, 8, 9, 4), (1024, 12, 1, 1), (1024, 0, 0, 5)])
def test_compiled_and_reference_write_the_same_bytes_with_the_parent_level(k, strength, pool, level):
    rng = np.random.default_rng(k + strength + 100 * level)
    cum = tables(rng, 5, k)
    for n in (1, 2, 17, 400):
        symbols, parents = following(rng, n, k, 1 + k // 3)
        both_ways(symbols, rng.integers(0, 5, size=n), cum, strength, pool, level, parents)


@pytest.mark.parametrize("k,strength,pool,level,aging", [(2, 0, 0, 0, 1), (2, 24, 9, 9, 12), (7, 4, 0, 9, 1),
                                                         (64, 6, 5, 1, 2), (512, 8, 9, 4, 5), (1024, 12, 1, 1, 5),
                                                         (1024, 2, 0, 7, 3), (300, 10, 0, 0, 1)])
def test_compiled_and_reference_write_the_same_bytes_with_aging(k, strength, pool, level, aging):
    """Counts halved as they reach 2**(h + 3) (contexts, parents) and 2**(h + 7) (the pool):
    many times over in 3000 indices at the small agings."""
    rng = np.random.default_rng(k + strength + 100 * level + 1000 * aging)
    cum = tables(rng, 5, k)
    for n in (1, 17, 400, 3000):
        symbols, parents = following(rng, n, k, 1 + k // 3)
        both_ways(symbols, rng.integers(0, 5, size=n), cum, strength, pool, level, parents if level else None, aging)


def test_the_largest_aging_halves_a_context_past_its_threshold():
    """Aging 12 halves a context at 2**15 indices: 70,000 indices in one context halve it twice;
    the compiled and reference codings and estimates agree."""
    rng = np.random.default_rng(22)
    cum = tables(rng, 1, 8)
    n = 70000
    symbols = np.where(np.arange(n) < 40000, rng.integers(0, 3, size=n), rng.integers(5, 8, size=n))
    data = both_ways(symbols, np.zeros(n, int), cum, 4, 0, 0, None, 12)
    assert len(data) < len(adaptive.encode(symbols, np.zeros(n, int), cum, 4))  # no aging: the first 40,000 stay


def test_aging_pays_when_the_statistics_change_across_the_frame():
    """A grid whose top half takes some codes and whose bottom half others (a sky, then a
    road): with aging the counts forget the top as they go down and the coding is shorter. On
    a grid of the same statistics throughout it costs a little (5 % here: the counts it
    forgot were as good as the ones it keeps); on the shipped codes it saves (README)."""
    rng = np.random.default_rng(21)
    k, contexts = 64, 4
    cum = tables(rng, contexts, k, concentration=1.0)
    n = 6000
    top, bottom = rng.integers(0, k, size=4), rng.integers(0, k, size=4)
    symbols = np.where(np.arange(n) < n // 2, top[rng.integers(0, 4, size=n)], bottom[rng.integers(0, 4, size=n)])
    ctx = rng.integers(0, contexts, size=n)
    assert len(both_ways(symbols, ctx, cum, 6, 5, aging=5)) < 0.95 * len(both_ways(symbols, ctx, cum, 6, 5))
    same = top[rng.integers(0, 4, size=n)]
    assert len(both_ways(same, ctx, cum, 6, 5, aging=5)) < 1.1 * len(both_ways(same, ctx, cum, 6, 5))


def test_parents_are_a_read_only_copy():
    """What was checked is what the coders read: the caller's array changing afterwards (another
    thread writing it) does not reach them, and the copy cannot be made writeable."""
    source = np.array([0, 1, 2, 1], dtype=np.int32)
    parents = adaptive.Parents(source, 3)
    source[:] = 7
    np.testing.assert_array_equal(parents.values, [0, 1, 2, 1])
    assert not parents.values.flags.writeable
    with pytest.raises(ValueError):
        parents.values.setflags(write=True)
    with pytest.raises(AttributeError):
        parents.count = 1


def test_the_compiled_decoder_checks_each_parent_as_it_uses_it():
    """Called past the Python checks (as a buffer someone changed would reach it), a parent
    out of range is a ValueError naming the index, never a read outside the counts."""
    if not adaptive.compiled():
        pytest.skip("the compiled coder is not built")
    rng = np.random.default_rng(14)
    cum = tables(rng, 1, 8)
    symbols = np.zeros(3, dtype=np.int32)
    data = adaptive.encode(symbols, np.zeros(3, int), cum, 4, 0, 1, adaptive.Parents(np.zeros(3, int), 2))
    for bad in (7, -1):
        parents = np.array([0, 0, bad], dtype=np.int32)
        with pytest.raises(ValueError, match="index 2 has parent %d, outside \\[0, 2\\)" % bad):
            adaptive._compiled.decode(data, 1, 3, np.zeros(3, np.int32), np.zeros(0, np.int32), 0, parents, 2, cum,
                                      1, 8, 4, 0, 1, 0)


def test_the_parent_level_pays_when_the_codes_follow_their_parents():
    """What a parent says reaches every context its children fall in: with the parent level
    the codes that follow their parents cost far fewer bytes."""
    rng = np.random.default_rng(13)
    k, contexts = 128, 30
    cum = tables(rng, contexts, k)
    symbols, parents = following(rng, 3000, k, 40)
    ctx = rng.integers(0, contexts, size=symbols.size)
    assert len(both_ways(symbols, ctx, cum, 6, 5, 1, parents)) < 0.8 * len(both_ways(symbols, ctx, cum, 6, 5))


def test_carries_and_extreme_tables_round_trip():
    """Rows with one symbol near certainty and the rest at the floor (long runs of 0xFF bytes
    that a carry must run through), and the least likely symbols one after another."""
    k = 16
    probs = np.full((2, k), 1e-9)
    probs[0, 0] = probs[1, k - 1] = 1.0
    cum = adaptive.cumulative(quantize_probabilities(probs))
    rng = np.random.default_rng(3)
    for strength, pool in ((0, 0), (6, 1), (24, 0), (24, 9)):
        runs = np.concatenate([np.zeros(300, int), rng.integers(1, k, 50), np.full(200, k - 1)])
        both_ways(runs, np.where(np.arange(runs.size) % 3 == 0, 1, 0), cum, strength, pool)
        both_ways(rng.integers(1, k - 1, size=300), np.zeros(300, int), cum, strength, pool)


def test_a_context_stops_counting_at_the_cap():
    """Past COUNT_CAP indices a context's table stays as it is, the same on both sides."""
    cum = adaptive.cumulative(quantize_probabilities(np.array([[0.5, 0.5]])))
    n = adaptive.COUNT_CAP + 3000
    symbols = np.zeros(n, dtype=np.int32)
    symbols[adaptive.COUNT_CAP:] = 1  # after the cap the counts no longer follow
    data = adaptive.encode(symbols, np.zeros(n, int), cum, 0)
    assert adaptive.encode_reference(symbols, np.zeros(n, np.int32), cum, 0) == data
    np.testing.assert_array_equal(adaptive.decode(data, (1, n), np.zeros(n, int), None, 0, cum, 0).ravel(), symbols)
    # the first COUNT_CAP zeros cost almost nothing, the 3000 ones after the cap log2(2 (1 + COUNT_CAP)) = 17
    # bits each: the table stayed (0.5 + 0) / (1 + COUNT_CAP); one that went on counting would learn them
    assert 3000 * 16.9 / 8 < len(data) < 3000 * 17.2 / 8


def test_adaptation_pays_on_a_frame_with_its_own_statistics():
    """A grid that takes a few codes the tables think rare: the adaptive coding is far
    shorter than the static one, and encode_best keeps the candidate of the shortest
    estimate, within a few bytes of the shortest coding."""
    rng = np.random.default_rng(5)
    k = 256
    prior = IndexPrior(quantize_probabilities(rng.dirichlet(np.ones(k), size=1)), kind="unigram")
    rare = np.argsort(prior.freqs[0])[:4]
    grid = rare[rng.integers(0, 4, size=(30, 40))]
    params, data = prior.encode_adaptive(grid)
    assert len(data) < 0.4 * len(prior.encode(grid))
    contexts, cum = np.zeros(grid.size, int), prior._cumulative()
    usable = [p for p in adaptive.CANDIDATES if not p[2]]  # without parents, encode_best tries these
    bits = adaptive.estimate(grid, contexts, cum, usable, aging=adaptive.AGING)
    assert params == usable[int(np.argmin(bits))] + (adaptive.AGING,)
    sizes = [len(adaptive.encode(grid, contexts, cum, *p, aging=adaptive.AGING)) for p in usable]
    assert len(data) <= min(sizes) + 2
    np.testing.assert_array_equal(prior.decode_adaptive(data, grid.shape, params), grid)


def test_the_pool_carries_what_the_frame_says_to_contexts_that_have_not_seen_it():
    """Codes the tables think rare, spread over many contexts: each context sees few of
    them, the grid many; the pool codes them in fewer bytes."""
    rng = np.random.default_rng(6)
    k, contexts = 64, 40
    cum = tables(rng, contexts, k)
    n = 2000
    symbols = rng.integers(0, 3, size=n)  # the same three codes in every context
    ctx = rng.integers(0, contexts, size=n)
    assert len(both_ways(symbols, ctx, cum, 8, 3)) < 0.8 * len(both_ways(symbols, ctx, cum, 8, 0))


def staged(rng):
    """The golden staged prior (three stages, parent contexts at ratios 2 and 1) and a maker
    of codes for it of any size."""
    from test_entropy import staged_codes

    return StagedPrior.load(str(GOLDEN / "entropy_staged_prior.safetensors")), lambda h, w: staged_codes(rng, h, w)


def test_staged_adaptive_coding_round_trips_and_every_prefix_decodes_alone():
    rng = np.random.default_rng(11)
    prior, codes = staged(rng)
    grids = codes(19, 23)
    chunks, params = prior.encode_adaptive(grids)
    assert len(chunks) == len(params) == 3 and params[0][2] == 0
    assert {p[:3] for p in params} <= set(adaptive.CANDIDATES) and {p[3] for p in params} == {adaptive.AGING}
    shapes = [g.shape for g in grids]
    for a, b in zip(prior.decode(chunks, shapes, params), grids):
        np.testing.assert_array_equal(a, b)
    for q in (1, 2):
        assert prior.encode_adaptive(grids[:q]) == (chunks[:q], params[:q])
        for a, b in zip(prior.decode(chunks[:q], shapes[:q], params[:q]), grids):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="2 adaptive parameters for 3 stage payloads"):
        prior.decode(chunks, shapes, params[:2])


SHAPE = "must be \\(strength, pool\\[, level\\[, aging\\]\\]\\)"


def test_bad_data_is_a_clear_error():
    rng = np.random.default_rng(8)
    prior, codes = staged(rng)
    grids = codes(12, 12)
    chunks, params = prior.encode_adaptive(grids)
    shapes = [g.shape for g in grids]
    stage = prior.stages[2]
    data, e = chunks[2], params[2]
    with pytest.raises(ValueError, match="never read"):
        stage.decode_adaptive(data + b"\x01\x02\x03\x04\x05\x06\x07\x08\x09", shapes[2], e, grids[1])
    with pytest.raises(ValueError, match="ends in a zero byte"):
        stage.decode_adaptive(data + b"\x00", shapes[2], e, grids[1])
    with pytest.raises(ValueError, match="strength exponent 25"):
        stage.decode_adaptive(data, shapes[2], (25, 0), grids[1])
    with pytest.raises(ValueError, match="pool weight 10"):
        stage.decode_adaptive(data, shapes[2], (4, 10), grids[1])
    with pytest.raises(ValueError, match="parent level 6 is above the pool weight 5"):
        stage.decode_adaptive(data, shapes[2], (4, 5, 6), grids[1])
    with pytest.raises(ValueError, match="aging 13 is not an integer in \\[0, 12\\]"):
        stage.decode_adaptive(data, shapes[2], (4, 5, 1, 13), grids[1])
    with pytest.raises(ValueError, match=SHAPE):
        stage.decode_adaptive(data, shapes[2], 4, grids[1])
    with pytest.raises(ValueError, match=SHAPE):
        stage.decode_adaptive(data, shapes[2], (4, 0, 0, 0, 0), grids[1])
    with pytest.raises(ValueError, match="its prior has no parent"):
        prior.stages[0].decode_adaptive(chunks[0], shapes[0], (4, 0, 1))
    with pytest.raises(ValueError, match="parent grid is needed"):
        stage.decode_adaptive(data, shapes[2], e, None)
    with pytest.raises(ValueError, match="shape must be positive"):
        stage.decode_adaptive(data, (0, 4), e, grids[1])
    with pytest.raises(ValueError, match="larger than"):
        stage.decode_adaptive(data, (1 << 13, 1 << 12), e, grids[1])
    with pytest.raises(ValueError, match="stage 3: entropy payload is corrupted"):
        prior.decode(chunks[:2] + [data + b"\x07" * 12], shapes, params)


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=64), h=st.integers(1, 9), w=st.integers(1, 9), strength=st.integers(0, 24),
       pool=st.integers(0, 9), level=st.integers(0, 9), aging=st.integers(0, 12))
def test_random_bytes_decode_to_a_grid_or_a_clear_error(data, h, w, strength, pool, level, aging):
    """Neither the compiled decoder nor the reference crashes on arbitrary bytes; both agree."""
    rng = np.random.default_rng(h * 10 + w)
    cum = tables(rng, 16, 8)
    cluster = np.arange(8, dtype=np.int32) % 3  # contexts 0..15 of 3 clusters: (3 + 1)**2
    level = min(level, pool) if pool else level
    parents = adaptive.Parents(rng.integers(0, 5, size=h * w), 5)
    results = []
    for decode in (adaptive.decode, _reference_decode):
        try:
            results.append(decode(data, (h, w), None, cluster, 3, cum, strength, pool, level, parents, aging))
        except ValueError as exc:
            assert str(exc)
            results.append(None)
    assert (results[0] is None) == (results[1] is None)
    if results[0] is not None:
        np.testing.assert_array_equal(results[0], results[1])


def _reference_decode(*args):
    compiled, adaptive._compiled = adaptive._compiled, None
    try:
        return adaptive.decode(*args)
    finally:
        adaptive._compiled = compiled


def _pinned(name):
    doc = json.loads((GOLDEN / (name + ".json")).read_text())
    data = (GOLDEN / (name + ".bin")).read_bytes()
    at = np.cumsum([0] + doc["lengths"])
    return [data[a:b] for a, b in zip(at[:-1], at[1:])], [tuple(p) for p in doc["params"]]


def test_golden_adaptive_staged_payload():
    """Pins the adaptive coding: the golden staged prior codes the golden codes to the stored
    bytes with the stored (strength, pool, level, aging) (RAWDIFF_REGEN_GOLDEN=1 writes them)."""
    prior = StagedPrior.load(str(GOLDEN / "entropy_staged_prior.safetensors"))
    doc = json.loads((GOLDEN / "entropy_staged.json").read_text())
    codes = [np.asarray(g, dtype=np.int64) for g in doc["codes"]]
    name = "entropy_staged_adaptive_aging"
    if REGEN:
        chunks, params = prior.encode_adaptive(codes)
        (GOLDEN / (name + ".bin")).write_bytes(b"".join(chunks))
        (GOLDEN / (name + ".json")).write_text(json.dumps({"lengths": [len(c) for c in chunks],
                                                           "params": params}) + "\n")
    chunks, params = _pinned(name)
    assert all(h == adaptive.AGING for *_, h in params) and any(p[2] for p in params)  # aging, a parent level
    assert prior.encode_adaptive(codes) == (chunks, params)
    for a, b in zip(prior.decode(chunks, [tuple(s) for s in doc["shapes"]], params), codes):
        np.testing.assert_array_equal(a, b)
    # no more bytes than the coding before aging (these small grids age little), fewer than the static coding
    assert sum(map(len, chunks)) <= sum(map(len, _pinned("entropy_staged_adaptive_levels")[0])) < sum(doc["lengths"])


def _halving_case():
    """1,500 symbols of 12 codes in 3 contexts under 5 parents, from a fixed integer recurrence
    (no random generator whose stream could change), whose statistics drift along the
    sequence, and the tables of a fixed formula."""
    k, contexts, n = 12, 3, 1500
    state, symbols = 12345, []
    for i in range(n):
        state = (1103515245 * state + 12345) % 2 ** 31
        symbols.append((state >> 16) % 4 + (4 * i) // n * 2)  # four codes at a time, moving up
    freqs = np.array([[1 + (3 * x + 5 * c) % 7 for x in range(k)] for c in range(contexts)], dtype=np.float64)
    cum = adaptive.cumulative(quantize_probabilities(freqs / freqs.sum(1, keepdims=True)))
    i = np.arange(n)
    return np.array(symbols, dtype=np.int32), (i % contexts).astype(np.int32), cum, adaptive.Parents((i // 7) % 5, 5)


def test_golden_aging_halves_as_pinned():
    """Pins the halving itself: aging 1 (contexts and parents halve at 16 indices, the pool at
    256) over 1,500 indices halves each level many times; the coding is the stored bytes, both
    coders agree, and it decodes (RAWDIFF_REGEN_GOLDEN=1 writes it)."""
    symbols, contexts, cum, parents = _halving_case()
    params = (6, 5, 1)
    path = GOLDEN / "adaptive_aging_halving.bin"
    data = both_ways(symbols, contexts, cum, *params, parents=parents, aging=1)
    if REGEN:
        path.write_bytes(data)
    assert data == path.read_bytes()
    assert len(data) < len(adaptive.encode(symbols, contexts, cum, *params, parents=parents))  # the drift pays


@pytest.mark.parametrize("name,fields", [("entropy_staged_adaptive", 2), ("entropy_staged_adaptive_levels", 3)])
def test_golden_adaptive_staged_payload_of_earlier_versions_still_codes_and_decodes(name, fields):
    """The (strength, pool) pairs of format version 7 streams and the (strength, pool, level)
    triples of version 8: each stage coded with its pinned parameters (no aging) gives the
    pinned bytes, and they decode to the golden codes."""
    prior = StagedPrior.load(str(GOLDEN / "entropy_staged_prior.safetensors"))
    doc = json.loads((GOLDEN / "entropy_staged.json").read_text())
    codes = [np.asarray(g, dtype=np.int64) for g in doc["codes"]]
    chunks, pinned = _pinned(name)
    assert all(len(p) == fields for p in pinned)
    for stage, grid, parent, data, params in zip(prior.stages, codes, [None] + codes[:-1], chunks, pinned):
        full = params + (0,) * (4 - fields)
        assert stage.encode_adaptive(grid, parent, [params], aging=0) == (full, data)
    for a, b in zip(prior.decode(chunks, [tuple(s) for s in doc["shapes"]], pinned), codes):
        np.testing.assert_array_equal(a, b)


def test_bad_arguments_are_refused_before_either_coder_runs():
    rng = np.random.default_rng(9)
    cum = tables(rng, 4, 8)
    s, c = np.zeros(5, int), np.zeros(5, int)
    freqs = quantize_probabilities(np.ones((1, 3)))
    freqs[0, :2] = (0, freqs[0, 0] + freqs[0, 1])
    with pytest.raises(ValueError, match="entry must be >= 1"):
        adaptive.cumulative(freqs)  # a symbol of width 0 would never be coded
    for call, match in [
        (lambda: adaptive.encode(s, c, cum.astype(np.int64), 4), "2-D uint32"),
        (lambda: adaptive.encode(s, c, np.array([[0, 0, 1 << 24]] * 4, np.uint32), 4), "rising from 0"),
        (lambda: adaptive.encode(s, c, np.array([[0, 5, 1 << 23]] * 4, np.uint32), 4), "rising from 0 to 2"),
        (lambda: adaptive.encode(s + 8, c, cum, 4), "outside"),
        (lambda: adaptive.encode(s, c + 4, cum, 4), "outside"),
        (lambda: adaptive.encode(s, c[:4], cum, 4), "one size"),
        (lambda: adaptive.decode(b"\x01", (1, 5), np.zeros(4, int), None, 0, cum, 4), "one context offset"),
        (lambda: adaptive.decode(b"\x01", (1, 5), np.full(5, 4), None, 0, cum, 4), "one context offset"),
        (lambda: adaptive.decode(b"\x01", (1, 5), None, np.zeros(7, int), 1, cum, 4), "one cluster"),
        (lambda: adaptive.decode(b"\x01", (1, 5), None, -np.ones(8, int), 1, cum, 4), "one cluster"),
        (lambda: adaptive.decode(b"\x01", (0, 5), None, None, 0, cum, 4), "empty or larger"),
        (lambda: adaptive.estimate(s, c, cum, []), "1 to 64 candidates"),
        (lambda: adaptive.estimate(s, c, cum, [(4, 0, 1)]), "1 of the candidates use the parent level, and there"),
        (lambda: adaptive.estimate(s, c, cum, [(4, 0, 0), (4, 0, 1)]), "1 of the candidates use the parent level"),
        (lambda: adaptive.estimate(s, c, cum, [(4, 0, 0, 0)]), "the aging is one for them all"),
        (lambda: adaptive.estimate(s, c, cum, [(4,)]), SHAPE),
        (lambda: adaptive.estimate(s, c, cum, [(4, 0)], aging=13), "aging 13 is not an integer in \\[0, 12\\]"),
        (lambda: adaptive.estimate(s, c, cum, [(4, 0)], aging=True), "aging True is not an integer"),
        (lambda: adaptive.encode_best(s, c, cum, [(4, 0)], aging=-1), "aging -1 is not an integer"),
        (lambda: adaptive.encode(s, c, cum, 4, aging=13), "aging 13 is not an integer in \\[0, 12\\]"),
        (lambda: adaptive.encode(s, c, cum, 4, aging=5.9), "aging 5.9 is not an integer"),
        (lambda: adaptive.decode(b"\x01", (1, 5), None, None, 0, cum, 4, aging="5"), "aging '5' is not an integer"),
        (lambda: adaptive.encode(s, c, cum, 4, 0, 1), "needs the parents"),
        (lambda: adaptive.encode(s, c, cum, 4, 0, 1, np.zeros(5, int)), "must be an adaptive.Parents"),
        (lambda: adaptive.encode(s, c, cum, 4, 2, 3), "parent level 3 is above the pool weight 2"),
        (lambda: adaptive.encode(s, c, cum, 4, 0, 10), "parent level 10 is not in \\[0, 9\\]"),
        (lambda: adaptive.Parents(np.zeros(5, int), None), "count of parents must be an integer"),
        (lambda: adaptive.Parents(np.zeros(5, int), 2.7), "count of parents must be an integer"),
        (lambda: adaptive.encode(s, c, cum, 4, 0, 0, "junk"), "must be an adaptive.Parents"),
        (lambda: adaptive.estimate(s, c, cum, ["840"]), SHAPE),
        (lambda: adaptive.estimate(s, c, cum, [(8.9, 5.5)]), SHAPE),
        (lambda: adaptive.estimate(s, c, cum, [(True, 0)]), SHAPE),
        (lambda: adaptive.encode(s, c, cum, 4, 0, 1, adaptive.Parents(np.zeros(4, int), 2)), "4 parents for 5"),
        (lambda: adaptive.Parents(np.full(5, 2), 2), "parents must be integers in \\[0, 2\\)"),
        (lambda: adaptive.Parents(np.zeros(5, int), 0), "0 parents is not in"),
        (lambda: adaptive.decode(b"\x01", (1, 5), None, None, 0, cum, 4, 0, 1), "needs the parents"),
    ]:
        for compiled in (True, False):
            saved = adaptive._compiled
            if not compiled:
                adaptive._compiled = None
            try:
                with pytest.raises(ValueError, match=match):
                    call()
            finally:
                adaptive._compiled = saved


def test_the_estimates_count_as_the_coder_does_past_the_context_cap():
    """The compiled estimate and the numpy one agree, and match the coded length, on a
    context that passes COUNT_CAP (its counts frozen from there, a change of codes after it)."""
    rng = np.random.default_rng(12)
    cum = tables(rng, 3, 8)
    n = adaptive.COUNT_CAP + 5000
    symbols = rng.integers(0, 8, size=n)
    symbols[adaptive.COUNT_CAP - 1000:] = 7
    contexts = np.where(np.arange(n) % 5 == 0, 1, 0)
    parents = adaptive.Parents(np.where(np.arange(n) % 7 == 0, 1, 0), 2)  # parent 0 passes the cap too
    triples = [(4, 0, 0), (4, 3, 0), (12, 7, 0), (8, 1, 0), (4, 0, 1), (8, 5, 1), (10, 9, 4)]
    for aging in (0, 5):  # without aging the counts stop at the caps, with it they are halved long before
        compiled = adaptive.estimate(symbols, contexts, cum, triples, parents, aging=aging)
        reference = adaptive.estimate_reference(symbols.astype(np.int32), contexts.astype(np.int32), cum, triples,
                                                parents.values, aging)
        np.testing.assert_allclose(compiled, reference, rtol=1e-9)
        for params, bits in zip(triples, compiled):
            coded = adaptive.encode(symbols, contexts, cum, *params, parents=parents, aging=aging)
            assert bits - 8 <= 8 * len(coded) <= bits + 16


def test_the_container_takes_every_parameter_the_coder_has():
    from rawdiff.codec.bitstream import MAX_ADAPT

    assert MAX_ADAPT == (adaptive.MAX_STRENGTH, adaptive.MAX_POOL, adaptive.MAX_POOL, adaptive.MAX_AGING)
    assert all(all(0 <= v <= top for v, top in zip(p + (adaptive.AGING,), MAX_ADAPT)) and not 0 < p[1] < p[2]
               for p in adaptive.CANDIDATES)
