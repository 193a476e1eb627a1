"""The residual VQ against a plain scalar code of the same latent: which quantizer a next
model should build on.

    python benchmarks/scalar_headroom.py [--model DIR] [--data data/corpus/test_held.txt]
                                         [--steps 0.16 0.32 0.64 1.28] [--deadzone 0.2]
                                         [--max-frames N] [--max-pixels N] [--json OUT]

For a model with linear paths (a fixed linear analysis of each cell's mosaic samples, as the
default model has), per frame, both rendered the same way, with no decoder network: the
latent taken back to mosaic samples by the analysis' pseudo-inverse and put through the
reference ISP (``quantizer_headroom.linear_image``), against the reference image:

- ``vq``: the latent of the model's codes at each quality, at the bytes of its stream;
- ``scalar``: the vehicle's latent quantised component by component with one uniform step
  (``--steps``; the components are orthonormal, so one step is the one a squared error
  wants), rounding towards zero by ``--deadzone`` of a step; the first component's levels
  as differences from the median predictor of their left, upper and upper-left neighbours
  (LOCO-I), the others as they are; each component's symbols range-coded (constriction,
  quantised Laplace) with a scale per component and per activity class of the left and
  upper levels (0, 1, 2 or more), one byte of side information each. Its bytes are the
  coder's real output plus the 171 bytes of a version 4 container at quality 6.

Then the BD-rate (PSNR, MS-SSIM) of ``scalar`` against ``vq`` over their curves of means.
Prints JSON, then a markdown table; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

from encoder_speed import ROOT, log, machine  # noqa: E402
from quantizer_headroom import linear_image, measure  # noqa: E402

CONTAINER_BYTES = 171  # a version 4 stream of quality 6 on the test frames, besides its payloads
ACTIVITY_CLASSES = 3
MAX_LEVEL = 1 << 14


def med_prediction(levels: np.ndarray) -> np.ndarray:
    """LOCO-I's median predictor of each level from its left, upper and upper-left ones."""
    a = np.pad(levels, ((0, 0), (1, 0)), mode="edge")[:, :-1]
    b = np.pad(levels, ((1, 0), (0, 0)), mode="edge")[:-1]
    c = np.pad(levels, ((1, 0), (1, 0)), mode="edge")[:-1, :-1]
    pred = np.where(c >= np.maximum(a, b), np.minimum(a, b),
                    np.where(c <= np.minimum(a, b), np.maximum(a, b), a + b - c))
    pred[0, 0] = 0
    return pred


def activity(symbols: np.ndarray) -> np.ndarray:
    """0, 1 or 2: the magnitudes of the left and upper symbols, summed and capped."""
    left = np.abs(np.pad(symbols, ((0, 0), (1, 0)))[:, :-1])
    up = np.abs(np.pad(symbols, ((1, 0), (0, 0)))[:-1])
    return np.minimum(left + up, ACTIVITY_CLASSES - 1)


def scalar_bytes(levels: np.ndarray) -> int:
    """Range-coded bytes of the level grids (D x h x w) as the module docstring says, the
    side information included."""
    import constriction

    model = constriction.stream.model.QuantizedLaplace(-MAX_LEVEL, MAX_LEVEL + 1)
    encoder = constriction.stream.queue.RangeEncoder()
    side = 0
    for d, grid in enumerate(levels):
        symbols = grid - med_prediction(grid) if d == 0 else grid
        classes = activity(symbols)
        scales = np.empty(symbols.shape)
        for k in range(ACTIVITY_CLASSES):
            picked = classes == k
            if picked.any():
                scale = max(float(np.abs(symbols[picked]).mean()), 0.05)
                scales[picked] = 2.0 ** (np.round(np.log2(scale) * 8) / 8)  # what one byte says
                side += 1
        flat = np.clip(symbols, -MAX_LEVEL, MAX_LEVEL).astype(np.int32).ravel()
        encoder.encode(flat, model, np.zeros(flat.size), scales.ravel())
    return 4 * len(encoder.get_compressed()) + side


def frame_rows(codec, frame, ref: np.ndarray, steps, deadzone: float, pinv, bias) -> list:
    import torch

    from rawdiff.models.embedder import pad_planes

    emb = codec.embedder
    d = emb.quantize.embed_dim
    gains = codec.render_parameters(frame)["wb_gains"]
    h, w = ref.shape[:2]
    rows = []
    with torch.inference_mode():
        padded, _ = pad_planes(torch.from_numpy(codec.model_planes(frame))[None].to(codec.device), emb.plane_multiple)
        z = emb.encode(padded).float()
        for step in steps:
            levels = torch.sign(z) * torch.floor(z.abs() / step + 0.5 - deadzone)
            nbytes = scalar_bytes(levels[0].cpu().numpy().astype(np.int64)) + CONTAINER_BYTES
            img = linear_image(codec, frame, levels * step, pinv, bias, gains)[:h, :w]
            rows.append(dict(measure(ref, img, 4.0), path="scalar", setting=step, bytes=nbytes,
                             bpp=8.0 * nbytes / (h * w)))
        for q in range(1, codec.qualities + 1):
            payload = codec.compress(frame, quality=q)
            header, codes = codec.parse(payload)
            idx = [torch.from_numpy(np.ascontiguousarray(c, dtype=np.int64))[None].to(codec.device) for c in codes]
            latent = emb.lookup_codes(idx, header.code_shape).float()[:, :d]
            img = linear_image(codec, frame, latent, pinv, bias, gains)[:h, :w]
            rows.append(dict(measure(ref, img, 4.0), path="vq", setting=q, bytes=len(payload),
                             bpp=8.0 * len(payload) / (h * w)))
    return rows


def curves(rows: list) -> dict:
    out = {}
    for path in ("vq", "scalar"):
        points = []
        for setting in sorted({r["setting"] for r in rows if r["path"] == path}):
            sel = [r for r in rows if r["path"] == path and r["setting"] == setting]
            points.append(dict({k: float(np.mean([r[k] for r in sel])) for k in ("bpp", "psnr", "ms_ssim")},
                               setting=setting))
        out[path] = sorted(points, key=lambda p: p["bpp"])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=os.path.join(ROOT, "models", "default"))
    p.add_argument("--data", default=os.path.join(ROOT, "data", "corpus", "test_held.txt"),
                   help="an index file (one frame a line) or a folder of frames")
    p.add_argument("--steps", type=float, nargs="+", default=[0.16, 0.32, 0.64, 1.28],
                   help="steps of the scalar quantizer (latent units)")
    p.add_argument("--deadzone", type=float, default=0.2, help="rounding towards zero, in steps (0..0.5)")
    p.add_argument("--max-frames", type=int, default=0, help="at most N frames (0: all)")
    p.add_argument("--max-pixels", type=int, default=1_000_000, help="centre crop of each frame (as rawdiff eval)")
    p.add_argument("--json", help="also write the JSON results to this file")
    args = p.parse_args(argv)
    if any(s <= 0 for s in args.steps) or not 0 <= args.deadzone < 0.5:
        p.error("--steps must be positive and --deadzone in [0, 0.5)")
    import torch

    from rawdiff.codec import Codec
    from rawdiff.eval.frames import find_frames, load_frame
    from rawdiff.eval.rd import bd_rate

    codec = Codec.load(args.model)
    if not getattr(codec.embedder, "linear_paths", False) or not codec.colour_exact:
        p.error("model %s has no linear analysis of the white-balanced mosaic (linear_paths, out: linear)"
                % args.model)
    emb = codec.embedder
    pinv, bias = torch.linalg.pinv(emb.analysis_weight.double()).float(), emb.analysis_bias.float()
    paths = find_frames([args.data])
    paths = paths[: args.max_frames] if args.max_frames else paths
    rows = []
    for i, path in enumerate(paths):
        log("%d/%d %s" % (i + 1, len(paths), path))
        frame, ref, _ = load_frame(path, args.max_pixels)
        rows += [dict(r, frame=i) for r in frame_rows(codec, frame, ref, args.steps, args.deadzone, pinv, bias)]
    c = curves(rows)
    bd = {key: bd_rate(c["vq"], c["scalar"], key) for key in ("psnr", "ms_ssim")}
    out = {"machine": machine(), "model": codec.model_id, "frames": paths, "deadzone": args.deadzone,
           "curves": c, "bd_rate_scalar_vs_vq": bd}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(out, rows=rows), f, indent=2)
    print(json.dumps(out, indent=2))
    lines = ["%d frames, both rendered linearly (no network)" % len(paths), "",
             "| code | setting | bpp | PSNR (dB) | MS-SSIM |", "|---|---|---|---|---|"]
    for path in ("vq", "scalar"):
        for pt in c[path]:
            lines.append("| %s | %s | %.4f | %.2f | %.4f |"
                         % (path, pt["setting"], pt["bpp"], pt["psnr"], pt["ms_ssim"]))
    lines += ["", "BD-rate of the scalar code against the VQ codes: %s" % ", ".join(
        "%s %s" % (k, "—" if v is None else "%+.1f %%" % v) for k, v in bd.items())]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
