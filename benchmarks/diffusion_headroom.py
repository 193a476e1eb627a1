"""Headroom of the diffusion decoder: what its sampler gives against what an exact sample of
the dropped residual would give, at the low operating points.

    python benchmarks/diffusion_headroom.py [--model DIR] [--data data/corpus/val.txt]
                                            [--qualities 1 2] [--realism R ...] [--max-frames N]
                                            [--max-pixels N] [--steps 4] [--json OUT]

The diffusion decoder draws the residual between the latent the vehicle computed and what the
codes of quality q sent, and the embedder's decoder renders codes plus residual, told the
operating point q (the model's ``decode_at: coded``). Per frame and quality this measures,
against the reference image (PSNR, MS-SSIM, and the sliced Wasserstein distance of
``rawdiff eval``):

- ``fast``: the codes alone;
- ``diffusion R``: the sampler at each latent ``--realism`` (default: the diffusion
  decoder's, and 1), without a texture stage's texture;
- ``oracle, decoded at q``: the *true* residual (the vehicle's own latent), rendered as the
  diffusion decoder renders its samples: what a perfect sampler would give;
- ``oracle, decoded at the finest``: the true latent rendered by the decoder of the finest
  operating point: what the latent could give with a renderer made for whole latents;
- ``sample 1, decoded at the finest``: the sampler's whole draw, so rendered.

The gap between ``diffusion`` and the oracles is the sampler's (its network and training); the
gap between the two oracles is the renderer's. Prints JSON, then a markdown table (means over
the frames; SWD x1000 and its change against the fast path); progress goes to stderr.
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


def measure(meter_ref, img: np.ndarray) -> dict:
    """PSNR, MS-SSIM and SWD (x1000, as rawdiff eval) of one decoded image against the reference of ``meter_ref``."""
    from rawdiff import metrics

    swd_ref, ref_t = meter_ref
    t = metrics.to_tensor(img)
    return {"psnr": metrics.psnr(t, ref_t), "ms_ssim": float(metrics.ms_ssim(t, ref_t)[0]),
            "swd": swd_ref.distance(t)}


def frame_rows(codec, frame, ref: np.ndarray, qualities, realisms, steps: int) -> list:
    import torch

    from rawdiff import metrics
    from rawdiff.models.embedder import pad_planes

    emb, dd = codec.embedder, codec.diffusion()
    ref_t = metrics.to_tensor(ref)
    meter_ref = (metrics.SlicedWassersteinReference(ref_t), ref_t)
    S, D = codec.qualities, emb.quantize.embed_dim
    planes = torch.from_numpy(codec.model_planes(frame))[None].to(codec.device)
    rows = []
    with torch.inference_mode():
        padded, _ = pad_planes(planes, emb.plane_multiple)
        z_e = emb.encode(padded)
        for q in qualities:
            payload = codec.compress(frame, quality=q)
            header, codes = codec.parse(payload)

            def rendered(z: torch.Tensor, level: int, header=header) -> np.ndarray:
                z = torch.cat([z[:, :D], torch.full_like(z[:, :1], level / S)], dim=1)
                out = emb.decode(z)[0].clamp(0, 1).float().cpu().numpy().transpose(1, 2, 0)
                return codec.render(np.ascontiguousarray(out), header)

            def add(path: str, img: np.ndarray, q: int = q) -> None:
                rows.append(dict(measure(meter_ref, img), path=path, quality=q))

            add("fast", codec.decompress(payload))
            for r in realisms:
                add("diffusion %g" % r, codec.decompress(payload, mode="diffusion", steps=steps, seed=0, realism=r,
                                                         texture=False))
            add("oracle, decoded at q", rendered(z_e, q))
            add("oracle, decoded at the finest", rendered(z_e, S))
            idx = [torch.from_numpy(np.ascontiguousarray(c, dtype=np.int64))[None].to(codec.device) for c in codes]
            z_q = emb.lookup_codes(idx, header.code_shape)
            cond = emb.condition_indices(idx, tuple(z_q.shape[-2:]))
            drawn = dd.denoiser.sample(cond, z_q, steps, torch.Generator().manual_seed(0), sampler=dd.sampler,
                                       guidance_scale=dd.guidance_scale, eta=dd.eta, realism=1.0, quality=q)
            add("sample 1, decoded at the finest", rendered(drawn, S))
    return rows


def summary(rows: list) -> list:
    out = []
    for q in sorted({r["quality"] for r in rows}):
        paths = list(dict.fromkeys(r["path"] for r in rows if r["quality"] == q))
        means = {p: {k: float(np.mean([r[k] for r in rows if r["quality"] == q and r["path"] == p]))
                     for k in ("psnr", "ms_ssim", "swd")} for p in paths}
        fast = means["fast"]
        for p in paths:
            m = means[p]
            out.append(dict(m, quality=q, path=p, swd_change=m["swd"] / fast["swd"] - 1.0,
                            ms_ssim_change=m["ms_ssim"] - fast["ms_ssim"]))
    return out


def markdown(table: list, frames: int, info: dict) -> str:
    lines = ["%d frames; %s, %s cores" % (frames, info["cpu"], info["cores"]), "",
             "| quality | path | PSNR (dB) | MS-SSIM | SWD x1000 | SWD vs fast | MS-SSIM vs fast |",
             "|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append("| %d | %s | %.2f | %.3f | %.0f | %+.0f %% | %+.3f |" % (
            r["quality"], r["path"], r["psnr"], r["ms_ssim"], r["swd"], 100 * r["swd_change"], r["ms_ssim_change"]))
    return "\n".join(lines)


def common_arguments(p: argparse.ArgumentParser) -> None:
    """The options the headroom benchmarks share: model, frames, qualities, steps, JSON output."""
    p.add_argument("--model", default=os.path.join(ROOT, "models", "default"))
    p.add_argument("--data", default=os.path.join(ROOT, "data", "corpus", "val.txt"),
                   help="an index file (one frame a line) or a folder of frames")
    p.add_argument("--qualities", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--max-frames", type=int, default=8)
    p.add_argument("--max-pixels", type=int, default=700_000, help="centre crop of each frame (as rawdiff eval)")
    p.add_argument("--json", help="also write the JSON results to this file")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common_arguments(p)
    p.add_argument("--realism", type=float, nargs="*", help="realism values (default: the model's, and 1)")
    args = p.parse_args(argv)

    from rawdiff.codec import Codec
    from rawdiff.eval.frames import find_frames, load_frame

    codec = Codec.load(args.model)
    if not os.path.isfile(os.path.join(args.model, "diffusion.safetensors")):
        p.error("model %s has no diffusion decoder" % args.model)
    bad = [q for q in args.qualities if not 1 <= q <= codec.qualities]
    if bad:
        p.error("qualities %s outside 1..%d" % (bad, codec.qualities))
    realisms = args.realism if args.realism is not None else sorted({codec.diffusion().realism, 1.0})
    paths = find_frames([args.data])[: args.max_frames]
    rows = []
    for i, path in enumerate(paths):
        log("%d/%d %s" % (i + 1, len(paths), path))
        frame, ref, _ = load_frame(path, args.max_pixels)
        rows += [dict(r, frame=i) for r in frame_rows(codec, frame, ref, args.qualities, realisms, args.steps)]
    return report(codec, rows, paths, args.json, steps=args.steps)


def report(codec, rows: list, paths: list, json_path, **extra) -> int:
    """Print the summary as JSON and a markdown table; with ``json_path`` also write every row
    (and ``extra`` fields) there."""
    import torch

    info = dict(machine(), device=str(codec.device), threads=torch.get_num_threads())
    table = summary(rows)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(dict({"machine": info, "model": codec.model_id, "frames": paths, "summary": table,
                            "rows": rows}, **extra), f, indent=2)
    print(json.dumps({"machine": info, "model": codec.model_id, "summary": table}, indent=2))
    print(markdown(table, len(paths), info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
