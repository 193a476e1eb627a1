"""Adaptive range coding: a stage's context tables adapted to the frame as it is coded.

The static tables of :class:`rawdiff.codec.entropy.IndexPrior` are fitted on the training
set; a frame has its own statistics (a sky, a wall, a road take a few codes many times).
Here each context's table is the prior of a Dirichlet of strength ``N = 2**e`` updated with
the counts of the indices already coded in that context of the same grid; weighted
``2**-a``, with the counts under the same *parent* so far (the *parent level*: for a stage
after the first, the code of the stage before at the same place, whatever the neighbours);
and, weighted ``2**-b``, with the counts of the whole grid so far (the *pool*: what the frame
says about a code reaches the contexts that have not seen it yet)::

    p(x) = (N p_table(x) + n_c(x) + 2**-a n_p(x) + 2**-b n(x)) / (N + n_c + 2**-a n_p + 2**-b n)

    as integers: w(x) = f(x) << W + n_c(x) << (W + s) + n_p(x) << (W - a + s) + n(x) << (W - b + s)

with ``s = 24 - e`` and ``W = b`` with the pool, else ``a`` with the parent level, else 0.
Both sides know the counts so far, so nothing is sent but the parameters ``(e, g, m, h)`` of
each stage (``g`` 0: no pool, else ``b = g - 1``; ``m`` 0: no parent level, else
``a = m - 1``; ``m <= g`` when both are used: the pool weighs no more than the parent level),
chosen per frame by the encoder (:func:`encode_best`: the code lengths of every candidate in
one pass, then one coding). Every stage starts from zero counts, so a bitstream cut to fewer
stages (:func:`rawdiff.codec.bitstream.truncate`) decodes as before.

*Aging* ``h`` (format version 9): a frame is not the same from top to bottom (sky, then
buildings, then road), so with ``h > 0`` a context's and a parent's counts are halved, each
rounded down, whenever they reach ``2**(h + 3)`` indices, and the pool's at ``2**(h + 7)``:
the counts then say more about the rows just coded than about the whole frame so far (the
halving of adaptive arithmetic coders since Witten, Neal and Cleary 1987). A halving costs
K operations (the counts and their Fenwick tree); a halved level holds at most half its
threshold, so it halves again no sooner than ``2**(h + 2)`` indices later: at most
``K / 2**(h + 2)`` operations an index and level, 4 for the shipped codebooks (K 512) at the
encoder's aging 5, 64 at the smallest aging a stream may give. Without aging (``h = 0``,
versions 7 and 8) a context and a parent stop counting at :data:`COUNT_CAP` indices, the pool
at :data:`POOL_CAP`.

The range coder is 64-bit (range in [2**56, 2**64), bytes shifted out, the carry
propagated into the bytes written): every interval is exact integer arithmetic. The
compiled coder (``rawdiff.codec._adaptive``, built by ``pip install -e .``) and the Python
reference here (:func:`encode_reference`, :func:`decode_reference`) write and read the same
bytes; the reference is what runs where the extension was not built (about 100 times
slower). The arguments are checked here, once, before either runs.
"""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple

import numpy as np

PRECISION = 24
TOTAL = 1 << PRECISION
COUNT_CAP = 65536
POOL_CAP = 1 << 20
MAX_STRENGTH = PRECISION
#: g: 0 (no pool) or b + 1 with the pool's weight 2**-b, b in 0..8; m likewise for the parent level
MAX_POOL = 9
#: h: 0 (no aging) or halving at 2**(h + 3) indices (contexts, parents) and 2**(h + 7) (the pool)
MAX_AGING = 12
# with any aging the counts halve before they reach the caps (the coder and the reference's
# estimate, which ignores the caps when aging, then count alike)
assert 1 << (MAX_AGING + 3) <= COUNT_CAP and 1 << (MAX_AGING + 7) <= POOL_CAP
#: the aging the encoder codes with: contexts and parents halve at 256 indices, the pool at
#: 4096 (chosen on the validation frames' shipped codes, ``benchmarks/adaptive_coding.py``)
AGING = 5
MAX_CODES = 65536
MAX_INDICES = 1 << 24
#: the (strength exponent, pool, parent level) triples the encoder tries per stage (each with
#: :data:`AGING`): N = 4 to 4096, the pool's weight 1 to 1/256 or none, the parent level's 1 to
#: 1/64 or none (a stage without a parent tries the 6 without the level). Chosen with that aging
#: on the validation frames' shipped codes among 329 triples (``python
#: benchmarks/adaptive_coding.py --search``; the 28 that need the fewest bits there in all, one
#: swapped at a time from the set before): per frame and stage the best of them needs at most
#: 0.01 % more bits at each quality than the best of all 329 there
CANDIDATES = ((2, 0, 0), (2, 0, 7), (4, 0, 0), (4, 0, 1), (4, 0, 5), (4, 7, 0), (4, 9, 0), (6, 0, 1), (6, 0, 3),
              (6, 4, 1), (6, 5, 1), (6, 7, 1), (6, 7, 2), (6, 9, 0), (6, 9, 1), (6, 9, 3), (8, 3, 1), (8, 5, 1),
              (8, 6, 1), (8, 7, 1), (8, 7, 2), (10, 2, 1), (10, 3, 1), (10, 4, 1), (10, 5, 1), (12, 1, 1),
              (12, 2, 0), (12, 3, 1))
_BOTTOM = 1 << 56
_MASK = (1 << 64) - 1

try:  # pragma: no branch - which one runs depends on the build
    import rawdiff.codec._adaptive as _compiled
except ImportError:  # pragma: no cover - a source tree without the built extension
    _compiled = None

_log = logging.getLogger(__name__)
_warned = []


def compiled() -> bool:
    """True when the compiled coder is built (else the Python reference codes)."""
    return _compiled is not None


def _reference_in_use() -> None:
    if not _warned:
        _warned.append(True)
        _log.warning("rawdiff.codec._adaptive is not built (pip install -e . builds it): the adaptive range "
                     "coder runs in Python, about 100 times slower")


class _Tables(np.ndarray):
    """Cumulative tables that :func:`cumulative` made (read-only): checked once, when made."""


def cumulative(freqs: np.ndarray) -> np.ndarray:
    """Integer tables (entries >= 1, rows summing to 2**24) -> their cumulative sums,
    num_contexts x (K + 1) uint32, read-only (the coders take them without checking again)."""
    f = np.asarray(freqs)
    if f.ndim != 2 or f.dtype.kind not in "ui" or not 2 <= f.shape[1] <= MAX_CODES or f.shape[0] < 1:
        raise ValueError("tables must be a non-empty 2-D integer array of 2 to %d codes, got %s %s"
                         % (MAX_CODES, f.dtype, f.shape))
    f = f.astype(np.int64)
    cum = np.zeros((f.shape[0], f.shape[1] + 1), dtype=np.int64)
    np.cumsum(f, axis=1, out=cum[:, 1:])
    if f.min() < 1 or np.any(cum[:, -1] != TOTAL):
        raise ValueError("every table entry must be >= 1 and every table must sum to 2**%d" % PRECISION)
    tables = np.ascontiguousarray(cum, dtype=np.uint32).view(_Tables)
    tables.setflags(write=False)
    return tables


def _check_params(strength: int, pool: int, level: int = 0, aging: int = 0) -> Tuple[int, int, int, int]:
    e, g, m, h = int(strength), int(pool), int(level), _check_aging(aging)
    if not 0 <= e <= MAX_STRENGTH:
        raise ValueError("strength exponent %d is not in [0, %d]" % (e, MAX_STRENGTH))
    if not 0 <= g <= MAX_POOL:
        raise ValueError("pool weight %d is not in [0, %d]" % (g, MAX_POOL))
    if not 0 <= m <= MAX_POOL:
        raise ValueError("parent level %d is not in [0, %d]" % (m, MAX_POOL))
    if g and m > g:
        raise ValueError("parent level %d is above the pool weight %d" % (m, g))
    return e, g, m, h


def _check_aging(aging: int) -> int:
    if isinstance(aging, (bool, np.bool_)) or not isinstance(aging, (int, np.integer)) or not 0 <= aging <= MAX_AGING:
        raise ValueError("aging %r is not an integer in [0, %d]" % (aging, MAX_AGING))
    return int(aging)


def as_params(params) -> Tuple[int, int, int, int]:
    """A stage's (strength, pool, parent level, aging) checked; a (strength, pool) pair
    (format version 7) has neither a parent level nor aging, a triple (version 8) no aging.
    Two to four integers in a tuple, list or array."""
    ok = isinstance(params, (tuple, list, np.ndarray)) and len(params) in (2, 3, 4) and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in params)
    if not ok:
        raise ValueError("adaptive parameters must be (strength, pool[, level[, aging]]), got %r" % (params,))
    return _check_params(*(int(v) for v in params))


def _check_tables(cum: np.ndarray) -> np.ndarray:
    """Tables :func:`cumulative` made as they are; any other array checked whole (rows from
    0, rising, to 2**24): a symbol of no width would never be coded."""
    if isinstance(cum, _Tables) and not cum.flags.writeable:
        return cum
    c = np.asarray(cum)
    if (c.ndim != 2 or c.dtype != np.uint32 or not 3 <= c.shape[1] <= MAX_CODES + 1 or c.shape[0] < 1
            or np.any(c[:, 0] != 0) or np.any(c[:, -1] != TOTAL) or np.any(c[:, 1:] <= c[:, :-1])):
        raise ValueError("cumulative tables must be a 2-D uint32 array of rows rising from 0 to 2**%d "
                         "(cumulative() gives them)" % PRECISION)
    return np.ascontiguousarray(c)


def _check_symbols(symbols: np.ndarray, contexts: np.ndarray, cum: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    s, c = np.ravel(symbols), np.ravel(contexts)
    if s.shape != c.shape or s.dtype.kind not in "ui" or c.dtype.kind not in "ui":
        raise ValueError("symbols and contexts must be integer arrays of one size")
    if s.size > MAX_INDICES:
        raise ValueError("%d indices are more than %d" % (s.size, MAX_INDICES))
    if s.size and (s.min() < 0 or s.max() >= cum.shape[1] - 1 or c.min() < 0 or c.max() >= cum.shape[0]):
        raise ValueError("a symbol is outside [0, %d) or a context outside [0, %d)" % (cum.shape[1] - 1, cum.shape[0]))
    return np.ascontiguousarray(s, dtype=np.int32), np.ascontiguousarray(c, dtype=np.int32)


class Parents:
    """The parent of every index (raster order) and how many parents there are: checked once
    and held as an int32 copy over immutable bytes (it cannot be made writeable again), so
    what was checked is what the coders read; the compiled coders check each parent again as
    they use it all the same."""

    __slots__ = ("_values", "_count")

    def __init__(self, values: np.ndarray, count: int):
        if isinstance(count, (bool, np.bool_)) or not isinstance(count, (int, np.integer)):
            raise ValueError("the count of parents must be an integer, got %r" % (count,))
        n = int(count)
        v = np.ravel(values)
        if not 1 <= n <= MAX_CODES:
            raise ValueError("%d parents is not in [1, %d]" % (n, MAX_CODES))
        if v.dtype.kind not in "ui" or (v.size and (v.min() < 0 or v.max() >= n)):
            raise ValueError("parents must be integers in [0, %d)" % n)
        self._values = np.frombuffer(np.ascontiguousarray(v, dtype=np.int32).tobytes(), dtype=np.int32)
        self._count = n

    @property
    def values(self) -> np.ndarray:
        return self._values

    @property
    def count(self) -> int:
        return self._count


_NO_PARENTS = np.zeros(0, dtype=np.int32)


def _parents_for(parents: Optional[Parents], n: int, level: int) -> Tuple[np.ndarray, int]:
    """The parents' array and count as the coders take them (empty without the parent level)."""
    if parents is not None and not isinstance(parents, Parents):
        raise ValueError("parents must be an adaptive.Parents, got %s" % type(parents).__name__)
    if not level:
        return _NO_PARENTS, 0
    if parents is None:
        raise ValueError("the parent level (m = %d) needs the parents of the indices" % level)
    if parents.values.size != n:
        raise ValueError("%d parents for %d indices" % (parents.values.size, n))
    return parents.values, parents.count


# --------------------------------------------------------------------------- dispatch


def _as_triples(candidates: Sequence[Tuple[int, ...]]) -> List[Tuple[int, int, int]]:
    """Candidates as (strength, pool, parent level) triples, each checked: a pair has no parent
    level; one aging serves them all, so a candidate of four values is refused."""
    if any(len(t) > 3 for t in candidates if isinstance(t, (tuple, list, np.ndarray))):
        raise ValueError("candidates are (strength, pool, parent level); the aging is one for them all")
    return [as_params(t)[:3] for t in candidates]


def _check_candidates(candidates: Sequence[Tuple[int, ...]], parents: Optional[Parents],
                      drop_levels: bool = False) -> List[Tuple[int, int, int]]:
    """The candidates, (strength, pool, parent level) triples (or pairs), checked; without
    parents, those with the parent level left out (``drop_levels``) or refused."""
    triples = _CANDIDATES_CHECKED if candidates is CANDIDATES else _as_triples(candidates)
    if not 1 <= len(triples) <= 64:
        raise ValueError("1 to 64 candidates, got %d" % len(triples))
    usable = [t for t in triples if parents is not None or not t[2]]
    if len(usable) < len(triples) and not (drop_levels and usable):
        raise ValueError("%d of the candidates use the parent level, and there are no parents"
                         % (len(triples) - len(usable)))
    return usable


#: the default candidates, checked once (every stage of every frame tries them)
_CANDIDATES_CHECKED = _as_triples(CANDIDATES)


def _encode(s: np.ndarray, c: np.ndarray, cum: np.ndarray, params: Tuple[int, int, int, int],
            parents: Optional[Parents]) -> bytes:
    p, n_p = _parents_for(parents, s.size, params[2])
    if _compiled is not None:
        return _compiled.encode(s, c, p, cum, cum.shape[0], n_p, cum.shape[1] - 1, *params)
    _reference_in_use()
    return encode_reference(s, c, cum, *params[:3], parents=p, aging=params[3])


def _estimate(s: np.ndarray, c: np.ndarray, cum: np.ndarray, triples: List[Tuple[int, int, int]],
              parents: Optional[Parents], aging: int) -> np.ndarray:
    p, n_p = _parents_for(parents, s.size, max(t[2] for t in triples))
    if _compiled is not None:
        return np.asarray(_compiled.estimate(s, c, p, cum, cum.shape[0], n_p, cum.shape[1] - 1,
                                             bytes(v for t in triples for v in t), aging))
    return estimate_reference(s, c, cum, triples, p if n_p else None, aging)


def encode(symbols: np.ndarray, contexts: np.ndarray, cum: np.ndarray, strength: int, pool: int = 0,
           level: int = 0, parents: Optional[Parents] = None, aging: int = 0) -> bytes:
    """Code ``symbols`` (in [0, K)) in raster order, each in its context (and, with the parent
    level, under its parent) -> bytes."""
    params = _check_params(strength, pool, level, aging)
    cum = _check_tables(cum)
    return _encode(*_check_symbols(symbols, contexts, cum), cum, params, parents)


def estimate(symbols: np.ndarray, contexts: np.ndarray, cum: np.ndarray,
             candidates: Sequence[Tuple[int, ...]] = CANDIDATES, parents: Optional[Parents] = None,
             aging: int = 0) -> np.ndarray:
    """The code length in bits of ``symbols`` under each (strength, pool, level) triple of
    ``candidates`` with ``aging`` (those with the parent level need ``parents``; floating point:
    it chooses, it does not code)."""
    triples = _check_candidates(candidates, parents)
    aging = _check_aging(aging)
    cum = _check_tables(cum)
    return _estimate(*_check_symbols(symbols, contexts, cum), cum, triples, parents, aging)


def encode_best(symbols: np.ndarray, contexts: np.ndarray, cum: np.ndarray,
                candidates: Sequence[Tuple[int, ...]] = CANDIDATES,
                parents: Optional[Parents] = None, aging: int = AGING) -> Tuple[Tuple[int, int, int, int], bytes]:
    """The coding of ``symbols`` with ``aging`` (by default the encoder's, :data:`AGING`;
    :func:`encode`, :func:`decode` and :func:`estimate` take 0, none, unless told) and the
    candidate of the shortest estimated code length (ties go to the first; without
    ``parents``, among those without the parent level): ((strength, pool, level, aging),
    bytes). The arguments are checked once."""
    triples = _check_candidates(candidates, parents, drop_levels=True)
    aging = _check_aging(aging)
    cum = _check_tables(cum)
    s, c = _check_symbols(symbols, contexts, cum)
    params = triples[int(np.argmin(_estimate(s, c, cum, triples, parents, aging)))] + (aging,)
    return params, _encode(s, c, cum, params, parents)


def decode(data: bytes, shape: Tuple[int, int], offsets: Optional[np.ndarray], cluster: Optional[np.ndarray],
           num_clusters: int, cum: np.ndarray, strength: int, pool: int = 0, level: int = 0,
           parents: Optional[Parents] = None, aging: int = 0) -> np.ndarray:
    """The h x w grid (int64) of :func:`encode`'s bytes. The context of (r, c) is
    ``offsets[r, c] + cluster[above] * (C + 1) + cluster[left]`` (C outside the grid), or
    ``offsets[r, c]`` alone without clusters (``num_clusters`` 0), or 0 without either; its
    parent (with the parent level) ``parents`` at (r, c).

    Raises ``ValueError`` for data that cannot be a coding of such a grid: a value outside
    every interval, a context outside the tables, bytes left over that the decoder never
    read, a last byte of zero (the encoder drops those)."""
    e, g, m, a = _check_params(strength, pool, level, aging)
    cum = _check_tables(cum)
    k = cum.shape[1] - 1
    h, w = int(shape[0]), int(shape[1])
    if h < 1 or w < 1 or h * w > MAX_INDICES:
        raise ValueError("a %dx%d grid is empty or larger than %d indices" % (h, w, MAX_INDICES))
    par, n_par = _parents_for(parents, h * w, m)
    off = np.zeros(0, dtype=np.int32)
    if offsets is not None:
        off = np.ascontiguousarray(np.ravel(offsets), dtype=np.int64)
        if off.size != h * w or off.min() < 0 or off.max() >= cum.shape[0]:
            raise ValueError("offsets must be one context offset in [0, %d) per index" % cum.shape[0])
        off = off.astype(np.int32)
    c = int(num_clusters)
    cl = np.zeros(0, dtype=np.int32)
    if c:
        cl = np.ascontiguousarray(cluster, dtype=np.int64).ravel()
        if not 0 < c <= MAX_CODES or cl.size != k or cl.min() < 0 or cl.max() >= c:
            raise ValueError("cluster must be one cluster in [0, %d) per code (%d codes)" % (c, k))
        cl = cl.astype(np.int32)
    raw = bytes(data)
    if raw and raw[-1] == 0:
        raise ValueError("the adaptive coding ends in a zero byte (an encoder drops those)")
    if _compiled is not None:
        out, read = _compiled.decode(raw, h, w, off, cl, c, par, n_par, cum, cum.shape[0], k, e, g, m, a)
        grid = np.frombuffer(out, dtype=np.int32).astype(np.int64).reshape(h, w)
    else:
        _reference_in_use()
        grid, read = decode_reference(raw, h, w, off, cl, c, cum, e, g, m, par, a)
    # the encoder's bytes are the ones shifted out plus one; the decoder reads 7 more
    if len(raw) > read - 7:
        raise ValueError("%d bytes of the adaptive coding were never read (the grid needs %d)"
                         % (len(raw) - (read - 7), max(read - 7, 0)))
    return grid


# --------------------------------------------------------------------------- the reference


class _Counts:
    """Counts of the codes and their Fenwick tree (a context's, a parent's or the pool's);
    ``half``: halved (aging) when they reach it, else 0 (they stop at ``cap``). ``tree=False``:
    the counts alone (an estimate, which looks up no cumulative counts)."""

    __slots__ = ("counts", "tree", "seen", "cap", "half")

    def __init__(self, k: int, cap: int, half: int = 0, tree: bool = True):
        self.counts = [0] * k
        self.tree = [0] * (k + 1) if tree else None
        self.seen = 0
        self.cap = cap
        self.half = half

    def prefix(self, x: int) -> int:
        s, tree = 0, self.tree
        while x > 0:
            s += tree[x]
            x -= x & -x
        return s

    def add(self, x: int) -> None:
        if self.seen >= self.cap:
            return
        self.counts[x] += 1
        tree, i, k = self.tree, x + 1, len(self.counts)
        while tree is not None and i <= k:
            tree[i] += 1
            i += i & -i
        self.seen += 1
        if self.half and self.seen >= self.half:
            self.counts = [v >> 1 for v in self.counts]
            self.seen = sum(self.counts)
            if tree is None:
                return
            self.tree = tree = [0] + self.counts
            for i in range(1, k + 1):
                j = i + (i & -i)
                if j <= k:
                    tree[j] += tree[i]


def _halving(aging: int) -> Tuple[int, int]:
    """The counts at which aging ``aging`` halves a context's or a parent's counts and the
    pool's (0, 0: no aging)."""
    return (1 << (aging + 3), 1 << (aging + 7)) if aging else (0, 0)


class _Model:
    """The reference's model: the tables, the counts of each context, of each parent (with the
    parent level) and of the pool. ``p`` is the parent of the index coded (0 without the level)."""

    def __init__(self, cum: np.ndarray, strength: int, pool: int, level: int, aging: int = 0):
        self.rows = cum.astype(np.int64)
        self.k = cum.shape[1] - 1
        s = PRECISION - strength
        w = pool - 1 if pool else level - 1 if level else 0
        self.table_shift, self.context_shift = w, w + s
        self.parent_shift = w - (level - 1) + s if level else 0
        self.pool_shift = w - (pool - 1) + s if pool else 0
        self.half, pool_half = _halving(aging)
        self.pool = _Counts(self.k, POOL_CAP, pool_half) if pool else None
        self.parented = bool(level)
        self.table = {}
        self.parents = {}

    def _levels(self, c: int, p: int):
        """(counts, shift) of every level that has counts for context c and parent p."""
        out = []
        counts = self.table.get(c)
        if counts is not None:
            out.append((counts, self.context_shift))
        counts = self.parents.get(p) if self.parented else None
        if counts is not None:
            out.append((counts, self.parent_shift))
        if self.pool is not None:
            out.append((self.pool, self.pool_shift))
        return out

    def total(self, c: int, p: int) -> int:
        return (TOTAL << self.table_shift) + sum(n.seen << sh for n, sh in self._levels(c, p))

    def start(self, c: int, p: int, x: int) -> int:
        return (int(self.rows[c, x]) << self.table_shift) + sum(n.prefix(x) << sh for n, sh in self._levels(c, p))

    def width(self, c: int, p: int, x: int) -> int:
        width = (int(self.rows[c, x + 1]) - int(self.rows[c, x])) << self.table_shift
        return width + sum(n.counts[x] << sh for n, sh in self._levels(c, p))

    def update(self, c: int, p: int, x: int) -> None:
        counts = self.table.get(c)
        if counts is None:
            counts = self.table[c] = _Counts(self.k, COUNT_CAP, self.half)
        counts.add(x)
        if self.parented:
            counts = self.parents.get(p)
            if counts is None:
                counts = self.parents[p] = _Counts(self.k, COUNT_CAP, self.half)
            counts.add(x)
        if self.pool is not None:
            self.pool.add(x)


def encode_reference(symbols: np.ndarray, contexts: np.ndarray, cum: np.ndarray, strength: int,
                     pool: int = 0, level: int = 0, parents: Optional[np.ndarray] = None, aging: int = 0) -> bytes:
    """The coder in Python: the same bytes as the compiled one (arguments as :func:`encode`
    checks them; ``parents`` an array, one per symbol, with the parent level)."""
    model = _Model(cum, strength, pool, level, aging)
    par = np.ravel(parents).tolist() if level else None
    out = bytearray()
    low, rng = 0, _MASK

    def add_low(value: int) -> int:
        nl = low + value
        if nl > _MASK:  # the carry runs into the bytes written
            i = len(out)
            while i and out[i - 1] == 0xFF:
                i -= 1
                out[i] = 0
            out[i - 1] += 1
        return nl & _MASK

    for i, (x, c) in enumerate(zip(np.ravel(symbols).tolist(), np.ravel(contexts).tolist())):
        p = par[i] if par is not None else 0
        r = rng // model.total(c, p)
        low = add_low(r * model.start(c, p, x))
        rng = r * model.width(c, p, x)
        if rng <= 0:  # pragma: no cover - tables are checked: every width >= 1
            raise ValueError("a symbol of no width in context %d" % c)
        while rng < _BOTTOM:
            out.append(low >> 56)
            low = (low << 8) & _MASK
            rng <<= 8
        model.update(c, p, x)
    low = add_low(_BOTTOM - 1)
    out.append(low >> 56)
    while out and out[-1] == 0:
        out.pop()
    return bytes(out)


def decode_reference(data: bytes, h: int, w: int, offsets: np.ndarray, cluster: np.ndarray, num_clusters: int,
                     cum: np.ndarray, strength: int, pool: int = 0, level: int = 0,
                     parents: Optional[np.ndarray] = None, aging: int = 0) -> Tuple[np.ndarray, int]:
    """The decoder in Python: (grid, bytes read including the zeros past the end); arguments
    as :func:`decode` checks them."""
    model = _Model(cum, strength, pool, level, aging)
    par = np.ravel(parents).tolist() if level else None
    k = model.k
    n = h * w
    off = offsets.tolist() if len(offsets) else None
    cl = cluster.tolist()
    pos, d, rng = 0, 0, _MASK

    def next_byte() -> int:
        return data[pos] if pos < len(data) else 0

    for _ in range(8):
        d = d << 8 | next_byte()
        pos += 1
    out = [0] * n
    for i in range(n):
        c = 0
        if num_clusters:
            above = cl[out[i - w]] if i >= w else num_clusters
            left = cl[out[i - 1]] if i % w else num_clusters
            c = above * (num_clusters + 1) + left
        if off is not None:
            c += off[i]
        if not 0 <= c < cum.shape[0]:
            raise ValueError("index %d has context %d, outside the prior's %d tables" % (i, c, cum.shape[0]))
        p = par[i] if par is not None else 0
        total = model.total(c, p)
        r = rng // total
        v = d // r
        if v >= total:
            raise ValueError("the coded value at index %d is outside every symbol's interval" % i)
        lo, hi = 0, k - 1
        while lo < hi:
            mid = (lo + hi + 1) >> 1
            if model.start(c, p, mid) <= v:
                lo = mid
            else:
                hi = mid - 1
        d -= r * model.start(c, p, lo)
        rng = r * model.width(c, p, lo)
        while rng < _BOTTOM:
            d = d << 8 | next_byte()
            pos += 1
            rng <<= 8
        out[i] = lo
        model.update(c, p, lo)
    return np.asarray(out, dtype=np.int64).reshape(h, w), pos


def _seen_before(key: np.ndarray) -> np.ndarray:
    """For every position, how many earlier positions hold the same key."""
    n = key.size
    order = np.lexsort((np.arange(n), key))
    sorted_key = key[order]
    first = np.r_[0, np.flatnonzero(sorted_key[1:] != sorted_key[:-1]) + 1]
    group = np.cumsum(np.isin(np.arange(n), first)) - 1
    out = np.empty(n, dtype=np.int64)
    out[order] = np.arange(n) - first[group]
    return out


def _capped_counts(sub: np.ndarray, counted: np.ndarray) -> np.ndarray:
    """For every position, how many earlier positions that were ``counted`` hold the same
    ``sub`` (a key such as the context and the code). A counted position is one before its
    group's cap, so every position past the cap sees them all."""
    out = np.zeros(sub.size, dtype=np.int64)
    idx = np.flatnonzero(counted)
    out[idx] = _seen_before(sub[idx])
    late = np.flatnonzero(~counted)
    if late.size:
        uniq, inverse = np.unique(sub[idx], return_inverse=True)
        totals = np.bincount(inverse, minlength=uniq.size)
        at = np.searchsorted(uniq, sub[late])
        found = (at < uniq.size) & (uniq[np.minimum(at, uniq.size - 1)] == sub[late])
        out[late] = np.where(found, totals[np.minimum(at, uniq.size - 1)], 0)
    return out


def _level_counts(key: np.ndarray, x: np.ndarray, k: int, cap: int) -> Tuple[np.ndarray, np.ndarray]:
    """For every index, the counts its level holds before it, capped at ``cap`` as the coder
    caps them: (all codes under its key, its own code under its key)."""
    rank = _seen_before(key)  # the place of each index under its key
    return np.minimum(rank, cap), _capped_counts(key * k + x, rank < cap)


def _aged_counts(key: np.ndarray, x: np.ndarray, k: int, cap: int, half: int) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`_level_counts` with aging: the reference coder's counts (:class:`_Counts`,
    halved at ``half``) kept index by index."""
    levels: dict = {}
    n_all, n_own = np.zeros(x.size, dtype=np.int64), np.zeros(x.size, dtype=np.int64)
    for i, (kk, xx) in enumerate(zip(key.tolist(), x.tolist())):
        counts = levels.get(kk)
        if counts is None:
            counts = levels[kk] = _Counts(k, cap, half, tree=False)
        n_all[i], n_own[i] = counts.seen, counts.counts[xx]
        counts.add(xx)
    return n_all, n_own


def estimate_reference(symbols: np.ndarray, contexts: np.ndarray, cum: np.ndarray,
                       candidates: Sequence[Tuple[int, ...]],
                       parents: Optional[np.ndarray] = None, aging: int = 0) -> np.ndarray:
    """:func:`estimate` in numpy, the counts capped (or, with ``aging``, halved) as the coder
    keeps them (``parents``: an array, one per symbol, for candidates with the parent level)."""
    x, c = symbols.astype(np.int64), contexts.astype(np.int64)
    k = cum.shape[1] - 1
    f = (cum[c, x + 1].astype(np.float64) - cum[c, x])
    half, pool_half = _halving(aging)

    def counts(key: np.ndarray, cap: int, at: int) -> Tuple[np.ndarray, np.ndarray]:
        return _aged_counts(key, x, k, cap, at) if at else _level_counts(key, x, k, cap)

    n_c, n_cx = counts(c, COUNT_CAP, half)
    n_p = n_px = np.zeros(x.size)
    if parents is not None:
        if np.size(parents) != x.size:
            raise ValueError("%d parents for %d indices" % (np.size(parents), x.size))
        n_p, n_px = counts(np.ravel(parents).astype(np.int64), COUNT_CAP, half)
    n, n_x = counts(np.zeros_like(x), POOL_CAP, pool_half)
    candidates = _as_triples(candidates)
    if parents is None and any(m for _, _, m in candidates):
        raise ValueError("the parent level needs the parents of the indices")
    bits = []
    for e, g, m in candidates:
        t, s = 2.0 ** (g - 1 if g else m - 1 if m else 0), 2.0 ** (PRECISION - e)
        wx, total = f * t + n_cx * t * s, TOTAL * t + n_c * t * s
        if m:
            wx, total = wx + n_px * t * s / 2.0 ** (m - 1), total + n_p * t * s / 2.0 ** (m - 1)
        if g:
            wx, total = wx + n_x * t * s / 2.0 ** (g - 1), total + n * t * s / 2.0 ** (g - 1)
        bits.append(float(np.log2(total / wx).sum()))
    return np.asarray(bits)


__all__ = ["AGING", "CANDIDATES", "COUNT_CAP", "MAX_AGING", "MAX_POOL", "MAX_STRENGTH", "POOL_CAP", "Parents",
           "as_params", "compiled", "cumulative", "decode", "decode_reference", "encode", "encode_best",
           "encode_reference", "estimate", "estimate_reference"]
