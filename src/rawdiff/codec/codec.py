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

from rawdiff.codec import bitstream
from rawdiff.codec.modeldir import read_model_dir
from rawdiff.raw.frame import RawFrame

MODES = ("fast", "diffusion")
BACKENDS = ("auto", "torch", "onnx")
OUTPUTS = ("rgb", "linear", "raw")

logger = logging.getLogger(__name__)


def _torch():
    """torch, or None where it is not installed (the vehicle install: encoder.onnx only)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def _needs_torch(what: str):
    torch = _torch()
    if torch is None:
        raise ValueError("%s needs torch, which is not installed here (the vehicle install runs the model's "
                         "encoder.onnx only: `--backend onnx`); install requirements.txt for it" % what)
    return torch


def _auto_session(model_dir: str, device: str, threads: Optional[int], meta: Dict[str, Any]):
    """The onnxruntime session of ``encoder.onnx`` when it exists, is current and runs where
    torch would (no CPU graph for a CUDA device); else None, saying why. Without torch the
    graph is the only encoder there is, so its problems are errors."""
    from rawdiff.codec.onnx_runtime import open_session, session_provider

    torch = _torch()
    if torch is None:
        return open_session(model_dir, device, threads=threads, meta=meta)
    path = os.path.join(model_dir, "encoder.onnx")
    if not os.path.isfile(path):
        logger.info("encoding with torch: model directory %s has no encoder.onnx", model_dir)
        return None
    try:
        session = open_session(model_dir, device, threads=threads, meta=meta)
    except Exception as exc:  # noqa: BLE001 - any failure of onnxruntime leaves torch, which works
        logger.warning("encoding with torch: %s cannot be used: %s", path, exc)
        return None
    from rawdiff.device import resolve_device

    dev = resolve_device(device)
    if dev.type != "cpu" and session_provider(session) == "CPUExecutionProvider":
        logger.warning("encoding with torch on %s: onnxruntime has no GPU provider here (install onnxruntime-gpu)",
                       dev)
        return None
    return session


class Codec:
    """A model directory's codec. The torch networks are loaded when first needed: a codec
    whose encoder is ``encoder.onnx`` (``backend="onnx"``) compresses without torch."""

    def __init__(self, model_dir: str, config: Dict[str, Any], meta: Dict[str, Any], prior,
                 device: str = "auto", backend: str = "torch", onnx_session=None, threads: Optional[int] = None):
        self.model_dir = model_dir
        self.config = config
        self.meta = meta
        self.model_id: str = meta["model_id"]
        self.prior = prior
        self.backend = backend
        self.onnx_session = onnx_session
        self.threads = threads
        self.factor: int = int(meta["factor"])
        self.codebook_size: int = int(meta["codebook_size"])
        params = config.get("model", {}).get("params", {})
        self.out: str = str(meta.get("out") or (params.get("embedder") or {}).get("out", "rgb"))
        if self.out not in OUTPUTS:
            raise ValueError("model directory %s: unknown decoder output %r (known: %s)"
                             % (model_dir, self.out, ", ".join(OUTPUTS)))
        self.plane_multiple = self.factor // 2
        self._device_name = device
        self._device = None
        self._embedder = None
        self._diffusion = None

    @classmethod
    def load(cls, model_dir: str, device: str = "auto", backend: str = "torch",
             threads: Optional[int] = None) -> Codec:
        """The codec of a model directory.

        ``backend``: ``torch``, ``onnx`` (the directory's ``encoder.onnx``; an error when it is
        missing or stale) or ``auto`` (``encoder.onnx`` when it is there, current and on the
        device torch would use, else torch, saying why in the log; the command line and the
        encoder node use it). ``threads``: CPU threads for torch and onnxruntime (None: their
        defaults). With ``onnx`` (and ``auto`` where torch is missing) nothing loads torch
        until a frame is decoded."""
        from rawdiff.codec.entropy import IndexPrior

        if backend not in BACKENDS:
            raise ValueError("backend must be one of %s, got %r" % (", ".join(BACKENDS), backend))
        if threads is not None and int(threads) < 1:
            raise ValueError("threads must be at least 1, got %r" % (threads,))
        info = read_model_dir(model_dir)
        prior = IndexPrior.load(os.path.join(model_dir, "prior.safetensors"))
        session = None
        if backend == "onnx":
            from rawdiff.codec.onnx_runtime import open_session

            # device "auto" may pick an onnxruntime GPU provider
            session = open_session(model_dir, device, threads=threads, meta=info["meta"])
        elif backend == "auto":
            session = _auto_session(model_dir, device, threads, info["meta"])
        codec = cls(model_dir, info["config"], info["meta"], prior, device, "onnx" if session is not None else "torch",
                    session, threads)
        if session is None:
            codec.embedder  # noqa: B018 - load (and check) the torch encoder now, not on the first frame
        return codec

    @property
    def device(self):
        """The torch device of the networks (resolved from ``device`` when torch is first used);
        the requested name while no torch network is loaded."""
        return self._device if self._device is not None else self._device_name

    @property
    def embedder(self):
        """The torch embedder (encoder, codebook, decoder), loaded on first use."""
        if self._embedder is None:
            torch = _needs_torch("decoding (and the torch encoder)")
            from safetensors.torch import load_file

            from rawdiff.device import resolve_device
            from rawdiff.models.embedder import load_embedder

            self._device = resolve_device(self._device_name)
            if self.threads:
                torch.set_num_threads(int(self.threads))
            params = self.config.get("model", {}).get("params", {})
            self._embedder = load_embedder(params, load_file(os.path.join(self.model_dir, "embedder.safetensors")),
                                           self._device)
        return self._embedder

    # -- encoder side -------------------------------------------------------------------

    @property
    def colour_exact(self) -> bool:
        """True for a model of the colour-exact domain (``embedder.out: linear``): it codes the
        white-balanced signal and the reference ISP's colour stage renders its output."""
        return self.out == "linear"

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

    def encode_indices(self, frame: RawFrame, wb_gains=None) -> np.ndarray:
        """The code grid (h x w, int64) of a frame (:meth:`decode_indices` is its way back)."""
        planes = self.model_planes(frame, wb_gains)  # raises ValueError for odd sizes
        if self.onnx_session is not None:
            from rawdiff.codec.onnx_runtime import run_encoder

            return run_encoder(self.onnx_session, planes, self.plane_multiple)
        torch = _needs_torch("the torch encoder")
        from rawdiff.models.embedder import pad_planes

        embedder = self.embedder
        with torch.inference_mode():
            x = torch.from_numpy(planes)[None].to(self.device)
            x, _ = pad_planes(x, self.plane_multiple)
            return embedder.encode_indices(x)[0].cpu().numpy().astype(np.int64)

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
            codebook_size=self.codebook_size, entropy_model=self.prior.kind, **colour)
        return bitstream.pack(header, payload)

    # -- decoder side -------------------------------------------------------------------

    def parse(self, data: bytes):
        """Header and code grid of a bitstream; raises BitstreamError on anything wrong."""
        header, payload = bitstream.unpack(data)
        bitstream.check_model(header, self.model_id)
        if header.codebook_size != self.codebook_size or header.entropy_model != self.prior.kind:
            raise bitstream.BitstreamError(
                "bitstream codes (K=%d, %s prior) do not match model %s (K=%d, %s prior)"
                % (header.codebook_size, header.entropy_model, self.model_id, self.codebook_size, self.prior.kind))
        expected = (-(-header.height // self.factor), -(-header.width // self.factor))
        if (header.code_height, header.code_width) != expected:
            raise bitstream.BitstreamError(
                "code grid %dx%d does not fit a %dx%d frame at f%d (expected %dx%d)"
                % (header.code_height, header.code_width, header.height, header.width, self.factor,
                   expected[0], expected[1]))
        grid = self.prior.decode(payload, (header.code_height, header.code_width))
        return header, grid

    def decode_indices(self, grid: np.ndarray, mode: str = "fast", steps: int = 4, seed: int = 0) -> np.ndarray:
        """What the decoder network gives for a code grid (:meth:`encode_indices`), float32 in
        [0, 1], not cropped: H x W x 3 (sRGB for ``out: rgb``, white-balanced camera RGB for
        ``out: linear``) or 4 x H/2 x W/2 planes (``out: raw``)."""
        if mode not in MODES:
            raise ValueError("mode must be one of %s, got %r" % (", ".join(MODES), mode))
        torch = _needs_torch("decoding")
        embedder = self.embedder
        with torch.inference_mode():
            if mode == "fast":
                idx = torch.from_numpy(np.ascontiguousarray(grid, dtype=np.int64))[None].to(self.device)
                out = embedder.decode_indices(idx)[0].clamp(0, 1)
            else:
                out = self.diffusion().decode(grid, steps=steps, seed=seed)
            out = out.float().cpu().numpy()
        return out if self.out == "raw" else np.ascontiguousarray(out.transpose(1, 2, 0))

    def render(self, output: np.ndarray, header: bitstream.Header) -> np.ndarray:
        """uint8 H x W x 3 sRGB from :meth:`decode_indices`: the reference ISP's colour stage
        with the header's render parameters (colour-exact models), or the ISP on the planes
        (``out: raw``), or as decoded (``out: rgb``)."""
        from rawdiff.raw.isp import colour_stage, render

        if self.out == "raw":
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
        if self.out == "rgb":
            raise ValueError("model %s decodes sRGB only; a RAW output needs a colour-exact model "
                             "(embedder.out: linear)" % self.model_id)
        he, we = h + (h & 1), w + (w & 1)  # whole 2x2 tiles; an odd edge is cut at the end
        if self.out == "raw":
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
        return self.render(self.decode_indices(grid, mode, steps, seed), header)

    def decompress_raw(self, data: bytes, mode: str = "fast", steps: int = 4, seed: int = 0) -> RawFrame:
        """The reconstructed RAW frame of ``data`` (mosaic, CFA, levels, white balance, colour
        matrix): the reference ISP renders it as the frame it came from."""
        if mode not in MODES:
            raise ValueError("mode must be one of %s, got %r" % (", ".join(MODES), mode))
        header, grid = self.parse(data)
        return self.mosaic_frame(self.decode_indices(grid, mode, steps, seed), header)

    def diffusion(self):
        if self._diffusion is None:
            path = os.path.join(self.model_dir, "diffusion.safetensors")
            if not os.path.isfile(path):
                raise ValueError("model %s has no diffusion decoder (%s missing); use mode='fast'"
                                 % (self.model_id, path))
            from rawdiff.models.ldm import load_diffusion_decoder

            self._diffusion = load_diffusion_decoder(self, path)
        return self._diffusion
