"""What a model's bitstreams show, stage by stage, over the frames of a ``rawdiff eval`` run.

    each frame's stream of the highest quality evaluated
        --bitstream.unpack / stage_payloads--> the stages' payloads (real bytes)
        --Codec.parse--> the stages' code grids --StagedPrior.bits--> ideal bits under the prior
        --> per stage: coded bits per index, prior bits per index, log2 K, codes used,
            index histogram entropy, bytes and bits per RAW pixel
    that stream --bitstream.truncate(q)--> == the stream encoded at q?  (every lower q)

Coded bits per index is what the range coder really wrote for a stage (its payload's bytes
x 8 over its indices); prior bits per index is the ideal code length under the model's
tables as they are (for a format version 6 stream its difference to the coded bits is the
coder's overhead; a version 7 to 9 stream adapts the tables to the frame and codes below it);
log2 K is what a fixed-length code would spend.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List

import numpy as np

from rawdiff.codec import bitstream


class StageStats:
    """Per-stage figures and the truncation check of one model's streams (``codec``: its
    :class:`rawdiff.codec.Codec`; ``top``: the highest quality whose streams it is given)."""

    def __init__(self, codec, top: int):
        self.codec = codec
        self.grids: List[List[np.ndarray]] = [[] for _ in range(top)]
        self.coded_bytes = [0] * top
        self.stage_bpp = [0.0] * top  # summed over frames
        self.prior_bits = [0.0] * top
        self.header_bytes: List[int] = []
        layers = codec.means.layers if getattr(codec, "means", None) is not None else []
        #: per mean layer: (after stage, exponent), coded bytes and values (summed over frames)
        self.mean_layers = [{"layer": j + 1, "after_stage": a, "exponent": e, "bytes": 0, "values": 0, "bpp": 0.0,
                             "frames": 0} for j, (a, e) in enumerate(layers)]
        self.truncation: Dict[str, Any] = {"checked": 0, "identical": 0, "differing": []}

    def add_stream(self, payload: bytes, raw_pixels: int) -> None:
        """One frame's stream of the highest quality (``raw_pixels``: its RAW frame's size)."""
        header, codes = self.codec.parse(payload)
        _, body = bitstream.unpack(payload)
        chunks, means = bitstream.split_payload(header, body)
        for layer, chunk in zip(self.mean_layers, means):
            layer["bytes"] += len(chunk)
            layer["values"] += 3 * header.code_height * header.code_width
            layer["bpp"] += 8.0 * len(chunk) / raw_pixels
            layer["frames"] += 1
        if len(codes) != len(self.grids):
            raise ValueError("a stream of quality %d, expected %d" % (len(codes), len(self.grids)))
        for k, (grid, chunk, bits) in enumerate(zip(codes, chunks, self.codec.prior.bits(codes))):
            self.grids[k].append(grid)
            self.coded_bytes[k] += len(chunk)
            self.stage_bpp[k] += 8.0 * len(chunk) / raw_pixels
            self.prior_bits[k] += bits
        self.header_bytes.append(len(payload) - len(body))

    def check_truncation(self, top: bytes, payloads: Dict[int, bytes], frame: int) -> None:
        """``top`` cut to each quality of ``payloads`` (streams of one frame encoded at those
        qualities) against that stream, byte for byte."""
        quality = bitstream.read_header(top, verify=False).quality
        for q, payload in sorted(payloads.items()):
            if q >= quality:
                continue
            self.truncation["checked"] += 1
            if bitstream.truncate(top, q) == payload:
                self.truncation["identical"] += 1
            else:
                self.truncation["differing"].append([frame, q])

    def rows(self) -> List[Dict[str, Any]]:
        """Per stage with streams: codebook usage, coded and prior bits per index, log2 K,
        bytes per frame and bits per RAW pixel (means over the frames)."""
        out = []
        for k, grids in enumerate(self.grids):
            if not grids:
                continue
            scale, size = self.codec.stages[k]
            hist = np.bincount(np.concatenate([g.ravel() for g in grids]), minlength=size).astype(np.float64)
            n = int(hist.sum())
            p = hist[hist > 0] / n
            entropy = float(-(p * np.log2(p)).sum())
            out.append({"stage": k + 1, "scale": scale, "grid_factor": self.codec.factor * scale,
                        "codebook_size": size, "indices": n, "indices_per_frame": n / float(len(grids)),
                        "codes_used": int((hist > 0).sum()), "usage": float((hist > 0).sum() / size),
                        "histogram_entropy_bits": entropy, "perplexity": float(2.0 ** entropy),
                        "prior_bits_per_index": self.prior_bits[k] / n,
                        "coded_bits_per_index": 8.0 * self.coded_bytes[k] / n, "log2_k": math.log2(size),
                        "bytes_per_frame": self.coded_bytes[k] / float(len(grids)),
                        "bpp": self.stage_bpp[k] / len(grids)})
        return out

    def mean_rows(self) -> List[Dict[str, Any]]:
        """Per mean layer with streams: coded bits per value (luma and two colour differences
        of each cell) against the bits it adds to what is known (exponent over the layer
        before), bytes a frame and bits per RAW pixel."""
        out, before = [], None
        for layer in self.mean_layers:
            if layer["frames"]:
                new_bits = layer["exponent"] - before if before is not None else None
                out.append({"layer": layer["layer"], "after_stage": layer["after_stage"],
                            "exponent": layer["exponent"], "new_bits": new_bits,
                            "coded_bits_per_value": 8.0 * layer["bytes"] / layer["values"],
                            "bytes_per_frame": layer["bytes"] / float(layer["frames"]),
                            "bpp": layer["bpp"] / layer["frames"]})
            before = layer["exponent"]
        return out

    def header_bytes_per_frame(self):
        """Mean bytes of the streams besides the stages' payloads (None before any stream)."""
        return float(np.mean(self.header_bytes)) if self.header_bytes else None
