"""Two cheap ways the index prior could code fewer bits, measured before building either:
adapting the context tables to the frame as it is coded, and richer parent contexts.

The first is built since (``rawdiff.codec.adaptive``: a compiled coder with the whole stage's
counts pooled in, format version 7, the parent code's counts, version 8, and all of them
aged, version 9;
``benchmarks/adaptive_coding.py`` measures it); the
adaptive part here is kept as the measurement that led to it, a numpy prototype.

    python benchmarks/prior_contexts.py [--model DIR] [--train data/corpus/train.txt]
                                        [--eval data/corpus/val.txt data/corpus/test_held.txt]
                                        [--strengths 16 64 256] [--json OUT]

The shipped prior (``rawdiff.codec.entropy``) codes stage k's index with a frequency table
chosen by the clusters of its left and upper neighbours and, from stage 2 on, of the previous
stage's code at the same place; the tables are fixed, fitted on the training split.

- **Adaptive** (an ideal adaptive coder, the bound for any of them): each context's table is
  the prior of a Dirichlet of strength N on the frame's own counts so far, in raster order,
  ``p(x) = (N p_table(x) + n(x)) / (N + n)``; the best N of ``--strengths`` per frame and stage
  (its choice costs 2 bits). Its cost in a coder: the table of a context changes with every
  index, so the decoder builds a K-way row per index (the shipped coder builds each context's
  once per model).
- **Parent features**: the parent part of the context made of the parent code and one more
  feature of the coarser stages, clustered into as many parent clusters as now
  (``rawdiff.codec.prior_fit``): ``nz8``, the count of the parent stage's non-zero codes among
  the 8 around the place (binned 0, 1-2, 3-5, 6-8; "zero" is the parent stage's most frequent
  code on the training split); ``subpos``, where the place lies in its parent cell (stages
  whose parent grid is coarser). Free at run time: a lookup.

Bits are ideal code lengths (the coder adds at most about 64 bits a grid) of the evaluation
frames' codes, against the shipped tables' on the same codes. ``--coder`` also runs a real
adaptive range coder on stage 1 of a 1936x1112 frame (``benchmarks/encoder_speed.py``'s
collage): integer rows (the static row times N plus 2**24 times the counts, brought to 2**24
with every entry >= 1, as the shipped tables are), so both sides agree bit for bit; it reports
the bytes against the shipped tables', the round trip, and the seconds of encoding and
decoding index by index and of encoding every row at once (numpy). Progress goes to stderr;
prints JSON, then a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

from encoder_speed import log, machine  # noqa: E402
from prior_headroom import add_corpus_arguments, corpus_codes  # noqa: E402


def adaptive_bits(prior, grid: np.ndarray, parent, strength: float) -> float:
    """Ideal code length of ``grid`` with each context's table adapted to the frame's counts."""
    ctx = prior.contexts(grid, parent).ravel().tolist()
    probs = np.exp2(prior.log2_probs())
    counts, totals = {}, {}
    bits = 0.0
    for c, x in zip(ctx, grid.ravel().tolist()):
        seen = counts.setdefault(c, {})
        n = totals.get(c, 0)
        bits -= np.log2((strength * probs[c, x] + seen.get(x, 0)) / (strength + n))
        seen[x] = seen.get(x, 0) + 1
        totals[c] = n + 1
    return float(bits)


def adaptive_rows(freqs: np.ndarray, counts: np.ndarray, strength: int) -> np.ndarray:
    """Integer rows (int64, each summing to 2**24, entries >= 1) of contexts whose static rows
    are ``freqs`` after ``counts`` of each code (rows of the same shape)."""
    from rawdiff.codec.entropy import TOTAL

    w = strength * freqs + TOTAL * counts
    rows = w * (TOTAL - freqs.shape[-1]) // w.sum(-1, keepdims=True) + 1
    top = rows.argmax(-1)
    np.put_along_axis(rows, top[..., None], np.take_along_axis(rows, top[..., None], -1)
                      + (TOTAL - rows.sum(-1, keepdims=True)), -1)
    return rows


def adaptive_coder(codec, strength: int = 64) -> dict:
    """Stage 1 of a 1936x1112 frame through a real adaptive range coder, both ways."""
    import constriction
    from encoder_speed import make_frame

    prior = codec.prior.stages[0]
    grid = np.asarray(codec.encode_codes(make_frame(1936, 1112), quality=1)[0], np.int64)
    ctx, sym, freqs, k = prior.contexts(grid).ravel(), grid.ravel(), prior.freqs.astype(np.int64), prior.codebook_size
    if int((strength + grid.size) * (1 << 24)) * (1 << 24) >= 2 ** 63:  # pragma: no cover - a larger grid
        raise ValueError("the integer rows would overflow int64 for %d indices" % grid.size)
    family = constriction.stream.model.Categorical(perfect=False)

    def one_by_one(words=None):
        coder = constriction.stream.queue.RangeEncoder() if words is None else \
            constriction.stream.queue.RangeDecoder(words)
        counts, out = {}, np.empty(len(ctx), np.int64)
        for i, c in enumerate(ctx.tolist()):
            seen = counts.get(c)
            row = freqs[c] if seen is None else adaptive_rows(freqs[c], seen, strength)
            probs = (row - 1).astype(np.float32)[None]
            if words is None:
                coder.encode(sym[i:i + 1].astype(np.int32), family, probs)
                x = int(sym[i])
            else:
                x = int(coder.decode(family, probs)[0])
            out[i] = x
            if seen is None:
                seen = counts[c] = np.zeros(k, np.int64)
            seen[x] += 1
        return coder.get_compressed() if words is None else out

    start = time.perf_counter()
    words = one_by_one()
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    back = one_by_one(words)
    decode_s = time.perf_counter() - start
    start = time.perf_counter()  # every row at once: the counts before each index, context by context
    order = np.argsort(ctx, kind="stable")
    cs, ss = ctx[order], sym[order]
    onehot = np.zeros((len(cs), k), np.int64)
    onehot[np.arange(len(cs)), ss] = 1
    before = np.cumsum(onehot, axis=0) - onehot
    starts = np.r_[0, np.flatnonzero(np.diff(cs)) + 1]
    before -= before[np.repeat(starts, np.diff(np.r_[starts, len(cs)]))]
    rows = np.where(before.sum(1, keepdims=True) > 0, adaptive_rows(freqs[cs], before, strength), freqs[cs])
    rows = rows[np.argsort(order)]
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(sym.astype(np.int32), family, (rows - 1).astype(np.float32))
    together = encoder.get_compressed()
    vector_s = time.perf_counter() - start
    return {"indices": int(grid.size), "strength": strength, "bytes": 4 * len(words),
            "shipped_bytes": len(prior.encode(grid)), "exact": bool(np.array_equal(back, sym)),
            "same_words": bool(np.array_equal(together, words)), "encode_s": encode_s, "decode_s": decode_s,
            "encode_all_rows_s": vector_s}


def upsampled(grid: np.ndarray, ratio: int, shape) -> np.ndarray:
    return np.repeat(np.repeat(grid, ratio, 0), ratio, 1)[: shape[0], : shape[1]]


def parent_feature(codes, k: int, stages, zero: int, name: str):
    """(feature grid on stage k's grid, number of values), or None where it does not apply;
    ``k`` 0-based, >= 1."""
    grid, parent = codes[k], codes[k - 1]
    ratio = stages[k - 1][0] // stages[k][0]
    size = stages[k - 1][1]
    up = upsampled(parent, ratio, grid.shape)
    if name == "nz8":
        nz = np.pad((parent != zero).astype(np.int64), 1)
        h, w = parent.shape
        around = sum(nz[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                     if (dy, dx) != (0, 0))
        return up * 4 + upsampled(np.digitize(around, [1, 3, 6]), ratio, grid.shape), size * 4
    if name == "subpos" and ratio > 1:
        yy, xx = np.indices(grid.shape)
        return up * ratio * ratio + (yy % ratio) * ratio + xx % ratio, size * ratio * ratio
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_corpus_arguments(p)
    p.add_argument("--strengths", type=float, nargs="+", default=[16.0, 64.0, 256.0])
    p.add_argument("--coder", action="store_true", help="also a real adaptive range coder on stage 1 of a "
                   "1936x1112 frame: bytes, round trip, seconds")
    p.add_argument("--json", help="also write the JSON results to this file")
    args = p.parse_args(argv)

    from rawdiff.codec.prior_fit import fit_prior
    from rawdiff.export.model_dir import LATER_STAGE_CLUSTERS, PARENT_CLUSTERS

    codec, train, evals = corpus_codes(p, args)
    stages, priors = codec.stages, codec.prior.stages
    start = time.time()
    rows = []
    for k in range(len(stages)):
        prior = priors[k]
        row = {"stage": k + 1}
        zero = int(np.bincount(np.concatenate([c[k - 1].ravel() for c in train])).argmax()) if k else None
        fitted = {}
        for name in ("nz8", "subpos"):
            if k == 0 or parent_feature(train[0], k, stages, zero, name) is None:
                continue
            feats = [parent_feature(c, k, stages, zero, name) for c in train]
            fitted[name] = fit_prior([c[k] for c in train], stages[k][1], num_clusters=LATER_STAGE_CLUSTERS,
                                     parents=[f for f, _ in feats], parent_size=feats[0][1], parent_ratio=1,
                                     parent_clusters=PARENT_CLUSTERS)
        for set_name, frames in evals.items():
            shipped = adaptive = 0.0
            features = {name: 0.0 for name in fitted}
            for c in frames:
                parent = c[k - 1] if prior.parent_cluster is not None else None
                shipped += prior.bits(c[k], parent)
                adaptive += min(adaptive_bits(prior, c[k], parent, s) for s in args.strengths) + 2
                for name, other in fitted.items():
                    features[name] += other.bits(c[k], parent_feature(c, k, stages, zero, name)[0])
            row[set_name] = {"shipped": shipped, "adaptive": adaptive, **features}
        log("stage %d done (%.0f s)" % (k + 1, time.time() - start))
        rows.append(row)
    result = {"machine": machine(), "model": args.model, "strengths": args.strengths, "rows": rows}
    if args.coder:
        result["coder"] = adaptive_coder(codec)
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    names = list(evals)
    header = " | ".join("%s: adaptive / nz8 / subpos against the shipped tables" % n for n in names)
    print("\n| stage | %s |" % header)
    print("|---|" + "---|" * len(names))

    def change(r, n, key):
        return "%+.1f %%" % (100 * (r[n][key] / r[n]["shipped"] - 1)) if key in r[n] else "-"

    for r in rows:
        cells = [" / ".join(change(r, n, key) for key in ("adaptive", "nz8", "subpos")) for n in names]
        print("| %d | %s |" % (r["stage"], " | ".join(cells)))
    if args.coder:
        c = result["coder"]
        print("\nadaptive coder, stage 1 of a 1936x1112 frame (%d indices, N = %d): %d bytes against the shipped "
              "tables' %d (%+.1f %%), round trip %s, one rows' pass %s; index by index encode %.3f s, decode %.3f s; "
              "every row at once (numpy) %.3f s" % (c["indices"], c["strength"], c["bytes"], c["shipped_bytes"],
                                                   100 * (c["bytes"] / c["shipped_bytes"] - 1),
                                                   "exact" if c["exact"] else "FAILED",
                                                   "the same words" if c["same_words"] else "OTHER WORDS",
                                                   c["encode_s"], c["decode_s"], c["encode_all_rows_s"]))
    for n in names:
        for upto in range(1, len(stages) + 1):
            total = sum(r[n]["shipped"] for r in rows[:upto])
            gain = sum(r[n]["adaptive"] for r in rows[:upto])
            print("%s, quality %d: adaptive %+.1f %% of the index bits" % (n, upto, 100 * (gain / total - 1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
