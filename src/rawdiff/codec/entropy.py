"""Entropy coding of grids of VQ codebook indices with a range coder.

    index grid (h x w, values in [0, K)) --IndexPrior.encode--> bytes --IndexPrior.decode--> grid

The :class:`IndexPrior` owns its state (as CompressAI's entropy models do): integer
frequency tables fitted from the index grids of the training set
(:func:`rawdiff.codec.prior_fit.fit_prior`: fitting is training, this module only codes),
stored in the model directory as safetensors. Three kinds (the ``entropy_model`` field of
the bitstream):

- ``"uniform"``: every index equally likely (about log2 K bits; for untrained models);
- ``"unigram"``: a frequency table with additive (Laplace) smoothing;
- ``"context"``: the index at (r, c) is coded with a table chosen by the *clusters* of its
  already-decoded neighbours above (r-1, c) and to the left (r, c-1)::

      context = cluster_above * (C + 1) + cluster_left        (C means "outside the grid")

  The K codes are grouped into C clusters (default 16) so that a table of (C+1)^2 x K
  probabilities stays small (1.2 MB for K=1024); how the clusters and the tables are
  fitted is :mod:`rawdiff.codec.prior_fit`'s.

Determinism: the tables are stored as integers ``freqs`` with every row summing to exactly
2**24 (= the coder's precision) and every entry >= 1. ``constriction`` is given the
rows as float32 ``freqs - 1``; their sum is 2**24 - K, so its float-to-fixed-point scale
is exactly 1.0 and the coder's fixed-point probability of x is exactly ``freqs[ctx, x] /
2**24``: no rounding anywhere, encoder and decoder agree bit for bit on any IEEE machine,
and :meth:`IndexPrior.bits_per_index` is exactly the coder's ideal code length.

Coding order and speed: indices are coded in raster order with
``constriction.stream.queue.RangeEncoder`` / ``RangeDecoder``. Each context's model is a
pre-built ``Categorical(perfect=False)`` (cached, O(1) encode, O(log K) decode per symbol).
A per-symbol model family (``Categorical()`` with an n x K probability array) would avoid
the Python loop but costs O(K) per symbol inside constriction (about 15 ms for a 70x121
grid with K=1024 against about 1-3 ms for the cached-model loop), so the loop is faster.
The unigram and uniform kinds code a whole grid in one call.

The payload is the range coder's 32-bit words, little-endian (a multiple of 4 bytes).

Adapted to the frame (:meth:`IndexPrior.encode_adaptive` / :meth:`IndexPrior.decode_adaptive`,
bitstream format versions 7 to 9): the same contexts and tables, each table updated with
the frame's own counts as the grid is coded (those of its context, of its parent code, the
previous stage's at the same place, and of the whole grid; since version 9 halved as they
grow, so the latest rows weigh most), through :mod:`rawdiff.codec.adaptive`'s range coder;
the payload is that coder's bytes (any length), the stage's (strength, pool, parent level,
aging) travel in the stage table.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from rawdiff.codec import adaptive
from rawdiff.codec.bitstream import ENTROPY_MODELS

# the tables' precision and limits, shared with the adaptive coder
PRECISION = adaptive.PRECISION
TOTAL = adaptive.TOTAL
STATE_VERSION = 1
MAX_CODES = adaptive.MAX_CODES
# decode() refuses grids larger than this (a corrupted header must not start a huge loop)
MAX_SYMBOLS = adaptive.MAX_INDICES

GridLike = Union[np.ndarray, Sequence]


def _constriction():
    import constriction

    return constriction.stream


def _is_fatal(exc: BaseException) -> bool:
    return isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError))


# --------------------------------------------------------------------------- helpers


def _check_grid(grid: GridLike, codebook_size: int, what: str = "grid") -> np.ndarray:
    g = np.asarray(grid)
    if g.ndim != 2:
        raise ValueError("%s must be 2-D (code_height x code_width), got shape %s" % (what, g.shape))
    if g.size == 0:
        raise ValueError("%s is empty (shape %s)" % (what, g.shape))
    if g.dtype.kind not in "ui":
        raise ValueError("%s must hold integer indices, got dtype %s" % (what, g.dtype))
    lo, hi = int(g.min()), int(g.max())
    if lo < 0 or hi >= codebook_size:
        raise ValueError("%s has index values in [%d, %d], outside [0, %d)" % (what, lo, hi, codebook_size))
    return g.astype(np.int64, copy=False)


def _payload_bytes(data) -> bytes:
    try:
        return memoryview(data).tobytes()
    except TypeError:
        raise ValueError("entropy payload must be bytes, got %s" % type(data).__name__) from None


def _check_shape(shape) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError("shape must be (height, width), got %r" % (shape,)) from None
    if h < 1 or w < 1:
        raise ValueError("shape must be positive, got %r" % (shape,))
    if h * w > MAX_SYMBOLS:
        raise ValueError("a %dx%d grid is larger than %d indices" % (h, w, MAX_SYMBOLS))
    return h, w


def as_grid_list(grids: Union[GridLike, Iterable[GridLike]], codebook_size: int) -> List[np.ndarray]:
    """A grid, an N x h x w stack or an iterable of grids -> a checked list of int64 grids."""
    if isinstance(grids, np.ndarray):
        if grids.ndim == 2:
            grids = [grids]
        elif grids.ndim == 3:
            grids = list(grids)
        else:
            raise ValueError("grids must be a 2-D grid, a 3-D stack or a list of grids, got shape %s"
                             % (grids.shape,))
    out = [_check_grid(g, codebook_size, "grid %d" % i) for i, g in enumerate(grids)]
    if not out:
        raise ValueError("no grids given")
    return out


def quantize_probabilities(probs: np.ndarray) -> np.ndarray:
    """Rows of probabilities -> uint32 frequencies, each >= 1, each row summing to 2**24.

    Largest-remainder rounding with ties broken by index (deterministic).
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = p[None]
    n, k = p.shape
    if k < 2 or k > MAX_CODES:
        raise ValueError("need 2..%d symbols, got %d" % (MAX_CODES, k))
    if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p.sum(1) <= 0):
        raise ValueError("probabilities must be finite, non-negative and not all zero")
    p = p / p.sum(1, keepdims=True)
    free = TOTAL - k
    scaled = p * free
    base = np.floor(scaled)
    frac = scaled - base
    base = base.astype(np.int64)
    remainder = free - base.sum(1)
    order = np.argsort(-frac, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(k)[None].repeat(n, 0), axis=1)
    base += ranks < remainder[:, None]
    freqs = base + 1
    diff = TOTAL - freqs.sum(1)  # 0 except for float round-off in the row sums
    rows = np.arange(n)
    freqs[rows, freqs.argmax(1)] += diff
    if np.any(freqs < 1) or np.any(freqs.sum(1) != TOTAL):  # pragma: no cover - defensive
        raise AssertionError("frequency quantisation failed")
    return freqs.astype(np.uint32)


# --------------------------------------------------------------------------- the prior


class IndexPrior:
    """Probability model of index grids plus the range coder that uses it.

    Args:
        freqs: uint32 (num_contexts x K) frequency tables, rows summing to 2**24, entries >= 1.
        kind: ``"uniform"``, ``"unigram"`` (one row each) or ``"context"``.
        cluster: (context kind) int (K,) cluster of every code, values in [0, num_clusters).
        num_clusters: (context kind) C; then num_contexts = (C + 1)**2.
        smoothing: informational (alpha, additive) used by :meth:`fit`.
    """

    def __init__(self, freqs: np.ndarray, kind: str = "unigram", cluster: Optional[np.ndarray] = None,
                 num_clusters: int = 0, smoothing: Tuple[float, float] = (float("nan"), float("nan")),
                 parent_cluster: Optional[np.ndarray] = None, parent_ratio: int = 1):
        if kind not in ENTROPY_MODELS:
            raise ValueError("kind %r is not one of %s" % (kind, ", ".join(ENTROPY_MODELS)))
        f = np.asarray(freqs)
        if f.ndim != 2 or f.dtype.kind not in "ui":
            raise ValueError("freqs must be a 2-D integer array, got %s %s" % (f.dtype, f.shape))
        k = f.shape[1]
        if not 2 <= k <= MAX_CODES:
            raise ValueError("the number of codes must be in [2, %d], got %d" % (MAX_CODES, k))
        f = f.astype(np.int64)
        if f.size and (f.min() < 1 or np.any(f.sum(1) != TOTAL)):
            raise ValueError("every frequency must be >= 1 and every row must sum to 2**%d" % PRECISION)
        self.parent_cluster: Optional[np.ndarray] = None
        self.num_parent = 1
        self.parent_ratio = int(parent_ratio)
        if parent_cluster is not None:
            pc = np.asarray(parent_cluster)
            if kind != "context" or pc.ndim != 1 or pc.size < 2 or pc.dtype.kind not in "ui" or pc.min() < 0:
                raise ValueError("parent_cluster must be the cluster (>= 0) of every code of the parent stage, "
                                 "for a context prior")
            if self.parent_ratio not in (1, 2, 4):
                raise ValueError("parent_ratio must be 1, 2 or 4, got %r" % (parent_ratio,))
            self.parent_cluster = pc.astype(np.int32)
            self.num_parent = int(pc.max()) + 1
        if kind == "context":
            c = int(num_clusters)
            if c < 1 or f.shape[0] != self.num_parent * (c + 1) ** 2:
                raise ValueError("a context prior with %d clusters and %d parent clusters needs %d tables, got %d"
                                 % (c, self.num_parent, self.num_parent * (c + 1) ** 2, f.shape[0]))
            cl = np.asarray(cluster)
            if cl.shape != (k,) or cl.dtype.kind not in "ui" or cl.min() < 0 or cl.max() >= c:
                raise ValueError("cluster must be %d integers in [0, %d)" % (k, c))
            self.cluster = cl.astype(np.int32)
            self.num_clusters = c
        else:
            if f.shape[0] != 1:
                raise ValueError("a %s prior has one table, got %d" % (kind, f.shape[0]))
            self.cluster = None
            self.num_clusters = 0
        self.kind = kind
        self.freqs = f.astype(np.uint32)
        self.smoothing = (float(smoothing[0]), float(smoothing[1]))
        self._models = None  # constriction models, built on first use
        self._log2p = None
        self._cum = None  # cumulative tables for the adaptive coder, built on first use

    # ------------------------------------------------------------------ properties

    @property
    def codebook_size(self) -> int:
        return int(self.freqs.shape[1])

    @property
    def num_contexts(self) -> int:
        return int(self.freqs.shape[0])

    @property
    def kind_code(self) -> int:
        """The code of :attr:`kind` in the bitstream header."""
        return ENTROPY_MODELS.index(self.kind)

    def __repr__(self) -> str:
        extra = ", num_clusters=%d" % self.num_clusters if self.kind == "context" else ""
        if self.parent_cluster is not None:
            extra += ", num_parent=%d" % self.num_parent
        return "IndexPrior(kind=%r, codebook_size=%d%s)" % (self.kind, self.codebook_size, extra)

    # ------------------------------------------------------------------ construction

    @classmethod
    def uniform(cls, codebook_size: int) -> IndexPrior:
        return cls(quantize_probabilities(np.ones((1, int(codebook_size)))), kind="uniform")

    # ------------------------------------------------------------------ model

    def contexts(self, grid: GridLike, parent: Optional[np.ndarray] = None) -> np.ndarray:
        """The context (table row) of every index of ``grid``, as used by the coder
        (``parent``: the previous stage's grid, for a prior with a parent context)."""
        return self._contexts(_check_grid(grid, self.codebook_size), parent)

    def _contexts(self, g: np.ndarray, parent: Optional[np.ndarray]) -> np.ndarray:
        """:meth:`contexts` of a grid already checked."""
        if self.kind != "context":
            return np.zeros(g.shape, dtype=np.int64)
        return grid_contexts(g, self.cluster, self.num_clusters) + self._parent_offsets(g.shape, parent)

    def _parent_offsets(self, shape: Tuple[int, int], parent: Optional[np.ndarray]) -> np.ndarray:
        """The part of every context that the parent stage gives: its code's cluster at the
        same place, times (C + 1)^2 (zeros for a prior without a parent context)."""
        if self.parent_cluster is None:
            if parent is not None:
                raise ValueError("this prior has no parent context, but a parent grid was given")
            return np.zeros(shape, dtype=np.int64)
        if parent is None:
            raise ValueError("this prior codes a stage with the previous stage as context: the parent grid is needed")
        p = _check_grid(parent, self.parent_cluster.size, "parent grid")
        return parent_offsets(shape, p, self.parent_cluster, self.parent_ratio, self.num_clusters)

    def log2_probs(self) -> np.ndarray:
        """log2 of the coder's exact probabilities, num_contexts x K."""
        if self._log2p is None:
            self._log2p = np.log2(self.freqs.astype(np.float64)) - PRECISION
        return self._log2p

    def bits(self, grid: GridLike, parent: Optional[np.ndarray] = None) -> float:
        """Ideal code length of ``grid`` in bits (the coder adds at most about 64 bits)."""
        g = _check_grid(grid, self.codebook_size)
        return float(-self.log2_probs()[self._contexts(g, parent), g].sum())

    def bits_per_index(self, grids: Union[GridLike, Iterable[GridLike]]) -> float:
        """Empirical cross-entropy of ``grids`` under this prior, in bits per index."""
        gl = as_grid_list(grids, self.codebook_size)
        return sum(self.bits(g) for g in gl) / sum(g.size for g in gl)

    def coded_bits_per_index(self, grids: Union[GridLike, Iterable[GridLike]]) -> float:
        """Actual size of :meth:`encode`'s output, in bits per index."""
        gl = as_grid_list(grids, self.codebook_size)
        return 8.0 * sum(len(self.encode(g)) for g in gl) / sum(g.size for g in gl)

    def _get_models(self) -> list:
        if self._models is None:
            categorical = _constriction().model.Categorical
            rows = (self.freqs.astype(np.int64) - 1).astype(np.float32)
            self._models = [categorical(np.ascontiguousarray(row), perfect=False) for row in rows]
        return self._models

    # ------------------------------------------------------------------ coding

    def encode(self, grid: GridLike, parent: Optional[np.ndarray] = None) -> bytes:
        """Range-code ``grid`` (values in [0, K)) in raster order -> bytes (``parent``: the
        previous stage's grid, for a prior with a parent context)."""
        g = _check_grid(grid, self.codebook_size)
        if g.size > MAX_SYMBOLS:
            raise ValueError("grid of %d indices is larger than %d" % (g.size, MAX_SYMBOLS))
        models = self._get_models()
        encoder = _constriction().queue.RangeEncoder()
        symbols = g.ravel().astype(np.int32)
        if self.num_contexts == 1:
            encoder.encode(symbols, models[0])
        else:
            encode = encoder.encode
            for s, c in zip(symbols.tolist(), self._contexts(g, parent).ravel().tolist()):
                encode(s, models[c])
        return encoder.get_compressed().astype("<u4").tobytes()

    def max_symbols(self, num_bytes: int) -> int:
        """The most indices that ``num_bytes`` of payload can hold under this prior."""
        min_bits = float(-self.log2_probs().max())
        budget = 8.0 * num_bytes + 64.0
        if min_bits <= 0:  # pragma: no cover - impossible: every row has K >= 2 entries >= 1
            return MAX_SYMBOLS
        return int(min(MAX_SYMBOLS, math.floor(budget / min_bits) + 1))

    def decode(self, data: bytes, shape: Tuple[int, int], parent: Optional[np.ndarray] = None) -> np.ndarray:
        """Decode the index grid of ``shape`` (h, w) from :meth:`encode`'s bytes (int64 h x w).

        Raises ``ValueError`` for data that cannot be a valid encoding (length not a multiple
        of 4, too short for the shape, invalid for the model, unused words left over).
        Corruption is not always detectable here: the container's CRC is the real check.
        """
        h, w = _check_shape(shape)
        n = h * w
        raw = _payload_bytes(data)
        if len(raw) % 4:
            raise ValueError("entropy payload of %d bytes is not a whole number of 32-bit words" % len(raw))
        if n > self.max_symbols(len(raw)):
            raise ValueError("entropy payload of %d bytes is too short for a %dx%d grid under this prior"
                             % (len(raw), h, w))
        words = np.frombuffer(raw, dtype="<u4").astype(np.uint32)
        offsets = self._parent_offsets((h, w), parent) if self.kind == "context" else None
        models = self._get_models()
        try:
            decoder = _constriction().queue.RangeDecoder(words)
            if self.num_contexts == 1:
                out = np.asarray(decoder.decode(models[0], n), dtype=np.int64).reshape(h, w)
            else:
                out = self._decode_context(decoder, models, h, w, offsets)
            exhausted = decoder.maybe_exhausted()
        except BaseException as exc:
            if _is_fatal(exc):
                raise
            raise ValueError("entropy payload is corrupted (%s: %s)" % (type(exc).__name__, exc)) from None
        if not exhausted:
            raise ValueError("entropy payload is corrupted or does not match the prior "
                             "(data left over after %d indices)" % n)
        if out.shape != (h, w) or (n and (out.min() < 0 or out.max() >= self.codebook_size)):
            raise ValueError("entropy payload decoded to indices outside [0, %d)" % self.codebook_size)
        return out

    def _decode_context(self, decoder, models: list, h: int, w: int, offsets: np.ndarray) -> np.ndarray:
        c = self.num_clusters
        c1 = c + 1
        cl = self.cluster.tolist()
        decode = decoder.decode
        out = np.empty((h, w), dtype=np.int64)
        above = [c * c1] * w  # row offsets of the contexts: cluster above * (C + 1)
        for r in range(h):
            row = [0] * w
            left = c
            base = offsets[r].tolist()
            for col in range(w):
                s = decode(models[base[col] + above[col] + left])
                row[col] = s
                left = cl[s]
            out[r] = row
            above = [cl[s] * c1 for s in row]
        return out

    # ------------------------------------------------------------------ adaptive coding

    def _cumulative(self) -> np.ndarray:
        if self._cum is None:
            self._cum = adaptive.cumulative(self.freqs)
        return self._cum

    def _parents(self, shape: Tuple[int, int], parent: Optional[np.ndarray]) -> Optional[adaptive.Parents]:
        """The parent level's parents of a ``shape`` grid: the parent grid's code over each
        index (None for a prior without a parent context; the parent grid checked by
        :meth:`_parent_offsets`)."""
        if self.kind != "context" or self.parent_cluster is None or parent is None:
            return None
        return adaptive.Parents(over_grid(shape, np.asarray(parent), self.parent_ratio), self.parent_cluster.size)

    def encode_adaptive(self, grid: GridLike, parent: Optional[np.ndarray] = None,
                        candidates: Sequence[Tuple[int, int, int]] = adaptive.CANDIDATES,
                        aging: int = adaptive.AGING) -> Tuple[Tuple[int, int, int, int], bytes]:
        """Code ``grid`` with the tables adapted to it as it goes (:mod:`rawdiff.codec.adaptive`;
        the parent level with a parent grid), with ``aging`` and the best of ``candidates``:
        ((strength exponent, pool, parent level, aging), bytes)."""
        g = _check_grid(grid, self.codebook_size)  # the coder refuses more than MAX_SYMBOLS indices
        contexts = self._contexts(g, parent)
        return adaptive.encode_best(g, contexts, self._cumulative(), candidates, self._parents(g.shape, parent), aging)

    def decode_adaptive(self, data: bytes, shape: Tuple[int, int], params: Sequence[int],
                        parent: Optional[np.ndarray] = None) -> np.ndarray:
        """The grid of :meth:`encode_adaptive`'s bytes coded with ``params`` (strength exponent,
        pool, parent level, aging; a pair: neither of the last two, a triple: no aging) (int64
        h x w). Raises ``ValueError`` for data that cannot be such a coding."""
        h, w = _check_shape(shape)
        raw = _payload_bytes(data)
        strength, pool, level, aging = adaptive.as_params(params)
        context = self.kind == "context"
        offsets = self._parent_offsets((h, w), parent) if context else None
        parents = self._parents((h, w), parent) if level else None
        if level and parents is None:
            raise ValueError("the stage is coded with the parent level (%d), but its prior has no parent" % level)
        try:
            return adaptive.decode(raw, (h, w), offsets, self.cluster if context else None,
                                   self.num_clusters if context else 0, self._cumulative(), strength, pool, level,
                                   parents, aging)
        except ValueError as exc:
            raise ValueError("entropy payload is corrupted or does not match the prior (%s)" % exc) from None

    # ------------------------------------------------------------------ state

    def state_dict(self, prefix: str = "") -> Dict[str, np.ndarray]:
        """Plain numpy arrays (no pickle): ready for ``safetensors.numpy.save_file``."""
        state = {
            "format_version": np.array([STATE_VERSION], dtype=np.uint32),
            "precision": np.array([PRECISION], dtype=np.uint32),
            "kind": np.array([self.kind_code], dtype=np.uint8),
            "num_clusters": np.array([self.num_clusters], dtype=np.int32),
            "smoothing": np.array(self.smoothing, dtype=np.float64),
            "freqs": self.freqs.copy(),
        }
        if self.cluster is not None:
            state["cluster"] = self.cluster.copy()
        if self.parent_cluster is not None:
            state["parent_cluster"] = self.parent_cluster.copy()
            state["parent_ratio"] = np.array([self.parent_ratio], dtype=np.int32)
        return {prefix + k: v for k, v in state.items()}

    @classmethod
    def from_state_dict(cls, state: Dict[str, np.ndarray], prefix: str = "") -> IndexPrior:
        def get(name: str, required: bool = True):
            key = prefix + name
            if key not in state:
                if required:
                    raise ValueError("index prior state lacks %r" % key)
                return None
            return np.asarray(state[key])

        version = int(get("format_version").reshape(-1)[0])
        if version != STATE_VERSION:
            raise ValueError("index prior state version %d is not supported (this build reads %d)"
                             % (version, STATE_VERSION))
        precision = int(get("precision").reshape(-1)[0])
        if precision != PRECISION:
            raise ValueError("index prior precision %d is not supported (expected %d)" % (precision, PRECISION))
        code = int(get("kind").reshape(-1)[0])
        if not 0 <= code < len(ENTROPY_MODELS):
            raise ValueError("unknown index prior kind code %d" % code)
        smoothing = get("smoothing", required=False)
        ratio = get("parent_ratio", required=False)
        return cls(
            freqs=get("freqs"), kind=ENTROPY_MODELS[code], cluster=get("cluster", required=False),
            num_clusters=int(get("num_clusters").reshape(-1)[0]),
            smoothing=tuple(smoothing.reshape(-1)[:2]) if smoothing is not None else (math.nan,) * 2,
            parent_cluster=get("parent_cluster", required=False),
            parent_ratio=int(ratio.reshape(-1)[0]) if ratio is not None else 1,
        )

    def metadata(self) -> Dict[str, str]:
        """Small human-readable JSON description (stored as safetensors metadata)."""
        meta = {"format": "rawdiff.index_prior", "version": STATE_VERSION, "kind": self.kind,
                "codebook_size": self.codebook_size, "num_clusters": self.num_clusters,
                "precision": PRECISION, "alpha": self.smoothing[0], "additive": self.smoothing[1]}
        return {"rawdiff.index_prior": json.dumps(meta, sort_keys=True)}

    def save(self, path: str) -> None:
        from safetensors.numpy import save_file

        save_file(self.state_dict(), str(path), metadata=self.metadata())

    @classmethod
    def load(cls, path: str) -> IndexPrior:
        return cls.from_state_dict(_read_state(path))

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the state: part of a model's content-derived id."""
        h = hashlib.sha256()
        for key, value in sorted(self.state_dict().items()):
            arr = np.ascontiguousarray(value)
            h.update(("%s|%s|%s|" % (key, arr.dtype.str, arr.shape)).encode())
            h.update(arr.tobytes())
        return h.hexdigest()


def _read_state(path: str) -> Dict[str, np.ndarray]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError("cannot read index prior %s: %s" % (path, exc)) from None


class StagedPrior:
    """The priors of the stages of a residual quantizer, coarse to fine: stage 1 with its
    neighbours above and to the left as context, every later stage also with the previous
    stage's code at the same place (its cluster), so what the coarse stages say about a
    region tells the finer stage what to expect there. Each stage is a range-coder stream
    of its own, so the first stages of a bitstream decode without the rest."""

    def __init__(self, stages: Sequence[IndexPrior]):
        stages = list(stages)
        if not stages:
            raise ValueError("a staged prior needs at least one stage")
        for k, prior in enumerate(stages):
            if k and prior.parent_cluster is not None and prior.parent_cluster.size != stages[k - 1].codebook_size:
                raise ValueError("stage %d's parent context has %d codes, stage %d has %d"
                                 % (k + 1, prior.parent_cluster.size, k, stages[k - 1].codebook_size))
            if k == 0 and prior.parent_cluster is not None:
                raise ValueError("the first stage has no parent stage")
        self.stages = stages

    def __len__(self) -> int:
        return len(self.stages)

    @property
    def kind(self) -> str:
        return self.stages[0].kind

    def _with_parents(self, codes: Sequence[np.ndarray]):
        """(stage prior, grid, the grid of the stage before it or None) of each grid given (a
        prefix of the stages)."""
        if not 1 <= len(codes) <= len(self.stages):
            raise ValueError("%d code grids for a prior of %d stages" % (len(codes), len(self.stages)))
        return [(prior, grid, codes[k - 1] if prior.parent_cluster is not None else None)
                for k, (prior, grid) in enumerate(zip(self.stages, codes))]

    def encode(self, codes: Sequence[np.ndarray]) -> List[bytes]:
        """One byte string per stage given (a prefix of the stages)."""
        return [prior.encode(grid, parent) for prior, grid, parent in self._with_parents(codes)]

    def encode_adaptive(self, codes: Sequence[np.ndarray],
                        candidates: Sequence[Tuple[int, int, int]] = adaptive.CANDIDATES,
                        aging: int = adaptive.AGING) -> Tuple[List[bytes], List[Tuple[int, int, int, int]]]:
        """:meth:`encode` with the tables adapted to each stage's grid (each stage from zero
        counts, so a prefix of the stages decodes alone): (one byte string per stage, each
        stage's (strength exponent, pool, parent level, aging))."""
        coded = [prior.encode_adaptive(grid, parent, candidates, aging)
                 for prior, grid, parent in self._with_parents(codes)]
        return [data for _, data in coded], [params for params, _ in coded]

    def decode(self, chunks: Sequence[bytes], shapes: Sequence[Tuple[int, int]],
               adapt: Sequence[Sequence[int]] = ()) -> List[np.ndarray]:
        """The grids of the stages in ``chunks`` (one byte string and one shape per stage;
        ``adapt``: each stage's (strength exponent, pool, parent level, aging) when coded by
        :meth:`encode_adaptive`)."""
        if not 1 <= len(chunks) <= len(self.stages) or len(shapes) != len(chunks):
            raise ValueError("%d stage payloads (%d shapes) for a prior of %d stages"
                             % (len(chunks), len(shapes), len(self.stages)))
        if adapt and len(adapt) != len(chunks):
            raise ValueError("%d adaptive parameters for %d stage payloads" % (len(adapt), len(chunks)))
        codes: List[np.ndarray] = []
        for k, (data, shape) in enumerate(zip(chunks, shapes)):
            prior = self.stages[k]
            parent = codes[k - 1] if prior.parent_cluster is not None else None
            try:
                codes.append(prior.decode_adaptive(data, shape, adapt[k], parent) if adapt
                             else prior.decode(data, shape, parent))
            except ValueError as exc:
                raise ValueError("stage %d: %s" % (k + 1, exc)) from None
        return codes

    def bits(self, codes: Sequence[np.ndarray]) -> List[float]:
        """Ideal code length of each stage's grid, in bits."""
        return [prior.bits(grid, parent) for prior, grid, parent in self._with_parents(codes)]

    def state_dict(self) -> Dict[str, np.ndarray]:
        state = {"stages": np.array([len(self.stages)], dtype=np.int32)}
        for k, prior in enumerate(self.stages):
            state.update(prior.state_dict("stage%d." % (k + 1)))
        return state

    @classmethod
    def from_state_dict(cls, state: Dict[str, np.ndarray]) -> StagedPrior:
        if "stages" not in state:  # a single prior of one stage
            return cls([IndexPrior.from_state_dict(state)])
        n = int(np.asarray(state["stages"]).reshape(-1)[0])
        if not 1 <= n <= 16:
            raise ValueError("index prior state declares %d stages (1..16)" % n)
        return cls([IndexPrior.from_state_dict(state, "stage%d." % (k + 1)) for k in range(n)])

    def save(self, path: str) -> None:
        from safetensors.numpy import save_file

        meta = {"format": "rawdiff.staged_prior", "version": STATE_VERSION, "stages": len(self.stages),
                "kinds": [p.kind for p in self.stages], "codebook_sizes": [p.codebook_size for p in self.stages]}
        save_file(self.state_dict(), str(path), metadata={"rawdiff.index_prior": json.dumps(meta, sort_keys=True)})

    @classmethod
    def load(cls, path: str) -> StagedPrior:
        """A prior file of either layout: one stage (:meth:`IndexPrior.save`) or several."""
        return cls.from_state_dict(_read_state(path))

    def fingerprint(self) -> str:
        if len(self.stages) == 1:
            return self.stages[0].fingerprint()
        h = hashlib.sha256()
        for prior in self.stages:
            h.update(prior.fingerprint().encode())
        return h.hexdigest()


def parent_offsets(shape: Tuple[int, int], parent: np.ndarray, parent_cluster: np.ndarray, ratio: int,
                   c: int) -> np.ndarray:
    """``parent_cluster`` of the parent grid's code over each index of a ``shape`` grid
    (``ratio`` of its cells a parent cell's side), times (c + 1)^2: the parent part of the
    contexts."""
    if (-(-shape[0] // ratio), -(-shape[1] // ratio)) != parent.shape:
        raise ValueError("parent grid %dx%d does not cover a %dx%d grid at ratio %d"
                         % (parent.shape[0], parent.shape[1], shape[0], shape[1], ratio))
    return over_grid(shape, parent_cluster[parent].astype(np.int64), ratio) * (c + 1) ** 2


def over_grid(shape: Tuple[int, int], parent: np.ndarray, ratio: int) -> np.ndarray:
    """A parent grid's values over each index of a ``shape`` grid (``ratio`` of its cells a
    parent cell's side)."""
    if ratio > 1:
        parent = np.repeat(np.repeat(parent, ratio, axis=0), ratio, axis=1)[: shape[0], : shape[1]]
    return parent


def grid_contexts(g: np.ndarray, cluster: np.ndarray, c: int) -> np.ndarray:
    """The context of every index of ``g``: ``cluster_above * (c + 1) + cluster_left``."""
    cl = cluster[g].astype(np.int64)
    above = np.full(g.shape, c, dtype=np.int64)
    above[1:] = cl[:-1]
    left = np.full(g.shape, c, dtype=np.int64)
    left[:, 1:] = cl[:, :-1]
    return above * (c + 1) + left


__all__ = ["ENTROPY_MODELS", "MAX_CODES", "MAX_SYMBOLS", "PRECISION", "TOTAL", "IndexPrior", "StagedPrior",
           "as_grid_list",
           "grid_contexts", "over_grid", "parent_offsets", "quantize_probabilities"]
