"""Headroom of the entropy model: the shipped context tables against a learned two-pass
context network, per stage, in bits per index.

    python benchmarks/prior_headroom.py [--model DIR] [--train data/corpus/train.txt]
                                        [--eval data/corpus/val.txt data/corpus/test_held.txt]
                                        [--stages 1 2 3 4 5 6] [--seconds 600] [--width 64]
                                        [--json OUT]

The shipped prior (``rawdiff.codec.entropy``) codes stage k's index at (r, c) with a frequency
table chosen by the clusters of its neighbours above and to the left and of the previous
stage's code at the same place. This measures what a richer context would save, before
anything is built: for each stage a small convolutional network is trained (for ``--seconds``
on the codes of the training frames, cross-entropy) to give the distribution of stage k's
index from

- everything the coarser stages sent, as the latent they add up to (the sum of their code
  vectors, on stage k's grid), around the place (a 7 x 7 neighbourhood of cells);
- in a second pass, stage k's own indices at the places of the first pass, a checkerboard
  (He et al. 2021, *Checkerboard context model*): half the indices are coded with the coarse
  context alone, the other half also with their four decoded neighbours. Both passes decode
  in parallel, so a decoder would run the network twice a stage, not once an index.

The network's cross-entropy on the evaluation frames against the tables' exact code length
(``IndexPrior.bits``) is the headroom. The network is float and its probabilities are not
bit-exact across machines, so it is a measurement, not a coder: a shipped version needs
integer arithmetic on both sides (Balle et al. 2019, *Integer networks for data compression*).
Progress goes to stderr; prints a markdown table (and JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

from encoder_speed import ROOT, log, machine  # noqa: E402


def frame_codes(codec, paths) -> list:
    """Every stage's index grid of each frame (whole frames, as the codec encodes them)."""
    from rawdiff.raw import read_raw

    out = []
    for path in paths:
        frame = read_raw(path)
        if frame.height % 2 or frame.width % 2:  # the CFA needs even sizes
            frame = frame.copy(mosaic=frame.mosaic[: frame.height // 2 * 2, : frame.width // 2 * 2])
        out.append([np.asarray(g, dtype=np.int64) for g in codec.encode_codes(frame)])
    return out


def coarse_latent(codes, books, scales, k: int):
    """1 x D x h x w: the latent stages 1..k-1 add up to, on stage k's grid (zeros for k = 1)."""
    import torch
    from torch.nn import functional as F

    fy, fx = codes[-1].shape
    z = torch.zeros(1, books[0].shape[1], fy, fx)
    for j in range(k - 1):
        e = F.embedding(torch.from_numpy(codes[j]), books[j]).permute(2, 0, 1)[None]
        if scales[j] > 1:
            e = e.repeat_interleave(scales[j], 2).repeat_interleave(scales[j], 3)[..., :fy, :fx]
        z = z + e
    if scales[k - 1] > 1:
        s = scales[k - 1]
        z = F.avg_pool2d(F.pad(z, (0, -fx % s, 0, -fy % s), mode="replicate"), s)
    return z


def make_network(dim: int, codebook_size: int, width: int):
    import torch
    from torch import nn

    class ContextNet(nn.Module):
        """Stage k's index distribution from the coarse latent and the visible indices."""

        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(codebook_size, 16)
            self.body = nn.Sequential(
                nn.Conv2d(dim + 16 + 1, width, 3, padding=1), nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                nn.Conv2d(width, codebook_size, 1))

        def forward(self, z, idx, visible):
            visible = visible.expand(z.shape[0], -1, -1, -1)
            e = self.embed(idx).permute(0, 3, 1, 2) * visible
            return self.body(torch.cat([z, e, visible], 1))

    return ContextNet()


def checkerboard(h: int, w: int):
    import torch

    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ((yy + xx) % 2 == 0).float()[None, None]


def nats(net, z, idx):
    """Per-index cross-entropy (nats) of the two passes: anchors with the coarse context
    alone, the rest with the anchors' indices visible."""
    from torch.nn import functional as F

    a = checkerboard(*idx.shape[-2:])
    first = F.cross_entropy(net(z, idx, a * 0), idx, reduction="none")
    second = F.cross_entropy(net(z, idx, a), idx, reduction="none")
    return first * a[:, 0] + second * (1 - a[:, 0])


def stage_headroom(codec, train, evals, k: int, seconds: float, width: int, seed: int = 0) -> dict:
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    rq = codec.embedder.quantize
    books = [rq.codebooks[j].codebook().detach().float() for j in range(rq.num_stages)]
    scales = [s for s, _ in rq.stages]
    size = books[k - 1].shape[0]

    def tensors(frames):
        return [(coarse_latent(c, books, scales, k), torch.from_numpy(c[k - 1])[None]) for c in frames]

    train_t = tensors(train)
    flat = torch.cat([z.flatten(2) for z, _ in train_t[:20]], 2)
    scale = flat.std(2).clamp_min(1e-3).view(1, -1, 1, 1) if k > 1 else torch.ones(1, flat.shape[1], 1, 1)
    net = make_network(flat.shape[1], size, width)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    crop = 40 if scales[k - 1] == 1 else 24
    areas = np.sqrt([c.numel() for _, c in train_t])
    chance = areas / areas.sum()
    start, steps, recent = time.time(), 0, []
    while time.time() - start < seconds:
        zs, cs = [], []
        for i in rng.choice(len(train_t), 8, p=chance):
            z, c = train_t[i]
            h, w = c.shape[-2:]
            if h < crop or w < crop:
                continue
            y, x = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
            zs.append(z[..., y:y + crop, x:x + crop] / scale)
            cs.append(c[..., y:y + crop, x:x + crop])
        if not zs:
            continue
        loss = nats(net, torch.cat(zs), torch.cat(cs)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        recent = (recent + [loss.item() / math.log(2)])[-200:]
        if steps % 500 == 0:
            log("stage %d: %d steps, %.0f s, training %.3f bits/index" % (k, steps, time.time() - start,
                                                                        float(np.mean(recent))))
    prior = codec.prior.stages[k - 1]
    row = {"stage": k, "codebook_size": size, "steps": steps, "seconds": round(time.time() - start, 1)}
    with torch.no_grad():
        for name, frames in evals.items():
            tables = network = 0.0
            count = 0
            for codes, (z, c) in zip(frames, tensors(frames)):
                network += float(nats(net, z / scale, c).sum()) / math.log(2)
                parent = codes[k - 2] if prior.parent_cluster is not None else None
                tables += prior.bits(codes[k - 1], parent)
                count += c.numel()
            row[name] = {"tables": tables / count, "network": network / count, "indices": count}
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=os.path.join(ROOT, "models", "default"))
    p.add_argument("--train", default=os.path.join(ROOT, "data", "corpus", "train.txt"))
    p.add_argument("--eval", nargs="+", default=[os.path.join(ROOT, "data", "corpus", "val.txt"),
                                                  os.path.join(ROOT, "data", "corpus", "test_held.txt")])
    p.add_argument("--stages", type=int, nargs="+", help="stages to measure (default: all)")
    p.add_argument("--seconds", type=float, default=600.0, help="training time of each stage's network")
    p.add_argument("--width", type=int, default=64, help="the network's channels")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the JSON results to this file")
    args = p.parse_args(argv)

    import torch

    from rawdiff.codec import Codec
    from rawdiff.eval.frames import find_frames

    torch.set_num_threads(args.threads)
    codec = Codec.load(args.model)
    if codec.prior.kind != "context" or len(codec.stages) < 2:
        p.error("model %s has no staged context prior" % args.model)
    stages = args.stages or list(range(1, codec.qualities + 1))
    bad = [k for k in stages if not 1 <= k <= codec.qualities]
    if bad:
        p.error("stages %s outside 1..%d" % (bad, codec.qualities))
    start = time.time()
    train = frame_codes(codec, find_frames([args.train]))
    evals = {os.path.basename(e): frame_codes(codec, find_frames([e])) for e in args.eval}
    log("codes of %d training and %s evaluation frames in %.0f s" % (
        len(train), "/".join(str(len(v)) for v in evals.values()), time.time() - start))
    rows = [stage_headroom(codec, train, evals, k, args.seconds, args.width) for k in stages]
    result = {"machine": machine(), "model": args.model, "seconds": args.seconds, "width": args.width, "rows": rows}
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    names = list(evals)
    print("\n| stage | K | steps | " + " | ".join("%s: tables / network (bits per index)" % n for n in names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for r in rows:
        cells = ["%.3f / %.3f (%+.1f %%)" % (r[n]["tables"], r[n]["network"],
                                             100 * (r[n]["network"] / r[n]["tables"] - 1)) for n in names]
        print("| %d | %d | %d | %s |" % (r["stage"], r["codebook_size"], r["steps"], " | ".join(cells)))
    for n in names:
        tables = sum(r[n]["tables"] * r[n]["indices"] for r in rows)
        network = sum(r[n]["network"] * r[n]["indices"] for r in rows)
        print("%s, stages %s together: %+.1f %% of the bits" % (n, ",".join(str(r["stage"]) for r in rows),
                                                                100 * (network / tables - 1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
