"""The coarse stages' code search against their true error: what it does to the shipped model.

    python benchmarks/coarse_search.py [--model models/default] [--data data/corpus/val.txt]
        [--max-frames 8] [--max-pixels 250000] [--sweeps 2] [--json OUT]

Stages 1 to 3 of the shipped quantizer code a grid twice as coarse as the latent's: each
searches the residual averaged over its 2x2 cells (``rawdiff.models.quantize.pool_to``), but
its codeword reaches the latent spread bilinearly (``expand_to``), each over 4x4 cells that
overlap its neighbours'. So the code of least pooled distance is not the one of least error.
The variant here refines each coarse stage's codes before the next stage searches:
``--sweeps`` passes of coordinate descent (iterated conditional modes) over the four
interleaved classes of positions whose spreads do not overlap, each position taking the
code of least ``W ||c||^2 - 2 c . T + 4 cost(c)`` with T the residual its spread covers,
weighted as the spread weighs it (the adjoint of the bilinear spread), W the sum of the
squared weights and cost the code's learnt cost (times 4: the pooled search's rate weight
in the units of the fine grid). The finer stages search as shipped.

For each frame (centre crops of ``--max-pixels``) and quality: the latent's squared error
left by the codes (mean over the latent), the real stream's bytes (the adaptive range coder
on the codes), and PSNR and MS-SSIM of the fast decode against the reference, for the
shipped search and the refined one; then the BD-rate of the refined search against the
shipped one on PSNR and MS-SSIM. The decoder, the index prior and everything else are the
shipped model's. Prints JSON, then a markdown table; progress goes to stderr.
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


def refine_stage(vq, residual, idx, scale: int, shape, sweeps: int):
    """``idx`` (B x h x w, a coarse stage's codes) refined against ``residual`` (B x D x H x W,
    the latent grid's) by ``sweeps`` passes of coordinate descent on the spread's true error."""
    import torch

    from rawdiff.models.quantize import expand_to

    codes = vq.codebook()
    norms = codes.pow(2).sum(1)
    cost = float(scale * scale) * vq.code_cost.float()
    b, h, w = idx.shape
    rows, cols = torch.arange(h)[:, None] % 2, torch.arange(w)[None, :] % 2
    parities = []  # per parity of the code grid: its mask and the spread's squared weights (autograd), once
    for pr in (0, 1):
        for pc in (0, 1):
            mask = ((rows == pr) & (cols == pc)).to(residual.dtype)[None, None]
            ones = mask.clone().requires_grad_(True)
            with torch.enable_grad():
                (0.5 * expand_to(ones, scale, shape).pow(2).sum()).backward()
            parities.append((mask, ones.grad.expand(b, 1, h, w).permute(0, 2, 3, 1).reshape(-1, 1)))
    for _ in range(sweeps):
        for mask, weight in parities:
            q = vq.lookup(idx)
            rest = (residual - expand_to(q, scale, shape) + expand_to(q * mask, scale, shape)).detach()
            x = torch.zeros(b, residual.shape[1], h, w, requires_grad=True)
            with torch.enable_grad():  # the spread's adjoint, by autograd
                (expand_to(x, scale, shape) * rest).sum().backward()
            target = x.grad.permute(0, 2, 3, 1).reshape(-1, residual.shape[1])
            best = (weight * norms[None, :] - 2.0 * target @ codes.t() + cost[None, :]).argmin(1).reshape(b, h, w)
            idx = torch.where(mask[0, 0].bool()[None].expand(b, h, w), best, idx)
    return idx


def search_codes(quantizer, z, sweeps: int):
    """The codes of every stage of latent ``z``: the shipped search, each coarse stage refined."""
    from rawdiff.models.quantize import expand_to, pool_to

    x = quantizer._target(z)
    shape = tuple(x.shape[-2:])
    residual, out = x, []
    for k, (scale, _) in enumerate(quantizer.stages):
        vq = quantizer.codebooks[k]
        idx = vq.encode_indices(pool_to(residual, scale))
        if scale > 1 and sweeps:
            idx = refine_stage(vq, residual, idx, scale, shape, sweeps)
        residual = residual - expand_to(vq.lookup(idx), scale, shape)
        out.append(idx)
    return out


def latent_error(quantizer, z, codes) -> list:
    """The latent's mean squared error left at each quality."""
    from rawdiff.models.quantize import expand_to

    x, acc, out = quantizer._target(z), 0.0, []
    for k, idx in enumerate(codes):
        acc = acc + expand_to(quantizer.codebooks[k].lookup(idx), quantizer.stages[k][0], tuple(x.shape[-2:]))
        out.append(float((x - acc).pow(2).mean()))
    return out


def main(argv=None) -> int:
    import torch

    from rawdiff import metrics
    from rawdiff.codec import Codec
    from rawdiff.codec.bitstream import truncate
    from rawdiff.eval import rd
    from rawdiff.eval.frames import find_frames, load_frame
    from rawdiff.models.embedder import pad_planes

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=os.path.join(ROOT, "models", "default"))
    p.add_argument("--data", default=os.path.join(ROOT, "data", "corpus", "val.txt"))
    p.add_argument("--max-frames", type=int, default=8)
    p.add_argument("--max-pixels", type=int, default=250000)
    p.add_argument("--sweeps", type=int, default=2)
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    codec = Codec.load(args.model, backend="torch")
    emb = codec.embedder
    if not emb.staged or not any(s > 1 for s, _ in emb.quantize.stages):
        p.error("model %s has no coarse quantizer stage" % args.model)
    chosen = {}

    def encode_planes(planes, quality=None):  # what compress calls: the variant's codes
        x, _ = pad_planes(torch.from_numpy(np.ascontiguousarray(planes))[None], codec.plane_multiple)
        with torch.no_grad():
            z = emb.encode(x)
            codes = search_codes(emb.quantize, z, chosen["sweeps"])
            chosen["error"] = latent_error(emb.quantize, z, codes)
        return [g[0].numpy().astype(np.int64) for g in codes[: quality or len(codes)]]

    codec.encode_planes = encode_planes
    variants = {"shipped": 0, "refined": args.sweeps}
    rows = []
    for path in find_frames([args.data])[: args.max_frames]:
        frame, ref, _ = load_frame(path, args.max_pixels)
        h, w = ref.shape[:2]
        r = metrics.to_tensor(ref)
        for name, sweeps in variants.items():
            chosen["sweeps"] = sweeps
            top = codec.compress(frame, quality=codec.qualities)
            for q in range(1, codec.qualities + 1):
                data = top if q == codec.qualities else truncate(top, q)
                t = metrics.to_tensor(codec.decompress(data)[:h, :w])
                rows.append({"frame": os.path.basename(os.path.dirname(path)), "variant": name, "quality": q,
                             "bytes": len(data), "bpp": 8.0 * len(data) / (h * w), "latent_mse": chosen["error"][q - 1],
                             "psnr": metrics.psnr(t, r), "ms_ssim": float(metrics.ms_ssim(t, r)[0])})
        log("%s: done" % path)
    curves = {name: [{k: float(np.mean([x[k] for x in rows if x["variant"] == name and x["quality"] == q]))
                      for k in ("bpp", "latent_mse", "psnr", "ms_ssim")} for q in range(1, codec.qualities + 1)]
              for name in variants}
    result = {"machine": machine(), "model": args.model, "frames": len(rows) // (2 * codec.qualities),
              "max_pixels": args.max_pixels, "sweeps": args.sweeps, "curves": curves,
              "bd_rate": {key: rd.bd_rate(curves["shipped"], curves["refined"], key) for key in ("psnr", "ms_ssim")},
              "rows": rows}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print("\n| quality | latent error shipped / refined | bpp shipped / refined | PSNR (dB) | MS-SSIM |")
    print("|---|---|---|---|---|")
    for q, (a, b) in enumerate(zip(curves["shipped"], curves["refined"]), 1):
        print("| %d | %.5f / %.5f | %.4f / %.4f | %.2f / %.2f | %.4f / %.4f |" % (
            q, a["latent_mse"], b["latent_mse"], a["bpp"], b["bpp"], a["psnr"], b["psnr"], a["ms_ssim"], b["ms_ssim"]))
    print("\nBD-rate of the refined search against the shipped one: PSNR %+.1f %%, MS-SSIM %+.1f %%"
          % (result["bd_rate"]["psnr"], result["bd_rate"]["ms_ssim"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
