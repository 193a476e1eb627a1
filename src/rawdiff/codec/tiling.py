"""Tiled decoding: a network run over the code grid in tiles, so memory grows with the tile.

    code grid (h x w) --plan_tiles(tile, halo, align)--> tiles: a core and, around it, a halo
    whole-frame GroupNorm statistics: one pass over the tiles collects them (FrameNorms)
    each tile: network(inputs[core + halo]) --crop the halo--> output of the core --> sink

Why a halo: a convolution sees a few codes around a position. With a halo at least the
network's receptive radius (:func:`receptive_radius`, counted in codes) the core of a
tile is computed from the same inputs as in the whole frame, and tiles meet without seams.

Why a statistics pass: GroupNorm (taming's decoder, the diffusion UNet) normalises with
the mean and variance of the *whole* feature map, so a tile normalised on its own would
be brighter or darker than its neighbour: seams. :class:`FrameNorms` replaces every
GroupNorm of the network while tiles run. A first pass over the tiles collects each
layer's statistics over the tile cores (means and variances combined pairwise, Chan,
Golub & LeVeque 1979, in float64); the decoding pass normalises every tile with them. All
tiles then run one and the same network, so they meet without seams; the output is the
whole-frame network's with these statistics. They are close to the whole frame's, not
equal: the first layer's are exact, a later layer's come from a pass whose earlier layers
were normalised per tile. On the shipped decoder, one pass (the default, about twice the
work) gives 38 to 39 dB PSNR against the whole-frame decode, 0.04 to 0.1 dB from the
reference ISP's image (``benchmarks/decoder_memory.py``). ``stat_passes="exact"`` runs one
pass per GroupNorm, each stopping at its norm with the ones before it exact: the whole
frame's statistics, so tiled decoding equals decoding the frame whole up to float rounding
(``test/test_tiling.py`` checks it), at about 7 times the work.

Tiles are aligned (``align``) where a network has a grid of its own: the UNet halves the
map twice and attends within fixed windows, so its tiles start on multiples of the window
at the lowest level; each tile then sees the windows and strides of the whole frame.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from rawdiff.nn.blocks import Downsample, Upsample


@dataclass(frozen=True)
class Tile:
    """One tile of a code grid: the ``core`` it produces and the ``ext`` (core + halo,
    clipped to the grid) the network sees; (start, stop) pairs in codes, rows then columns."""

    core: Tuple[Tuple[int, int], Tuple[int, int]]
    ext: Tuple[Tuple[int, int], Tuple[int, int]]

    def ext_slices(self) -> Tuple[slice, slice]:
        return slice(*self.ext[0]), slice(*self.ext[1])

    def core_in_ext(self) -> Tuple[int, int, int, int]:
        """(top, bottom, left, right) of the core inside the ext, in codes."""
        (r0, r1), (c0, c1) = self.core
        (e0, _), (f0, _) = self.ext
        return r0 - e0, r1 - e0, c0 - f0, c1 - f0

    @property
    def ext_shape(self) -> Tuple[int, int]:
        return self.ext[0][1] - self.ext[0][0], self.ext[1][1] - self.ext[1][0]


def _round_up(value: int, multiple: int) -> int:
    return -(-int(value) // multiple) * multiple


def plan_tiles(shape: Tuple[int, int], tile: int, halo: int, align: int = 1) -> List[Tile]:
    """Tiles covering a ``shape`` code grid: cores of at most ``tile`` x ``tile`` codes, as
    even as ``align`` allows (a 272-code side in tiles of 256 is two cores of 136, not 256
    and 16), with ``halo`` codes around them, both multiples of ``align``, in raster order.
    A grid that fits one tile is one tile without a halo."""
    h, w = (int(s) for s in shape)
    if h < 1 or w < 1:
        raise ValueError("code grid must be at least 1x1, got %dx%d" % (h, w))
    if int(tile) < 1 or int(halo) < 0 or int(align) < 1:
        raise ValueError("tile must be >= 1, halo >= 0 and align >= 1, got %r, %r, %r" % (tile, halo, align))
    tile, halo = _round_up(tile, align), _round_up(halo, align)
    if h <= tile and w <= tile:
        return [Tile(((0, h), (0, w)), ((0, h), (0, w)))]

    def spans(n: int):
        count = -(-n // tile)
        size = _round_up(-(-n // count), align)  # <= tile, since tile is a multiple of align
        return [((a, min(a + size, n)), (max(0, a - halo), min(n, a + size + halo))) for a in range(0, n, size)]

    return [Tile((rc, cc), (re, ce)) for rc, re in spans(h) for cc, ce in spans(w)]


def receptive_radius(module: nn.Module) -> float:
    """An upper bound of how far (in input positions) an output of ``module`` looks: the
    sum over its convolutions, in module order, of their reach at the resolution where they
    run (:class:`Upsample` doubles it, a strided convolution or :class:`Downsample` halves
    it). Parallel branches are summed too, so the bound is safe, not tight; attention is
    not counted (windowed attention is handled by aligning tiles to its windows)."""
    radius = 0.0
    scale = 1.0
    skip: set = set()
    for m in module.modules():
        if id(m) in skip:
            continue
        if isinstance(m, Upsample):
            scale *= 2.0
        elif isinstance(m, Downsample):
            k = m.conv.kernel_size[0]
            radius += (k - 1) / scale  # padded on one side: the whole kernel on one side
            scale /= 2.0
            skip.add(id(m.conv))
        elif isinstance(m, nn.Conv2d):
            k, d, s = m.kernel_size[0], m.dilation[0], m.stride[0]
            radius += d * (k - 1) / 2.0 / scale if s == 1 else d * (k - 1) / scale
            scale /= s
    return radius


def halo_for(module: nn.Module) -> int:
    """The halo in codes that covers ``module``'s receptive radius."""
    return int(math.ceil(receptive_radius(module) - 1e-9))


class _StopForward(Exception):
    """Raised inside a network by the GroupNorm an exact statistics pass stops at."""


class FrameNorms:
    """The GroupNorms of a network with whole-frame statistics while it runs in tiles.

    ``with norms.active():`` swaps the ``forward`` of every GroupNorm of ``module`` (but
    those in ``exclude``: e.g. the norm of windowed attention, which normalises each
    window on its own, a local operation) for one that, per tile (:meth:`tile`), collects
    the statistics of the tile's core for the norms of the current pass and normalises
    with the frame's statistics of the finished passes, or with the tile's own where
    there are none yet. GroupNorms are numbered in module order, which is the order the
    networks of rawdiff call them in (an exact pass checks it).
    """

    def __init__(self, module: nn.Module, exclude: Iterable[nn.Module] = ()):
        excluded = {id(m) for m in exclude}
        self.norms: List[nn.GroupNorm] = [m for m in module.modules()
                                          if isinstance(m, nn.GroupNorm) and id(m) not in excluded]
        self.stats: List[Optional[Tuple[torch.Tensor, torch.Tensor]]] = [None] * len(self.norms)
        self._acc: Dict[int, Tuple[float, torch.Tensor, torch.Tensor]] = {}
        self._collect: frozenset = frozenset()
        self._stop_at: Optional[int] = None
        self._core: Optional[Tuple[int, int, int, int, int, int]] = None
        self._tile_collects = False
        #: True once statistics passes have run; :func:`run_tiled` then uses them as they are
        self.collected = False

    def __len__(self) -> int:
        return len(self.norms)

    def reset(self) -> None:
        """Forget the statistics (a new frame, or a new step of the sampler)."""
        self.stats = [None] * len(self.norms)
        self.collected = False

    @contextmanager
    def active(self) -> Iterator[FrameNorms]:
        for i, norm in enumerate(self.norms):
            norm.forward = self._forward_of(i, norm)  # instance attribute: nn.Module.__call__ uses it
        try:
            yield self
        finally:
            for norm in self.norms:
                if "forward" in vars(norm):
                    del norm.forward

    def start_pass(self, collect: Iterable[int], stop_at: Optional[int] = None) -> None:
        """A statistics pass collecting the norms ``collect``; with ``stop_at`` the network
        stops at that norm (what comes after it is not needed in this pass)."""
        self._acc = {}
        self._collect = frozenset(collect)
        self._stop_at = stop_at

    def finish_pass(self) -> None:
        """The frame's statistics of the collected norms, from the tiles of the pass."""
        for i in self._collect:
            if i in self._acc:
                n, mean, m2 = self._acc[i]
                self.stats[i] = (mean, m2 / n)
        self._acc, self._collect, self._stop_at = {}, frozenset(), None

    @contextmanager
    def tile(self, tile: Tile, collect: bool) -> Iterator[None]:
        top, bottom, left, right = tile.core_in_ext()
        h, w = tile.ext_shape
        self._core, self._tile_collects = (top, bottom, left, right, h, w), collect
        try:
            yield
        finally:
            self._core, self._tile_collects = None, False

    def _core_rows_cols(self, hx: int, wx: int) -> Tuple[int, int, int, int]:
        """The core of the current tile in a feature map of hx x wx (a power-of-two scale of
        the tile's input; a map padded at the frame's edge keeps its padding, as the whole
        frame's does)."""
        assert self._core is not None
        top, bottom, left, right, h, w = self._core

        def span(lo: int, hi: int, n_in: int, n_x: int) -> Tuple[int, int]:
            scale = 2.0 ** round(math.log2(n_x / n_in))
            a = 0 if lo == 0 else int(round(lo * scale))
            b = n_x if hi == n_in else int(round(hi * scale))
            return a, max(b, a + 1)

        r0, r1 = span(top, bottom, h, hx)
        c0, c1 = span(left, right, w, wx)
        return r0, r1, c0, c1

    def _forward_of(self, index: int, norm: nn.GroupNorm) -> Callable[[torch.Tensor], torch.Tensor]:
        def forward(x: torch.Tensor) -> torch.Tensor:
            stats = self.stats[index]
            if self._core is not None and self._tile_collects:
                if self._stop_at is not None and stats is None and index != self._stop_at:
                    raise RuntimeError("GroupNorm %d ran before GroupNorm %d: the network does not call its "
                                       "norms in module order, so exact tiled statistics cannot be collected"
                                       % (index, self._stop_at))
                if index in self._collect:
                    self._accumulate(index, norm, x)
                if index == self._stop_at:
                    raise _StopForward()
            if self._core is None or stats is None:  # outside a tile, or before any statistics
                return type(norm).forward(norm, x)  # the norm's own (the instance's is this one)
            return _normalise(x, norm, stats[0], stats[1])

        return forward

    def _accumulate(self, index: int, norm: nn.GroupNorm, x: torch.Tensor) -> None:
        b, c, hx, wx = x.shape
        r0, r1, c0, c1 = self._core_rows_cols(hx, wx)
        core = x[:, :, r0:r1, c0:c1].reshape(b, norm.num_groups, -1)
        var, mean = torch.var_mean(core.float(), dim=2, unbiased=False)
        n_b = float(core.shape[2])
        mean, m2 = mean.double(), var.double() * n_b
        if index not in self._acc:
            self._acc[index] = (n_b, mean, m2)
            return
        # Chan, Golub & LeVeque: combining the mean and sum of squared deviations of two sets
        n_a, mean_a, m2_a = self._acc[index]
        n = n_a + n_b
        delta = mean - mean_a
        self._acc[index] = (n, mean_a + delta * (n_b / n), m2_a + m2 + delta * delta * (n_a * n_b / n))


def _normalise(x: torch.Tensor, norm: nn.GroupNorm, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """GroupNorm of ``x`` with given per-(sample, group) statistics, in float32 at least (as
    autocast runs ``F.group_norm`` for a whole frame), returned in ``x``'s dtype."""
    b, c, h, w = x.shape
    g = norm.num_groups
    dtype = torch.promote_types(x.dtype, torch.float32)
    mean32 = mean.to(dtype).reshape(b, g, 1, 1)
    rstd = torch.rsqrt(var + norm.eps).to(dtype).reshape(b, g, 1, 1)
    y = ((x.to(dtype).reshape(b, g, c // g, h * w) - mean32) * rstd).reshape(b, c, h, w)
    if norm.affine:
        y = y * norm.weight[None, :, None, None].to(dtype) + norm.bias[None, :, None, None].to(dtype)
    return y.to(x.dtype)


#: ``stat_passes`` that gives the whole frame's statistics exactly (see the module docstring)
EXACT = "exact"


def run_tiled(fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor], tiles: Sequence[Tile],
              norms: Optional[FrameNorms], sink: Callable[[Tile, torch.Tensor], None],
              stat_passes: Union[int, str] = 1) -> None:
    """``fn`` over ``tiles`` of ``inputs`` (B x C x h x w tensors on the code grid); the
    output of each tile's core goes to ``sink(tile, output)`` in raster order.

    With more than one tile and GroupNorms in ``norms`` that have not collected statistics
    yet (``norms.collected``; :meth:`FrameNorms.reset` forgets them), statistics passes
    come first:
    ``stat_passes`` passes that collect every norm (1, the default: about twice the work of
    one pass), or ``"exact"``: one pass per norm, each stopping at its norm with the ones
    before it exact, which gives the whole frame's output (about 7 times the work for the
    embedder's decoder)."""
    if len(tiles) == 1 and tiles[0].core == tiles[0].ext:
        sink(tiles[0], fn(*inputs))
        return
    if stat_passes != EXACT and (isinstance(stat_passes, str) or int(stat_passes) < 0):
        raise ValueError("stat_passes must be >= 0 or %r, got %r" % (EXACT, stat_passes))

    def sliced(tile: Tile) -> List[torch.Tensor]:
        rows, cols = tile.ext_slices()
        return [x[..., rows, cols] for x in inputs]

    def crop(tile: Tile, y: torch.Tensor) -> torch.Tensor:
        h, w = tile.ext_shape
        sy, sx = y.shape[-2] // h, y.shape[-1] // w
        if sy * h != y.shape[-2] or sx * w != y.shape[-1]:
            raise ValueError("a tile of %dx%d codes gave an output of %dx%d, not a whole multiple"
                             % (h, w, y.shape[-2], y.shape[-1]))
        top, bottom, left, right = tile.core_in_ext()
        return y[..., top * sy: bottom * sy, left * sx: right * sx]

    if norms is None or not len(norms):
        for tile in tiles:
            sink(tile, crop(tile, fn(*sliced(tile))))
        return
    everything = range(len(norms))
    passes = [([k], k) for k in everything] if stat_passes == EXACT else [(everything, None)] * int(stat_passes)
    if norms.collected:  # the same input again (e.g. a second pass over the output): the same statistics
        passes = []
    else:
        norms.reset()
    with norms.active():
        for collect, stop_at in passes:
            norms.start_pass(collect, stop_at)
            for tile in tiles:
                with norms.tile(tile, collect=True):
                    try:
                        fn(*sliced(tile))
                    except _StopForward:
                        pass
            norms.finish_pass()
        norms.collected = True
        for tile in tiles:
            with norms.tile(tile, collect=False):
                y = fn(*sliced(tile))
            sink(tile, crop(tile, y))


__all__ = ["EXACT", "FrameNorms", "Tile", "halo_for", "plan_tiles", "receptive_radius", "run_tiled"]
