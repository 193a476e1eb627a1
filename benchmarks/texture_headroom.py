"""Texture synthesis on the decoded image: what the learned energy gives against an oracle.

    python benchmarks/texture_headroom.py [--model DIR] [--texture FILE] [--data data/corpus/val.txt]
                                          [--qualities 1 2] [--gains 0.8 1 1.2]
                                          [--amplify A,A,A ...] [--noise SHARE ...]
                                          [--latent-realism R ...] [--steps 4] [--swaps]
                                          [--max-frames N] [--max-pixels N] [--json OUT]

Per frame and quality, against the reference image (PSNR, MS-SSIM, and the sliced
Wasserstein distance of ``rawdiff eval``), the fast path's decode with luma texture added
in the texture stage's bands (:func:`rawdiff.models.texture.add_texture`) at each gain and
each amplification of the image's own detail (``--amplify``, one a band, finest first; 1:
none; the noise shares of the bands
``--noise``, default the model directory's, else 1 for every band):

- ``oracle g xA``: the target energy is the reference's own (what a perfect energy model
  would give; it knows the reference, so no decoder can have it);
- ``learned g xA``: the energy the texture network predicts from the decoded image
  (``--texture``, default the model directory's ``texture.safetensors``), when there is one;
- ``reference luma`` / ``reference chroma`` (``--swaps``): the fast decode with the
  reference's luma (its channels minus their luma kept), or with the reference's channels
  minus their luma (its own luma kept): the first is the most any luma-only texture stage can
  reach, the second what the colour the codes lost costs;
- ``latent R``: for comparison, the latent diffusion decoder at latent realism R (its drawn
  residual in the trailing share R of the latent channels), no texture.

Prints JSON, then a markdown table (means over the frames; SWD x1000 and its change against
the fast path); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

from diffusion_headroom import common_arguments, measure, report  # noqa: E402
from encoder_speed import log  # noqa: E402


def frame_rows(codec, net, synthesis, frame, ref, qualities, gains, amplifies, latent_realisms, steps: int,
               swaps: bool = False) -> list:
    import torch

    from rawdiff import metrics
    from rawdiff.models.texture import add_texture, band_energies, expected_energies, luma

    ref_t = metrics.to_tensor(ref)
    meter_ref = (metrics.SlicedWassersteinReference(ref_t), ref_t)
    ref_energy = band_energies(ref_t, synthesis.sigmas)
    rows = []
    for q in qualities:
        payload = codec.compress(frame, quality=q)
        fast = metrics.to_tensor(codec.decompress(payload))

        def add(path: str, img, q: int = q) -> None:
            if isinstance(img, torch.Tensor):
                img = metrics.to_uint8(img)
            rows.append(dict(measure(meter_ref, img), path=path, quality=q))

        add("fast", fast)
        if swaps:  # the fast decode with the reference's luma (the most a luma-only stage can reach) or chroma
            add("reference luma", fast - luma(fast) + luma(ref_t))
            add("reference chroma", luma(fast) + ref_t - luma(ref_t))
        learned = expected_energies(net, fast, q / codec.qualities) if net is not None else None
        for g in gains:
            for a in amplifies:
                how = synthesis._replace(amplify=a)
                name = "%g x%s" % (g, "/".join("%g" % x for x in how.amplify or (1,) * len(how.sigmas)))
                add("oracle " + name, add_texture(fast, ref_energy, g, torch.Generator().manual_seed(0), synthesis=how))
                if learned is not None:
                    add("learned " + name, add_texture(fast, learned, g, torch.Generator().manual_seed(0),
                                                       synthesis=how))
        for r in latent_realisms:
            add("latent %g" % r, codec.decompress(payload, mode="diffusion", steps=steps, seed=0,
                                                  realism=r, texture=False))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common_arguments(p)
    p.add_argument("--texture", help="texture network (default: the model directory's, if any)")
    p.add_argument("--gains", type=float, nargs="+", default=[0.8, 1.0, 1.2])
    p.add_argument("--amplify", type=lambda s: tuple(float(x) for x in s.split(",")), nargs="+",
                   help="most amplification of the image's own detail, one a band, comma-separated (1,1,1: noise "
                   "only; default: none and the model's)")
    p.add_argument("--noise", type=float, nargs="+", help="noise share of each band (default: the model's)")
    p.add_argument("--swaps", action="store_true",
                   help="also the fast decode with the reference's luma (what a luma-only texture could reach at "
                   "most), and with the reference's colour (luma minus the channels)")
    p.add_argument("--latent-realism", type=float, nargs="*", default=[],
                   help="also the latent diffusion decoder at these latent realisms")
    args = p.parse_args(argv)

    from rawdiff.codec import Codec
    from rawdiff.codec.modeldir import TEXTURE_FILE
    from rawdiff.eval.frames import find_frames, load_frame
    from rawdiff.models.texture import SIGMAS, Synthesis, load_texture

    codec = Codec.load(args.model)
    synthesis = Synthesis.of_entry(codec.texture_settings) if codec.texture_settings is not None else Synthesis()
    if args.texture:
        path, net = args.texture, load_texture(args.texture, bands=len(SIGMAS))
        if synthesis.legacy or len(synthesis.sigmas) != len(SIGMAS):  # else the model's amplify and noise
            synthesis = Synthesis(SIGMAS)
    else:
        path = os.path.join(args.model, TEXTURE_FILE)
        net = codec.texture_network() if codec.texture_settings is not None else None
    if args.noise is not None:
        if len(args.noise) != len(synthesis.sigmas):
            p.error("--noise needs %d shares, one a band" % len(synthesis.sigmas))
        synthesis = synthesis._replace(noise=tuple(args.noise))
    ones = (1.0,) * len(synthesis.sigmas)
    if synthesis.legacy:  # the first stages' noise-only synthesis: nothing to amplify
        if args.amplify:
            p.error("--amplify: this model's texture stage has the first stages' noise-only synthesis")
        amplifies = [None]
    else:
        amplifies = list(dict.fromkeys(args.amplify or [ones, synthesis.amplify or ones]))
    if any(a is not None and (len(a) != len(ones) or min(a) < 1) for a in amplifies):
        p.error("--amplify needs %d factors of at least 1 a setting, one a band" % len(ones))
    paths = find_frames([args.data])[: args.max_frames]
    rows = []
    for i, frame_path in enumerate(paths):
        log("%d/%d %s" % (i + 1, len(paths), frame_path))
        frame, ref, _ = load_frame(frame_path, args.max_pixels)
        rows += [dict(r, frame=i) for r in frame_rows(codec, net, synthesis, frame, ref, args.qualities, args.gains,
                                                      amplifies, args.latent_realism, args.steps, args.swaps)]
    return report(codec, rows, paths, args.json, texture=path if net is not None else None,
                  synthesis=synthesis._asdict())


if __name__ == "__main__":
    sys.exit(main())
