"""Adaptive coding of the indices (rawdiff.codec.adaptive) against the static tables.

    python benchmarks/adaptive_coding.py [--model DIR] [--eval val.txt test_held.txt ...]
                                         [--aging H] [--search] [--large MPIXEL] [--json OUT]

For the shipped codes of every frame of each ``--eval`` list: the bytes of each stage's
indices coded with the prior's tables as they are (format version 6 and before) and with
the tables adapted to the frame (versions 7 to 9; per frame and stage the best of
``rawdiff.codec.adaptive.CANDIDATES`` with the aging ``--aging``, by default
``rawdiff.codec.adaptive.AGING``: what ``Codec.compress`` does; 0: without aging, as versions 7
and 8 code), as the share saved at each quality (stages 1..q); which (strength, pool, parent
level) triples were chosen; and the
time to code and decode every stage of a frame both ways (median over the frames). Every
adaptive coding is decoded and checked against the codes. Each frame is also coded with
format version 8's coder (its 28 triples, :data:`VERSION_8`, no aging): the bytes the
adaptive coding saves against it at each quality, over all frames and over those of at
least ``--large`` Mpixel (default 2: a vehicle camera's size), and each frame's. Last, the
coding of every stage of ``benchmarks/encoder_speed.py``'s synthetic 1936x1112 frame, both
ways (median of 25). ``--search`` also estimates every
triple of :data:`GRID` per frame and stage (the coder's estimate of its code length) and
reports how many more bits the best of the candidates needs at each quality than the best of
the whole grid (how the candidates were chosen: on the validation frames). Prints JSON, then
a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from encoder_speed import ROOT, log, machine  # noqa: E402

#: the triples --search tries: e 2 to 14 in steps of 2; the parent level's weight 2**-a, a in 0 to 4 or
#: 6, or none; the pool's 2**-b, b in 0 to 6 or 8, or none; a <= b when both are used
GRID = tuple((e, g, m) for e in range(2, 15, 2) for g in (0, 1, 2, 3, 4, 5, 6, 7, 9)
             for m in (0, 1, 2, 3, 4, 5, 7) if not 0 < g < m)


#: the candidates of format version 8's coder, which codes without aging
VERSION_8 = tuple((e, g, m) for e in (4, 6, 8, 10) for g, m in ((0, 0), (5, 0), (9, 0), (5, 1), (9, 1), (9, 4), (0, 5)))


def search(codec, codes, aging: int) -> dict:
    """Per stage of one frame, the estimated bits of the best candidate and of the best of GRID."""
    from rawdiff.codec import adaptive

    cands, best = [], []
    for prior, grid, parent in codec.prior._with_parents(codes):
        contexts, cum = prior.contexts(grid, parent), prior._cumulative()
        parents = prior._parents(grid.shape, parent)
        usable = [t for t in GRID if parents is not None or not t[2]]
        bits = np.concatenate([adaptive.estimate(grid, contexts, cum, usable[i:i + 64], parents, aging)
                               for i in range(0, len(usable), 64)])
        bits = dict(zip(usable, bits))
        cands.append(min(bits[t] for t in adaptive.CANDIDATES if t in bits))
        best.append(min(bits.values()))
    return {"candidates_bits": cands, "grid_bits": best}


def frames_codes(codec, paths):
    """(RAW pixels, every stage's index grid) of each frame (whole frames, as the codec
    encodes them)."""
    from rawdiff.eval.frames import load_frame

    for path in paths:
        frame = load_frame(path)[0]
        yield frame.height * frame.width, [np.asarray(g, dtype=np.int64) for g in codec.encode_codes(frame)]


def measure(codec, codes, aging: int, pixels: int) -> dict:
    prior = codec.prior
    shapes = [g.shape for g in codes]
    t0 = time.perf_counter()
    static = prior.encode(codes)
    t1 = time.perf_counter()
    chunks, chosen = prior.encode_adaptive(codes, aging=aging)
    t2 = time.perf_counter()
    back = prior.decode(chunks, shapes, chosen)
    t3 = time.perf_counter()
    prior.decode(static, shapes)
    t4 = time.perf_counter()
    if not all(np.array_equal(a, b) for a, b in zip(back, codes)):
        raise SystemExit("the adaptive coding did not decode to the codes")
    v8 = prior.encode_adaptive(codes, VERSION_8, aging=0)[0]
    return {"static": [len(c) for c in static], "adaptive": [len(c) for c in chunks], "version_8": [len(c) for c in v8],
            "mpixel": pixels / 1e6, "params": chosen,
            "indices": [int(g.size) for g in codes], "encode_static_s": t1 - t0, "encode_adaptive_s": t2 - t1,
            "decode_adaptive_s": t3 - t2, "decode_static_s": t4 - t3}


def saved(frames, base: str = "version_8") -> list:
    """The share of ``base``'s bytes (version 8's coder, or the static tables) that the adaptive
    coding saves at each quality, over ``frames``."""
    if not frames:
        return []
    ours, theirs = (np.cumsum(np.sum([f[k] for f in frames], axis=0)) for k in ("adaptive", base))
    return (1 - ours / theirs).tolist()


def against_version_8(frames, large: float) -> dict:
    big = [f for f in frames if f["mpixel"] >= large]
    return {"saved_at_quality": saved(frames), "large_mpixel": large, "large_frames": len(big),
            "large_saved_at_quality": saved(big),
            "per_frame": [{"mpixel": round(f["mpixel"], 3), "saved_at_quality": saved([f])}
                          for f in frames]}


def synthetic_coding(codec, aging: int, repeats: int = 25) -> dict:
    """Median time and bytes of coding every stage of encoder_speed's synthetic 1936x1112 frame
    with the adaptive coder and with version 8's."""
    from encoder_speed import make_frame

    from rawdiff.codec import adaptive

    codes = [np.asarray(g, dtype=np.int64) for g in codec.encode_codes(make_frame(1936, 1112))]
    out = {}
    for name, candidates, h in (("adaptive", adaptive.CANDIDATES, aging), ("version_8", VERSION_8, 0)):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            chunks = codec.prior.encode_adaptive(codes, candidates, aging=h)[0]
            times.append(time.perf_counter() - t0)
        out[name] = {"median_ms": 1e3 * statistics.median(times), "bytes": sum(map(len, chunks))}
    return out


def main(argv=None) -> int:
    from rawdiff.codec import Codec, adaptive
    from rawdiff.eval.frames import find_frames

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=os.path.join(ROOT, "models", "default"))
    p.add_argument("--eval", nargs="+", default=[os.path.join(ROOT, "data", "corpus", "val.txt"),
                                                  os.path.join(ROOT, "data", "corpus", "test_held.txt")])
    p.add_argument("--search", action="store_true", help="also the candidates against the best of a grid of %d "
                   "triples" % len(GRID))
    p.add_argument("--aging", type=int, default=adaptive.AGING, help="the aging to code with (default: the "
                   "coder's, rawdiff.codec.adaptive.AGING = %(default)d; 0: none, as format versions 7 and 8)")
    p.add_argument("--large", type=float, default=2.0, help="frames of at least this many Mpixel are also reported "
                   "apart against version 8's coder (default 2)")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    codec = Codec.load(args.model)
    sets = {}
    aging = args.aging
    for path in args.eval:
        frames = [dict(measure(codec, codes, aging, pixels), **(search(codec, codes, aging) if args.search else {}))
                  for pixels, codes in frames_codes(codec, find_frames([path]))]
        static = np.sum([f["static"] for f in frames], axis=0)
        adapt = np.sum([f["adaptive"] for f in frames], axis=0)
        chosen = ["/".join(map(str, params)) for f in frames for params in f["params"]]
        sets[os.path.basename(path)] = {
            "frames": len(frames), "static_bytes": static.tolist(), "adaptive_bytes": adapt.tolist(),
            "saved_at_quality": saved(frames, "static"),
            "saved_per_stage": (1 - adapt / static).tolist(),
            "params_chosen": {e: chosen.count(e) for e in sorted(set(chosen))},
            "median_s": {key: statistics.median(f[key] for f in frames)
                         for key in ("encode_static_s", "encode_adaptive_s", "decode_static_s", "decode_adaptive_s")},
            "median_indices": statistics.median(sum(f["indices"]) for f in frames),
            "against_version_8": against_version_8(frames, args.large),
        }
        if args.search:
            cands, grid = (np.sum([f[key] for f in frames], axis=0) for key in ("candidates_bits", "grid_bits"))
            sets[os.path.basename(path)]["candidates_over_grid_at_quality"] = (np.cumsum(cands) / np.cumsum(grid)
                                                                               - 1).tolist()
        log("%s: %d frames" % (path, len(frames)))
    result = {"machine": machine(), "model": args.model, "model_id": codec.model_id,
              "candidates": [list(c) for c in adaptive.CANDIDATES], "aging": aging, "compiled": adaptive.compiled(),
              "sets": sets, "synthetic_1936x1112": synthetic_coding(codec, aging)}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    names = list(sets)
    print("\n| quality | " + " | ".join("%s: bytes saved" % n for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for q in range(len(codec.stages)):
        print("| %d | %s |" % (q + 1, " | ".join("%.1f %%" % (100 * sets[n]["saved_at_quality"][q]) for n in names)))
    for n in names:
        if args.search:
            print("\n%s: the best of the %d candidates needs %s more bits at qualities 1 to %d than the best of the "
                  "%d triples of the grid" % (n, len(adaptive.CANDIDATES), ", ".join(
                      "%.2f %%" % (100 * v) for v in sets[n]["candidates_over_grid_at_quality"]),
                      len(codec.stages), len(GRID)))
    for n in names:
        m = sets[n]["median_s"]
        print("\n%s: parameters chosen (strength/pool/level/aging) %s; median a frame (%d indices): encode static "
              "%.1f ms, adaptive %.1f ms; decode static %.1f ms, adaptive %.1f ms" % (
                  n, sets[n]["params_chosen"], sets[n]["median_indices"], 1e3 * m["encode_static_s"],
                  1e3 * m["encode_adaptive_s"], 1e3 * m["decode_static_s"], 1e3 * m["decode_adaptive_s"]))
    pct = lambda values: ", ".join("%.1f %%" % (100 * v) for v in values)  # noqa: E731
    for n in names:
        v8 = sets[n]["against_version_8"]
        print("\n%s: bytes saved against version 8's coder at qualities 1 to %d: %s; on the %d frames of %g Mpixel or "
              "more: %s; per frame (Mpixel: at quality 4): %s" % (
                  n, len(codec.stages), pct(v8["saved_at_quality"]), v8["large_frames"], v8["large_mpixel"],
                  pct(v8["large_saved_at_quality"]) or "none",
                  ", ".join("%.2f: %.1f %%" % (f["mpixel"], 100 * f["saved_at_quality"][min(3, len(codec.stages) - 1)])
                            for f in v8["per_frame"])))
    syn = result["synthetic_1936x1112"]
    print("\nsynthetic 1936x1112 frame, every stage coded (median of 25): %.1f ms, %d bytes; version 8's coder "
          "%.1f ms, %d bytes" % (syn["adaptive"]["median_ms"], syn["adaptive"]["bytes"], syn["version_8"]["median_ms"],
                        syn["version_8"]["bytes"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
