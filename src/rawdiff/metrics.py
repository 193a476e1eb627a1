"""Image quality metrics computed the same way for rawdiff and the baselines.

Below the models in the layers: the training losses (MS-SSIM) and validation (PSNR) use
them, and so does ``rawdiff eval``.

All functions take float tensors in [0, 1] shaped B x 3 x H x W (or numpy uint8 HxWx3
through :func:`to_tensor`).
"""

from __future__ import annotations

import math
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.nn import functional as F

# Wang, Simoncelli & Bovik 2003, *Multi-scale structural similarity*, Table/Sec. 3.2
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_C1, _C2 = 0.01 ** 2, 0.03 ** 2


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float 1x3xHxW in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """float 1x3xHxW in [0, 1] (on any device) -> uint8 HxWx3, rounded and clipped: :func:`to_tensor` undone."""
    return (img[0].permute(1, 2, 0) * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).cpu().numpy()


def psnr(x: torch.Tensor, y: torch.Tensor, peak: float = 1.0) -> float:
    mse = F.mse_loss(x.float(), y.float()).item()
    return float("inf") if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5, device=None, dtype=None) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(coords ** 2) / (2 * sigma * sigma))
    return (g / g.sum()).to(device=device, dtype=dtype)


def _ssim_cs(x: torch.Tensor, y: torch.Tensor, win: torch.Tensor):
    c = x.shape[1]
    wx = win.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    wy = win.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, wx, groups=c), wy, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x ** 2
    syy = blur(y * y) - mu_y ** 2
    sxy = blur(x * y) - mu_x * mu_y
    cs = (2 * sxy + _C2) / (sxx + syy + _C2)
    lum = (2 * mu_x * mu_y + _C1) / (mu_x ** 2 + mu_y ** 2 + _C1)
    return (lum * cs).flatten(1).mean(1), cs.flatten(1).mean(1)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, weights: Sequence[float] = MS_SSIM_WEIGHTS,
            win_size: int = 11) -> torch.Tensor:
    """MS-SSIM per image (B,), differentiable.

    Uses as many of the five scales as the image size allows (the smallest scale must
    still hold the 11-tap window); the weights of the scales used are renormalised.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError("ms_ssim needs two B x C x H x W tensors of one shape, got %s and %s"
                         % (tuple(x.shape), tuple(y.shape)))
    min_side = min(x.shape[-2:])
    scales = len(weights)
    while scales > 1 and min_side / 2 ** (scales - 1) < win_size:
        scales -= 1
    if min_side < win_size:
        raise ValueError("ms_ssim needs images of at least %d px, got %d" % (win_size, min_side))
    w = torch.tensor(weights[:scales], dtype=x.dtype, device=x.device)
    w = w / w.sum()
    win = _gaussian_window(win_size, device=x.device, dtype=x.dtype)
    values = []
    for s in range(scales):
        ssim, cs = _ssim_cs(x, y, win)
        values.append(F.relu(ssim if s == scales - 1 else cs))
        if s < scales - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    stacked = torch.stack(values, dim=1)  # B x scales
    return torch.prod(stacked.clamp_min(1e-8) ** w[None], dim=1)


def radial_power_spectrum(img: torch.Tensor, bins: int = 64) -> torch.Tensor:
    """Radially averaged log power spectrum of the luma of B x 3 x H x W images (B x bins)."""
    luma = 0.299 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2]
    luma = luma - luma.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fftshift(torch.fft.fft2(luma).abs() ** 2, dim=(-2, -1))
    h, w = luma.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h) - h // 2, torch.arange(w) - w // 2, indexing="ij")
    radius = torch.sqrt((yy.float() / (h / 2)) ** 2 + (xx.float() / (w / 2)) ** 2)
    idx = torch.clamp((radius / math.sqrt(2) * bins).long(), max=bins - 1).flatten().to(img.device)
    flat = power.flatten(1)
    sums = torch.zeros(flat.shape[0], bins, dtype=flat.dtype, device=img.device).index_add_(1, idx, flat)
    counts = torch.bincount(idx, minlength=bins).clamp_min(1).to(flat.dtype)
    return torch.log10(sums / counts + 1e-12)


def spectral_distance(x: torch.Tensor, y: torch.Tensor, bins: int = 64) -> float:
    """Realism figure without a pretrained network: mean absolute difference (in decades)
    between the radially averaged power spectra of output and target. Blurry outputs lose
    high-frequency power and score high; 0 means the same spectrum."""
    return float((radial_power_spectrum(x, bins) - radial_power_spectrum(y, bins)).abs().mean())


#: the block grid :func:`grid_strength` looks for: the 8x8 cells of the codecs compared
GRID_PERIOD = 8


def grid_strength(img: np.ndarray, period: int = GRID_PERIOD) -> float:
    """How strongly a block grid of ``period`` pixels (from the image's top-left corner)
    shows in ``img`` (uint8 H x W x 3 or H x W): the mean absolute luma step across the grid's
    lines divided by the mean step everywhere else, averaged over both directions. About 1
    for a natural image (and for the reference); 2 means the steps at cell edges are twice
    the others, a visible grid. Block codecs (JPEG's 8x8, a decoder that makes each 8x8 cell
    from its own latent) raise it; a smooth image with no grid keeps it near 1."""
    y = np.asarray(img, dtype=np.float64)
    if y.ndim == 3:
        y = y[..., :3] @ np.array([0.299, 0.587, 0.114])
    if y.ndim != 2 or min(y.shape) <= 2 * period:
        raise ValueError("grid_strength needs an image larger than 2 x %d pixels, got shape %s"
                         % (period, np.shape(img)))
    ratios = []
    for steps in (np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0)).T):
        on = np.zeros(steps.shape[1], dtype=bool)
        on[period - 1::period] = True  # the step from pixel k * period - 1 to k * period
        off = steps[:, ~on].mean()
        ratios.append(steps[:, on].mean() / off if off > 0 else 1.0)
    return float(np.mean(ratios))


def laplacian_pyramid(img: torch.Tensor, levels: int) -> List[torch.Tensor]:
    """Band-pass levels of B x C x H x W images, finest first, then the low-pass rest: each
    level is the image minus its 2x down- and upsampled copy (a 5-tap binomial filter)."""
    k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=img.dtype, device=img.device) / 16.0
    kernel = (k1[:, None] * k1[None, :])[None, None].repeat(img.shape[1], 1, 1, 1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.shape[1])

    out = []
    x = img
    for _ in range(levels - 1):
        if min(x.shape[-2:]) < 16:
            break
        low = blur(x)[..., ::2, ::2]
        up = F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False)
        out.append(x - up)
        x = low
    out.append(x)
    return out


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, levels: int = 4, patch: int = 7, patches: int = 2048,
                       directions: int = 128, seed: int = 0) -> float:
    """Realism figure without a pretrained network (Karras et al. 2018, *Progressive
    Growing of GANs*, section 5): the sliced Wasserstein distance between the distributions
    of ``patch`` x ``patch`` x 3 neighbourhoods of the Laplacian pyramid levels of ``x`` and
    ``y`` (1 x 3 x H x W), averaged over the levels, times 1000. Patches are drawn at the
    same random places in both (a seed), each channel normalised by the reference's mean and
    standard deviation at that level; ``directions`` random unit projections of the two sets
    are sorted and compared. 0: the same distributions; blur and invented texture both
    raise it. Many images against one reference: :class:`SlicedWassersteinReference`."""
    return SlicedWassersteinReference(y, levels, patch, patches, directions, seed).distance(x)


class SlicedWassersteinReference:
    """The reference's side of :func:`sliced_wasserstein`, computed once: per pyramid level
    the patch places, the channel normalisation, the projections and the reference's sorted
    projected patches. ``distance(x)`` is ``sliced_wasserstein(x, y)``, about twice as fast."""

    def __init__(self, y: torch.Tensor, levels: int = 4, patch: int = 7, patches: int = 2048,
                 directions: int = 128, seed: int = 0):
        gen = torch.Generator().manual_seed(int(seed))
        self.shape = tuple(y.shape)
        self.levels, self.patches = int(levels), int(patches)
        self._levels = []
        for i, b in enumerate(laplacian_pyramid(y.float(), levels)):
            h, w = b.shape[-2:]
            if h < patch or w < patch:
                continue
            top = torch.randint(0, h - patch + 1, (patches,), generator=gen)
            left = torch.randint(0, w - patch + 1, (patches,), generator=gen)
            offs = torch.arange(patch)
            rows = (top[:, None] + offs[None, :])[:, :, None]
            cols = (left[:, None] + offs[None, :])[:, None, :]
            # N x C x (p p) descriptors; the same places in every image measured
            ref = b[0][:, rows, cols].permute(1, 0, 2, 3).reshape(patches, b.shape[1], -1)
            mean = ref.mean(dim=(0, 2))[None, :, None]
            std = ref.std(dim=(0, 2)).clamp_min(1e-6)[None, :, None]
            db = ((ref - mean) / std).reshape(patches, -1)
            proj = torch.randn(db.shape[1], directions, generator=gen)
            proj = proj / proj.norm(dim=0, keepdim=True)
            self._levels.append((i, rows, cols, mean, std, proj, torch.sort(db @ proj, dim=0)[0]))
        if not self._levels:
            raise ValueError("images of %dx%d are too small for %dx%d patches"
                             % (y.shape[-1], y.shape[-2], patch, patch))

    def distance(self, x: torch.Tensor) -> float:
        if tuple(x.shape) != self.shape:
            raise ValueError("image of shape %s against a reference of shape %s" % (tuple(x.shape), self.shape))
        pyramid = laplacian_pyramid(x.float(), self.levels)
        total = 0.0
        for i, rows, cols, mean, std, proj, pb in self._levels:
            a = pyramid[i]
            da = ((a[0][:, rows, cols].permute(1, 0, 2, 3).reshape(self.patches, a.shape[1], -1) - mean) / std)
            pa, _ = torch.sort(da.reshape(self.patches, -1) @ proj, dim=0)
            total += float((pa - pb).abs().mean())
        return 1000.0 * total / len(self._levels)


# --------------------------------------------------------------------------- external tools


class ToolMissing(RuntimeError):
    """An external program (butteraugli_main, cwebp, cjxl, avifenc, ...) is not installed."""


class ToolError(RuntimeError):
    """An external program ran and failed."""


#: Debian packages of the external programs (DESIGN.md, "Environment").
TOOL_PACKAGES = {"butteraugli_main": "libjxl-devtools", "cwebp": "webp", "dwebp": "webp",
                 "cjxl": "libjxl-tools", "djxl": "libjxl-tools", "avifenc": "libavif-bin",
                 "avifdec": "libavif-bin"}


def find_tool(name: str) -> str:
    """Absolute path of program ``name``; :class:`ToolMissing` names the Debian package."""
    import shutil

    path = shutil.which(name)
    if path is None:
        raise ToolMissing("%s not found on PATH (Debian package %s)" % (name, TOOL_PACKAGES.get(name, "?")))
    return path


def run_tool(argv: Sequence[str], timeout: float = 600.0) -> str:
    """Run an external program; its stdout, or :class:`ToolError` with the end of stderr."""
    import subprocess

    argv = [find_tool(argv[0])] + [str(a) for a in argv[1:]]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ToolError("%s took longer than %.0f s" % (os.path.basename(argv[0]), timeout)) from None
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise ToolError("%s exited with %d: %s" % (os.path.basename(argv[0]), done.returncode,
                                                   " | ".join(tail) or "(no message)"))
    return done.stdout.decode("utf-8", "replace")


def write_png(path: str, rgb: np.ndarray, compression: int = 1) -> None:
    """uint8 HxWx3 RGB -> PNG (fast compression: these files are scratch inputs of tools)."""
    import cv2

    if not cv2.imwrite(path, np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, compression]):
        raise OSError("could not write %s" % path)


def read_rgb(path: str) -> np.ndarray:
    """An 8- or 16-bit PNG or PPM written by a tool -> uint8 HxWx3 RGB (alpha dropped, gray expanded)."""
    import cv2

    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ToolError("could not read the decoded image %s" % path)
    if img.dtype == np.uint16:
        img = np.round(img.astype(np.float64) / 257.0).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, 2::-1])


# --------------------------------------------------------------------------- butteraugli

_FLOAT = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf|nan)"


def centre_crop(rgb: np.ndarray, max_pixels: Optional[int]) -> np.ndarray:
    """The centre crop of ``rgb`` with at most ``max_pixels`` pixels and its aspect ratio
    (even offsets and sizes, so a crop of a mosaic keeps its CFA phase)."""
    h, w = rgb.shape[:2]
    if not max_pixels or h * w <= max_pixels:
        return rgb
    scale = math.sqrt(max_pixels / float(h * w))
    ch, cw = max(2, int(h * scale) // 2 * 2), max(2, int(w * scale) // 2 * 2)
    top, left = (h - ch) // 4 * 2, (w - cw) // 4 * 2
    return rgb[top:top + ch, left:left + cw]


def psnr_uint8(x: np.ndarray, y: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB of two arrays of one shape (uint8 images by default; ``peak`` for others)."""
    err = np.mean((np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2)
    return float("inf") if err == 0 else float(10.0 * np.log10(peak * peak / err))


def colour_fit(decoded: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``decoded`` (uint8 H x W x 3) after the 3x3 colour matrix plus offset that brings it
    closest to ``reference`` in the least-squares sense, rounded and clipped to uint8.

    What a global colour correction could still recover: a codec that renders colour as the
    reference does gains nothing from it."""
    if decoded.shape != reference.shape or decoded.ndim != 3 or decoded.shape[2] != 3:
        raise ValueError("colour_fit needs two H x W x 3 images of one shape, got %s and %s"
                         % (decoded.shape, reference.shape))
    x = decoded.reshape(-1, 3).astype(np.float64)
    design = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, reference.reshape(-1, 3).astype(np.float64), rcond=None)
    fitted = design @ coef
    return np.clip(np.rint(fitted), 0, 255).astype(np.uint8).reshape(decoded.shape)


def colour_fit_gain(decoded: np.ndarray, reference: np.ndarray) -> float:
    """PSNR gain in dB of :func:`colour_fit`: how much of the error is global colour."""
    return psnr_uint8(colour_fit(decoded, reference), reference) - psnr_uint8(decoded, reference)


def butteraugli(reference: np.ndarray, distorted: np.ndarray, max_pixels: Optional[int] = None,
                timeout: float = 600.0) -> Tuple[float, float]:
    """Butteraugli distance of two uint8 sRGB images with libjxl's ``butteraugli_main``
    (Alakuijala et al., *Guetzli*, 2017; ~1 is "just noticeable", lower is better).

    Returns ``(max_norm, p3_norm)``: the tool prints the max-norm distance (the usual
    butteraugli score) on its first line and ``3-norm: x`` on the next. ``max_pixels``
    evaluates the centre crop of both images instead (the tool takes seconds per
    megapixel). Raises :class:`ToolMissing` when the tool is not installed.
    """
    import re
    import tempfile

    if reference.shape != distorted.shape:
        raise ValueError("butteraugli needs two images of one shape, got %s and %s"
                         % (reference.shape, distorted.shape))
    find_tool("butteraugli_main")
    reference, distorted = centre_crop(reference, max_pixels), centre_crop(distorted, max_pixels)
    with tempfile.TemporaryDirectory(prefix="rawdiff-ba-") as tmp:
        ref_path, dist_path = os.path.join(tmp, "ref.png"), os.path.join(tmp, "dist.png")
        write_png(ref_path, reference)
        write_png(dist_path, distorted)
        out = run_tool(["butteraugli_main", ref_path, dist_path], timeout=timeout)
    first = re.match(r"\s*" + _FLOAT, out)
    pnorm = re.search(r"3-norm:\s*" + _FLOAT, out)
    if first is None or pnorm is None:
        raise ToolError("cannot read butteraugli_main's output %r" % out[:200])
    return float(first.group(1)), float(pnorm.group(1))
