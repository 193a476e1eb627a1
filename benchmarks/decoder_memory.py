"""Peak memory and time of decoding, whole frames against tiles (``Codec(tile=)``).

    python benchmarks/decoder_memory.py [--sizes 1936x1112 3868x2176 8192x8192] [--tiles 0 256 128]
        [--modes fast] [--model models/default] [--out build/decoder_memory.json]

For every frame size one RAW frame is made (opencv-doc's aloeL.jpg, resized and unprocessed
to 12-bit RAW, as the demo makes its frames) and compressed; then every (size, tile, mode)
decodes it in a fresh process (``--child``), which reports its peak resident set (the
kernel's VmHWM, loading the model included), the resident set once the model is loaded,
the peak of the decode alone (VmHWM reset after loading through /proc/self/clear_refs),
and the decode time. Not ``getrusage().ru_maxrss``: in a child that Python forked and
exec'd it starts at the parent's resident set at the fork, so it would report this
script's own memory (the frames and reference images it holds). ``--tiles 0`` is the whole
frame in one piece (the decoder before tiling). The decoded images are compared with the
whole-frame decode of the same mode (PSNR) and with the reference ISP's rendering of the
RAW frame, so the table shows how far tiling moves the output next to how far the codec
is from the reference.

Frames above the codec's default limit (``max_pixels``, 33.7 Mpixel) are decoded with the
limit off (``max_pixels=0``). Times are single runs on whatever else the machine is doing:
indicative, not a benchmark of speed (``benchmarks/encoder_speed.py`` measures that way).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTO = "/usr/share/doc/opencv-doc/examples/data/aloeL.jpg"
SIZES = ("1936x1112", "3868x2176", "8192x8192")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak resident set of this process (Linux >= 4.0: ``5`` to
    /proc/self/clear_refs), so that :func:`peak_rss_mib` measures from here on."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """VmHWM: the peak resident set since the process started or :func:`reset_peak_rss`."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise OSError("no VmHWM in /proc/self/status (Linux only)")


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def parse_size(text: str):
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def make_frame(width: int, height: int):
    """A 12-bit RAW frame of ``width`` x ``height`` unprocessed from a photo, and its reference rendering."""
    import cv2

    from rawdiff.raw.isp import render
    from rawdiff.raw.unprocess import unprocess

    photo = cv2.imread(PHOTO)
    if photo is None:
        raise SystemExit("%s not found (Debian package opencv-doc)" % PHOTO)
    rgb = np.ascontiguousarray(cv2.resize(photo, (width, height), interpolation=cv2.INTER_CUBIC)[:, :, ::-1])
    frame, _ = unprocess(rgb, seed=11)
    return frame, render(frame)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    err = 0.0
    for i in range(0, a.shape[0], 512):  # in strips: the 8192x8192 images are 201 MB each
        d = a[i: i + 512].astype(np.float32) - b[i: i + 512].astype(np.float32)
        err += float(np.square(d).sum())
    mse = err / a.size
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def child(args) -> int:
    """One decode in this fresh process: prints a JSON line."""
    import torch

    from rawdiff.codec import Codec

    torch.set_num_threads(args.threads)
    codec = Codec.load(args.model, device="cpu", max_pixels=0, tile=args.tile)
    if args.passes:
        codec.tile_passes = args.passes if args.passes == "exact" else int(args.passes)
    with open(args.child, "rb") as f:
        payload = f.read()
    header, _ = codec.parse(payload)
    if args.mode == "diffusion":
        codec.diffusion()
    loaded, load_peak = rss_mib(), peak_rss_mib()
    reset = reset_peak_rss()
    start = time.perf_counter()
    rgb = codec.decompress(payload, mode=args.mode, steps=args.steps, seed=0)
    seconds = time.perf_counter() - start
    decode_peak = peak_rss_mib() if reset else float("nan")
    np.save(args.save, rgb)
    print(json.dumps({"loaded_mib": loaded, "decode_peak_mib": decode_peak, "peak_mib": max(load_peak, decode_peak),
                      "decode_s": seconds, "tiled": codec.tiled((header.code_height, header.code_width)),
                      "model_id": codec.model_id}))
    return 0


def run_child(args, rdc: str, tile: int, mode: str, save: str, passes: str = "") -> Dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", rdc, "--save", save, "--tile", str(tile),
           "--mode", mode, "--model", args.model, "--threads", str(args.threads), "--steps", str(args.steps)]
    if passes:
        cmd += ["--passes", passes]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--tiles", nargs="+", type=int, default=[0, 256, 128],
                        help="tile sides in codes; 0: the whole frame in one piece")
    parser.add_argument("--modes", nargs="+", default=["fast"], choices=["fast", "diffusion"])
    parser.add_argument("--passes", default="", help="statistics passes of tiled decoding (default: the codec's)")
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "default"))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(ROOT, "build", "decoder_memory.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    parser.add_argument("--tile", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="fast", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    from rawdiff.codec import Codec

    rows = []
    encoder = Codec.load(args.model, device="cpu", backend="auto", threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="rawdiff-memory-") as tmp:
        for size in args.sizes:
            width, height = parse_size(size)
            frame, reference = make_frame(width, height)
            rdc = os.path.join(tmp, "%s.rdc" % size)
            with open(rdc, "wb") as f:
                f.write(encoder.compress(frame))
            del frame
            for mode in args.modes:
                whole = None
                for tile in args.tiles:
                    save = os.path.join(tmp, "%s_%s_%d.npy" % (size, mode, tile))
                    row = {"size": size, "mode": mode, "tile": tile, "bytes": os.path.getsize(rdc)}
                    row.update(run_child(args, rdc, tile, mode, save, args.passes))
                    if "error" not in row:
                        rgb = np.load(save, mmap_mode="r")
                        row["psnr_vs_reference"] = psnr(rgb, reference)
                        if tile == 0:
                            whole = save
                        elif whole is not None:
                            row["psnr_vs_whole"] = psnr(rgb, np.load(whole, mmap_mode="r"))
                        del rgb
                        if tile != 0:
                            os.remove(save)
                    rows.append(row)
                    print(format_row(row), flush=True)
            del reference
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"rows": rows, "threads": args.threads, "model": args.model}, f, indent=1)
    print("\n" + table(rows))
    return 0


def format_row(r: Dict) -> str:
    if "error" in r:
        return "%s %s tile %d: %s" % (r["size"], r["mode"], r["tile"], r["error"])
    return ("%s %s tile %d: decode peak %.0f MiB (model loaded %.0f MiB; process peak %.0f MiB), %.1f s, PSNR vs "
            "reference %.2f dB%s"
            % (r["size"], r["mode"], r["tile"], r["decode_peak_mib"], r["loaded_mib"], r["peak_mib"], r["decode_s"],
               r["psnr_vs_reference"],
               "" if "psnr_vs_whole" not in r else ", vs whole frame %.2f dB" % r["psnr_vs_whole"]))


def table(rows: List[Dict]) -> str:
    lines = ["| frame | path | tile (codes) | peak RSS of the decode, MiB | RSS with the model loaded, MiB "
             "| process peak RSS, MiB | decode s | PSNR vs whole-frame decode | PSNR vs reference ISP |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append("| %s | %s | %s | %s | | | | | |" % (r["size"], r["mode"], r["tile"] or "whole", r["error"]))
            continue
        whole = "-" if r["tile"] == 0 or not r["tiled"] else "%.2f dB" % r["psnr_vs_whole"] if "psnr_vs_whole" in r \
            else "?"
        tile = "whole" if r["tile"] == 0 else "%d%s" % (r["tile"], "" if r["tiled"] else " (fits one)")
        lines.append("| %s | %s | %s | %.0f | %.0f | %.0f | %.1f | %s | %.2f dB |" % (
            r["size"], r["mode"], tile, r["decode_peak_mib"], r["loaded_mib"], r["peak_mib"], r["decode_s"], whole,
            r["psnr_vs_reference"]))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
