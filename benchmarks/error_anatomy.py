"""Which part of the fast path's error each figure weighs: luma or colour, fine or coarse.

    python benchmarks/error_anatomy.py [--model DIR] [--data data/corpus/test_held.txt]
                                       [--qualities 4 6] [--sigma 4] [--max-frames N]
                                       [--max-pixels N] [--no-butteraugli] [--json OUT]

Per frame and quality, the fast decode with one part of it replaced by the reference's, each
measured against the reference (PSNR, MS-SSIM, butteraugli max-norm and 3-norm, as ``rawdiff
eval``). What a replacement gains is what the error in that part costs on that figure:

- ``reference luma``: the reference's luma (BT.601), the decode's colour (channels minus luma);
- ``reference colour``: the decode's luma, the reference's colour;
- ``reference colour above s``: the decode's colour low-passed (Gaussian, sigma s pixels) plus
  the reference's colour detail finer than that, for s = 1, 2 and ``--sigma``;
- ``reference coarse``: the reference low-passed at ``--sigma`` plus the decode's detail;
- ``reference fine``: the decode low-passed plus the reference's detail finer than ``--sigma``.

The corpus' references are the reference ISP's renderings of the RAW frames, sensor noise and
demosaicking included, so their finest colour is largely noise and false colour: a part that
costs much here is not always one worth coding. Progress goes to stderr; prints a markdown
table of the means over the frames (and JSON with ``--json``).
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


def variants(decoded, reference, sigma: float) -> dict:
    """The decode with each part replaced by the reference's (1 x 3 x H x W tensors in [0, 1])."""
    from rawdiff.models.texture import gaussian_blur, luma

    def colour(img):
        return img - luma(img)

    low = gaussian_blur
    out = {"fast": decoded,
           "reference luma": luma(reference) + colour(decoded),
           "reference colour": luma(decoded) + colour(reference)}
    for s in sorted({1.0, 2.0, float(sigma)}):
        out["reference colour above %g" % s] = decoded - colour(decoded) + low(colour(decoded), s) \
            + colour(reference) - low(colour(reference), s)
    out["reference coarse"] = decoded - low(decoded, sigma) + low(reference, sigma)
    out["reference fine"] = low(decoded, sigma) + reference - low(reference, sigma)
    return {k: v.clamp(0, 1) for k, v in out.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=os.path.join(ROOT, "models", "default"))
    p.add_argument("--data", default=os.path.join(ROOT, "data", "corpus", "test_held.txt"))
    p.add_argument("--qualities", type=int, nargs="+", default=[4, 6])
    p.add_argument("--sigma", type=float, default=4.0, help="the scale between fine and coarse (pixels)")
    p.add_argument("--max-frames", type=int)
    p.add_argument("--max-pixels", type=int, help="centre crop of each frame (as rawdiff eval)")
    p.add_argument("--no-butteraugli", action="store_true")
    p.add_argument("--json", help="also write the JSON results to this file")
    args = p.parse_args(argv)

    from rawdiff import metrics
    from rawdiff.codec import Codec, truncate
    from rawdiff.eval.frames import find_frames, load_frame

    codec = Codec.load(args.model)
    bad = [q for q in args.qualities if not 1 <= q <= codec.qualities]
    if bad:
        p.error("qualities %s outside 1..%d" % (bad, codec.qualities))
    paths = find_frames([args.data])[: args.max_frames]
    rows = []
    for n, path in enumerate(paths):
        frame, ref, _ = load_frame(path, args.max_pixels)
        ref_t = metrics.to_tensor(ref)
        stream = codec.compress(frame, quality=max(args.qualities))
        for q in args.qualities:
            decoded = metrics.to_tensor(codec.decompress(truncate(stream, q)))
            for name, img in variants(decoded, ref_t, args.sigma).items():
                u8 = metrics.to_uint8(img)
                t = metrics.to_tensor(u8)
                row = {"frame": path, "quality": q, "variant": name, "psnr": metrics.psnr(t, ref_t),
                       "ms_ssim": float(metrics.ms_ssim(t, ref_t)[0])}
                if not args.no_butteraugli:
                    row["butteraugli"], row["butteraugli_3norm"] = metrics.butteraugli(ref, u8)
                rows.append(row)
        log("%d/%d %s" % (n + 1, len(paths), path))
    keys = ["psnr", "ms_ssim"] + ([] if args.no_butteraugli else ["butteraugli", "butteraugli_3norm"])
    names = list(dict.fromkeys(r["variant"] for r in rows))
    means = {(q, v): {k: float(np.mean([r[k] for r in rows if r["quality"] == q and r["variant"] == v]))
                      for k in keys} for q in args.qualities for v in names}
    result = {"machine": machine(), "model": args.model, "frames": len(paths), "sigma": args.sigma,
              "means": [dict(quality=q, variant=v, **m) for (q, v), m in means.items()], "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print("| quality | variant | PSNR (dB) | MS-SSIM |" + ("" if args.no_butteraugli else " butteraugli | 3-norm |"))
    print("|---|---|---|---|" + ("" if args.no_butteraugli else "---|---|"))
    for (q, v), m in means.items():
        cells = ["%.2f" % m["psnr"], "%.4f" % m["ms_ssim"]]
        if not args.no_butteraugli:
            cells += ["%.2f" % m["butteraugli"], "%.2f" % m["butteraugli_3norm"]]
        print("| %d | %s | %s |" % (q, v, " | ".join(cells)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
