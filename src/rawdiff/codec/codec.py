"""The codec: one code path for the ROS nodes, the command line, bags and evaluation.

    compress:   RawFrame --render parameters (as shot, else gray world)--> header
                --white-balanced planes--> pad --Embedder.encode_indices--> grid (h x w)
                --IndexPrior.encode--> payload --bitstream.pack(header)--> bytes
    decompress: bytes --bitstream.unpack + model check--> payload --IndexPrior.decode--> grid
                --Embedder.decode_indices (fast) | latent diffusion--> camera RGB
                --reference ISP colour stage (header's matrix)--> crop --> uint8 sRGB
                (decompress_raw: camera RGB --CFA sampling, gains undone--> RawFrame)

A colour-exact model (``embedder.out: linear``) never guesses colour: the bitstream
carries the frame's white balance and colour matrix, the network codes the white-balanced
signal, and the reference ISP's own colour stage renders what it decodes.

Compression follows CompressAI's contract: ``compress`` returns everything the decoder
needs (here one self-contained byte string) and ``decompress`` needs nothing else but
the model.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional

import numpy as np
import torch

from rawdiff.codec import bitstream
from rawdiff.codec.modeldir import read_model_dir
from rawdiff.device import resolve_device
from rawdiff.raw.frame import RawFrame

MODES = ("fast", "diffusion")
BACKENDS = ("auto", "torch", "onnx")

logger = logging.getLogger(__name__)


def _auto_session(model_dir: str, device: str, dev: torch.device, threads: Optional[int], meta: Dict[str, Any]):
    """The onnxruntime session of ``encoder.onnx`` when it exists, is current and runs where
    torch would (no CPU graph for a CUDA device); else None, saying why."""
    path = os.path.join(model_dir, "encoder.onnx")
    if not os.path.isfile(path):
        logger.info("encoding with torch: model directory %s has no encoder.onnx", model_dir)
        return None
    try:
        from rawdiff.export.onnx import open_session, session_provider

        session = open_session(model_dir, device, threads=threads, meta=meta)
    except Exception as exc:  # noqa: BLE001 - any failure of onnxruntime leaves torch, which works
        logger.warning("encoding with torch: %s cannot be used: %s", path, exc)
        return None
    provider = session_provider(session)
    if dev.type != "cpu" and provider == "CPUExecutionProvider":
        logger.warning("encoding with torch on %s: onnxruntime has no GPU provider here (install onnxruntime-gpu)",
                       dev)
        return None
    return session


class Codec:
    def __init__(self, model_dir: str, config: Dict[str, Any], meta: Dict[str, Any], embedder, prior,
                 device: torch.device, backend: str = "torch", onnx_session=None):
        self.model_dir = model_dir
        self.config = config
        self.meta = meta
        self.model_id: str = meta["model_id"]
        self.embedder = embedder
        self.prior = prior
        self.device = device
        self.backend = backend
        self.onnx_session = onnx_session
        self.factor: int = int(meta["factor"])
        self.n_embed: int = int(meta["n_embed"])
        self._diffusion = None

    @classmethod
    def load(cls, model_dir: str, device: str = "auto", backend: str = "torch",
             threads: Optional[int] = None) -> Codec:
        """The codec of a model directory.

        ``backend``: ``torch``, ``onnx`` (the directory's ``encoder.onnx``; an error when it is
        missing or stale) or ``auto`` (``encoder.onnx`` when it is there, current and on the
        device torch would use, else torch, saying why in the log; the command line and the
        encoder node use it). ``threads``: CPU threads for torch and onnxruntime (None: their
        defaults)."""
        from safetensors.torch import load_file

        from rawdiff.codec.entropy import IndexPrior
        from rawdiff.models.embedder import load_embedder

        if backend not in BACKENDS:
            raise ValueError("backend must be one of %s, got %r" % (", ".join(BACKENDS), backend))
        if threads is not None and int(threads) < 1:
            raise ValueError("threads must be at least 1, got %r" % (threads,))
        info = read_model_dir(model_dir)
        dev = resolve_device(device)
        if threads:
            torch.set_num_threads(int(threads))
        params = info["config"].get("model", {}).get("params", {})
        embedder = load_embedder(params, load_file(os.path.join(model_dir, "embedder.safetensors")), dev)
        prior = IndexPrior.load(os.path.join(model_dir, "prior.safetensors"))
        session = None
        if backend == "onnx":
            from rawdiff.export.onnx import open_session

            # device "auto" may pick an onnxruntime GPU provider
            session = open_session(model_dir, device, threads=threads, meta=info["meta"])
        elif backend == "auto":
            session = _auto_session(model_dir, device, dev, threads, info["meta"])
        backend = "onnx" if session is not None else "torch"
        return cls(model_dir, info["config"], info["meta"], embedder, prior, dev, backend, session)

    # -- encoder side -------------------------------------------------------------------

    @property
    def colour_exact(self) -> bool:
        """True for a model of the colour-exact domain (``embedder.out: linear``): it codes the
        white-balanced signal and the reference ISP's colour stage renders its output."""
        return self.embedder.out == "linear"

    @staticmethod
    def render_parameters(frame: RawFrame) -> Dict[str, Any]:
        """The render parameters the bitstream carries for ``frame``
        (:func:`rawdiff.raw.isp.render_parameters`)."""
        from rawdiff.raw.isp import render_parameters

        return render_parameters(frame)

    def model_planes(self, frame: RawFrame, wb_gains=None) -> np.ndarray:
        """The planes the encoder network takes: white-balanced with ``wb_gains`` (default: the
        frame's render parameters) for a colour-exact model, else normalised."""
        from rawdiff.raw.isp import model_planes

        if not self.colour_exact:
            return model_planes(frame)
        if wb_gains is None:
            wb_gains = self.render_parameters(frame)["wb_gains"]
        return model_planes(frame, np.asarray(wb_gains, dtype=np.float32))

    @torch.inference_mode()
    def encode_indices(self, frame: RawFrame, wb_gains=None) -> np.ndarray:
        """The code grid (h x w, int64) of a frame."""
        from rawdiff.models.embedder import pad_planes

        planes = self.model_planes(frame, wb_gains)  # raises ValueError for odd sizes
        if self.onnx_session is not None:
            from rawdiff.export.onnx import run_encoder

            return run_encoder(self.onnx_session, planes, self.embedder.plane_multiple)
        x = torch.from_numpy(planes)[None].to(self.device)
        x, _ = pad_planes(x, self.embedder.plane_multiple)
        return self.embedder.encode_indices(x)[0].cpu().numpy().astype(np.int64)

    def compress(self, frame: RawFrame, source_encoding: str = "") -> bytes:
        if not isinstance(frame, RawFrame):
            raise ValueError("compress needs a RawFrame, got %s" % type(frame).__name__)
        source_encoding = (source_encoding or frame.extra.get("source_encoding")
                           or "bayer_%s16" % frame.cfa.lower())
        colour = self.render_parameters(frame)
        grid = self.encode_indices(frame, colour["wb_gains"])
        payload = self.prior.encode(grid)
        header = bitstream.Header(
            model_id=self.model_id, height=frame.height, width=frame.width, cfa=frame.cfa,
            source_encoding=source_encoding, black_level=frame.black_level,
            white_level=frame.white_level, code_height=grid.shape[0], code_width=grid.shape[1],
            codebook_size=self.n_embed, entropy_model=self.prior.kind, **colour)
        return bitstream.pack(header, payload)

    # -- decoder side -------------------------------------------------------------------

    def parse(self, data: bytes):
        """Header and code grid of a bitstream; raises BitstreamError on anything wrong."""
        header, payload = bitstream.unpack(data)
        bitstream.check_model(header, self.model_id)
        if header.codebook_size != self.n_embed or header.entropy_model != self.prior.kind:
            raise bitstream.BitstreamError(
                "bitstream codes (K=%d, %s prior) do not match model %s (K=%d, %s prior)"
                % (header.codebook_size, header.entropy_model, self.model_id, self.n_embed, self.prior.kind))
        expected = (-(-header.height // self.factor), -(-header.width // self.factor))
        if (header.code_height, header.code_width) != expected:
            raise bitstream.BitstreamError(
                "code grid %dx%d does not fit a %dx%d frame at f%d (expected %dx%d)"
                % (header.code_height, header.code_width, header.height, header.width, self.factor,
                   expected[0], expected[1]))
        grid = self.prior.decode(payload, (header.code_height, header.code_width))
        return header, grid

    @torch.inference_mode()
    def decode_output(self, grid: np.ndarray, mode: str = "fast", steps: int = 4, seed: int = 0) -> np.ndarray:
        """What the decoder network gives for a code grid, float32 in [0, 1], not cropped:
        H x W x 3 (sRGB for ``out: rgb``, white-balanced camera RGB for ``out: linear``) or
        4 x H/2 x W/2 planes (``out: raw``)."""
        if mode not in MODES:
            raise ValueError("mode must be one of %s, got %r" % (", ".join(MODES), mode))
        if mode == "fast":
            idx = torch.from_numpy(np.ascontiguousarray(grid, dtype=np.int64))[None].to(self.device)
            out = self.embedder.decode_indices(idx)[0].clamp(0, 1)
        else:
            out = self.diffusion().decode(grid, steps=steps, seed=seed)
        out = out.float().cpu().numpy()
        return out if self.embedder.out == "raw" else np.ascontiguousarray(out.transpose(1, 2, 0))

    def render(self, output: np.ndarray, header: bitstream.Header) -> np.ndarray:
        """uint8 H x W x 3 sRGB from :meth:`decode_output`: the reference ISP's colour stage
        with the header's render parameters (colour-exact models), or the ISP on the planes
        (``out: raw``), or as decoded (``out: rgb``)."""
        from rawdiff.raw.isp import colour_stage, render

        if self.embedder.out == "raw":
            return render(self.mosaic_frame(output, header))
        rgb = output[: header.height, : header.width]
        if self.colour_exact:
            rgb = colour_stage(rgb, np.asarray(header.color_matrix).reshape(3, 3), header.tone_curve)
        return np.round(rgb * 255.0).astype(np.uint8)

    def mosaic_frame(self, output: np.ndarray, header: bitstream.Header) -> RawFrame:
        """The reconstructed RAW frame: the source's CFA, levels and render parameters, the
        mosaic sampled from the decoded camera RGB (or planes), white balance undone."""
        from rawdiff.raw.frame import planes_to_mosaic

        h, w = header.height, header.width
        gains = np.asarray(header.wb_gains, dtype=np.float32)
        if self.embedder.out == "rgb":
            raise ValueError("model %s decodes sRGB only; a RAW output needs a colour-exact model "
                             "(embedder.out: linear)" % self.model_id)
        he, we = h + (h & 1), w + (w & 1)  # whole 2x2 tiles; an odd edge is cut at the end
        if self.embedder.out == "raw":
            planes = output[:, : he // 2, : we // 2]
            # planes of a raw-output model are normalised, not white-balanced
            norm = planes_to_mosaic(planes, header.cfa)
        else:
            rgb = output[:he, :we]
            channel = {"R": 0, "G": 1, "B": 2}
            # the colour of each position of the CFA tile, and its white-balance gain
            tile = np.array([[channel[c] for c in header.cfa[:2]], [channel[c] for c in header.cfa[2:]]])
            colours = np.tile(tile, (he // 2, we // 2))
            wb = np.take_along_axis(rgb, colours[..., None], axis=2)[..., 0]
            norm = wb / gains[colours]
        black = np.tile(np.asarray(header.black_level, dtype=np.float64).reshape(2, 2), (he // 2, we // 2))
        values = black + norm.astype(np.float64) * (header.white_level - black)
        mosaic = np.clip(np.rint(values), 0, min(65535.0, header.white_level)).astype(np.uint16)[:h, :w]
        black_level = header.black_level if len(set(header.black_level)) > 1 else header.black_level[0]
        return RawFrame(
            mosaic, cfa=header.cfa, black_level=black_level, white_level=header.white_level,
            wb_gains=np.asarray(header.wb_gains, dtype=np.float64),
            color_matrix=(np.asarray(header.color_matrix, dtype=np.float64).reshape(3, 3)
                          if header.matrix_source == "frame" else None),
            extra={"source_encoding": header.source_encoding})

    def decompress(self, data: bytes, mode: str = "fast", steps: int = 4, seed: int = 0) -> np.ndarray:
        """uint8 H x W x 3 sRGB image of the frame in ``data``."""
        if mode not in MODES:
            raise ValueError("mode must be one of %s, got %r" % (", ".join(MODES), mode))
        header, grid = self.parse(data)
        return self.render(self.decode_output(grid, mode, steps, seed), header)

    def decompress_raw(self, data: bytes, mode: str = "fast", steps: int = 4, seed: int = 0) -> RawFrame:
        """The reconstructed RAW frame of ``data`` (mosaic, CFA, levels, white balance, colour
        matrix): the reference ISP renders it as the frame it came from."""
        if mode not in MODES:
            raise ValueError("mode must be one of %s, got %r" % (", ".join(MODES), mode))
        header, grid = self.parse(data)
        return self.mosaic_frame(self.decode_output(grid, mode, steps, seed), header)

    def diffusion(self):
        if self._diffusion is None:
            path = os.path.join(self.model_dir, "diffusion.safetensors")
            if not os.path.isfile(path):
                raise ValueError("model %s has no diffusion decoder (%s missing); use mode='fast'"
                                 % (self.model_id, path))
            from rawdiff.models.ldm import load_diffusion_decoder

            self._diffusion = load_diffusion_decoder(self, path)
        return self._diffusion
