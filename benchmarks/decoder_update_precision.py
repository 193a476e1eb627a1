"""What storing a decoder side in 8 bits costs: as differences from the base's weights (a
decoder update, ``rawdiff.models.decoder_update``) or as the weights themselves.

    python benchmarks/decoder_update_precision.py [--base models/default] --decoder DIR
                                                  [--data data/corpus/test_held.txt] [--max-frames 4]
                                                  [--qualities 1 4 6] [--threads 2] [--json OUT]

``--decoder`` is a model directory on the base's codes (a decoder stage trained on with
frozen codes, e.g. the one ``make model-decoder`` exports before its update). Each frame is
encoded at each quality (the base's codes) and decoded (fast path, the networks alone: without
the deblocking filter, whose settings the directories may choose apart) three ways: with the decoder's
own weights as stored (the reference), with the base's weights plus the 8-bit update of the
difference (what ``rawdiff decoder-update`` ships), and with the decoder's weights rounded to
8 bits themselves (the same rounding: symmetric, one scale per output row). Reported: the PSNR
of each 8-bit decode against the reference decode (higher: closer), the update's bytes, and
its largest weight error and relative error. Progress goes to stderr; prints JSON and a
markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

from encoder_speed import ROOT, log, machine  # noqa: E402


def rounded_weights(state: dict) -> dict:
    """The decoder side's weights rounded to 8 bits as an update rounds differences (one scale
    per output row; single values kept): the update from zero weights, applied to them."""
    import torch

    from rawdiff.models.decoder_update import DECODER_PREFIXES, apply_update, make_update

    zero = {k: torch.zeros_like(v) if k.startswith(DECODER_PREFIXES) and v.is_floating_point() else v
            for k, v in state.items()}
    return apply_update(zero, make_update(zero, state))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default=os.path.join(ROOT, "models", "default"))
    p.add_argument("--decoder", required=True, help="model directory of a decoder trained on the base's codes")
    p.add_argument("--data", nargs="+", default=[os.path.join(ROOT, "data", "corpus", "test_held.txt")])
    p.add_argument("--max-frames", type=int, default=4)
    p.add_argument("--qualities", type=int, nargs="+", default=[1, 4, 6])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the JSON results to this file")
    args = p.parse_args(argv)

    import torch

    from rawdiff.codec import Codec
    from rawdiff.eval.frames import find_frames, load_frame
    from rawdiff.export.model_dir import export_decoder_update
    from rawdiff.models.decoder_update import embedder_weights

    torch.set_num_threads(args.threads)
    frames = find_frames(args.data)[: args.max_frames]
    if not frames:
        p.error("no frames in %s" % ", ".join(args.data))
    with tempfile.TemporaryDirectory() as tmp:
        updated = os.path.join(tmp, "updated")
        entry = export_decoder_update(args.base, args.decoder, updated)
        codecs = {"reference": Codec.load(args.decoder, threads=args.threads),
                  "update": Codec.load(updated, threads=args.threads),
                  "weights": Codec.load(args.decoder, threads=args.threads)}
        codecs["weights"].embedder.load_state_dict(rounded_weights(embedder_weights(args.decoder)), strict=False)
        rows = []
        for path in frames:
            frame = load_frame(path)[0]
            for q in args.qualities:
                images, size = {}, 0
                for name, codec in codecs.items():  # the base's codes: each model encodes them alike
                    stream = codec.compress(frame, quality=q)
                    images[name], size = codec.decompress(stream, deblock=False), len(stream)
                rows.append({"frame": os.path.basename(os.path.dirname(path)) or path, "quality": q,
                             "bytes": size, "update_db": psnr(images["update"], images["reference"]),
                             "weights_db": psnr(images["weights"], images["reference"])})
                log("%s q%d: update %.1f dB, 8-bit weights %.1f dB from the reference decode"
                    % (rows[-1]["frame"], q, rows[-1]["update_db"], rows[-1]["weights_db"]))
    result = {"machine": machine(), "base": args.base, "decoder": args.decoder,
              "update": {k: v for k, v in entry.items() if k != "training"}, "rows": rows}
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print("\n| frame | quality | update: PSNR to the reference decode (dB) | 8-bit weights (dB) |")
    print("|---|---|---|---|")
    for r in rows:
        print("| %s | %d | %.1f | %.1f |" % (r["frame"], r["quality"], r["update_db"], r["weights_db"]))
    print("\nupdate %d bytes, largest weight error %.3g, %.2g of the change's norm; over all rows: update %.1f to "
          "%.1f dB, 8-bit weights %.1f to %.1f dB"
          % (entry["bytes"], entry["max_abs_error"], entry["relative_error"], min(r["update_db"] for r in rows),
             max(r["update_db"] for r in rows), min(r["weights_db"] for r in rows),
             max(r["weights_db"] for r in rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
