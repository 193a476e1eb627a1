"""Fuzzing the decoder: mutated bitstreams through ``Codec.decompress``, outcomes by type.

    python benchmarks/fuzz.py [--cases 100000] [--model test/fixtures/model] [--seed 0]
        [--max-pixels 1000000] [--out build/fuzz.json]

A few valid bitstreams (frames of several sizes and CFAs, made by the codec at every
quality it has) are mutated, one mutation per case, cycling through:

    bit_flip         1 to 8 random bits flipped anywhere (the CRC catches nearly all)
    truncate         cut at a random length
    extend           random bytes appended
    header_rewrite   random bytes written into the header before the stage table, CRC
                     recomputed: every field check is reached
    payload_rewrite  random bytes written into the payload, CRC recomputed: the entropy
                     decoder reads garbage
    stage_table      the stage table rewritten, CRC recomputed: random bytes in it, a
                     boundary between two stages moved (the lengths still add up), a
                     stage's scale or codebook size changed, a mean layer's exponent or
                     flag changed (a model with mean layers), or the stage count changed
    declared_size    the frame size (and a matching code grid) set to a random size up
                     to 65535 codes a side, written by the writer: the size limit's job

Every case must end in a decoded image or a ``ValueError`` (``BitstreamError``,
``ModelMismatchError``, ``FrameTooLargeError``, or the codec's own ``ValueError``); any
other exception is a bug: the script reports it, writes the case to ``--out``'s folder and
exits 1. It reports the outcomes of each mutation, the slowest case and the peak resident
set (VmHWM). ``--max-pixels`` is the decoder's limit during the run (default 1 Mpixel, so
that a declared size the limit lets through costs a 1 Mpixel decode, not a 33 Mpixel one;
``declared_size`` cases above it must all be refused). ``test/test_fuzz.py`` runs a few
thousand cases of the same code in CI.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import struct
import sys
import time
import zlib
from collections import Counter, defaultdict
from typing import Dict, List, Optional

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MUTATIONS = ("bit_flip", "truncate", "extend", "header_rewrite", "payload_rewrite", "declared_size", "stage_table")
EXPECTED = ("BitstreamError", "ModelMismatchError", "FrameTooLargeError", "ValueError")


def seed_bitstreams(codec, count: int = 4) -> List[bytes]:
    """Valid bitstreams of the codec: frames of a few sizes and CFAs, at every quality of the
    codec in turn from the highest."""
    from rawdiff.raw import RawFrame

    rng = np.random.default_rng(1)
    out = []
    for i, (h, w, cfa) in enumerate(((64, 96, "RGGB"), (70, 102, "GBRG"), (128, 160, "GRBG"), (40, 48, "BGGR"))):
        if i >= count:
            break
        base = rng.integers(256, 4095, (h // 8 + 1, w // 8 + 1)).astype(np.float32)
        mosaic = np.kron(base, np.ones((8, 8), np.float32))[:h, :w] + rng.normal(0, 40, (h, w))
        frame = RawFrame(np.clip(mosaic, 0, 4095).astype(np.uint16), cfa, 256, 4095)
        out.append(codec.compress(frame, quality=codec.qualities - i % codec.qualities))
    return out


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def mutate(rng: np.random.Generator, data: bytes, kind: str, factor: int = 8) -> bytes:
    """One mutation of a valid bitstream ``data`` (see the module docstring)."""
    buf = bytearray(data)
    if kind == "bit_flip":
        for _ in range(int(rng.integers(1, 9))):
            pos = int(rng.integers(0, len(buf)))
            buf[pos] ^= 1 << int(rng.integers(0, 8))
        return bytes(buf)
    if kind == "truncate":
        return bytes(buf[: int(rng.integers(0, len(buf)))])
    if kind == "extend":
        return bytes(buf) + rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    from dataclasses import replace

    from rawdiff.codec import bitstream

    body = buf[:-4]
    where = bitstream.layout(data)  # offsets of the stage table (its count, each entry) and the payload
    table, entries, start = where["table"], where["stages"], where["payload"]
    if kind == "header_rewrite":
        for _ in range(int(rng.integers(1, 5))):
            pos = int(rng.integers(6, table))  # past the magic and the version, up to the stage table
            body[pos] = int(rng.integers(0, 256))
        return _with_crc(bytes(body))
    if kind == "payload_rewrite":
        if len(body) > start:
            for _ in range(int(rng.integers(1, 9))):
                body[int(rng.integers(start, len(body)))] = int(rng.integers(0, 256))
        return _with_crc(bytes(body))
    header, payload = bitstream.unpack(data)
    chunks, means = bitstream.split_payload(header, payload)  # a model's mean layers ride along
    header = replace(header, payload_length=None)
    order = bitstream.table_order(header)
    stage_entries = [at for at, (k, _) in zip(entries, order) if k == "stage"]
    mean_entries = [at for at, (k, _) in zip(entries, order) if k == "means"]
    if kind == "declared_size":  # written by the writer: a valid header that declares the size
        code_h, code_w = (int(v) for v in rng.integers(1, 65536, 2))
        if rng.random() < 0.5:  # often small enough to pass a limit of about a megapixel
            code_h, code_w = (int(v) for v in rng.integers(1, 160, 2))
        height = code_h * factor - int(rng.integers(0, factor))
        width = code_w * factor - int(rng.integers(0, factor))
        return bitstream.pack(replace(header, height=height, width=width, code_height=code_h, code_width=code_w),
                              chunks, means)
    if kind == "stage_table":
        how = int(rng.integers(0, 4))
        if how == 0:  # random bytes anywhere in the table, its count included
            for _ in range(int(rng.integers(1, 4))):
                body[int(rng.integers(table, start))] = int(rng.integers(0, 256))
        elif how == 1 and len(chunks) > 1:  # a boundary moved: one stage gains what the next loses
            k = int(rng.integers(0, len(chunks) - 1))
            a, b = len(chunks[k]), len(chunks[k + 1])
            shift = int(rng.integers(-min(a, 8), min(b, 8) + 1))
            joined = chunks[k] + chunks[k + 1]
            chunks[k:k + 2] = [joined[:a + shift], joined[a + shift:]]
            return bitstream.pack(header, chunks, means)
        elif means and how == 1:  # a mean layer's entry: another exponent, or a stage's flag
            at = mean_entries[int(rng.integers(0, len(mean_entries)))]
            body[at] = int(rng.integers(0, 256)) if rng.random() < 0.3 else 0x80 | int(rng.integers(0, 16))
        elif how == 2 or how == 1:  # another scale or codebook size for a stage (u8 scale, u16 K - 1)
            at = stage_entries[int(rng.integers(0, len(stage_entries)))]
            if rng.random() < 0.5:
                body[at] = int(rng.choice([1, 2, 4]))
            else:
                struct.pack_into("<H", body, at + 1, int(rng.choice([1, 15, 31, 63, 255, 1023])))
        else:  # the count: the table and the payload read from the wrong places
            body[table] = int(rng.integers(0, 18))
        return _with_crc(bytes(body))
    raise ValueError("unknown mutation %r" % kind)


def peak_rss_mib() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def declared_pixels(data: bytes) -> Optional[int]:
    """The frame size a bitstream's header declares (None where no header can be read)."""
    from rawdiff.codec import bitstream

    try:
        header = bitstream.read_header(data, verify=False)
    except ValueError:
        return None
    return header.height * header.width


def run(codec, cases: int, seed: int = 0, progress: bool = False) -> Dict:
    """``cases`` mutated bitstreams through ``codec.decompress``; the summary dict."""
    rng = np.random.default_rng(seed)
    seeds = seed_bitstreams(codec)
    outcomes: Dict[str, Counter] = defaultdict(Counter)
    unexpected: List[Dict] = []
    over_limit_passed = 0
    slowest = {"seconds": 0.0}
    started = time.perf_counter()
    for i in range(cases):
        kind = MUTATIONS[i % len(MUTATIONS)]
        data = mutate(rng, seeds[int(rng.integers(0, len(seeds)))], kind, codec.factor)
        t0 = time.perf_counter()
        try:
            rgb = codec.decompress(data)
            outcome = "decoded"
            assert rgb.dtype == np.uint8 and rgb.ndim == 3
        except ValueError as exc:
            outcome = type(exc).__name__ if type(exc).__name__ in EXPECTED else "ValueError"
        except Exception as exc:  # noqa: BLE001 - what the fuzzing is looking for
            outcome = "UNEXPECTED %s" % type(exc).__name__
            unexpected.append({"case": i, "kind": kind, "error": "%s: %s" % (type(exc).__name__, exc),
                               "data": base64.b64encode(data).decode()})
        seconds = time.perf_counter() - t0
        outcomes[kind][outcome] += 1
        pixels = declared_pixels(data)
        if (kind == "declared_size" and outcome == "decoded" and codec.max_pixels and pixels is not None
                and pixels > codec.max_pixels):
            over_limit_passed += 1
        if seconds > slowest["seconds"]:
            slowest = {"seconds": seconds, "case": i, "kind": kind, "outcome": outcome, "declared_pixels": pixels}
        if progress and (i + 1) % 5000 == 0:
            print("fuzz: %d/%d cases, %.0f s" % (i + 1, cases, time.perf_counter() - started), file=sys.stderr,
                  flush=True)
    return {"cases": cases, "seed": seed, "max_pixels": codec.max_pixels, "model_id": codec.model_id,
            "outcomes": {k: dict(v) for k, v in outcomes.items()}, "unexpected": unexpected,
            "over_limit_decoded": over_limit_passed, "slowest": slowest,
            "seconds": time.perf_counter() - started, "peak_rss_mib": peak_rss_mib()}


def report(summary: Dict) -> str:
    names = sorted({o for v in summary["outcomes"].values() for o in v})
    lines = ["| mutation | cases | %s |" % " | ".join(names), "|---|---|%s" % ("---|" * len(names))]
    for kind in MUTATIONS:
        row = summary["outcomes"].get(kind, {})
        lines.append("| %s | %d | %s |" % (kind, sum(row.values()), " | ".join(str(row.get(n, 0)) for n in names)))
    s = summary["slowest"]
    lines.append("")
    lines.append("%d cases in %.0f s (max_pixels %s, model %s); slowest case %.3f s (%s, %s, declared %s pixels); "
                 "peak RSS %.0f MiB; unexpected exceptions: %d; declared sizes over the limit decoded: %d"
                 % (summary["cases"], summary["seconds"], summary["max_pixels"], summary["model_id"], s["seconds"],
                    s.get("kind"), s.get("outcome"), s.get("declared_pixels"), summary["peak_rss_mib"],
                    len(summary["unexpected"]), summary["over_limit_decoded"]))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100000)
    parser.add_argument("--model", default=os.path.join(ROOT, "test", "fixtures", "model"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-pixels", type=int, default=1000000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(ROOT, "build", "fuzz.json"))
    args = parser.parse_args(argv)

    import torch

    from rawdiff.codec import Codec

    torch.set_num_threads(args.threads)
    codec = Codec.load(args.model, device="cpu", backend="torch", max_pixels=args.max_pixels)
    summary = run(codec, args.cases, args.seed, progress=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)
    print(report(summary))
    for case in summary["unexpected"][:5]:
        print("unexpected: case %d (%s): %s" % (case["case"], case["kind"], case["error"]), file=sys.stderr)
    return 1 if summary["unexpected"] or summary["over_limit_decoded"] else 0


if __name__ == "__main__":
    sys.exit(main())
