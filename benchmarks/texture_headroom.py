"""Texture synthesis on the decoded image: what the learned energy gives against an oracle.

    python benchmarks/texture_headroom.py [--model DIR] [--texture FILE] [--data data/corpus/val.txt]
                                          [--qualities 1 2] [--amplitudes 0.7 1 1.3]
                                          [--latent-realism R ...] [--steps 4]
                                          [--max-frames N] [--max-pixels N] [--json OUT]

Per frame and quality, against the reference image (PSNR, MS-SSIM, and the sliced
Wasserstein distance of ``rawdiff eval``), the fast path's decode with luma texture added
in the two finest octaves (:func:`rawdiff.models.texture.add_texture`) at each amplitude:

- ``oracle a``: the texture's local energy is the reference's own deficit (what a perfect
  energy model would give; it knows the reference, so no decoder can have it);
- ``learned a``: the energy the texture network predicts from the decoded image (``--texture``,
  default the model directory's ``texture.safetensors``), when there is one;
- ``latent R``: for comparison, the latent diffusion decoder at latent realism R (its drawn
  residual in the trailing share R of the latent channels), no texture.

Prints JSON, then a markdown table (means over the frames; SWD x1000 and its change against
the fast path); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

from diffusion_headroom import common_arguments, measure, report  # noqa: E402
from encoder_speed import log  # noqa: E402


def frame_rows(codec, net, frame, ref, qualities, amplitudes, latent_realisms, steps: int) -> list:
    import torch

    from rawdiff import metrics
    from rawdiff.models.texture import add_texture, band_energies, expected_energies

    ref_t = metrics.to_tensor(ref)
    meter_ref = (metrics.SlicedWassersteinReference(ref_t), ref_t)
    ref_energy = band_energies(ref_t)
    rows = []
    for q in qualities:
        payload = codec.compress(frame, quality=q)
        fast = metrics.to_tensor(codec.decompress(payload))

        def add(path: str, img, q: int = q) -> None:
            if isinstance(img, torch.Tensor):
                img = (img[0].permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
            rows.append(dict(measure(meter_ref, img), path=path, quality=q))

        add("fast", fast)
        learned = expected_energies(net, fast, q / codec.qualities) if net is not None else None
        for a in amplitudes:
            add("oracle %g" % a, add_texture(fast, ref_energy, a, torch.Generator().manual_seed(0)))
            if learned is not None:
                add("learned %g" % a, add_texture(fast, learned, a, torch.Generator().manual_seed(0)))
        for r in latent_realisms:
            add("latent %g" % r, codec.decompress(payload, mode="diffusion", steps=steps, seed=0,
                                                  realism=r, texture=False))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common_arguments(p)
    p.add_argument("--texture", help="texture network (default: the model directory's, if any)")
    p.add_argument("--amplitudes", type=float, nargs="+", default=[0.7, 1.0, 1.3])
    p.add_argument("--latent-realism", type=float, nargs="*", default=[],
                   help="also the latent diffusion decoder at these latent realisms")
    args = p.parse_args(argv)

    from rawdiff.codec import Codec
    from rawdiff.codec.modeldir import TEXTURE_FILE
    from rawdiff.eval.frames import find_frames, load_frame
    from rawdiff.models.texture import load_texture

    codec = Codec.load(args.model)
    if args.texture:
        path, net = args.texture, load_texture(args.texture)
    else:
        path = os.path.join(args.model, TEXTURE_FILE)
        net = codec.texture_network() if codec.texture_settings is not None else None
    paths = find_frames([args.data])[: args.max_frames]
    rows = []
    for i, frame_path in enumerate(paths):
        log("%d/%d %s" % (i + 1, len(paths), frame_path))
        frame, ref, _ = load_frame(frame_path, args.max_pixels)
        rows += [dict(r, frame=i) for r in frame_rows(codec, net, frame, ref, args.qualities, args.amplitudes,
                                                      args.latent_realism, args.steps)]
    return report(codec, rows, paths, args.json, texture=path if net is not None else None)


if __name__ == "__main__":
    sys.exit(main())
