"""Where the fast path's error comes from: the codes or the decoder, coarse or fine, against
WebP at the same bytes.

    python benchmarks/quantizer_headroom.py [--model DIR] [--data data/corpus/test_held.txt]
                                            [--qualities 1 2 3 4 5 6] [--max-frames N]
                                            [--max-pixels N] [--sigma 4]
                                            [--mean-steps 0.125 0.0625 ...] [--json OUT]

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
  rawdiff stream (where its lowest setting gets there);
- ``linear, codes + means D``: the codes' latent with the plane means of each cell (R, G1,
  G2, B over its 4x4 samples of each plane) corrected towards the vehicle's: in a gamma
  domain (x^(1/2.2)), as luma and two colour differences (G1 - G2 is left as coded), the
  difference to what the codes give quantised with step D (2 D for the colour differences),
  rendered as ``linear, codes``. Its bytes add an estimate of what coding those integers
  costs: their empirical entropy in the frame, per channel, plus 12 bits for each value that
  occurs. What a scalar refinement of the coarse content, next to the vector stages, would
  buy (through the linear rendering only: the shipped decoder was trained on codes alone).

Besides PSNR and MS-SSIM, the error is split by a Gaussian low-pass (``--sigma`` pixels) into
its coarse part (``low rms``: what stays after blurring the difference; colour and shading)
and its fine part (``high rms``), in 8-bit levels; ``latent kept`` is the share of the
latent's variance (about its mean) that the codes of q carry (1 for the whole latent). Last, BD-rates (PSNR, MS-SSIM)
against WebP's sweep (its curve of means over the frames, as ``rawdiff eval``): of the fast
path, of ``linear, codes``, and of the best of ``linear, codes`` and every ``linear, codes +
means`` point (their Pareto front). Prints JSON, then markdown tables of the means over the
frames; progress goes to stderr.
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

from rawdiff.codec.cell_means import MEAN_TRANSFORM  # noqa: E402  (luma, R - G, B - G, G1 - G2)

PATHS = ("fast", "linear, codes", "decoder, whole latent", "linear, whole latent", "WebP, same bytes")
GAMMA = 2.2  # the refinement's gamma domain here (the codec's mean layers use 2: an exact sqrt)


def measure(ref: np.ndarray, img: np.ndarray, sigma: float) -> dict:
    """PSNR, MS-SSIM and the coarse and fine rms error (8-bit levels) of ``img`` against ``ref``."""
    import cv2

    from rawdiff import metrics

    t, r = metrics.to_tensor(img), metrics.to_tensor(ref)
    diff = img.astype(np.float32) - ref.astype(np.float32)
    low = cv2.GaussianBlur(diff, (0, 0), sigma)
    return {"psnr": metrics.psnr(t, r), "ms_ssim": float(metrics.ms_ssim(t, r)[0]),
            "low_rms": float(np.sqrt(np.mean(low ** 2))), "high_rms": float(np.sqrt(np.mean((diff - low) ** 2)))}


def linear_image(codec, frame, z, pinv, bias, gains) -> np.ndarray:
    """The latent ``z`` (1 x D x h x w) back to the frame's mosaic by the analysis'
    pseudo-inverse, rendered by the reference ISP with the white-balance gains and colour
    matrix the bitstream carries (no colour-statistics correction: the fast path has it)."""
    import torch
    import torch.nn.functional as F

    from rawdiff.raw.frame import planes_to_mosaic
    from rawdiff.raw.isp import render

    cells = torch.einsum("cd,bdhw->bchw", pinv, z - bias[None, :, None, None])
    planes = F.pixel_shuffle(cells, codec.factor // 2)[0].float().cpu().numpy()
    planes = planes[:, : frame.height // 2, : frame.width // 2]
    gains = np.asarray(gains, dtype=np.float32)
    planes = np.clip(planes / np.array([gains[0], gains[1], gains[1], gains[2]], np.float32)[:, None, None], 0, 1)
    black = frame.black_level_map()
    mosaic = planes_to_mosaic(planes, frame.cfa) * (frame.white_level - black) + black
    return render(frame.copy(mosaic=np.clip(np.round(mosaic), 0, 65535).astype(np.uint16),
                             wb_gains=np.asarray(gains, dtype=np.float64)))


def histogram_bits(levels: np.ndarray) -> float:
    """Bits to code integer ``levels`` with their own histogram: its empirical entropy, plus
    12 bits for each value that occurs (the table)."""
    _, counts = np.unique(levels, return_counts=True)
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum()) + 12.0 * len(counts)


class MeanRefinement:
    """The plane means of each cell as linear functions of the latent (through the analysis'
    pseudo-inverse), and the smallest change of a latent that sets them."""

    def __init__(self, analysis_weight, bias):
        import torch

        from rawdiff.models.embedder import cell_mean_functional

        self.pinv = torch.linalg.pinv(analysis_weight.double()).float()
        self.A = cell_mean_functional(analysis_weight.double())  # 4 x D
        self.A_inv = self.A.t() @ torch.linalg.inv(self.A @ self.A.t())  # D x 4: least-norm change
        self.bias = bias.double()
        self.T = torch.tensor(MEAN_TRANSFORM, dtype=torch.float64)
        self.T_inv = torch.linalg.inv(self.T)

    def means(self, z):
        import torch

        return torch.einsum("cd,bdhw->bchw", self.A, z.double() - self.bias[None, :, None, None])

    def gamma_channels(self, z):
        import torch

        return torch.einsum("kc,bchw->bkhw", self.T, self.means(z).clamp(0, 1) ** (1 / GAMMA))

    def refine(self, z_e, z_q, step: float):
        """``(latent, bits)``: ``z_q`` with its cells' means moved to the vehicle's ``z_e``'s,
        quantised with ``step`` (2 ``step`` for the colour differences), and the estimated bits."""
        import torch

        steps = torch.tensor([step, 2 * step, 2 * step, 0.0], dtype=torch.float64)[None, :, None, None]
        coded = self.gamma_channels(z_q)
        levels = torch.where(steps > 0, torch.round((self.gamma_channels(z_e) - coded) / steps.clamp_min(1e-12)),
                             torch.zeros_like(coded))
        bits = sum(histogram_bits(levels[0, c].cpu().numpy().astype(np.int64)) for c in range(3))
        target = torch.einsum("ck,bkhw->bchw", self.T_inv, coded + levels * steps).clamp(0, 1) ** GAMMA
        change = torch.einsum("dc,bchw->bdhw", self.A_inv, target - self.means(z_q))
        return (z_q.double() + change).float(), bits


def frame_rows(codec, frame, ref: np.ndarray, qualities, sigma: float, webp, mean_steps, refinement) -> list:
    import torch

    from rawdiff.eval.evaluate import at_bytes
    from rawdiff.models.embedder import pad_planes

    emb = codec.embedder
    D = emb.quantize.embed_dim
    pinv, bias = refinement.pinv, refinement.bias.float()
    gains = codec.render_parameters(frame)["wb_gains"]  # the bitstream's, once a frame
    h, w = ref.shape[:2]
    rows = []
    with torch.inference_mode():
        padded, _ = pad_planes(torch.from_numpy(codec.model_planes(frame))[None].to(codec.device), emb.plane_multiple)
        z_e = emb.encode(padded).float()
        variance = float((z_e - z_e.mean((2, 3), keepdim=True)).pow(2).sum())
        whole_linear = linear_image(codec, frame, z_e, pinv, bias, gains)[:h, :w]
        for q in qualities:
            payload = codec.compress(frame, quality=q)
            header, codes = codec.parse(payload)
            idx = [torch.from_numpy(np.ascontiguousarray(c, dtype=np.int64))[None].to(codec.device) for c in codes]
            z_q = emb.lookup_codes(idx, header.code_shape).float()
            kept = 1.0 - float((z_e - z_q[:, :D]).pow(2).sum()) / variance

            def add(path: str, img: np.ndarray, q: int = q, nbytes: float = len(payload), kept=kept) -> None:
                rows.append(dict(measure(ref, img[:h, :w], sigma), path=path, quality=q, bytes=nbytes,
                                 bpp=8.0 * nbytes / (h * w), latent_kept=kept))

            add("fast", codec.decompress(payload))
            add("linear, codes", linear_image(codec, frame, z_q[:, :D], pinv, bias, gains))
            whole = torch.cat([z_e, z_q[:, D:]], dim=1)  # the quality channel of q
            with codec._autocast():  # as the codec decodes
                out = emb.decode(whole)[0].clamp(0, 1).float().cpu().numpy().transpose(1, 2, 0)
            add("decoder, whole latent", codec.render(np.ascontiguousarray(out), header), kept=1.0)
            add("linear, whole latent", whole_linear, kept=1.0)
            if webp is not None:
                coded, reached = at_bytes(webp, ref, len(payload))
                if reached:
                    add("WebP, same bytes", coded.decoded, nbytes=coded.nbytes, kept=None)
            for step in mean_steps:
                z_m, bits = refinement.refine(z_e, z_q[:, :D], step)
                add("linear, codes + means %g" % step, linear_image(codec, frame, z_m, pinv, bias, gains),
                    nbytes=len(payload) + bits / 8.0)
    return rows


def webp_rows(webp, ref: np.ndarray) -> list:
    """WebP's sweep of one reference image: rate (bits per pixel), PSNR and MS-SSIM a setting."""
    from rawdiff import metrics

    r = metrics.to_tensor(ref)
    rows = []
    for e in webp.sweep(ref, list(webp.settings)):
        t = metrics.to_tensor(e.decoded)
        rows.append({"setting": e.setting, "bpp": 8.0 * e.nbytes / (ref.shape[0] * ref.shape[1]),
                     "psnr": metrics.psnr(t, r), "ms_ssim": float(metrics.ms_ssim(t, r)[0])})
    return rows


def bd_rates(rows: list, webp: list) -> list:
    """BD-rates against WebP's curve of means: of the fast path, of ``linear, codes``, and of
    the Pareto front of ``linear, codes`` and its mean refinements."""
    from rawdiff.eval.rd import bd_rate

    def curve(sel: list, key) -> list:
        points = {}
        for r in sel:
            points.setdefault(key(r), []).append(r)
        return sorted(({"bpp": float(np.mean([r["bpp"] for r in v])), "psnr": float(np.mean([r["psnr"] for r in v])),
                        "ms_ssim": float(np.mean([r["ms_ssim"] for r in v]))} for v in points.values()),
                      key=lambda p: p["bpp"])

    anchor = curve(webp, lambda r: r["setting"])
    curves = {"fast": curve([r for r in rows if r["path"] == "fast"], lambda r: r["quality"]),
              "linear, codes": curve([r for r in rows if r["path"] == "linear, codes"], lambda r: r["quality"])}
    refined = curve([r for r in rows if r["path"].startswith("linear, codes")], lambda r: (r["path"], r["quality"]))
    out = []
    for name, c in list(curves.items()) + [("linear, codes and mean refinements (front)", refined)]:
        row = {"curve": name}
        for key in ("psnr", "ms_ssim"):
            row[key] = bd_rate(anchor, c, key)  # on each curve's Pareto front
        out.append(row)
    return out


def summary(rows: list, frames: int) -> list:
    out = []
    keys = ("psnr", "ms_ssim", "low_rms", "high_rms", "latent_kept", "bytes")
    for q in sorted({r["quality"] for r in rows}):
        for p in dict.fromkeys(PATHS + tuple(r["path"] for r in rows)):
            sel = [r for r in rows if r["quality"] == q and r["path"] == p]
            if sel:
                out.append(dict({k: None if any(r[k] is None for r in sel) else float(np.mean([r[k] for r in sel]))
                                 for k in keys}, quality=q, path=p,
                                frames="%d/%d" % (len(sel), frames)))
    return out


def markdown(table: list, frames: int, info: dict, sigma: float, bd: list) -> str:
    lines = ["%d frames; %s, %s cores; coarse/fine split by a Gaussian of sigma %g px" % (
        frames, info["cpu"], info["cores"], sigma), "",
        "| quality | path | frames | bytes | latent kept | PSNR (dB) | MS-SSIM | low rms | high rms |",
        "|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append("| %d | %s | %s | %.0f | %s | %.2f | %.4f | %.2f | %.2f |" % (
            r["quality"], r["path"], r["frames"], r["bytes"],
            "—" if r["latent_kept"] is None else "%.3f" % r["latent_kept"], r["psnr"], r["ms_ssim"],
            r["low_rms"], r["high_rms"]))
    lines += ["", "| BD-rate against WebP | PSNR | MS-SSIM |", "|---|---|---|"]
    for r in bd:
        lines.append("| %s | %s | %s |" % (r["curve"], *("—" if r[k] is None else "%+.1f %%" % r[k]
                                                           for k in ("psnr", "ms_ssim"))))
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
    p.add_argument("--mean-steps", type=float, nargs="*", default=[0.125, 0.0625, 0.03125, 0.015625],
                   help="steps of the plane-mean refinement (gamma domain; none: skip it)")
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
    if any(not 0 < s < 1 for s in args.mean_steps):
        p.error("--mean-steps must be in (0, 1)")
    webp = baselines[0] if baselines else None
    # the analysis' pseudo-inverse and the mean functionals, once for the model
    emb = codec.embedder
    refinement = MeanRefinement(emb.analysis_weight, emb.analysis_bias.float())
    rows, sweeps = [], []
    for i, path in enumerate(paths):
        log("%d/%d %s" % (i + 1, len(paths), path))
        frame, ref, _ = load_frame(path, args.max_pixels)
        rows += [dict(r, frame=i) for r in frame_rows(codec, frame, ref, qualities, args.sigma, webp,
                                                      args.mean_steps, refinement)]
        if webp is not None:
            sweeps += [dict(r, frame=i) for r in webp_rows(webp, ref)]
    info = dict(machine(), device=str(codec.device), threads=torch.get_num_threads())
    table = summary(rows, len(paths))
    bd = bd_rates(rows, sweeps) if sweeps else []
    out = {"machine": info, "model": codec.model_id, "frames": paths, "sigma": args.sigma, "summary": table,
           "bd_rates": bd, "rows": rows, "webp": sweeps}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    print(json.dumps({"machine": info, "model": codec.model_id, "summary": table, "bd_rates": bd}, indent=2))
    print(markdown(table, len(paths), info, args.sigma, bd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
