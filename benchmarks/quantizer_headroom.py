"""Where the fast path's error comes from: the codes or the decoder, coarse or fine, against
WebP at the same bytes.

    python benchmarks/quantizer_headroom.py [--model DIR] [--data data/corpus/test_held.txt]
                                            [--qualities 1 2 3 4 5 6] [--max-frames N]
                                            [--max-pixels N] [--sigma 4] [--json OUT]

For a model with linear paths (a fixed linear analysis of each cell's mosaic samples, as the
default model has), per frame and operating point q, against the reference image:

- ``fast``: what the decoder node shows (``Codec.decompress``);
- ``linear, codes``: the codes' latent taken back to mosaic samples by the analysis' pseudo-
  inverse and rendered by the reference ISP (its demosaic): the codes with no decoder network;
- ``decoder, whole latent``: the vehicle's unquantised latent through the decoder, told q:
  what the decoder makes of a latent that lost nothing;
- ``linear, whole latent``: that latent back to mosaic samples and through the ISP: the
  analysis' own ceiling;
- ``WebP, same bytes``: cwebp on the reference image at the largest file no larger than the
  rawdiff stream (where its lowest setting gets there).

Besides PSNR and MS-SSIM, the error is split by a Gaussian low-pass (``--sigma`` pixels) into
its coarse part (``low rms``: what stays after blurring the difference; colour and shading)
and its fine part (``high rms``), in 8-bit levels; ``latent kept`` is the share of the
latent's variance (about its mean) that the codes of q carry. Prints JSON, then a markdown
table of the means over the frames; progress goes to stderr.
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

PATHS = ("fast", "linear, codes", "decoder, whole latent", "linear, whole latent", "WebP, same bytes")


def measure(ref: np.ndarray, img: np.ndarray, sigma: float) -> dict:
    """PSNR, MS-SSIM and the coarse and fine rms error (8-bit levels) of ``img`` against ``ref``."""
    import cv2

    from rawdiff import metrics

    t, r = metrics.to_tensor(img), metrics.to_tensor(ref)
    diff = img.astype(np.float32) - ref.astype(np.float32)
    low = cv2.GaussianBlur(diff, (0, 0), sigma)
    return {"psnr": metrics.psnr(t, r), "ms_ssim": float(metrics.ms_ssim(t, r)[0]),
            "low_rms": float(np.sqrt(np.mean(low ** 2))), "high_rms": float(np.sqrt(np.mean((diff - low) ** 2)))}


def linear_image(codec, frame, z, pinv, bias) -> np.ndarray:
    """The latent ``z`` (1 x D x h x w) back to the frame's mosaic by the analysis'
    pseudo-inverse, rendered by the reference ISP with the frame's parameters."""
    import torch
    import torch.nn.functional as F

    from rawdiff.raw.frame import planes_to_mosaic
    from rawdiff.raw.isp import render, render_parameters

    cells = torch.einsum("cd,bdhw->bchw", pinv, z - bias[None, :, None, None])
    planes = F.pixel_shuffle(cells, codec.factor // 2)[0].float().cpu().numpy()
    planes = planes[:, : frame.height // 2, : frame.width // 2]
    gains = np.asarray(render_parameters(frame)["wb_gains"], dtype=np.float32)
    planes = np.clip(planes / np.array([gains[0], gains[1], gains[1], gains[2]], np.float32)[:, None, None], 0, 1)
    black = frame.black_level_map()
    mosaic = planes_to_mosaic(planes, frame.cfa) * (frame.white_level - black) + black
    return render(frame.copy(mosaic=np.clip(np.round(mosaic), 0, 65535).astype(np.uint16)))


def frame_rows(codec, frame, ref: np.ndarray, qualities, sigma: float, webp) -> list:
    import torch

    from rawdiff.eval.evaluate import at_bytes
    from rawdiff.models.embedder import pad_planes

    emb = codec.embedder
    D = emb.quantize.embed_dim
    weight = emb.analysis_weight.double()
    pinv, bias = torch.linalg.pinv(weight).float(), emb.analysis_bias.float()
    h, w = ref.shape[:2]
    rows = []
    with torch.inference_mode():
        padded, _ = pad_planes(torch.from_numpy(codec.model_planes(frame))[None].to(codec.device), emb.plane_multiple)
        z_e = emb.encode(padded).float()
        variance = float((z_e - z_e.mean((2, 3), keepdim=True)).pow(2).sum())
        whole_linear = linear_image(codec, frame, z_e, pinv, bias)[:h, :w]
        for q in qualities:
            payload = codec.compress(frame, quality=q)
            header, codes = codec.parse(payload)
            idx = [torch.from_numpy(np.ascontiguousarray(c, dtype=np.int64))[None].to(codec.device) for c in codes]
            z_q = emb.lookup_codes(idx, header.code_shape).float()
            kept = 1.0 - float((z_e - z_q[:, :D]).pow(2).sum()) / variance

            def add(path: str, img: np.ndarray, q: int = q, nbytes: int = len(payload), kept: float = kept) -> None:
                rows.append(dict(measure(ref, img[:h, :w], sigma), path=path, quality=q, bytes=nbytes,
                                 latent_kept=kept))

            add("fast", codec.decompress(payload))
            add("linear, codes", linear_image(codec, frame, z_q[:, :D], pinv, bias))
            whole = torch.cat([z_e, z_q[:, D:]], dim=1)  # the quality channel of q
            out = emb.decode(whole)[0].clamp(0, 1).float().cpu().numpy().transpose(1, 2, 0)
            add("decoder, whole latent", codec.render(np.ascontiguousarray(out), header))
            add("linear, whole latent", whole_linear)
            if webp is not None:
                coded, reached = at_bytes(webp, ref, len(payload))
                if reached:
                    add("WebP, same bytes", coded.decoded, nbytes=coded.nbytes)
    return rows


def summary(rows: list, frames: int) -> list:
    out = []
    keys = ("psnr", "ms_ssim", "low_rms", "high_rms", "latent_kept", "bytes")
    for q in sorted({r["quality"] for r in rows}):
        for p in PATHS:
            sel = [r for r in rows if r["quality"] == q and r["path"] == p]
            if sel:
                out.append(dict({k: float(np.mean([r[k] for r in sel])) for k in keys}, quality=q, path=p,
                                frames="%d/%d" % (len(sel), frames)))
    return out


def markdown(table: list, frames: int, info: dict, sigma: float) -> str:
    lines = ["%d frames; %s, %s cores; coarse/fine split by a Gaussian of sigma %g px" % (
        frames, info["cpu"], info["cores"], sigma), "",
        "| quality | path | frames | bytes | latent kept | PSNR (dB) | MS-SSIM | low rms | high rms |",
        "|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append("| %d | %s | %s | %.0f | %.3f | %.2f | %.4f | %.2f | %.2f |" % (
            r["quality"], r["path"], r["frames"], r["bytes"], r["latent_kept"], r["psnr"], r["ms_ssim"],
            r["low_rms"], r["high_rms"]))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=os.path.join(ROOT, "models", "default"))
    p.add_argument("--data", default=os.path.join(ROOT, "data", "corpus", "test_held.txt"),
                   help="an index file (one frame a line) or a folder of frames")
    p.add_argument("--qualities", type=int, nargs="+", help="operating points (default: all)")
    p.add_argument("--max-frames", type=int, default=0, help="at most N frames (0: all)")
    p.add_argument("--max-pixels", type=int, default=1_000_000, help="centre crop of each frame (as rawdiff eval)")
    p.add_argument("--sigma", type=float, default=4.0, help="the low-pass's Gaussian, in pixels")
    p.add_argument("--json", help="also write the JSON results to this file")
    args = p.parse_args(argv)
    import torch

    from rawdiff.codec import Codec
    from rawdiff.eval.baselines import get_baselines
    from rawdiff.eval.frames import find_frames, load_frame

    codec = Codec.load(args.model)
    if not getattr(codec.embedder, "linear_paths", False) or not codec.colour_exact:
        p.error("model %s has no linear analysis of the white-balanced mosaic (linear_paths, out: linear)"
                % args.model)
    qualities = args.qualities or list(range(1, codec.qualities + 1))
    bad = [q for q in qualities if not 1 <= q <= codec.qualities]
    if bad:
        p.error("qualities %s outside 1..%d" % (bad, codec.qualities))
    baselines, notes = get_baselines(["webp"])
    for note in notes:
        log(note)
    paths = find_frames([args.data])
    paths = paths[: args.max_frames] if args.max_frames else paths
    rows = []
    for i, path in enumerate(paths):
        log("%d/%d %s" % (i + 1, len(paths), path))
        frame, ref, _ = load_frame(path, args.max_pixels)
        rows += [dict(r, frame=i) for r in frame_rows(codec, frame, ref, qualities, args.sigma,
                                                      baselines[0] if baselines else None)]
    info = dict(machine(), device=str(codec.device), threads=torch.get_num_threads())
    table = summary(rows, len(paths))
    out = {"machine": info, "model": codec.model_id, "frames": paths, "sigma": args.sigma, "summary": table,
           "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    print(json.dumps({"machine": info, "model": codec.model_id, "summary": table}, indent=2))
    print(markdown(table, len(paths), info, args.sigma))
    return 0


if __name__ == "__main__":
    sys.exit(main())
