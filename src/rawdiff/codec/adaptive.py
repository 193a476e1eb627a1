"""Adaptive range coding: a stage's context tables adapted to the frame as it is coded.

The static tables of :class:`rawdiff.codec.entropy.IndexPrior` are fitted on the training
set; a frame has its own statistics (a sky, a wall, a road take a few codes many times).
Here each context's table is the prior of a Dirichlet of strength ``N = 2**e`` updated with
the counts of the indices already coded in that context of the same grid::

    p(x) = (N p_table(x) + n(x)) / (N + n)      as integers: w(x) = f(x) + n(x) << (24 - e)

Both sides know the counts so far, so nothing is sent but ``e`` (one byte a stage, chosen
per frame by the encoder: :func:`encode_best`). Every stage starts from zero counts, so a
bitstream cut to fewer stages (:func:`rawdiff.codec.bitstream.truncate`) decodes as before.
A context stops counting at :data:`COUNT_CAP` indices.

The range coder is 64-bit (range in [2**56, 2**64), bytes shifted out, the carry
propagated into the bytes written): every interval is exact integer arithmetic, and the
coder loses less than 2**-15 of a symbol's interval to rounding. The compiled coder
(``rawdiff.codec._adaptive``, built by ``pip install -e .``) and the Python reference here
(:func:`encode_reference`, :func:`decode_reference`) write and read the same bytes; the
reference is what runs where the extension was not built (about 100 times slower).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

PRECISION = 24
TOTAL = 1 << PRECISION
COUNT_CAP = 65536
#: the strength exponents the encoder tries per stage (N = 16 to 4096): the best of them per frame and
#: stage codes within 0.05 % of the best of 0..14 and 24 on the validation frames
STRENGTHS = (4, 6, 8, 10, 12)
MAX_STRENGTH = PRECISION
_BOTTOM = 1 << 56
_MASK = (1 << 64) - 1

try:  # pragma: no branch - which one runs depends on the build
    import rawdiff.codec._adaptive as _compiled
except ImportError:  # pragma: no cover - a source tree without the built extension
    _compiled = None


def compiled() -> bool:
    """True when the compiled coder is built (else the Python reference codes)."""
    return _compiled is not None


def cumulative(freqs: np.ndarray) -> np.ndarray:
    """Integer tables (rows summing to 2**24) -> their cumulative sums, num_contexts x (K + 1) uint32."""
    f = np.asarray(freqs, dtype=np.int64)
    cum = np.zeros((f.shape[0], f.shape[1] + 1), dtype=np.int64)
    np.cumsum(f, axis=1, out=cum[:, 1:])
    if np.any(cum[:, -1] != TOTAL):
        raise ValueError("every table must sum to 2**%d" % PRECISION)
    return np.ascontiguousarray(cum, dtype=np.uint32)


def _check_strength(strength: int) -> int:
    e = int(strength)
    if not 0 <= e <= MAX_STRENGTH:
        raise ValueError("strength exponent %d is not in [0, %d]" % (e, MAX_STRENGTH))
    return e


# --------------------------------------------------------------------------- dispatch


def encode(symbols: np.ndarray, contexts: np.ndarray, cum: np.ndarray, strength: int) -> bytes:
    """Code ``symbols`` (in [0, K)) in raster order, each in its context -> bytes."""
    e = _check_strength(strength)
    s = np.ascontiguousarray(np.ravel(symbols), dtype=np.int32)
    c = np.ascontiguousarray(np.ravel(contexts), dtype=np.int32)
    if _compiled is not None:
        return _compiled.encode(s, c, cum, cum.shape[0], cum.shape[1] - 1, e)
    return encode_reference(s, c, cum, e)


def encode_best(symbols: np.ndarray, contexts: np.ndarray, cum: np.ndarray,
                strengths: Sequence[int] = STRENGTHS) -> Tuple[int, bytes]:
    """The shortest coding of ``symbols`` over ``strengths``: (exponent, bytes); ties go to the first."""
    best: Optional[Tuple[int, bytes]] = None
    for e in strengths:
        data = encode(symbols, contexts, cum, e)
        if best is None or len(data) < len(best[1]):
            best = (int(e), data)
    if best is None:
        raise ValueError("no strength to try")
    return best


def decode(data: bytes, shape: Tuple[int, int], offsets: Optional[np.ndarray], cluster: Optional[np.ndarray],
           num_clusters: int, cum: np.ndarray, strength: int) -> np.ndarray:
    """The h x w grid (int64) of :func:`encode`'s bytes. The context of (r, c) is
    ``offsets[r, c] + cluster[above] * (C + 1) + cluster[left]`` (C outside the grid), or
    ``offsets[r, c]`` alone without clusters (``num_clusters`` 0).

    Raises ``ValueError`` for data that cannot be a coding of such a grid: a value outside
    every interval, or bytes left over that the decoder never read."""
    e = _check_strength(strength)
    h, w = int(shape[0]), int(shape[1])
    off = (np.ascontiguousarray(offsets, dtype=np.int32).ravel() if offsets is not None
           else np.zeros(0, dtype=np.int32))
    cl = (np.ascontiguousarray(cluster, dtype=np.int32) if num_clusters else np.zeros(0, dtype=np.int32))
    raw = bytes(data)
    if raw and raw[-1] == 0:
        raise ValueError("the adaptive coding ends in a zero byte (an encoder drops those)")
    if _compiled is not None:
        out, read = _compiled.decode(raw, h, w, off, cl, int(num_clusters), cum, cum.shape[0], cum.shape[1] - 1, e)
        grid = np.frombuffer(out, dtype=np.int32).astype(np.int64).reshape(h, w)
    else:
        grid, read = decode_reference(raw, h, w, off, cl, int(num_clusters), cum, e)
    # the encoder's bytes are the ones shifted out plus one; the decoder reads 7 more
    if len(raw) > read - 7:
        raise ValueError("%d bytes of the adaptive coding were never read (the grid needs %d)"
                         % (len(raw) - (read - 7), max(read - 7, 0)))
    if raw and raw[-1] == 0:
        raise ValueError("the adaptive coding ends in a zero byte (an encoder drops those)")
    return grid


# --------------------------------------------------------------------------- the reference


class _Counts:
    """One context's counts and their Fenwick tree."""

    __slots__ = ("counts", "tree", "seen")

    def __init__(self, k: int):
        self.counts = [0] * k
        self.tree = [0] * (k + 1)
        self.seen = 0

    def prefix(self, x: int) -> int:
        s, tree = 0, self.tree
        while x > 0:
            s += tree[x]
            x -= x & -x
        return s

    def add(self, x: int) -> None:
        if self.seen >= COUNT_CAP:
            return
        self.counts[x] += 1
        tree, i, k = self.tree, x + 1, len(self.counts)
        while i <= k:
            tree[i] += 1
            i += i & -i
        self.seen += 1


def _interval(cum_row, counts: Optional[_Counts], x: int, shift: int) -> Tuple[int, int, int]:
    start, width, total = int(cum_row[x]), int(cum_row[x + 1]) - int(cum_row[x]), TOTAL
    if counts is not None and counts.seen:
        start += counts.prefix(x) << shift
        width += counts.counts[x] << shift
        total += counts.seen << shift
    return start, width, total


def encode_reference(symbols: np.ndarray, contexts: np.ndarray, cum: np.ndarray, strength: int) -> bytes:
    """The coder in Python: the same bytes as the compiled one."""
    shift = PRECISION - _check_strength(strength)
    k = cum.shape[1] - 1
    rows = cum.astype(np.int64)
    table = {}
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

    for x, c in zip(np.ravel(symbols).tolist(), np.ravel(contexts).tolist()):
        if not 0 <= x < k or not 0 <= c < cum.shape[0]:
            raise ValueError("a symbol or context is out of range")
        counts = table.get(c)
        start, width, total = _interval(rows[c], counts, x, shift)
        r = rng // total
        low = add_low(r * start)
        rng = r * width
        while rng < _BOTTOM:
            out.append(low >> 56)
            low = (low << 8) & _MASK
            rng <<= 8
        if counts is None:
            counts = table[c] = _Counts(k)
        counts.add(x)
    low = add_low(_BOTTOM - 1)
    out.append(low >> 56)
    while out and out[-1] == 0:
        out.pop()
    return bytes(out)


def decode_reference(data: bytes, h: int, w: int, offsets: np.ndarray, cluster: np.ndarray, num_clusters: int,
                     cum: np.ndarray, strength: int) -> Tuple[np.ndarray, int]:
    """The decoder in Python: (grid, bytes read including the zeros past the end)."""
    shift = PRECISION - _check_strength(strength)
    k = cum.shape[1] - 1
    rows = cum.astype(np.int64)
    n = h * w
    off = offsets.tolist() if len(offsets) else None
    cl = cluster.tolist()
    table = {}
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
        counts = table.get(c)
        row = rows[c]
        seen = counts.seen if counts is not None else 0
        total = TOTAL + (seen << shift)
        r = rng // total
        v = d // r
        if v >= total:
            raise ValueError("the coded value at index %d is outside every symbol's interval" % i)
        lo, hi = 0, k - 1
        while lo < hi:
            mid = (lo + hi + 1) >> 1
            start = int(row[mid]) + ((counts.prefix(mid) << shift) if seen else 0)
            if start <= v:
                lo = mid
            else:
                hi = mid - 1
        start, width, _ = _interval(row, counts, lo, shift)
        d -= r * start
        rng = r * width
        while rng < _BOTTOM:
            d = d << 8 | next_byte()
            pos += 1
            rng <<= 8
        out[i] = lo
        if counts is None:
            counts = table[c] = _Counts(k)
        counts.add(lo)
    return np.asarray(out, dtype=np.int64).reshape(h, w), pos


__all__ = ["COUNT_CAP", "MAX_STRENGTH", "STRENGTHS", "compiled", "cumulative", "decode", "decode_reference",
           "encode", "encode_best", "encode_reference"]
