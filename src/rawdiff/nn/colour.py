"""The reference ISP's colour operations in torch, for training in the model domain.

The codec's network codes the white-balanced signal and decodes white-balanced camera RGB;
the colour stage of :mod:`rawdiff.raw.isp` renders sRGB from it with the frame's own
parameters (sent in the bitstream). Training must see the same rendering, so these are
the ISP's functions (:func:`rawdiff.raw.isp.white_balanced`, :func:`rawdiff.raw.isp.colour_stage`)
on batches, with a per-sample gain vector and colour matrix::

    planes R,G1,G2,B --white_balance_planes(gains)--> network --> camera RGB
        --render_camera_rgb(ccm)--> sRGB (compared with the reference-ISP image)

A test holds them equal to the numpy originals.
"""

from __future__ import annotations

import torch

# IEC 61966-2-1 sRGB transfer curve, as rawdiff.raw.isp.srgb_gamma
_SRGB_KNEE = 0.0031308


def white_balance_planes(planes: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """B x 4 x h x w normalised planes (R, G1, G2, B) times B x 3 gains (R, G, B), clipped to
    [0, min(1, smallest gain)] per sample, as :func:`rawdiff.raw.isp.white_balanced`."""
    g = gains.to(planes.dtype)
    per_plane = torch.stack([g[:, 0], g[:, 1], g[:, 1], g[:, 2]], dim=1)[:, :, None, None]
    limit = torch.clamp(g.min(dim=1).values, max=1.0)[:, None, None, None]
    return torch.minimum((planes * per_plane).clamp(min=0.0), limit)


#: Gradient given to a value the colour stage clips (see :func:`render_camera_rgb`).
OUT_OF_RANGE_SLOPE = 0.05


def srgb_gamma(linear: torch.Tensor) -> torch.Tensor:
    """Linear [0, 1] -> sRGB-encoded (no clip here; callers clip)."""
    safe = linear.clamp(min=_SRGB_KNEE)
    return torch.where(linear <= _SRGB_KNEE, 12.92 * linear, 1.055 * safe.pow(1.0 / 2.4) - 0.055)


def smoothstep(x: torch.Tensor) -> torch.Tensor:
    """Brooks et al.'s tone curve ``3x^2 - 2x^3`` (input in [0, 1])."""
    return x * x * (3.0 - 2.0 * x)


def render_camera_rgb(camera_rgb: torch.Tensor, ccm: torch.Tensor, tone_curve: str = "smoothstep",
                      straight_through: bool = False) -> torch.Tensor:
    """B x 3 x H x W white-balanced camera RGB to sRGB in [0, 1] with B x 3 x 3 colour matrices.

    The forward pass is :func:`rawdiff.raw.isp.colour_stage` (clip to [0, 1], colour matrix,
    clip, sRGB curve, tone curve). Its gradient is zero wherever a clip is active (and the
    tone curve is flat at 0 and 1), so a decoder output that falls below 0 where the target
    is dark would never come back. ``straight_through`` (for training) adds a gradient of
    :data:`OUT_OF_RANGE_SLOPE` for the clipped amount, leaving the forward value unchanged."""
    if tone_curve not in ("smoothstep", "none"):
        raise ValueError("tone_curve %r is not one of smoothstep, none" % (tone_curve,))
    x = camera_rgb.float()
    x_in = x.clamp(0.0, 1.0)
    y = torch.einsum("bij,bjhw->bihw", ccm.to(x.dtype), x_in)
    y_in = y.clamp(0.0, 1.0)
    out = srgb_gamma(y_in)
    if tone_curve == "smoothstep":
        out = smoothstep(out)
    if straight_through:
        outside = (x - x_in) + (y - y_in)
        out = out + OUT_OF_RANGE_SLOPE * (outside - outside.detach())
    return out


def camera_rgb_of(srgb: torch.Tensor, ccm: torch.Tensor) -> torch.Tensor:
    """The white-balanced camera RGB that :func:`render_camera_rgb` (smoothstep tone curve)
    renders as ``srgb`` (B x 3 x H x W in [0, 1]) with B x 3 x 3 colour matrices: the inverse
    tone curve, the inverse sRGB curve and the inverse matrix. Exact where no clip was
    active; where one was, a value that renders the same."""
    y = srgb.float().clamp(0.0, 1.0)
    y = 0.5 - torch.sin(torch.asin(1.0 - 2.0 * y) / 3.0)  # inverse smoothstep (Brooks et al.)
    linear = torch.where(y <= 0.04045, y / 12.92, ((y.clamp(min=0.04045) + 0.055) / 1.055).pow(2.4))
    inv = torch.linalg.inv(ccm.float())
    return torch.einsum("bij,bjhw->bihw", inv, linear)


__all__ = ["OUT_OF_RANGE_SLOPE", "camera_rgb_of", "render_camera_rgb", "smoothstep", "srgb_gamma",
           "white_balance_planes"]
