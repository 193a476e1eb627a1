"""Texture synthesis of the realism path: the detail the codes dropped, in pixel space.

    decoded sRGB image --TextureEnergy--> expected local energy of the reference's luma in
                                          each band (log, 1/4 resolution)
    target_b = gain^2 * expected_b;  own_b = local energy of the decoded luma in band b
    k_b = clamp(sqrt(target_b / own_b), 1, amplify_b)           (the image's own detail)
    deficit_b = sqrt(max(target_b - k_b^2 own_b, 0))             (what is left for noise)
    image + sum_b [(k_b - 1) * band b of the luma + noise_b * deficit_b * (band b of white
                   noise, unit variance)]                                        (luma only)

Why: the shipped analysis keeps 32 of each 8x8 cell's 64 principal components, so the
finest texture is not in the latent at all and latent diffusion cannot give it back; at the
lowest operating points most of the rest is dropped as well. Where the codes leave nothing
to predict, what is missing is texture whose *energy* can be predicted and whose phase
cannot: a Gaussian draw of band-limited texture with the predicted local energy is then the
sample (film-grain synthesis in AV1 sends such an energy model; here a network predicts it
from the decoded image, so nothing is sent). Where the decoded image has some detail in a
band but too little (the fast path decodes the conditional mean, whose contrast is below the
reference's), raising that detail is texture in phase with the scene: MS-SSIM's contrast
term prefers it, so it comes first, up to ``amplify_b``, and noise makes up what is left.

Bands: differences of Gaussians of the luma, sigma 1, 2 and 4 pixels (``b0 = y - G1 y``,
``b1 = G1 y - G2 y``, ``b2 = G2 y - G4 y``); local energy: the mean of the band's square
over 9 x 9 pixels. The network is trained on the squared error of the log energies, so where
the energy is uncertain it predicts their geometric mean, less than their mean: less
texture where the reference may have none, which costs MS-SSIM least. Noise is drawn on the
CPU from a ``torch.Generator``: the same seed gives the same noise on any machine (the
energies, a network's output, may differ in the last bit between devices).

Measured (17 validation frames, centre crops of 0.25 Mpixel, qualities 1 and 2; 2-core AMD
EPYC; SWD is the sliced Wasserstein distance of ``rawdiff eval``), SWD change / MS-SSIM
change against the fast path:

- two bands, noise only (the first texture stage): -24 % / -0.016 and -31 % / -0.019;
- three bands, noise in the two finest: -24 % / -0.018 and -31 % / -0.021 (gain 1): noise
  in the third costs far more MS-SSIM (-29 % / -0.033 at quality 1);
- three bands, own detail raised up to 2x in the two coarser ones, then noise in the two
  finest (the shipped setting, gain 1): -26.5 % / -0.018 and -35 % / -0.020; raised in all
  three (gain 0.95: -26 % / -0.017 and -35 % / -0.019) the finest band's raised detail
  brings the 8-pixel grid back (grid figure 1.19 against 1.07 at quality 5);
- a fourth band (sigma 8) gave -28 % / -0.020 and -35 % / -0.020: on the three bands'
  frontier (their gain 1, amplify 3: -28 % / -0.020 at quality 1), no better; with the
  reference's own energy in that band (an oracle) it halved the MS-SSIM cost at quality 1
  (0.008): the network cannot tell where the coarse contrast is missing.
Oracle energies in all three bands (benchmarks/texture_headroom.py) show what a better
energy model could reach.

The level: at the lowest operating points the decoded image does not show how much texture
the scene had (the network's mean log energy of a validation frame was 0.67 to 0.90 off,
rms), so a model whose texture entry has a ``level`` scales the expected energies, band by
band, to the mean log energy that the frame's detail statistics predict (measured by the
encoder and sent in the stream: :mod:`rawdiff.codec.detail_stats`); the network keeps
deciding where in the frame the texture goes. On the same validation crops (gain 1 / 1.2):
-26 % / -0.014 and -33 % / -0.019 at quality 1, -30 % / -0.013 and -39 % / -0.019 at
quality 2, against the network's own level at gain 1, -26 % / -0.018 and -35 % / -0.020.
With the level, less noise in the second band and a higher gain do better still (the shipped
gain 1.4, noise shares 1, 0.5, 0: -33 % / -0.016 and -41 % / -0.018; the model card's "The
level, sent").
"""

from __future__ import annotations

import functools
import math
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rawdiff.codec.modeldir import TEXTURE_CHANNELS, TEXTURE_LEGACY_SIGMAS

#: the network's width of a new fit
CHANNELS = TEXTURE_CHANNELS
#: Gaussian sigmas (pixels) whose differences make the bands of a new fit, finest first
SIGMAS = (1.0, 2.0, 4.0)
#: the bands of a texture stage whose model.json entry names none (the first fits had two)
LEGACY_SIGMAS = TEXTURE_LEGACY_SIGMAS
#: side of the window of a local energy (pixels)
WINDOW = 9
#: the network's output is at 1 / STRIDE of the image's resolution
STRIDE = 4
#: sRGB luma weights (BT.601, as rawdiff.metrics' grey)
LUMA = (0.299, 0.587, 0.114)
#: floor of an energy (the square of 1/1000 of full scale)
EPS = 1e-6


@functools.lru_cache(maxsize=32)
def _gaussian_kernel(sigma: float, dtype=torch.float32) -> torch.Tensor:
    """The normalised 1-D Gaussian of ``sigma`` (radius 3 sigma), made once per sigma and dtype
    (callers must not modify it)."""
    r = int(3 * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-t * t / (2 * sigma * sigma))
    return (k / k.sum()).to(dtype)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of B x C x H x W, reflected at the borders (the edge pixel
    repeated where a side is no longer than the kernel's radius). On the CPU, float32 without
    gradients and both sides longer than the radius: OpenCV's separable filter, the same
    arithmetic to float32 rounding and 20 to 50 times faster than torch's depthwise
    convolution there (one 1936x1112 plane: 2 to 6 ms against 100 to 115 ms)."""
    k = _gaussian_kernel(sigma, x.dtype).to(x.device)
    r, c = len(k) // 2, x.shape[1]
    h, w = x.shape[-2:]
    if x.device.type == "cpu" and x.dtype == torch.float32 and not x.requires_grad and r < min(h, w):
        import cv2

        kn = k.numpy()
        return _per_plane(x, lambda src, dst: cv2.sepFilter2D(src, -1, kn, kn, dst=dst,
                                                              borderType=cv2.BORDER_REFLECT_101))
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect" if r < w else "replicate"),
                 k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect" if r < h else "replicate"),
                    k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _per_plane(x: torch.Tensor, apply) -> torch.Tensor:
    """``apply(src, dst)`` (an OpenCV filter into ``dst``) on every H x W plane of a float32
    CPU tensor: the filters of :func:`gaussian_blur` and :func:`local_energy` there."""
    h, w = x.shape[-2:]
    planes = x.detach().contiguous().view(-1, h, w).numpy()
    out = np.empty_like(planes)
    for src, dst in zip(planes, out):
        apply(src, dst)
    return torch.from_numpy(out).view(x.shape)


def bands(x: torch.Tensor, sigmas: Sequence[float] = SIGMAS) -> List[torch.Tensor]:
    """Difference-of-Gaussian bands of ``x``, finest first."""
    out, prev = [], x
    for s in sigmas:
        low = gaussian_blur(x, s)
        out.append(prev - low)
        prev = low
    return out


def _impulse(size: int) -> torch.Tensor:
    delta = torch.zeros(1, 1, 2 * size + 1, 2 * size + 1, dtype=torch.float64)
    delta[0, 0, size, size] = 1.0
    return delta


@functools.lru_cache(maxsize=8)
def band_noise_std(sigmas: Tuple[float, ...]) -> Tuple[float, ...]:
    """Standard deviation of each band of unit white noise (exact, from the kernels: the norm
    of the band's impulse response); computed once per set of sigmas (a tuple)."""
    size = 4 * int(3 * max(sigmas) + 0.5) + 1
    return tuple(float(b.pow(2).sum().sqrt()) for b in bands(_impulse(size), sigmas))


def luma(img: torch.Tensor) -> torch.Tensor:
    """B x 1 x H x W luma of B x 3 x H x W RGB."""
    w = torch.tensor(LUMA, dtype=img.dtype, device=img.device).view(1, 3, 1, 1)
    return (img * w).sum(1, keepdim=True)


def local_energy(b: torch.Tensor, window: int = WINDOW) -> torch.Tensor:
    """The mean of ``b`` squared over the ``window`` x ``window`` around each pixel (over the
    pixels inside the image at its borders). On the CPU, float32 without gradients: OpenCV's
    box filter, the same to float32 rounding and 10 times faster than avg_pool2d there."""
    sq = b * b
    h, w = sq.shape[-2:]
    if not (sq.device.type == "cpu" and sq.dtype == torch.float32 and not sq.requires_grad and window % 2):
        return F.avg_pool2d(sq, window, 1, window // 2, count_include_pad=False)
    import cv2

    count = _window_count(h, w, window)

    def box_mean(src: np.ndarray, dst: np.ndarray) -> None:
        cv2.boxFilter(src, -1, (window, window), dst=dst, normalize=False, borderType=cv2.BORDER_CONSTANT)
        dst /= count

    return _per_plane(sq, box_mean)


@functools.lru_cache(maxsize=4)
def _window_count(h: int, w: int, window: int) -> np.ndarray:
    """How many pixels of the ``window`` x ``window`` around each pixel of an h x w image lie
    inside it, float32 (made once per frame size; callers must not modify it)."""
    r = window // 2

    def inside(n: int) -> np.ndarray:
        i = np.arange(n)
        return (np.minimum(i + r, n - 1) - np.maximum(i - r, 0) + 1).astype(np.float32)

    count = np.outer(inside(h), inside(w))
    count.setflags(write=False)
    return count


def band_energies(img: torch.Tensor, sigmas: Sequence[float] = SIGMAS) -> torch.Tensor:
    """B x len(sigmas) x H x W local energies of the luma bands of RGB images."""
    return torch.cat([local_energy(b) for b in bands(luma(img), sigmas)], dim=1)


class TextureEnergy(nn.Module):
    """Decoded RGB (B x 3 x H x W in [0, 1]) and its operating point (B, level in (0, 1])
    -> log expected local energy of the reference's luma bands, B x bands x ceil(H/4) x
    ceil(W/4)."""

    def __init__(self, channels: int = CHANNELS, bands: int = len(SIGMAS)):
        super().__init__()
        c = int(channels)
        self.channels, self.bands = c, int(bands)
        self.net = nn.Sequential(
            nn.Conv2d(4, c // 2, 3, 2, 1), nn.GELU(),
            nn.Conv2d(c // 2, c, 3, 2, 1), nn.GELU(),
            nn.Conv2d(c, c, 3, 1, 1), nn.GELU(),
            nn.Conv2d(c, c, 3, 1, 2, dilation=2), nn.GELU(),
            nn.Conv2d(c, c, 3, 1, 4, dilation=4), nn.GELU(),
            nn.Conv2d(c, int(bands), 1),
        )
        # start at a small energy (log of 1e-4: 1 % of full scale), the scale of fine texture
        nn.init.zeros_(self.net[-1].weight)
        nn.init.constant_(self.net[-1].bias, math.log(1e-4))

    def forward(self, img: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        lv = level.to(img.dtype).view(-1, 1, 1, 1).expand(img.shape[0], 1, img.shape[2], img.shape[3])
        return self.net(torch.cat([img * 2 - 1, lv], dim=1))


def energy_loss(log_pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error of the log energies (``target`` pooled to the prediction's resolution):
    minimised by the geometric mean of the energy where it is uncertain, which puts less
    texture where the reference may have none (see the module docstring)."""
    if target.shape[-2:] != log_pred.shape[-2:]:
        target = F.adaptive_avg_pool2d(target, log_pred.shape[-2:])
    log_pred = log_pred.float().clamp(math.log(EPS), 0.0)
    return (log_pred - target.float().clamp(min=EPS).log()).pow(2).mean()


class Synthesis(NamedTuple):
    """How the texture is made from the expected energies (model.json's texture entry):
    the bands' ``sigmas``; ``amplify``, for each band the most the decoded image's own detail
    there is raised towards the expected energy (1: not at all; None: 1 for every band);
    ``noise``, the share of each band's remaining deficit that is filled with noise (None: 1,
    all of it, for every band). ``legacy``: the first texture stages' synthesis, noise only,
    ``gain`` times the square root of each band's deficit to the expected energy (their
    model.json entries name no sigmas), so that their decodes stay as they were."""

    sigmas: Tuple[float, ...] = SIGMAS
    amplify: Optional[Tuple[float, ...]] = None
    noise: Optional[Tuple[float, ...]] = None
    legacy: bool = False

    @classmethod
    def of_entry(cls, entry: dict) -> Synthesis:
        """The synthesis a model.json texture entry names (checked by
        :func:`rawdiff.codec.modeldir.check_texture_settings`); an entry of the first texture
        stages, without these keys, gets theirs (two bands, noise only: ``legacy``)."""
        if "sigmas" not in entry:
            return cls(LEGACY_SIGMAS, legacy=True)
        sigmas = tuple(float(x) for x in entry["sigmas"])
        amplify, noise = entry.get("amplify"), entry.get("noise")
        return cls(sigmas, None if amplify is None else tuple(float(x) for x in amplify),
                   None if noise is None else tuple(float(x) for x in noise))


@torch.no_grad()
def add_texture(img: torch.Tensor, expected: torch.Tensor, gain: float,
                generator: Optional[torch.Generator] = None, white: Optional[torch.Tensor] = None,
                synthesis: Optional[Synthesis] = None) -> torch.Tensor:
    """``img`` (B x 3 x H x W RGB in [0, 1]) with its luma raised towards ``gain`` squared times
    the ``expected`` band energies (B x bands x H x W), band by band where the image has less:
    first the image's own detail in the band, amplified by at most its ``synthesis.amplify``
    (texture in phase with the scene: the fast path's detail is the conditional mean, smaller
    than the reference's, and MS-SSIM's contrast term prefers it raised), then the rest of the
    deficit (its ``synthesis.noise`` share) filled with one white noise (``white``, B x 1 x H x
    W, or drawn on the CPU from ``generator``: the same seed gives the same noise everywhere)
    filtered into the band at unit variance times the square root of the deficit.
    (Difference-of-Gaussian bands overlap and are not projections: a band's measure keeps all
    of the finest band's noise and a fraction of a coarser band's, so the result's energy is
    not each target exactly; a model's gain and noise shares are set on the measured realism
    and MS-SSIM.) Gain 0 returns ``img``;
    clipped to [0, 1]. ``synthesis`` None: :class:`Synthesis` ()."""
    synthesis = Synthesis() if synthesis is None else synthesis
    sigmas = tuple(float(x) for x in synthesis.sigmas)
    if expected.shape[1] != len(sigmas):
        raise ValueError("expected energies of %d bands for a synthesis of %d" % (expected.shape[1], len(sigmas)))
    if gain <= 0:
        return img
    shape = (img.shape[0], 1) + tuple(img.shape[-2:])
    if white is None:
        white = torch.randn(shape, generator=generator, dtype=torch.float32).to(img.device)
    own_bands = bands(luma(img.float()), sigmas)
    noise = synthesis.noise if synthesis.noise is not None else (1.0,) * len(sigmas)
    amplify = synthesis.amplify if synthesis.amplify is not None else (1.0,) * len(sigmas)
    texture = torch.zeros(shape, dtype=torch.float32, device=img.device)
    for i, (own_b, white_b, std) in enumerate(zip(own_bands, bands(white, sigmas), band_noise_std(sigmas))):
        own = local_energy(own_b)
        if synthesis.legacy:
            deficit = (expected[:, i: i + 1].float() - own).clamp(min=0).sqrt()
            texture = texture + float(gain) * deficit * (white_b / std)
            continue
        target = float(gain) ** 2 * expected[:, i: i + 1].float()
        k = (target / own.clamp(min=EPS * EPS)).sqrt().clamp(1.0, max(float(amplify[i]), 1.0))
        if amplify[i] > 1:
            texture = texture + (k - 1) * own_b
        if noise[i] > 0:
            deficit = (target - k * k * own).clamp(min=0).sqrt()
            texture = texture + float(noise[i]) * deficit * (white_b / std)
    return (img.float() + texture).clamp(0, 1).to(img.dtype)


@torch.no_grad()
def expected_energies(net: TextureEnergy, img: torch.Tensor, level: float) -> torch.Tensor:
    """The network's expected band energies of the reference, at the image's resolution (the
    image padded to a multiple of STRIDE, so that every output pixel has the same place on
    the network's grid in a strip as in the whole image)."""
    h, w = img.shape[-2:]
    pad_h, pad_w = -h % STRIDE, -w % STRIDE
    x = F.pad(img, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else img
    pred = net(x, torch.full((img.shape[0],), float(level), device=img.device)).float()
    up = F.interpolate(pred.clamp(math.log(EPS), 0.0).exp(), scale_factor=STRIDE, mode="bilinear",
                       align_corners=False)
    return up[..., :h, :w]


def _textured(net: TextureEnergy, img: torch.Tensor, level: float, gain: float,
              white: torch.Tensor, synthesis: Synthesis, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    expected = expected_energies(net, img, level)
    if scale is not None:
        expected = expected * scale
    return add_texture(img, expected, gain, white=white, synthesis=synthesis)


def level_scale(log_mean: torch.Tensor, log_level: Sequence[float]) -> torch.Tensor:
    """B x bands x 1 x 1 factors that move expected energies whose per-band mean log is
    ``log_mean`` (B x bands) to the mean log ``log_level`` (one a band: a frame's level from
    its detail statistics, :mod:`rawdiff.codec.detail_stats`)."""
    target = torch.as_tensor(np.asarray(log_level, dtype=np.float32), device=log_mean.device)
    if target.shape != log_mean.shape[1:]:
        raise ValueError("a texture level of %d bands for energies of %d" % (target.numel(), log_mean.shape[1]))
    return (target[None] - log_mean.float()).exp()[..., None, None]


#: rows of context above and below a strip of :func:`synthesize` (a multiple of STRIDE): the
#: network sees 63 x 63 pixels; the bands and local energies reach 3 x 16 + 4 rows either side
#: at the largest sigma a model.json may name (rawdiff.codec.modeldir.TEXTURE_SIGMA_MAX)
HALO = 64


@torch.no_grad()
def synthesize(net: TextureEnergy, img: torch.Tensor, level: float, gain: float,
               generator: torch.Generator, strip_rows: Optional[int] = None,
               synthesis: Optional[Synthesis] = None, log_level: Optional[Sequence[float]] = None) -> torch.Tensor:
    """:func:`add_texture` with the energies ``net`` expects for ``img`` decoded at operating
    point ``level`` (quality / qualities). Gain 0 returns ``img``. ``strip_rows``: work on
    strips of that many rows (with HALO rows of context), so that memory grows with the
    strip, not the frame; the result is the whole image's but for float rounding.
    ``log_level`` (one a band): the expected energies are scaled, band by band, so that their
    mean log over the image is this (the frame's level, from the detail statistics its stream
    carries; None: the network's own); in strips the network runs twice, once for the mean."""
    if gain <= 0:
        return img
    height = img.shape[-2]
    white = torch.randn((img.shape[0], 1) + tuple(img.shape[-2:]), generator=generator, dtype=torch.float32)
    if not strip_rows or height <= strip_rows:
        expected = expected_energies(net, img, level)
        if log_level is not None:
            expected = expected * level_scale(expected.log().mean(dim=(2, 3)), log_level)
        return add_texture(img, expected, gain, white=white.to(img.device), synthesis=synthesis)
    rows = max(STRIDE, int(strip_rows) // STRIDE * STRIDE)
    pieces = [(top, min(top + rows, height), max(0, top - HALO), min(height, top + rows + HALO))
              for top in range(0, height, rows)]
    scale = None
    if log_level is not None:
        total = 0.0
        for top, bottom, lo, hi in pieces:
            expected = expected_energies(net, img[..., lo:hi, :], level)
            total = total + expected[..., top - lo: bottom - lo, :].log().sum(dim=(2, 3))
        scale = level_scale(total / (height * img.shape[-1]), log_level)
    out = torch.empty_like(img)
    for top, bottom, lo, hi in pieces:
        piece = _textured(net, img[..., lo:hi, :], level, gain, white[..., lo:hi, :].to(img.device), synthesis,
                          scale)
        out[..., top:bottom, :] = piece[..., top - lo: bottom - lo, :]
    return out


def load_texture(path: str, channels: int = CHANNELS, bands: int = len(SIGMAS)) -> TextureEnergy:
    """A :class:`TextureEnergy` from a safetensors file; a ValueError naming the file when its
    tensors do not fit the network."""
    from safetensors.torch import load_file

    net = TextureEnergy(channels, bands)
    try:
        net.load_state_dict(load_file(path))
    except RuntimeError as exc:
        raise ValueError("%s does not hold a texture network of %d channels and %d bands: %s"
                         % (path, channels, bands, str(exc).splitlines()[0])) from None
    return net.eval()


def split_realism(realism: float, share: Optional[float]) -> tuple:
    """(texture amplitude fraction, latent realism) of a realism R for a model whose texture
    takes the first ``share`` of the knob (finest scale first): texture rises from 0 to full
    over [0, share], the latent's drawn residual from none to all over [share, 1]. Without a
    texture stage (``share`` None) R is the latent realism."""
    if share is None:
        return 0.0, float(realism)
    share = float(share)
    r = float(realism)
    tex = 1.0 if share <= 0 else min(r / share, 1.0)
    lat = 0.0 if r <= share else (r - share) / (1.0 - share)
    return tex, lat


__all__ = ["CHANNELS", "HALO", "LEGACY_SIGMAS", "SIGMAS", "Synthesis", "TextureEnergy", "add_texture", "band_energies",
           "band_noise_std", "bands", "energy_loss", "expected_energies", "gaussian_blur", "level_scale",
           "load_texture", "local_energy", "luma", "split_realism", "synthesize"]
