"""Sent cell means: scalar refinement layers of the coarse content, beside the VQ stages.

The residual VQ stages code each cell's latent as a sum of codewords; what they miss most
at low and middle rates is the coarse content (a cell's mean colour and brightness), where
a scalar quantizer with an entropy coder is far cheaper than codewords. A *mean layer*
sends the plane means (R, G1, G2, B) of every f x f cell in a perceptual domain::

    g = T @ sqrt(clip(means, 0, 1))     rows of T: luma, R - G, B - G, G1 - G2

(``sqrt``: gamma 2, exact in IEEE arithmetic, unlike a power). Layer j, after the VQ stage
``after_j``, has exponent ``e_j``: luma is known to a step of 2**-e_j, the colour
differences to 2**-(e_j - 1), G1 - G2 is not sent. Levels are the floors ``L = floor(g /
step)``, so the grids nest: the level at a coarser exponent is the finer level shifted
right, and layer j sends only the ``e_j - e_(j-1)`` new bits of each value. A stream cut
after any stage keeps the layers before it whole: the progressive bitstream holds.

The decoder's estimate of a cell is the VQ latent's own mean, clipped into the interval the
layers give shrunk by a share of the step at each end (:func:`estimate_bounds`; the latent
is then moved to it:
``rawdiff.models.embedder.Embedder.with_means``). The entropy model of a layer's symbols
has a context per channel and per place of the VQ prediction relative to what is known
(:func:`prediction_buckets`); its frequency tables are fitted on the training split and
ship in ``means.safetensors``. The prediction is computed on both sides from tables of
each codeword's contribution to the cell means, summed in stage order in float64 with
``+``, ``*`` and ``sqrt`` only: the same bits on every IEEE machine, so the contexts agree.

numpy only (the vehicle codes the layers without torch).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from rawdiff.codec.bitstream import MAX_MEAN_EXPONENT, MAX_STAGES
from rawdiff.codec.entropy import MAX_SYMBOLS, TOTAL, _constriction, _is_fatal, quantize_probabilities

#: luma, R - G, B - G, G1 - G2 of the square roots of the plane means R, G1, G2, B
MEAN_TRANSFORM = np.array(((0.25, 0.25, 0.25, 0.25), (1.0, -0.5, -0.5, 0.0), (0.0, -0.5, -0.5, 1.0),
                           (0.0, 1.0, -1.0, 0.0)), dtype=np.float64)
#: channels sent (luma and the two colour differences); G1 - G2 stays the latent's
SENT = 3
#: places of the prediction within a known interval: below, 8 eighths, above
BUCKETS = 10
FIRST_BUCKETS = 8  # the first layer: the eighth of a step the prediction falls in
MAX_EXPONENT = MAX_MEAN_EXPONENT  # what the bitstream can say
#: the share of the step the decoder's estimate keeps from the ends of the interval, for the
#: first layer and the later ones (the rms error of the luma and colour estimate on 4
#: validation frames: 1/8 best with one layer, where the VQ prediction is still good, 1/4
#: with more; the prediction clipped to the interval and the midpoint were worse)
MARGINS = (0.125, 0.25)


def check_layers(layers, stages: int) -> List[Tuple[int, int]]:
    """``(after_stage, exponent)`` pairs, checked: stages in 1..``stages`` and not decreasing,
    exponents in 1..MAX_EXPONENT and increasing."""
    out = []
    for item in layers or ():
        try:
            after, exponent = (int(v) for v in item)
        except (TypeError, ValueError):
            raise ValueError("a mean layer is (after_stage, exponent), got %r" % (item,)) from None
        if not 1 <= after <= stages:
            raise ValueError("mean layer after stage %d: the model has stages 1..%d" % (after, stages))
        if not 1 <= exponent <= MAX_EXPONENT:
            raise ValueError("mean layer exponent %d outside 1..%d" % (exponent, MAX_EXPONENT))
        if out and (after < out[-1][0] or exponent <= out[-1][1]):
            raise ValueError("mean layers must follow the stages in order with increasing exponents, got %r"
                             % (list(layers),))
        out.append((after, exponent))
    return out


def layers_at(layers: Sequence[Tuple[int, int]], quality: int) -> int:
    """How many mean layers a stream of ``quality`` stages holds."""
    return sum(1 for after, _ in layers if after <= quality)


def steps(exponent: int) -> np.ndarray:
    """The steps of the sent channels at ``exponent``: luma 2**-e, colour 2**-(e - 1)."""
    return np.array([2.0 ** -exponent, 2.0 ** (1 - exponent), 2.0 ** (1 - exponent)])


def level_range(exponent: int) -> Tuple[np.ndarray, np.ndarray]:
    """Smallest and largest level of each sent channel: luma in [0, 1], colour in [-1, 1]."""
    top = 2 ** exponent - 1
    half = 2 ** (exponent - 1)
    return np.array([0, -half, -half]), np.array([top, half - 1, half - 1])


def gamma_channels(means: np.ndarray) -> np.ndarray:
    """Plane means (4 x h x w, float64) -> the 4 channels of the perceptual domain."""
    roots = np.sqrt(np.clip(means, 0.0, 1.0))
    out = np.empty_like(roots)
    for k in range(4):  # fixed order of exact products and sums (not a BLAS matmul)
        out[k] = (MEAN_TRANSFORM[k, 0] * roots[0] + MEAN_TRANSFORM[k, 1] * roots[1]) + \
                 (MEAN_TRANSFORM[k, 2] * roots[2] + MEAN_TRANSFORM[k, 3] * roots[3])
    return out


def levels(gamma: np.ndarray, exponent: int) -> np.ndarray:
    """Levels (int64, 3 x h x w) of the sent channels of ``gamma`` at ``exponent``."""
    lo, hi = level_range(exponent)
    scaled = gamma[:SENT] / steps(exponent)[:, None, None]  # exact: the steps are powers of 2
    return np.clip(np.floor(scaled), lo[:, None, None], hi[:, None, None]).astype(np.int64)


def intervals(level: np.ndarray, exponent: int) -> Tuple[np.ndarray, np.ndarray]:
    """The interval ``[lo, hi)`` of each sent value (3 x h x w floats) at ``exponent``."""
    s = steps(exponent)[:, None, None]
    lo = level.astype(np.float64) * s
    return lo, lo + s


def estimate_bounds(level: np.ndarray, exponent: int, layer: int) -> Tuple[np.ndarray, np.ndarray]:
    """Where the decoder puts a value it knows to ``level`` at ``exponent`` from ``layer``
    + 1 layers: the VQ prediction clipped into the interval shrunk by a share of the step
    at each end (:data:`MARGINS`), between the prediction (clip) and the midpoint."""
    lo, hi = intervals(level, exponent)
    margin = MARGINS[min(layer, len(MARGINS) - 1)] * steps(exponent)[:, None, None]
    return lo + margin, hi - margin


def cell_means(planes: np.ndarray, cell: int) -> np.ndarray:
    """The means (float64, 4 x h x w) of the ``cell`` x ``cell`` blocks of planes 4 x H x W
    (H, W multiples of ``cell``)."""
    c, h, w = planes.shape
    return planes.reshape(c, h // cell, cell, w // cell, cell).astype(np.float64).mean(axis=(2, 4))


def planes_gamma(planes: np.ndarray, multiple: int) -> np.ndarray:
    """The perceptual channels of the cell means of the encoder's planes (4 x H x W),
    edge-padded to multiples of ``multiple`` (a cell's side) as the encoder pads them: what
    the mean layers send."""
    padded = np.pad(planes, ((0, 0), (0, -planes.shape[1] % multiple), (0, -planes.shape[2] % multiple)),
                    mode="edge")
    return gamma_channels(cell_means(padded, multiple))


def prediction_buckets(prediction: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Where the VQ prediction lies relative to a known interval: 0 below, 1..8 its eighths,
    9 above (int64, the shape of ``prediction``)."""
    pos = (prediction - lo) / (hi - lo)
    inside = np.clip(np.floor(pos * 8.0), 0, 7).astype(np.int64) + 1
    return np.where(pos < 0.0, 0, np.where(pos >= 1.0, BUCKETS - 1, inside))


def upsample(x: np.ndarray, scale: int, axis: int) -> np.ndarray:
    """``x`` interpolated ``scale`` times along ``axis`` as torch's bilinear interpolation
    with ``align_corners=False`` (edges replicated); dyadic weights, fixed order."""
    n = x.shape[axis]
    src = np.maximum((np.arange(n * scale) + 0.5) / scale - 0.5, 0.0)
    first = np.floor(src).astype(np.int64)
    frac = src - first
    second = np.minimum(first + 1, n - 1)
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = frac.reshape(shape)
    return (1.0 - frac) * np.take(x, first, axis=axis) + frac * np.take(x, second, axis=axis)


class MeanLayers:
    """The mean layers of a model: which, the codewords' contributions to the cell means
    (the exact prediction), and the frequency tables of their symbols.

    ``tables[s]``: K_s x 4 float64, codeword k of stage s adds ``tables[s][k]`` to a cell's
    plane means (a coarse stage's code to each of its cells); ``offset``: the means of the
    zero latent. ``freqs[j]``: uint32, SENT * contexts x symbols (:func:`quantize_probabilities`)."""

    def __init__(self, layers: Sequence[Tuple[int, int]], stages: Sequence[Tuple[int, int]],
                 tables: Sequence[np.ndarray], offset: np.ndarray, freqs: Optional[Sequence[np.ndarray]] = None):
        self.stages = [(int(sc), int(k)) for sc, k in stages]
        self.layers = check_layers(layers, len(self.stages))
        if len(self.stages) + len(self.layers) > MAX_STAGES:
            raise ValueError("%d stages and %d mean layers: a bitstream holds at most %d entries"
                             % (len(self.stages), len(self.layers), MAX_STAGES))
        if len(tables) != len(self.stages):
            raise ValueError("mean tables for %d stages, the model has %d" % (len(tables), len(self.stages)))
        self.tables = [np.ascontiguousarray(t, dtype=np.float64) for t in tables]
        for t, (_, k) in zip(self.tables, self.stages):
            if t.shape != (k, 4) or not np.all(np.isfinite(t)):
                raise ValueError("a mean table must be %d x 4 finite values, got %s" % (k, t.shape))
        self.offset = np.asarray(offset, dtype=np.float64).reshape(4)
        if not np.all(np.isfinite(self.offset)):
            raise ValueError("the mean layers' offset must be finite, got %s" % self.offset)
        self.freqs: List[np.ndarray] = []
        self._models: Optional[list] = None
        if freqs is not None:
            self.set_freqs(freqs)

    # -- symbols ------------------------------------------------------------------------

    def symbols_of(self, j: int) -> int:
        """Alphabet size of layer j: the first, every level offset from the predicted one;
        later ones, the new bits."""
        e = self.layers[j][1]
        return 2 ** (e + 1) - 1 if j == 0 else 2 ** (e - self.layers[j - 1][1])

    def contexts_of(self, j: int) -> int:
        return SENT * (FIRST_BUCKETS if j == 0 else BUCKETS)

    def set_freqs(self, freqs: Sequence[np.ndarray]) -> None:
        if len(freqs) != len(self.layers):
            raise ValueError("frequency tables for %d mean layers, the model has %d" % (len(freqs), len(self.layers)))
        out = []
        for j, f in enumerate(freqs):
            f = np.asarray(f)
            if (f.shape != (self.contexts_of(j), self.symbols_of(j)) or np.any(f < 1)
                    or np.any(f.astype(np.int64).sum(1) != TOTAL)):
                raise ValueError("mean layer %d: a frequency table must be %d x %d, each entry >= 1, each row "
                                 "summing to 2**24 (quantize_probabilities), got %s"
                                 % (j + 1, self.contexts_of(j), self.symbols_of(j), f.shape))
            out.append(f.astype(np.uint32))
        self.freqs = out
        self._models = None

    # -- the prediction -----------------------------------------------------------------

    def prediction(self, codes: Sequence[np.ndarray], shape: Tuple[int, int]) -> np.ndarray:
        """The perceptual channels (4 x h x w) of the cell means of the latent the first
        ``len(codes)`` stages give, on the finest grid ``shape``: bit for bit the same on
        every machine."""
        return self._accumulate(codes, shape, [len(codes)])[0]

    def predictions(self, codes: Sequence[np.ndarray], shape: Tuple[int, int], count: int) -> List[np.ndarray]:
        """:meth:`prediction` for each of the first ``count`` layers (each from the stages
        before it), the stages' contributions summed once."""
        return self._accumulate(codes, shape, [after for after, _ in self.layers[:count]])

    def _accumulate(self, codes: Sequence[np.ndarray], shape: Tuple[int, int], afters: Sequence[int]
                    ) -> List[np.ndarray]:
        h, w = shape
        means = np.empty((4, h, w))
        means[:] = self.offset[:, None, None]
        out: List[np.ndarray] = []
        done = 0
        for after in afters:
            for (scale, _), table, grid in zip(self.stages[done:after], self.tables[done:after], codes[done:after]):
                add = table[np.asarray(grid, dtype=np.int64)].transpose(2, 0, 1)
                if scale > 1:  # as the decoder's latent: a coarse stage interpolated bilinearly
                    add = upsample(upsample(add, scale, 1), scale, 2)
                means += add[:, :h, :w]  # in stage order: the same sums on both sides
            done = max(done, after)
            out.append(gamma_channels(means))
        return out

    # -- coding -------------------------------------------------------------------------

    def _contexts(self, j: int, coarser: Optional[np.ndarray], prediction: np.ndarray
                  ) -> Tuple[np.ndarray, np.ndarray]:
        """(context, offset) of each value of layer j, 3 x h x w each: what the decoder knows
        before the layer; a value's symbol is its level less the offset. The first layer's
        offset is the predicted level (within the levels' range) less 2**e - 1; a later
        layer's, the coarser level shifted left by the new bits."""
        e = self.layers[j][1]
        if j == 0:
            scaled = prediction[:SENT] / steps(e)[:, None, None]
            floor = np.floor(scaled)
            bucket = np.clip(np.floor((scaled - floor) * FIRST_BUCKETS), 0, FIRST_BUCKETS - 1).astype(np.int64)
            lo, hi = level_range(e)
            offset = np.clip(floor, lo[:, None, None], hi[:, None, None]).astype(np.int64) - (2 ** e - 1)
            per = FIRST_BUCKETS
        else:
            prev = self.layers[j - 1][1]
            lo, hi = intervals(coarser, prev)
            bucket = prediction_buckets(prediction[:SENT], lo, hi)
            offset = coarser << (e - prev)
            per = BUCKETS
        return bucket + per * np.arange(SENT)[:, None, None], offset

    def _symbols(self, j: int, level: np.ndarray, coarser: Optional[np.ndarray], prediction: np.ndarray
                 ) -> Tuple[np.ndarray, np.ndarray]:
        """(symbol, context) of each value of layer j, 3 x h x w each."""
        context, offset = self._contexts(j, coarser, prediction)
        return level - offset, context

    def _get_models(self) -> list:
        if not self.freqs:
            raise ValueError("the mean layers have no frequency tables (fit them: rawdiff.codec.cell_means.fit)")
        if self._models is None:
            categorical = _constriction().model.Categorical
            self._models = [[categorical(np.ascontiguousarray((row.astype(np.int64) - 1).astype(np.float32)),
                                         perfect=False) for row in f] for f in self.freqs]
        return self._models

    def encode(self, gamma: np.ndarray, codes: Sequence[np.ndarray], quality: int) -> List[bytes]:
        """The coded layers of a stream of ``quality`` stages: ``gamma`` is the vehicle's
        (:func:`gamma_channels` of :func:`cell_means`), ``codes`` the stages' grids."""
        shape = gamma.shape[1:]
        if SENT * shape[0] * shape[1] > MAX_SYMBOLS:  # what decode refuses
            raise ValueError("a %dx%d grid of cell means is larger than %d values" % (shape + (MAX_SYMBOLS,)))
        out = []
        coarser = None
        count = layers_at(self.layers, quality)
        for j, prediction in enumerate(self.predictions(codes, shape, count)):
            level = levels(gamma, self.layers[j][1])
            symbol, context = self._symbols(j, level, coarser, prediction)
            if symbol.min() < 0 or symbol.max() >= self.symbols_of(j):  # pragma: no cover - by construction
                raise AssertionError("mean layer %d: a symbol outside its alphabet" % (j + 1))
            out.append(self._code(j, symbol, context))
            coarser = level
        return out

    def _code(self, j: int, symbol: np.ndarray, context: np.ndarray) -> bytes:
        models = self._get_models()[j]
        encoder = _constriction().queue.RangeEncoder()
        flat_s, flat_c = symbol.ravel(), context.ravel()
        for c in range(self.contexts_of(j)):  # every context's symbols in one call, in context order
            picked = flat_s[flat_c == c]
            if picked.size:
                encoder.encode(picked.astype(np.int32), models[c])
        return encoder.get_compressed().astype("<u4").tobytes()

    def decode(self, chunks: Sequence[bytes], codes: Sequence[np.ndarray], shape: Tuple[int, int]
               ) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """The bounds ``(lo, hi)`` (3 x h x w) of the decoder's estimate of the sent values
        (:func:`estimate_bounds`) the coded layers give (None for none);
        ``ValueError`` naming the layer for data that cannot be its coding."""
        if not chunks:
            return None
        level, exponent = self.decode_levels(chunks, codes, shape)
        return estimate_bounds(level, exponent, len(chunks) - 1)

    def decode_levels(self, chunks: Sequence[bytes], codes: Sequence[np.ndarray], shape: Tuple[int, int]
                      ) -> Tuple[np.ndarray, int]:
        """The levels (3 x h x w) of the finest of the coded layers, and its exponent."""
        if not chunks:
            raise ValueError("no mean layer coded")
        h, w = (int(v) for v in shape)
        if 3 * h * w > MAX_SYMBOLS:
            raise ValueError("a %dx%d grid of cell means is larger than %d values" % (h, w, MAX_SYMBOLS))
        if len(chunks) > len(self.layers):
            raise ValueError("%d mean layers coded, the model has %d" % (len(chunks), len(self.layers)))
        self._get_models()
        for j, data in enumerate(chunks):  # the cheap checks of every layer before any prediction
            self._check_size(j, len(data), SENT * h * w)
        for j in range(len(chunks)):
            after = self.layers[j][0]
            if len(codes) < after:
                raise ValueError("mean layer %d follows stage %d: only %d stages coded" % (j + 1, after, len(codes)))
        level = None
        for j, (data, prediction) in enumerate(zip(chunks, self.predictions(codes, (h, w), len(chunks)))):
            level = self._decode_layer(j, data, level, prediction)
        return level, self.layers[len(chunks) - 1][1]

    def _check_size(self, j: int, size: int, values: int) -> None:
        if size % 4:
            raise ValueError("mean layer %d: %d bytes is not a whole number of 32-bit words" % (j + 1, size))
        min_bits = float(min(-np.log2(f.max() / float(TOTAL)) for f in self.freqs[j]))
        if values * min_bits > 8.0 * size + 64.0:
            raise ValueError("mean layer %d: %d bytes are too few for %d values" % (j + 1, size, values))

    def _decode_layer(self, j: int, data: bytes, coarser: Optional[np.ndarray], prediction: np.ndarray) -> np.ndarray:
        raw = bytes(data)
        e = self.layers[j][1]
        context, offset = self._contexts(j, coarser, prediction)
        flat_c = context.ravel()
        counts = np.bincount(flat_c, minlength=self.contexts_of(j))
        symbol = np.empty(flat_c.size, np.int64)
        models = self._get_models()[j]
        try:
            decoder = _constriction().queue.RangeDecoder(np.frombuffer(raw, dtype="<u4").astype(np.uint32))
            for c in range(self.contexts_of(j)):
                if counts[c]:
                    symbol[flat_c == c] = np.asarray(decoder.decode(models[c], int(counts[c])), dtype=np.int64)
            exhausted = decoder.maybe_exhausted()
        except BaseException as exc:
            if _is_fatal(exc):
                raise
            raise ValueError("mean layer %d is corrupted (%s: %s)" % (j + 1, type(exc).__name__, exc)) from None
        if not exhausted:
            raise ValueError("mean layer %d is corrupted (data left over)" % (j + 1))
        level = symbol.reshape(offset.shape) + offset
        lo, hi = level_range(e)
        if np.any(level < lo[:, None, None]) or np.any(level > hi[:, None, None]):
            raise ValueError("mean layer %d decoded to levels outside their range" % (j + 1))
        return level

    def bits(self, gamma: np.ndarray, codes: Sequence[np.ndarray]) -> List[float]:
        """Ideal bits of each layer of ``gamma`` under the tables (for reports)."""
        shape = gamma.shape[1:]
        out, coarser = [], None
        for j, prediction in enumerate(self.predictions(codes, shape, len(self.layers))):
            level = levels(gamma, self.layers[j][1])
            symbol, context = self._symbols(j, level, coarser, prediction)
            p = self.freqs[j][context.ravel(), symbol.ravel()].astype(np.float64) / TOTAL  # rows sum to TOTAL
            out.append(float(-np.log2(p).sum()))
            coarser = level
        return out

    # -- state --------------------------------------------------------------------------

    def state_dict(self) -> Dict[str, np.ndarray]:
        state = {"layers": np.asarray(self.layers, dtype=np.int64).reshape(-1, 2),
                 "stages": np.asarray(self.stages, dtype=np.int64).reshape(-1, 2),
                 "offset": self.offset}
        for s, t in enumerate(self.tables):
            state["table.%d" % s] = t
        for j, f in enumerate(self.freqs):
            state["freqs.%d" % j] = f
        return state

    @classmethod
    def from_state_dict(cls, state: Dict[str, np.ndarray]) -> MeanLayers:
        try:
            stages = [tuple(int(v) for v in row) for row in state["stages"]]
            layers = [tuple(int(v) for v in row) for row in state["layers"]]
            tables = [state["table.%d" % s] for s in range(len(stages))]
            freqs = [state["freqs.%d" % j] for j in range(len(layers))]
            offset = state["offset"]
        except KeyError as exc:
            raise ValueError("mean layers file lacks %s" % exc) from None
        return cls(layers, stages, tables, offset, freqs)

    def save(self, path: str) -> None:
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in self.state_dict().items()}, path)

    @classmethod
    def load(cls, path: str) -> MeanLayers:
        from safetensors.numpy import load_file

        return cls.from_state_dict(load_file(path))


def fit(layers: MeanLayers, samples: Sequence[Tuple[np.ndarray, Sequence[np.ndarray]]], smoothing: float = 0.5
        ) -> List[float]:
    """Fit the frequency tables on ``(gamma, codes)`` of training frames (counts plus
    ``smoothing``); returns each layer's bits per value on them."""
    counts = [np.full((layers.contexts_of(j), layers.symbols_of(j)), smoothing) for j in range(len(layers.layers))]
    for gamma, codes in samples:
        coarser = None
        for j, prediction in enumerate(layers.predictions(codes, gamma.shape[1:], len(layers.layers))):
            level = levels(gamma, layers.layers[j][1])
            symbol, context = layers._symbols(j, level, coarser, prediction)
            np.add.at(counts[j], (context.ravel(), symbol.ravel()), 1.0)
            coarser = level
    layers.set_freqs([quantize_probabilities(c) for c in counts])
    values = sum(SENT * g.shape[1] * g.shape[2] for g, _ in samples)
    return [b / max(values, 1) for b in np.sum([layers.bits(g, c) for g, c in samples], axis=0)] if samples else []


def mean_tables(functional: np.ndarray, analysis_bias: np.ndarray, codebooks: Sequence[np.ndarray]
                ) -> Tuple[List[np.ndarray], np.ndarray]:
    """Each codeword's contribution to a cell's plane means and the zero latent's means, from
    ``functional`` (4 x D: the plane means as a linear function of the latent less the
    analysis bias, ``rawdiff.models.embedder.cell_mean_functional``): computed once when a
    model is made, shipped, never recomputed."""
    a = np.asarray(functional, dtype=np.float64)
    tables = [np.asarray(cb, dtype=np.float64) @ a.T for cb in codebooks]
    offset = -(a @ np.asarray(analysis_bias, dtype=np.float64))
    return tables, offset
