"""The code search's rate weight: what other weights per stage would give, without retraining.

    python benchmarks/search_lambda.py [--model models/default] [--data data/corpus/val.txt]
        [--train data/corpus/train.txt] [--max-pixels 1000000] [--max-frames N]
        [--variant NAME=F1,...,FS ...] [--out build/search-lambda]

The shipped encoder searches each stage for the code of least squared distance plus the
code's cost: ``rate_lambda`` times the stage's mean residual energy times the code's learnt
bits (``code_cost``, fixed when the model was trained; Chou, Lookabaugh and Gray 1989). A
variant scales each stage's costs by a factor (F1 for stage 1 ... FS for the last), which
moves each stage along its own rate-distortion curve with the same codebooks and decoder.
For each variant the script writes a model directory under ``--out`` (the model's files
linked, the embedder's code costs scaled, the index prior fitted again on the codes of the
training split, as export does, the encoder run in torch), then runs ``rawdiff eval`` once
on all of them (fast path, no butteraugli) and prints each variant's operating points and its
BD-rate on MS-SSIM and PSNR against the first variant (give the first as all ones: the model
as trained, with its prior fitted by the same steps). Every variant keeps the model's
deblocking settings, which were chosen on the trained codes' decodes (a slight advantage to
the anchor). A model with mean layers is refused (their tables are fitted on the codes too).
``--out`` is replaced only when it is missing, empty or one this script wrote.

The README's figures (validation split, 17 frames, 1 Mpixel centre crops, 2-core AMD EPYC):
every factor 0.5, 2; 2 on the coarse stages; 2 on the fine ones.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: written for a variant (embedder, prior, model.json) or left out (the graph holds the trained
#: costs; the card describes the trained model); the model's other files are linked
REWRITTEN = ("embedder.safetensors", "prior.safetensors", "model.json", "encoder.onnx", "MODEL_CARD.md")
#: the file that marks a folder as this script's output, which a later run may replace
MARKER = "search_lambda.out"
NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
DEFAULT_VARIANTS = ("trained=1,1,1,1,1,1", "half=0.5,0.5,0.5,0.5,0.5,0.5", "double=2,2,2,2,2,2",
                    "coarse2=2,2,2,1,1,1", "fine2=1,1,1,2,2,2")


def parse_variant(text: str):
    name, _, factors = text.partition("=")
    try:
        values = [float(x) for x in factors.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("a variant is NAME=F1,...,FS, got %r" % text) from None
    if not NAME.match(name) or name == "eval" or not values or not all(math.isfinite(v) and v >= 0 for v in values):
        raise argparse.ArgumentTypeError("a variant is NAME=F1,...,FS (a name of letters, digits, '_', '-', '.', not "
                                         "'eval'; finite factors >= 0), got %r" % text)
    return name, values


def stage_count(model: str) -> int:
    """The stages of ``model`` whose code costs a variant scales (the model's stages)."""
    with open(os.path.join(model, "model.json")) as f:
        return len(json.load(f).get("stages") or [1])


def prepare_out(out: str, model: str) -> None:
    """Make ``out`` empty: refuse a folder this script did not write, or one holding the model."""
    out, model = os.path.abspath(out), os.path.abspath(model)
    if model == out or model.startswith(out + os.sep):
        raise SystemExit("--out %s holds the model %s" % (out, model))
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.isfile(os.path.join(out, MARKER)):
            raise SystemExit("--out %s is not empty and was not written by this script; give another folder" % out)
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, MARKER), "w") as f:
        f.write("benchmarks/search_lambda.py output\n")


def build_variant(model: str, out: str, factors, train_index: str) -> dict:
    """A model directory at ``out``: ``model``'s with each stage's code costs scaled and the
    prior fitted again on the training codes (as export does, of the model's prior kind);
    returns its prior's bits per index per stage."""
    import torch
    from safetensors.torch import load_file, save_file

    from rawdiff.codec import Codec
    from rawdiff.codec.modeldir import compute_model_id
    from rawdiff.export.model_dir import fit_prior, iter_index_frames, prior_summary, training_codes

    os.makedirs(out, exist_ok=True)
    for name in os.listdir(model):
        dst = os.path.join(out, name)
        if name not in REWRITTEN and not os.path.lexists(dst):
            os.symlink(os.path.abspath(os.path.join(model, name)), dst)
    state = load_file(os.path.join(model, "embedder.safetensors"))
    keys = sorted((k for k in state if k.endswith("code_cost")), key=lambda k: int(k.split(".")[-2]))
    if len(keys) != len(factors):
        raise SystemExit("%s has %d stages with code costs; the variant gives %d factors"
                         % (model, len(keys), len(factors)))
    for k, f in zip(keys, factors):
        state[k] = state[k] * float(f)
    save_file(state, os.path.join(out, "embedder.safetensors"), metadata={"format": "rawdiff-embedder-1"})
    embedder = Codec.load(model, device="cpu", backend="torch").embedder
    with torch.no_grad():
        own = embedder.state_dict()
        for k in keys:
            own[k].copy_(state[k])
    with open(os.path.join(model, "model.json")) as f:
        meta = json.load(f)
    codes, _ = training_codes(embedder, iter_index_frames(train_index))
    prior = fit_prior(embedder, codes, kind=meta.get("prior_kind", "context"))
    prior.save(os.path.join(out, "prior.safetensors"))
    meta.pop("onnx", None)  # the graph holds the trained costs: the variant encodes in torch
    meta.pop("operating_points", None)
    meta["prior"] = prior_summary(prior, codes)
    meta["model_id"] = compute_model_id(out)
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta["prior"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=os.path.join(ROOT, "models", "default"))
    p.add_argument("--data", default=os.path.join(ROOT, "data", "corpus", "val.txt"))
    p.add_argument("--train", default=os.path.join(ROOT, "data", "corpus", "train.txt"))
    p.add_argument("--max-pixels", type=int, default=1000000)
    p.add_argument("--max-frames", type=int)
    p.add_argument("--variant", type=parse_variant, action="append",
                   help="NAME=F1,...,FS (repeatable; default: %s)" % " ".join(DEFAULT_VARIANTS))
    p.add_argument("--out", default=os.path.join(ROOT, "build", "search-lambda"))
    args = p.parse_args(argv)
    variants = args.variant or [parse_variant(v) for v in DEFAULT_VARIANTS]
    names = [n for n, _ in variants]
    if len(set(names)) != len(names):
        p.error("variant names must differ, got %s" % ", ".join(names))
    if os.path.isfile(os.path.join(args.model, "means.safetensors")):
        p.error("%s has mean layers, whose tables are fitted on the codes too: not handled here" % args.model)
    stages = stage_count(args.model)
    for name, factors in variants:
        if len(factors) != stages:
            p.error("variant %s gives %d factors; %s has %d stages" % (name, len(factors), args.model, stages))
    prepare_out(args.out, args.model)
    dirs = []
    for name, factors in variants:
        d = os.path.join(args.out, name)
        bits = build_variant(args.model, d, factors, args.train)
        print("%s: factors %s, training bits per index %s" % (
            name, factors, " ".join("%.3f" % s["bits_per_index"] for s in bits.get("stages", [bits]))), flush=True)
        dirs.append(d)
    cmd = [sys.executable, "-m", "rawdiff.cli", "eval", args.data, "--codecs", "--no-butteraugli", "--no-progress",
           "--max-pixels", str(args.max_pixels), "--out", os.path.join(args.out, "eval")]
    if args.max_frames:
        cmd += ["--max-frames", str(args.max_frames)]
    for d in dirs:
        cmd += ["--model", d]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

    from rawdiff.eval.rd import bd_rate, curves

    with open(os.path.join(args.out, "eval", "results.json")) as f:
        results = json.load(f)
    found = curves(results)
    by_dir = {os.path.abspath(m["dir"]): found[m["curves"]["fast"]] for m in results["models"]}
    named = {name: by_dir[os.path.abspath(d)] for (name, _), d in zip(variants, dirs)}
    anchor = named[variants[0][0]]
    print("\n| variant | factors | bpp per quality | PSNR (dB) | MS-SSIM | BD-rate MS-SSIM | BD-rate PSNR |")
    print("|---|---|---|---|---|---|---|")
    for name, factors in variants:
        pts = named[name]

        def bd(key, pts=pts):
            v = bd_rate(anchor, pts, key)
            return "-" if v is None else "%+.2f %%" % v

        print("| %s | %s | %s | %s | %s | %s | %s |" % (
            name, ",".join("%g" % f for f in factors), " ".join("%.4f" % q["bpp"] for q in pts),
            " ".join("%.2f" % q["psnr"] for q in pts), " ".join("%.4f" % q["ms_ssim"] for q in pts),
            bd("ms_ssim") if name != variants[0][0] else "anchor", bd("psnr") if name != variants[0][0] else "anchor"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
