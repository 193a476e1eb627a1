"""The codec's two decoders over tiles of the code grid (:mod:`rawdiff.codec.tiling`).

    fast:      grid --codebook--> z_q (the whole grid: D floats a code)
               --embedder decoder over tiles (halo: its receptive radius)--> pieces
    diffusion: grid --conditioner (the whole grid: concat map and context tokens)--> noise
               --sampler; every model call runs the UNet over tiles of x_t--> z
               --embedder decoder over tiles--> pieces

What grows with the frame is what lives on the code grid (the indices, the latent, the
sampler's few tensors of D or D + channels floats a code: 1/64 of the pixels at f8) and
the output image; the networks' feature maps, the bulk of the memory, are a tile's.

The UNet's tiles are aligned to its lowest level's attention windows, and its halo is one
such window (32 codes for the shipped model): its receptive field is far wider than that
(self-attention and four levels of convolutions), so tiled sampling is close to, not
equal to, sampling the whole grid; the cross-attention context is the whole grid's, as
without tiles. The decoder's halo covers its receptive field.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Union

import torch

from rawdiff.codec.tiling import FrameNorms, Tile, halo_for, plan_tiles, run_tiled
from rawdiff.models.unet import WindowAttention

Sink = Callable[[int, int, torch.Tensor], None]


def decoder_tiles(embedder, shape, tile: int) -> List[Tile]:
    """The tiles of the embedder decoder over a ``shape`` code grid."""
    return plan_tiles(shape, tile, halo_for(embedder.decoder))


def decode_latent(embedder, z: torch.Tensor, tile: int, sink: Sink, stat_passes: Union[int, str] = 1,
                  norms: Optional[FrameNorms] = None) -> FrameNorms:
    """The embedder decoder on ``z`` (1 x D x h x w) over tiles; ``sink(top, left, piece)``
    gets each tile's output (C x rows x cols, clipped to [0, 1]) and its position in codes.
    Returns the decoder's :class:`FrameNorms`: given back for the same ``z``, a second decode
    skips the statistics passes."""
    tiles = decoder_tiles(embedder, z.shape[-2:], tile)
    norms = norms if norms is not None else FrameNorms(embedder.decoder)
    run_tiled(embedder.decode, [z], tiles, norms,
              lambda t, y: sink(t.core[0][0], t.core[1][0], y[0].clamp(0, 1)), stat_passes)
    return norms


def unet_alignment(unet) -> int:
    """Codes a UNet tile starts on: the lowest level's stride times its attention window."""
    windows = [m.window for m in unet.modules() if isinstance(m, WindowAttention) and m.window > 0]
    return int(unet.multiple) * (max(windows) if windows else 1)


def unet_tiles(unet, shape, tile: int) -> List[Tile]:
    align = unet_alignment(unet)
    return plan_tiles(shape, tile, align, align)


def sample_latent(decoder, codes, z_q: torch.Tensor, steps: int, seed: int, tile: int,
                  stat_passes: Union[int, str] = 1, sampler: Optional[str] = None,
                  guidance_scale: Optional[float] = None, realism: Optional[float] = None) -> torch.Tensor:
    """The diffusion decoder's latent z (1 x D x h x w, and the quality channel where there is
    one) for the code grids ``codes`` (1 x h x w tensors, a prefix of the stages) whose
    codebook latent is ``z_q``, as :meth:`rawdiff.models.ldm.LatentDenoiser.sample` draws it
    (the same noise for a seed), with every UNet evaluation run over tiles."""
    denoiser = decoder.denoiser
    steps = decoder.check_steps(steps)
    sampler = sampler or decoder.sampler
    guidance = decoder.guidance_scale if guidance_scale is None else float(guidance_scale)
    indices = decoder.embedder.condition_indices(codes, tuple(z_q.shape[-2:]))
    generator = torch.Generator().manual_seed(int(seed))
    concat, context = denoiser.condition(indices, z_q)
    null = denoiser.condition(indices, z_q, null=True) if guidance != 1.0 else None
    unet = denoiser.unet
    tiles = unet_tiles(unet, z_q.shape[-2:], tile)
    # the windowed attention's GroupNorm sees one window at a time: local, as in the whole grid
    norms = FrameNorms(unet, exclude=[m.attn.norm for m in unet.modules()
                                      if isinstance(m, WindowAttention) and m.window > 0])

    def model(x: torch.Tensor, t: torch.Tensor, _cond) -> torch.Tensor:
        out = torch.empty_like(x)

        def tile_model(x_tile, concat_tile, *null_tile):
            null_cond = (null_tile[0], null[1]) if null is not None else None
            return denoiser.predict(x_tile, t, (concat_tile, context), null_cond, guidance)

        def sink(tile: Tile, y: torch.Tensor) -> None:
            (r0, r1), (c0, c1) = tile.core
            out[..., r0:r1, c0:c1] = y

        inputs = [x, concat] + ([null[0]] if null is not None else [])
        norms.reset()  # another x_t: other statistics
        run_tiled(tile_model, inputs, tiles, norms, sink, stat_passes)
        return out

    x0 = denoiser.draw(model, z_q, steps, generator, sampler, decoder.eta, decoder.realism_for(realism))
    return denoiser.restore(x0, z_q, decoder.quality_of(codes))


__all__ = ["decode_latent", "decoder_tiles", "sample_latent", "unet_alignment", "unet_tiles"]
