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
bit-exact across machines, so it is a measurement, not a coder; a shipped version needs
integer arithmetic on both sides (Balle et al. 2019, *Integer networks for data
compression*). ``--integer`` also turns each trained network into integers (below) that
give the same probabilities on any machine, and codes the evaluation frames with them through
the range coder: the exact bits, the real bytes, the round trip, and the seconds a frame.
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
    from rawdiff.eval.frames import load_frame

    return [[np.asarray(g, dtype=np.int64) for g in codec.encode_codes(load_frame(path)[0])] for path in paths]


def add_corpus_arguments(p: argparse.ArgumentParser) -> None:
    """--model, --train and --eval: the model whose codes are measured and the frames."""
    p.add_argument("--model", default=os.path.join(ROOT, "models", "default"))
    p.add_argument("--train", default=os.path.join(ROOT, "data", "corpus", "train.txt"))
    p.add_argument("--eval", nargs="+", default=[os.path.join(ROOT, "data", "corpus", "val.txt"),
                                                  os.path.join(ROOT, "data", "corpus", "test_held.txt")])


def corpus_codes(p: argparse.ArgumentParser, args):
    """(codec, training codes, {evaluation set: codes}) of ``args``' model and frames; a
    parser error for a model without a staged context prior."""
    from rawdiff.codec import Codec
    from rawdiff.eval.frames import find_frames

    codec = Codec.load(args.model)
    if codec.prior.kind != "context" or len(codec.stages) < 2:
        p.error("model %s has no staged context prior" % args.model)
    start = time.time()
    train = frame_codes(codec, find_frames([args.train]))
    evals = {os.path.basename(e): frame_codes(codec, find_frames([e])) for e in args.eval}
    log("codes of %d training and %s evaluation frames in %.0f s" % (
        len(train), "/".join(str(len(v)) for v in evals.values()), time.time() - start))
    return codec, train, evals


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


# -- the network in integers: the same probabilities on any machine ---------------------------
#
# Inputs and activations are integers in [-1023, 1023] (a power-of-two scale each tensor),
# weights integers in [-2047, 2047] (a power-of-two scale each layer): every product and partial
# sum of a layer is an integer below 2**53, so float64 matrix products are exact in any order
# (and with fused multiply-adds), and rescaling by powers of two and flooring are exact too. Logits become
# probabilities through a table of exp(-i / 16) in 2**30ths (stored with the network, not
# computed where it runs), and the frequency rows (summing to 2**24, each >= 1, as the coder's)
# through integer division: encoder and decoder agree bit for bit.

ACT_MAX = 1023
WEIGHT_MAX = 2047
EXACT = 2 ** 53
NAT_STEPS = 16            # logits in sixteenths of a nat
NAT_RANGE = 24 * NAT_STEPS  # probabilities below e**-24 of the likeliest index: the floor
TABLE_BITS = 30


def _exponent(largest: float, limit: int) -> int:
    """The power of two that maps ``largest`` to at most ``limit``."""
    return int(np.floor(np.log2(limit / max(largest, 1e-12))))


def integer_network(net, calibration) -> dict:
    """The float network as integers: per layer (weights, bias, input and output exponents),
    the index embedding, the input exponent, and the exp table. ``calibration``: (z, idx,
    visible) training crops (the latent already in the network's units) that set each
    activation's range."""
    import torch
    from torch import nn

    convs = [m for m in net.body if isinstance(m, nn.Conv2d)]
    z, idx, visible = calibration
    with torch.no_grad():
        e = net.embed(idx).permute(0, 3, 1, 2) * visible.expand(z.shape[0], -1, -1, -1)
        x = torch.cat([z, e, visible.expand(z.shape[0], -1, -1, -1)], 1)
        ranges = [float(torch.quantile(x.abs().flatten()[::7], 0.9999))]
        for conv in convs[:-1]:
            x = torch.relu(conv(x))
            ranges.append(float(torch.quantile(x.flatten()[::97], 0.9999)))
    exponent = _exponent(ranges[0], ACT_MAX)
    layers = []
    for i, conv in enumerate(convs):
        w = conv.weight.detach().double().numpy()
        k = _exponent(float(np.abs(w).max()), WEIGHT_MAX)
        acc = exponent + k
        out = _exponent(ranges[i + 1], ACT_MAX) if i + 1 < len(convs) else acc
        layers.append({"weight": np.round(w * 2.0 ** k).reshape(w.shape[0], -1),
                       "bias": np.round(conv.bias.detach().double().numpy() * 2.0 ** acc),
                       "size": w.shape[-1], "acc": acc, "out": out})
        exponent = out
    first = _exponent(ranges[0], ACT_MAX)
    embed = np.round(net.embed.weight.detach().double().numpy() * 2.0 ** first)
    return {"layers": layers, "input": first, "embed": np.clip(embed, -ACT_MAX, ACT_MAX),
            "table": np.round(2.0 ** TABLE_BITS * np.exp(-np.arange(NAT_RANGE + 1) / NAT_STEPS)).astype(np.int64)}


def _conv(x: np.ndarray, layer: dict) -> np.ndarray:
    """C x H x W integers (float64) through one layer: the accumulator, exact."""
    from numpy.lib.stride_tricks import sliding_window_view

    c, h, w = x.shape
    n = layer["size"]
    if n > 1:
        x = np.pad(x, ((0, 0), (n // 2, n // 2), (n // 2, n // 2)))
        cols = sliding_window_view(x, (n, n), axis=(1, 2)).transpose(1, 2, 0, 3, 4).reshape(h * w, c * n * n)
    else:
        cols = x.reshape(c, h * w).T
    acc = cols @ layer["weight"].T + layer["bias"]
    if np.abs(acc).max() >= EXACT:  # the bound that makes float64 exact; never met by a calibrated network
        raise ArithmeticError("accumulator beyond 2**53")
    return acc.T.reshape(-1, h, w)


def integer_frequencies(net: dict, z: np.ndarray, idx: np.ndarray, visible: np.ndarray, size: int) -> np.ndarray:
    """(h w) x K frequency rows (int64, each row 2**24, entries >= 1) of the integer network."""
    from rawdiff.codec.entropy import TOTAL

    s = 2.0 ** net["input"]
    x = np.concatenate([np.clip(np.round(z * s), -ACT_MAX, ACT_MAX), net["embed"][idx].transpose(2, 0, 1) * visible,
                        visible * s], 0).astype(np.float64)
    for layer in net["layers"][:-1]:
        x = np.clip(np.floor(_conv(x, layer) * 2.0 ** (layer["out"] - layer["acc"])), 0, ACT_MAX)
    logits = _conv(x, net["layers"][-1]).reshape(size, -1).T  # (h w) x K, exponent acc
    steps = np.floor((logits.max(1, keepdims=True) - logits) * 2.0 ** (4 - net["layers"][-1]["acc"]))
    weights = net["table"][np.minimum(steps, NAT_RANGE).astype(np.int64)]
    free = TOTAL - size
    freqs = weights * free // weights.sum(1, keepdims=True) + 1
    rows = np.arange(len(freqs))
    freqs[rows, freqs.argmax(1)] += TOTAL - freqs.sum(1)
    return freqs


def integer_coding(net: dict, z: np.ndarray, idx: np.ndarray, size: int) -> dict:
    """Range-code one grid in the two passes with the integer network (constriction, per index
    its own frequency row), decode it again, check the round trip: bytes and seconds."""
    import time

    import constriction

    h, w = idx.shape
    anchor = checkerboard(h, w)[0, 0].numpy().astype(bool)
    family = constriction.stream.model.Categorical(perfect=False)
    start = time.perf_counter()
    first = integer_frequencies(net, z, idx, np.zeros((1, h, w), np.float32), size)[anchor.ravel()]
    second = integer_frequencies(net, z, idx, anchor[None].astype(np.float32), size)[~anchor.ravel()]
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(idx[anchor].astype(np.int32), family, (first - 1).astype(np.float32))
    encoder.encode(idx[~anchor].astype(np.int32), family, (second - 1).astype(np.float32))
    words = encoder.get_compressed()
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoder = constriction.stream.queue.RangeDecoder(words)
    out = np.zeros_like(idx)
    rows = integer_frequencies(net, z, out, np.zeros((1, h, w), np.float32), size)[anchor.ravel()]
    out[anchor] = decoder.decode(family, (rows - 1).astype(np.float32))
    rows = integer_frequencies(net, z, out, anchor[None].astype(np.float32), size)[~anchor.ravel()]
    out[~anchor] = decoder.decode(family, (rows - 1).astype(np.float32))
    decode_s = time.perf_counter() - start
    bits = -np.log2(np.concatenate([first[np.arange(len(first)), idx[anchor]],
                                    second[np.arange(len(second)), idx[~anchor]]]) / 2.0 ** 24).sum()
    return {"bytes": 4 * len(words), "bits": float(bits), "exact": bool(np.array_equal(out, idx)),
            "encode_s": encode_s, "decode_s": decode_s}


def stage_headroom(codec, train, evals, k: int, seconds: float, width: int, seed: int = 0,
                   integer: bool = False) -> dict:
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
    train_t = [(z / scale, c) for z, c in train_t]  # the network's inputs, in units of each channel's spread
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
            zs.append(z[..., y:y + crop, x:x + crop])
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
    eval_t = {name: [(z / scale, c) for z, c in tensors(frames)] for name, frames in evals.items()}
    if integer:
        i = rng.choice(len(train_t), min(16, len(train_t)), replace=False)
        calib = [(train_t[j][0][..., :crop, :crop], train_t[j][1][..., :crop, :crop]) for j in i
                 if min(train_t[j][1].shape[-2:]) >= crop]
        inet = integer_network(net, (torch.cat([c[0] for c in calib]), torch.cat([c[1] for c in calib]),
                                     checkerboard(crop, crop)))
        for name, frames in evals.items():
            coded = [integer_coding(inet, z[0].numpy(), c[0].numpy(), size) for z, c in eval_t[name]]
            count = sum(c[k - 1].size for c in frames)
            row[name + " integer"] = {"network": sum(c["bits"] for c in coded) / count,
                                     "coded": 8.0 * sum(c["bytes"] for c in coded) / count,
                                     "exact": all(c["exact"] for c in coded), "frames": len(coded),
                                     "encode_s": sum(c["encode_s"] for c in coded) / len(coded),
                                     "decode_s": sum(c["decode_s"] for c in coded) / len(coded)}
    with torch.no_grad():
        for name, frames in evals.items():
            tables = network = 0.0
            count = 0
            for codes, (z, c) in zip(frames, eval_t[name]):
                network += float(nats(net, z, c).sum()) / math.log(2)
                parent = codes[k - 2] if prior.parent_cluster is not None else None
                tables += prior.bits(codes[k - 1], parent)
                count += c.numel()
            row[name] = {"tables": tables / count, "network": network / count, "indices": count}
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_corpus_arguments(p)
    p.add_argument("--stages", type=int, nargs="+", help="stages to measure (default: all)")
    p.add_argument("--seconds", type=float, default=600.0, help="training time of each stage's network")
    p.add_argument("--width", type=int, default=64, help="the network's channels")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--integer", action="store_true",
                   help="also the network in integers: exact bits, real range-coded bytes, the round trip, "
                        "encode and decode seconds")
    p.add_argument("--json", help="also write the JSON results to this file")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    codec, train, evals = corpus_codes(p, args)
    stages = args.stages or list(range(1, codec.qualities + 1))
    bad = [k for k in stages if not 1 <= k <= codec.qualities]
    if bad:
        p.error("stages %s outside 1..%d" % (bad, codec.qualities))
    rows = [stage_headroom(codec, train, evals, k, args.seconds, args.width, integer=args.integer) for k in stages]
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
    if args.integer:
        print("\n| stage | " + " | ".join("%s: integer network bits / coded bits per index, round trip, "
                                          "encode / decode s a frame" % n for n in names) + " |")
        print("|---|" + "---|" * len(names))
        for r in rows:
            cells = ["%.3f / %.3f, %s, %.2f / %.2f" % (r[n + " integer"]["network"], r[n + " integer"]["coded"],
                                                     "exact" if r[n + " integer"]["exact"] else "FAILED",
                                                     r[n + " integer"]["encode_s"], r[n + " integer"]["decode_s"])
                     for n in names]
            print("| %d | %s |" % (r["stage"], " | ".join(cells)))
    for n in names:
        tables = sum(r[n]["tables"] * r[n]["indices"] for r in rows)
        network = sum(r[n]["network"] * r[n]["indices"] for r in rows)
        print("%s, stages %s together: %+.1f %% of the bits" % (n, ",".join(str(r["stage"]) for r in rows),
                                                                100 * (network / tables - 1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
