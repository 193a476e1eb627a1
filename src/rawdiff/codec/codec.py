"""The codec: one code path for the ROS nodes, the command line, bags and evaluation.

    compress:   RawFrame --render parameters (as shot, else gray world)--> header
                --white-balanced planes--> pad --Embedder.encode_codes--> a grid per stage
                (the first ``quality`` stages) --StagedPrior.encode_adaptive--> a payload per stage
                --bitstream.pack(header)--> bytes
    decompress: bytes --bitstream.unpack + model check + size limit--> payloads
                --StagedPrior.decode--> grids (coarse to fine)
                --Embedder.decode_indices (fast) | latent diffusion, over tiles--> camera RGB
                --reference ISP colour stage (header's matrix)--> crop --> uint8 sRGB
                (decompress_raw: camera RGB --CFA sampling, gains undone--> RawFrame)

On an accelerator (``Codec.render_on_device``) the colour stage, the deblocking filter and
the texture run in torch where the networks' output lies (:mod:`rawdiff.codec.device_render`)
and one uint8 image is copied to the host; a frame decoded in tiles is gathered there.

Resources are bounded by two settings of the codec (``Codec.load(max_pixels=, tile=)``):
a bitstream declaring more than ``max_pixels`` pixels is refused from its header, before
the code grid is allocated (:mod:`rawdiff.codec.limits`); a code grid larger than
``tile`` x ``tile`` codes is decoded in tiles with whole-frame normalisation statistics
(:mod:`rawdiff.codec.tiling`), rendered tile by tile into the output, so the networks'
memory is a tile's. Both are the codec's, not arguments of ``decompress``: they are a
policy of the decoding process, set once where it starts (the command line, the node,
the bag tools), and every decode path (``parse``, ``decompress``, ``decompress_raw``)
goes through them, so no caller can forget one. On the encoding side, a model whose encoder
is a matrix per cell is coded in strips of ``encode_rows`` plane rows with a halo
(:mod:`rawdiff.codec.encode_strips`): the same codes, the code search's memory a strip's.

A colour-exact model (``embedder.out: linear``) never guesses colour: the bitstream
carries the frame's white balance and colour matrix, the network codes the white-balanced
signal, and the reference ISP's own colour stage renders what it decodes.

Operating points: a model whose quantizer has S stages (``embedder.stages``) codes a frame
at quality q = 1..S, the first q stages; ``model.json`` lists each with the rate and
MS-SSIM measured on the test split (``operating_points``) and the default quality. A
bitstream of quality q cut to fewer stages (:func:`rawdiff.codec.bitstream.truncate`) is
the bitstream of that quality, byte for byte.

Mean layers (a model with ``means.safetensors``, :mod:`rawdiff.codec.cell_means`): beside
the stages the stream sends the plane means of each code cell, a bit more after each stage
that has a layer; the decoder moves the codebook latent to them before its networks
(``Embedder.with_means``). :meth:`Codec.parse` gives the grids as :class:`StageCodes`,
which carry what the layers sent to every decode path.

Compression follows CompressAI's contract: ``compress`` returns everything the decoder
needs (here one self-contained byte string) and ``decompress`` needs nothing else but
the model.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from rawdiff.codec import bitstream
from rawdiff.codec.colour_stats import CellMoments, apply_map, planes_statistics, rgb_statistics, transport_map
from rawdiff.codec.deblock import deblock as deblock_image
from rawdiff.codec.deblock import deblock_filters, filter_levels
from rawdiff.codec.detail_stats import FEATURES as DETAIL_FEATURES
from rawdiff.codec.detail_stats import MIN_PLANE as DETAIL_MIN_PLANE
from rawdiff.codec.detail_stats import dequantize as dequantize_detail
from rawdiff.codec.detail_stats import frame_detail
from rawdiff.codec.encode_strips import encode_in_strips
from rawdiff.codec.limits import (
    DEFAULT_ENCODE_ROWS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_TILE,
    check_encode_rows,
    check_frame_size,
    check_max_pixels,
    check_tile,
)
from rawdiff.codec.modeldir import (
    DEFAULT_DIFFUSION_STEPS,
    DIFFUSION_FILE,
    TEXTURE_FILE,
    check_quality,
    check_realism,
    read_model_dir,
)
from rawdiff.raw.frame import RawFrame

MODES = ("fast", "diffusion")


class StageCodes(list):
    """The code grids of a bitstream's stages (coarse to fine) and ``means``: the bounds
    ``(lo, hi)`` (3 x h x w) its mean layers give the decoder, or None."""

    means = None

BACKENDS = ("auto", "torch", "onnx")
OUTPUTS = ("rgb", "linear", "raw")
MEANS_FILE = "means.safetensors"
#: the texture noise of seed s is drawn from seed s + this: not the diffusion sampler's stream
TEXTURE_SEED_OFFSET = 0x5EED_7E47

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


def _has_encoder_network(model_dir: str) -> bool:
    """True when the directory's embedder weights hold an encoder network (tensors named
    ``encoder.*``; read from the file's header, without torch)."""
    from safetensors import safe_open

    with safe_open(os.path.join(model_dir, "embedder.safetensors"), framework="numpy") as f:
        return any(k.startswith("encoder.") for k in f.keys())


def _auto_session(model_dir: str, device: str, threads: Optional[int], meta: Dict[str, Any]):
    """The onnxruntime session of ``encoder.onnx`` when it exists, is current and runs where
    torch would (no CPU graph for a CUDA device); else None, saying why. Without torch the
    graph is the only encoder there is, so its problems are errors."""
    from rawdiff.codec.onnx_runtime import open_session, session_provider

    torch = _torch()
    if torch is None:
        return open_session(model_dir, device, threads=threads, meta=meta)
    from rawdiff.device import resolve_device

    dev = resolve_device(device)  # a device torch cannot use either is the error, not a fallback
    path = os.path.join(model_dir, "encoder.onnx")
    if not os.path.isfile(path):
        logger.info("encoding with torch: model directory %s has no encoder.onnx", model_dir)
        return None
    try:
        session = open_session(model_dir, device, threads=threads, meta=meta)
    except Exception as exc:  # noqa: BLE001 - any failure of onnxruntime leaves torch, which works
        logger.warning("encoding with torch: %s cannot be used: %s", path, exc)
        return None
    if dev.type != "cpu" and session_provider(session) == "CPUExecutionProvider":
        logger.warning("encoding with torch on %s: onnxruntime has no GPU provider here (install onnxruntime-gpu)",
                       dev)
        return None
    return session


class Codec:
    """A model directory's codec. The torch networks are loaded when first needed: a codec
    whose encoder is ``encoder.onnx`` (``backend="onnx"``) compresses without torch."""

    def __init__(self, model_dir: str, config: Dict[str, Any], meta: Dict[str, Any], prior,
                 device: str = "auto", backend: str = "torch", onnx_session=None, threads: Optional[int] = None,
                 max_pixels: Optional[int] = DEFAULT_MAX_PIXELS, tile: int = DEFAULT_TILE,
                 precision: str = "auto", memory_format: str = "auto", means=None, compile_mode: str = "none",
                 encode_rows: int = DEFAULT_ENCODE_ROWS):
        self.model_dir = model_dir
        #: the mean layers (rawdiff.codec.cell_means.MeanLayers) or None
        self.means = means
        #: what the decoder networks run in: rawdiff.device.autocast_dtype (auto: half precision
        #: on CUDA, float32 on the CPU)
        self.precision = precision
        #: how the decoder networks lay out their tensors: rawdiff.device.network_memory_format
        #: (auto: channels_last on the CPU)
        self.memory_format = memory_format
        #: how the decoder networks are compiled: rawdiff.device.compiled (none: not)
        self.compile_mode = compile_mode
        #: frames declaring more pixels are refused from the header (None: no limit)
        self.max_pixels = check_max_pixels(max_pixels)
        #: code grids larger than tile x tile codes decode in tiles (0: never)
        self.tile = check_tile(tile)
        #: statistics passes of tiled decoding: 1, or "exact" (rawdiff.codec.tiling.run_tiled)
        self.tile_passes: Union[int, str] = 1
        #: code each stage with the prior's tables adapted to the frame (rawdiff.codec.adaptive:
        #: format version 9, the counts aged; 4 to 12 % fewer bytes);
        #: False: the tables as they are, a stream that readers of format version 6 and before
        #: decode
        self.adaptive_coding = True
        self.config = config
        self.meta = meta
        self.model_id: str = meta["model_id"]
        #: the models whose streams this one decodes besides its own (the same codes and prior:
        #: the base of a decoder update), from model.json's ``streams_of``
        self.streams_of: Tuple[str, ...] = tuple(meta.get("streams_of") or ())
        self.prior = prior
        self.backend = backend
        self.onnx_session = onnx_session
        self.threads = threads
        self.factor: int = int(meta["factor"])
        self.codebook_size: int = int(meta["codebook_size"])
        #: (scale, codebook size) of each quantizer stage, coarse to fine
        self.stages = [(int(sc), int(k)) for sc, k in (meta.get("stages") or [(1, self.codebook_size)])]
        if self.stages[0][1] != self.codebook_size:
            raise ValueError("model directory %s: the first stage's codebook (%d) is not codebook_size %d"
                             % (model_dir, self.stages[0][1], self.codebook_size))
        if len(getattr(prior, "stages", [prior])) != len(self.stages):
            raise ValueError("model directory %s: the prior has %d stages, the model %d"
                             % (model_dir, len(getattr(prior, "stages", [prior])), len(self.stages)))
        if means is not None and means.stages != self.stages:
            raise ValueError("model directory %s: the mean layers are for stages %s, the model has %s"
                             % (model_dir, means.stages, self.stages))
        #: the operating points measured when the model was made (quality, bpp, ms_ssim, ...)
        self.operating_points = list(meta.get("operating_points") or [])
        self.default_quality = int(meta.get("default_quality") or len(self.stages))
        params = config.get("model", {}).get("params", {})
        self.out: str = str(meta.get("out") or (params.get("embedder") or {}).get("out", "rgb"))
        if self.out not in OUTPUTS:
            raise ValueError("model directory %s: unknown decoder output %r (known: %s)"
                             % (model_dir, self.out, ", ".join(OUTPUTS)))
        self.plane_multiple = self.factor // 2
        #: True when each code depends only on samples near its cell (no encoder network: the
        #: analysis is a matrix per cell; the config says so and the weights hold no encoder
        #: network), so the encoder may code the frame in strips
        self.encoder_local = ((params.get("embedder") or {}).get("encoder_network", True) is False
                              and not _has_encoder_network(model_dir))
        #: plane rows the encoder codes at a time, for a local encoder (0: the whole frame at
        #: once); the codes are the same, the memory a strip's (rawdiff.codec.encode_strips)
        self.encode_rows = check_encode_rows(encode_rows)
        self._encoder_on_cpu: Optional[bool] = None  # strip_rows' question, asked on first use
        self._device_name = device
        self._device = None
        self._autocast_dtype = None  # of precision on the device, set with the device
        self._embedder = None
        self._diffusion = None
        #: the texture stage's settings (model.json's ``texture``: share, gain, realism) or None
        self.texture_settings = meta.get("texture")
        level = (self.texture_settings or {}).get("level")
        #: the texture level's weights (bands x (detail statistics + 1)), or None: the model's
        #: streams carry no detail statistics
        self.level_coefficients = (None if level is None
                                   else np.asarray(level["coefficients"], dtype=np.float64))
        self._texture = None  # (network, Synthesis), loaded on first use
        self._render_on_device: Optional[bool] = None  # render_on_device: None is by device
        #: the deblocking filter of each operating point (rawdiff.codec.deblock.Deblock, or None
        #: where it filters nothing; from model.json's ``deblock``), or None for a model without one
        self.deblock_filters = deblock_filters(meta.get("deblock"), len(self.stages))
        self._tile_norms = None  # (latent, FrameNorms) of the last tiled decode

    @classmethod
    def load(cls, model_dir: str, device: str = "auto", backend: str = "torch",
             threads: Optional[int] = None, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
             tile: int = DEFAULT_TILE, precision: str = "auto", memory_format: str = "auto",
             compile_mode: str = "none", encode_rows: int = DEFAULT_ENCODE_ROWS) -> Codec:
        """The codec of a model directory.

        ``backend``: ``torch``, ``onnx`` (the directory's ``encoder.onnx``; an error when it is
        missing or stale) or ``auto`` (``encoder.onnx`` when it is there, current and on the
        device torch would use, else torch, saying why in the log; the command line and the
        encoder node use it). ``threads``: CPU threads for torch and onnxruntime (None: their
        defaults). With ``onnx`` (and ``auto`` where torch is missing) nothing loads torch
        until a frame is decoded. ``max_pixels`` (None or 0: no limit) and ``tile`` (0: no
        tiling) bound what decoding may use; see the module docstring. ``precision``: what the
        decoder networks run in (:func:`rawdiff.device.autocast_dtype`; ``auto``: bfloat16 or
        float16 on CUDA, float32 on the CPU). ``memory_format``: how the decoder networks lay
        out their tensors (:func:`rawdiff.device.network_memory_format`; ``auto``:
        channels_last on the CPU). ``compile_mode``: ``torch.compile`` of the decoder networks
        (:func:`rawdiff.device.compiled`; ``none``: not), for a stream of frames of one size.
        ``encode_rows``: plane rows the encoder codes at a time when its codes are local (0: the
        whole frame; the codes are the same either way, :mod:`rawdiff.codec.encode_strips`)."""
        from rawdiff.codec.entropy import StagedPrior

        max_pixels, tile = check_max_pixels(max_pixels), check_tile(tile)
        encode_rows = check_encode_rows(encode_rows)
        if backend not in BACKENDS:
            raise ValueError("backend must be one of %s, got %r" % (", ".join(BACKENDS), backend))
        if threads is not None and int(threads) < 1:
            raise ValueError("threads must be at least 1, got %r" % (threads,))
        if precision != "auto" or memory_format != "auto" or compile_mode != "none":  # others need torch
            from rawdiff.device import check_compile_mode, check_memory_format, check_precision

            check_precision(precision)
            check_memory_format(memory_format)
            check_compile_mode(compile_mode)
        info = read_model_dir(model_dir)
        prior = StagedPrior.load(os.path.join(model_dir, "prior.safetensors"))
        means = None
        if os.path.isfile(os.path.join(model_dir, MEANS_FILE)):
            from rawdiff.codec.cell_means import MeanLayers

            means = MeanLayers.load(os.path.join(model_dir, MEANS_FILE))
        session = None
        if backend == "onnx":
            from rawdiff.codec.onnx_runtime import open_session

            # device "auto" may pick an onnxruntime GPU provider
            session = open_session(model_dir, device, threads=threads, meta=info["meta"])
        elif backend == "auto":
            session = _auto_session(model_dir, device, threads, info["meta"])
        codec = cls(model_dir, info["config"], info["meta"], prior, device, "onnx" if session is not None else "torch",
                    session, threads, max_pixels=max_pixels, tile=tile, precision=precision,
                    memory_format=memory_format, means=means, compile_mode=compile_mode, encode_rows=encode_rows)
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
            from rawdiff.device import autocast_dtype, resolve_device
            from rawdiff.models.decoder_update import embedder_weights
            from rawdiff.models.embedder import load_embedder

            self._device = resolve_device(self._device_name)
            self._autocast_dtype = autocast_dtype(self._device, self.precision)
            if self.threads:
                torch.set_num_threads(int(self.threads))
            params = self.config.get("model", {}).get("params", {})
            embedder = load_embedder(params, embedder_weights(self.model_dir), self._device)
            layers = self.means.layers if self.means is not None else []
            if [tuple(m) for m in embedder.mean_layers] != layers:
                raise ValueError("model directory %s: the embedder's mean layers %s are not means.safetensors' %s"
                                 % (self.model_dir, embedder.mean_layers, layers))
            for network in embedder.decoder_side():  # the encoder as it was: its codes do not change
                self.for_inference(network)
            self._embedder = embedder
        return self._embedder

    def for_inference(self, network):
        """``network`` on the codec's device in its memory format (:attr:`memory_format`),
        in eval mode, compiled as :attr:`compile_mode` says: how the codec runs its decoder
        networks."""
        from rawdiff.device import compiled, network_memory_format

        if self._device is None:
            self.embedder  # noqa: B018 - resolves the device
        network = network.to(self._device, memory_format=network_memory_format(self._device, self.memory_format))
        return compiled(network.eval(), self.compile_mode)

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

    @property
    def qualities(self) -> int:
        """The number of operating points: quality 1 (the smallest) to this."""
        return len(self.stages)

    def check_quality(self, quality: Optional[int]) -> int:
        """``quality`` as a number of stages (None: the model's default); a clear error outside
        1..:attr:`qualities`."""
        if quality is None:
            return self.default_quality
        return check_quality(quality, self.qualities)

    def encode_indices(self, frame: RawFrame, wb_gains=None):
        """The code grid (h x w, int64) of a frame (:meth:`decode_indices` is its way back); for
        a model of several stages, the grids of all stages (:meth:`encode_codes`)."""
        codes = self.encode_codes(frame, wb_gains=wb_gains)
        return codes[0] if len(self.stages) == 1 else codes

    def encode_codes(self, frame: RawFrame, quality: Optional[int] = None, wb_gains=None):
        """The code grids of the first ``quality`` stages (default all), coarse to fine."""
        return self.encode_planes(self.model_planes(frame, wb_gains), quality)  # ValueError for odd sizes

    def encode_planes(self, planes: np.ndarray, quality: Optional[int] = None):
        """The code grids of the encoder's planes (:meth:`model_planes`): a list, coarse to
        fine, of the first ``quality`` stages (default all)."""
        count = len(self.stages) if quality is None else self.check_quality(quality)
        rows = self.strip_rows
        scales = [s for s, _ in self.stages]
        if self.onnx_session is not None:
            from rawdiff.codec.onnx_runtime import run_encoder

            session = self.onnx_session
            return encode_in_strips(lambda p: run_encoder(session, p, self.plane_multiple), planes, scales,
                                    self.plane_multiple, rows)[:count]
        torch = _needs_torch("the torch encoder")
        from rawdiff.models.embedder import pad_planes

        embedder = self.embedder

        def encode(p: np.ndarray) -> list:
            x = torch.from_numpy(np.ascontiguousarray(p))[None].to(self.device)
            x, _ = pad_planes(x, self.plane_multiple)
            return [g[0].cpu().numpy().astype(np.int64) for g in embedder.encode_codes(x, count)]

        with torch.inference_mode():
            return encode_in_strips(encode, planes, scales[:count], self.plane_multiple, rows)

    @property
    def encoder_device(self) -> str:
        """Where the encoder runs: onnxruntime's provider for ``encoder.onnx``, else the torch
        device (resolved once the network is loaded, the name asked for before)."""
        if self.onnx_session is not None:
            from rawdiff.codec.onnx_runtime import session_provider

            return "onnxruntime %s" % session_provider(self.onnx_session)
        return str(self.device)

    @property
    def strip_rows(self) -> int:
        """Plane rows of each strip the encoder codes (0: the whole frame at once):
        ``encode_rows`` for a local encoder (:attr:`encoder_local`) that runs on the CPU. Not
        on a GPU: its libraries pick kernels (and TensorRT builds an engine) per input shape,
        and a kernel of another summation order may break a tie between two codes."""
        if not (self.encoder_local and self.encode_rows):
            return 0
        if self._encoder_on_cpu is None:  # asked once: the backend and device stay what they were
            if self.onnx_session is not None:
                from rawdiff.codec.onnx_runtime import session_provider

                self._encoder_on_cpu = session_provider(self.onnx_session) == "CPUExecutionProvider"
            else:
                self._encoder_on_cpu = self.embedder is not None and self.device.type == "cpu"  # resolves the device
        return self.encode_rows if self._encoder_on_cpu else 0

    def compress(self, frame: RawFrame, source_encoding: str = "", quality: Optional[int] = None) -> bytes:
        """The bitstream of ``frame`` at ``quality`` (1..:attr:`qualities`; None: the model's
        default)."""
        if not isinstance(frame, RawFrame):
            raise ValueError("compress needs a RawFrame, got %s" % type(frame).__name__)
        quality = self.check_quality(quality)
        source_encoding = (source_encoding or frame.extra.get("source_encoding")
                           or "bayer_%s16" % frame.cfa.lower())
        from rawdiff.raw.isp import model_planes, render_parameters

        planes = np.ascontiguousarray(frame.to_planes(), dtype=np.float32)  # ValueError for odd sizes
        if self.sends_detail and min(planes.shape[1:]) < DETAIL_MIN_PLANE:
            raise ValueError("a %dx%d frame is too small: this model codes frames of at least %dx%d pixels"
                             % (frame.width, frame.height, 2 * DETAIL_MIN_PLANE, 2 * DETAIL_MIN_PLANE))
        colour = render_parameters(frame, planes)
        planes = model_planes(frame, np.float32(colour["wb_gains"]) if self.colour_exact else None, planes)
        codes = self.encode_planes(planes, quality)
        if self.colour_exact:
            colour["colour_stats"] = planes_statistics(planes, self.factor)
        if self.adaptive_coding:
            payloads, adapt = self.prior.encode_adaptive(codes)
        else:
            payloads, adapt = self.prior.encode(codes), []
        means, mean_entries = [], ()
        if self.means is not None:
            from rawdiff.codec.cell_means import planes_gamma

            means = self.means.encode(planes_gamma(planes, self.plane_multiple), codes, quality)
            mean_entries = tuple((after, e, 0) for after, e in self.means.layers[: len(means)])
        code_h, code_w = self.code_shape(frame.height, frame.width)
        detail = frame_detail(planes) if self.sends_detail else ()
        header = bitstream.Header(
            model_id=self.model_id, height=frame.height, width=frame.width, cfa=frame.cfa,
            source_encoding=source_encoding, black_level=frame.black_level,
            white_level=frame.white_level, code_height=code_h, code_width=code_w,
            codebook_size=self.codebook_size, entropy_model=self.prior.kind,
            stages=tuple((sc, k, 0) for sc, k in self.stages[:quality]), means=mean_entries, detail=detail,
            adapt=tuple(adapt), **colour)
        return bitstream.pack(header, payloads, means)

    @property
    def sends_detail(self) -> bool:
        """Whether this model's streams carry the frame's detail statistics: its texture stage
        sets its level from them (model.json's ``texture.level``;
        :mod:`rawdiff.codec.detail_stats`)."""
        return self.level_coefficients is not None

    def texture_level(self, header: bitstream.Header) -> Optional[np.ndarray]:
        """The expected mean log energy of each texture band of the frame of ``header``: the
        model's ``texture.level`` applied to the detail statistics the stream carries; None
        when either is missing (the texture network's own level is used)."""
        if not self.sends_detail or not header.detail:
            return None
        return self.level_coefficients @ np.append(dequantize_detail(header.detail), 1.0)

    def code_shape(self, height: int, width: int):
        """The finest code grid of a frame of ``height`` x ``width`` pixels."""
        return -(-int(height) // self.factor), -(-int(width) // self.factor)

    # -- decoder side -------------------------------------------------------------------

    def parse(self, data: bytes):
        """Header and code grids (a list, coarse to fine) of a bitstream; raises
        BitstreamError on anything wrong, and :class:`rawdiff.codec.limits.FrameTooLargeError`
        for a frame over ``max_pixels`` before a grid is allocated."""
        header, payload = bitstream.unpack(data)
        bitstream.check_model(header, self.model_id, self.streams_of)
        check_frame_size(header, self.max_pixels)
        if header.codebook_size != self.codebook_size or header.entropy_model != self.prior.kind:
            raise bitstream.BitstreamError(
                "bitstream codes (K=%d, %s prior) do not match model %s (K=%d, %s prior)"
                % (header.codebook_size, header.entropy_model, self.model_id, self.codebook_size, self.prior.kind))
        coded = [(sc, k) for sc, k, _ in header.stages] if header.stages is not None else [(1, header.codebook_size)]
        if len(coded) > len(self.stages) or coded != self.stages[: len(coded)]:
            raise bitstream.BitstreamError(
                "bitstream stages %s do not match model %s's %s (scale, codebook size)"
                % (coded, self.model_id, self.stages))
        expected = self.code_shape(header.height, header.width)
        if (header.code_height, header.code_width) != expected:
            raise bitstream.BitstreamError(
                "code grid %dx%d does not fit a %dx%d frame at f%d (expected %dx%d)"
                % (header.code_height, header.code_width, header.height, header.width, self.factor,
                   expected[0], expected[1]))
        if header.detail and len(header.detail) != DETAIL_FEATURES:
            raise bitstream.BitstreamError("the bitstream carries %d detail statistics; this build reads %d"
                                           % (len(header.detail), DETAIL_FEATURES))
        chunks, mean_chunks = bitstream.split_payload(header, payload)
        layers = self.means.layers if self.means is not None else []
        expected_means = [(a, e) for a, e in layers if a <= len(coded)]
        if [(a, e) for a, e, _ in header.means] != expected_means:
            raise bitstream.BitstreamError(
                "bitstream mean layers %s do not match model %s's %s for %d stages (after stage, exponent)"
                % ([(a, e) for a, e, _ in header.means], self.model_id, expected_means, len(coded)))
        codes = StageCodes(self.prior.decode(chunks, header.stage_shapes(), header.adapt))
        if mean_chunks:
            try:
                codes.means = self.means.decode(mean_chunks, codes, header.code_shape)
            except ValueError as exc:
                raise bitstream.BitstreamError(str(exc)) from None
        return header, codes

    def _codes(self, codes) -> list:
        """A code grid or a list of them (a prefix of the stages) as a checked list."""
        if isinstance(codes, np.ndarray) and codes.ndim == 2:
            codes = [codes]
        codes = list(codes)
        if not 1 <= len(codes) <= len(self.stages):
            raise ValueError("%d code grids for a model of %d stages" % (len(codes), len(self.stages)))
        return codes

    def _means_tensors(self, codes):
        """What the mean layers of parsed ``codes`` (:class:`StageCodes`) sent, as tensors on
        the device (1 x 3 x h x w bounds), or None."""
        means = getattr(codes, "means", None)
        if means is None:
            return None
        torch = _needs_torch("decoding")
        return tuple(torch.from_numpy(np.ascontiguousarray(b))[None].to(self.device) for b in means)

    def _code_tensors(self, codes):
        torch = _needs_torch("decoding")
        return [torch.from_numpy(np.ascontiguousarray(g, dtype=np.int64))[None].to(self.device)
                for g in self._codes(codes)]

    def decode_indices(self, codes, mode: str = "fast", steps: int = DEFAULT_DIFFUSION_STEPS, seed: int = 0,
                       shape: Optional[tuple] = None, realism: Optional[float] = None) -> np.ndarray:
        """What the decoder network gives for code grids (:meth:`encode_codes`: a grid per stage
        coded, or one grid for a model of one stage), float32 in [0, 1], not cropped:
        H x W x 3 (sRGB for ``out: rgb``, white-balanced camera RGB for ``out: linear``) or
        4 x H/2 x W/2 planes (``out: raw``). ``shape``: the finest code grid (default: what the
        finest stage given implies). ``realism`` (diffusion; default the model's): from the
        fast path (0) to a whole sample (1), :func:`rawdiff.models.ldm.realism_mask`."""
        if mode not in MODES:
            raise ValueError("mode must be one of %s, got %r" % (", ".join(MODES), mode))
        torch = _needs_torch("decoding")
        with torch.inference_mode():
            out = self._network_output(codes, mode, steps, seed, shape, realism).cpu().numpy()
        return out if self.out == "raw" else np.ascontiguousarray(out.transpose(1, 2, 0))

    def _network_output(self, codes, mode: str, steps: int, seed: int, shape: Optional[tuple],
                        realism: Optional[float]):
        """:meth:`decode_indices`' output as a float32 C x H x W tensor on the device (called
        under ``torch.inference_mode``)."""
        embedder = self.embedder
        means = self._means_tensors(codes)
        with self._autocast():
            idx = self._code_tensors(codes)
            if mode == "fast":
                z_q = embedder.lookup_codes(idx, shape)
                if means is not None:
                    z_q = embedder.with_means(z_q, *means)
                out = embedder.decode(z_q)[0].clamp(0, 1)
            else:
                out = self.diffusion().decode(idx, steps=steps, seed=seed, shape=shape, realism=realism, means=means)
        return out.float()

    @property
    def render_on_device(self) -> bool:
        """Whether :meth:`decompress` renders on the networks' device
        (:mod:`rawdiff.codec.device_render`: colour stage, deblocking filter and texture in
        torch, one uint8 copy to the host; about 50 bytes a pixel of device memory at the
        peak, the float frame and the colour stage's temporaries, whole frames and frames
        decoded in tiles alike) rather than in numpy on the host. Default: on an
        accelerator, not on the CPU (where the host's numpy is the reference ISP's own
        arithmetic); set it to choose."""
        if self._render_on_device is not None:
            return self._render_on_device
        if self._device is not None:
            return self._device.type != "cpu"
        from rawdiff.device import resolve_device

        return resolve_device(self._device_name).type != "cpu"

    @render_on_device.setter
    def render_on_device(self, value: Optional[bool]) -> None:
        self._render_on_device = None if value is None else bool(value)

    def _decompress_on_device(self, codes, header: bitstream.Header, mode: str, steps: int, seed: int,
                              realism: Optional[float], gain: float, deblock: bool) -> np.ndarray:
        """:meth:`decompress` with the output rendered on the device: a frame decoded whole, or
        in tiles into one float frame on the device (one decoding pass: the colour statistics
        are the whole frame's; the host's tiled path decodes twice to hold one tile)."""
        torch = _needs_torch("decoding")
        from rawdiff.codec import device_render

        if gain > 0:
            self._texture_stage()  # loaded outside inference mode: its weights stay ordinary tensors
        with torch.inference_mode():
            if self.tiled(header.code_shape):
                rgb = self._tiled_output_on_device(codes, header, mode, steps, seed, realism)
            else:
                out = self._network_output(codes, mode, steps, seed, header.code_shape, realism)
                rgb = out[:, : header.height, : header.width]
            levels = self._levels_on_device(rgb, header)
            if deblock and self.deblock_filters is not None:
                filter_levels(levels, self.factor, self.deblock_filters[len(codes) - 1])
            if gain > 0:
                from rawdiff.metrics import to_uint8

                return to_uint8(self._textured_tensor(levels[None] / 255.0, len(codes), seed, gain,
                                                      self.texture_level(header)))
            return device_render.to_host(levels)

    def _levels_on_device(self, rgb, header: bitstream.Header):
        """The 3 x H x W float32 integer levels of the decoder's output ``rgb`` (cropped to the
        frame, on the device): :meth:`render` in torch (:mod:`rawdiff.codec.device_render`)."""
        from rawdiff.codec import device_render

        ccm = np.asarray(header.color_matrix).reshape(3, 3) if self.colour_exact else None
        colour = device_render.colour_stage(rgb, ccm, header.tone_curve, self.colour_map(rgb, header))
        return device_render.to_levels(colour)

    def render(self, output: np.ndarray, header: bitstream.Header) -> np.ndarray:
        """uint8 H x W x 3 sRGB from :meth:`decode_indices`: the reference ISP's colour stage
        with the header's render parameters (colour-exact models), or the ISP on the planes
        (``out: raw``), or as decoded (``out: rgb``)."""
        from rawdiff.raw.isp import render

        if self.out == "raw":
            return render(self.mosaic_frame(output, header))
        return self._render_piece(output, header, 0, 0, self.colour_map(output, header))

    def colour_map(self, output, header: bitstream.Header):
        """The affine map that carries the colour statistics of the decoder's camera RGB onto
        those the encoder sent (:mod:`rawdiff.codec.colour_stats`), or None (a model of
        another domain, or a bitstream without statistics). ``output``: H x W x 3 numpy, or a
        3 x H x W tensor on the device (its statistics pooled there)."""
        if not self.colour_exact or not any(header.colour_stats):
            return None
        if isinstance(output, np.ndarray):
            decoded = rgb_statistics(output[: header.height, : header.width], self.factor)
        else:
            from rawdiff.codec.device_render import cell_statistics

            decoded = cell_statistics(output[:, : header.height, : header.width], self.factor)
        return transport_map(header.colour_stats, decoded)

    def _render_piece(self, piece: np.ndarray, header: bitstream.Header, top: int, left: int,
                      colour_map=None) -> np.ndarray:
        """uint8 sRGB of a piece of the decoder's H x W x 3 output whose top-left pixel is
        (``top``, ``left``) of the frame, cropped to the frame. Per pixel, so a frame
        rendered in pieces is the frame rendered whole."""
        from rawdiff.raw.isp import colour_stage

        rgb = piece[: header.height - top, : header.width - left]
        if colour_map is not None:
            rgb = apply_map(rgb, colour_map)
        if self.colour_exact:
            rgb = colour_stage(rgb, np.asarray(header.color_matrix).reshape(3, 3), header.tone_curve)
        return np.round(rgb * 255.0).astype(np.uint8)

    def mosaic_frame(self, output: np.ndarray, header: bitstream.Header) -> RawFrame:
        """The reconstructed RAW frame: the source's CFA, levels and render parameters, the
        mosaic sampled from the decoded camera RGB (or planes), white balance undone."""
        return self._raw_frame(self._mosaic_piece(output, header, 0, 0, self.colour_map(output, header)), header)

    def _mosaic_piece(self, piece: np.ndarray, header: bitstream.Header, top: int, left: int,
                      colour_map=None) -> np.ndarray:
        """The uint16 mosaic of a piece of the decoder's output whose top-left pixel is
        (``top``, ``left``) of the frame (both even: the CFA phase is the frame's), cropped
        to the frame."""
        from rawdiff.raw.frame import planes_to_mosaic

        self._check_raw_output()
        h, w = header.height - top, header.width - left
        he, we = h + (h & 1), w + (w & 1)  # whole 2x2 tiles; an odd edge is cut at the end
        if self.out == "raw":
            planes = piece[:, : he // 2, : we // 2]
            # planes of a raw-output model are normalised, not white-balanced
            norm = planes_to_mosaic(planes, header.cfa)
        else:
            rgb = piece[:he, :we]
            if colour_map is not None:
                rgb = apply_map(rgb, colour_map)
            gains = np.asarray(header.wb_gains, dtype=np.float32)
            channel = {"R": 0, "G": 1, "B": 2}
            # the colour of each position of the CFA tile, and its white-balance gain
            tile = np.array([[channel[c] for c in header.cfa[:2]], [channel[c] for c in header.cfa[2:]]])
            colours = np.tile(tile, (rgb.shape[0] // 2, rgb.shape[1] // 2))
            wb = np.take_along_axis(rgb, colours[..., None], axis=2)[..., 0]
            norm = wb / gains[colours]
        black = np.tile(np.asarray(header.black_level, dtype=np.float64).reshape(2, 2),
                        (norm.shape[0] // 2, norm.shape[1] // 2))
        values = black + norm.astype(np.float64) * (header.white_level - black)
        return np.clip(np.rint(values), 0, min(65535.0, header.white_level)).astype(np.uint16)[:h, :w]

    def _check_raw_output(self) -> None:
        if self.out == "rgb":
            raise ValueError("model %s decodes sRGB only; a RAW output needs a colour-exact model "
                             "(embedder.out: linear)" % self.model_id)

    @staticmethod
    def _raw_frame(mosaic: np.ndarray, header: bitstream.Header) -> RawFrame:
        black_level = header.black_level if len(set(header.black_level)) > 1 else header.black_level[0]
        return RawFrame(
            mosaic, cfa=header.cfa, black_level=black_level, white_level=header.white_level,
            wb_gains=np.asarray(header.wb_gains, dtype=np.float64),
            color_matrix=(np.asarray(header.color_matrix, dtype=np.float64).reshape(3, 3)
                          if header.matrix_source == "frame" else None),
            extra={"source_encoding": header.source_encoding})

    # -- tiles ----------------------------------------------------------------------------

    def tiled(self, code_shape) -> bool:
        """True when a code grid of ``code_shape`` decodes in tiles (larger than ``tile``)."""
        return bool(self.tile) and (code_shape[0] > self.tile or code_shape[1] > self.tile)

    def tiled_latent(self, codes, mode: str, steps: int, seed: int, shape: Optional[tuple] = None,
                     realism: Optional[float] = None):
        """The decoder's input for ``grid`` over the whole grid (D floats a code): the
        codebook vectors (fast), or the latent the diffusion sampler draws with its UNet run
        in tiles. Drawn once, decoded by :meth:`decode_pieces` as often as needed."""
        if mode not in MODES:
            raise ValueError("mode must be one of %s, got %r" % (", ".join(MODES), mode))
        self._check_compiled_tiles()
        torch = _needs_torch("decoding")
        from rawdiff.codec.tiled_decode import sample_latent

        embedder = self.embedder
        means = self._means_tensors(codes)
        with torch.inference_mode(), self._autocast():
            idx = self._code_tensors(codes)
            z_q = embedder.lookup_codes(idx, shape)
            if mode != "fast":
                z_q = sample_latent(self.diffusion(), idx, z_q, steps, seed, self.tile or max(z_q.shape[-2:]),
                                    self.tile_passes, realism=realism)
            return z_q if means is None else embedder.with_means(z_q, *means)

    def decode_pieces(self, latent, sink, on_device: bool = False) -> None:
        """Decode :meth:`tiled_latent` in tiles (:mod:`rawdiff.codec.tiled_decode`):
        ``sink(top, left, piece)`` gets each tile's output in :meth:`decode_indices`' layout
        (``on_device``: as the networks give it, a float32 C x h x w tensor on the device)
        and the pixel of the frame (planes: twice the plane position) where it starts, in
        raster order. Decoding the same latent again reuses its normalisation statistics."""
        torch = _needs_torch("decoding")
        from rawdiff.codec.tiled_decode import decode_latent

        def to_sink(top: int, left: int, y) -> None:
            if on_device:
                sink(top * self.factor, left * self.factor, y.float())
                return
            out = y.float().cpu().numpy()
            sink(top * self.factor, left * self.factor,
                 out if self.out == "raw" else np.ascontiguousarray(out.transpose(1, 2, 0)))

        cached = self._tile_norms if self._tile_norms is not None and self._tile_norms[0] is latent else None
        with torch.inference_mode(), self._autocast():
            norms = decode_latent(self.embedder, latent, self.tile or max(latent.shape[-2:]), to_sink,
                                  self.tile_passes, cached[1] if cached else None)
        self._tile_norms = (latent, norms)

    def decompress(self, data: bytes, mode: str = "fast", steps: int = DEFAULT_DIFFUSION_STEPS, seed: int = 0,
                   realism: Optional[float] = None, texture: bool = True, deblock: bool = True) -> np.ndarray:
        """uint8 H x W x 3 sRGB image of the frame in ``data`` (in tiles when it is larger
        than ``tile``: see the module docstring). ``realism`` (diffusion; default the model's):
        with a texture stage, its first share adds texture to the rendered image and the rest
        draws the latent (:meth:`realism_split`); ``texture=False`` leaves the texture out and
        gives ``realism`` to the latent alone. A model with a deblocking filter applies it to
        the rendered image, before the texture (``deblock=False``: not)."""
        if mode not in MODES:
            raise ValueError("mode must be one of %s, got %r" % (", ".join(MODES), mode))
        header, codes = self.parse(data)
        gain, realism = self.realism_split(mode, realism, texture)
        if self.out != "raw" and self.render_on_device:
            return self._decompress_on_device(codes, header, mode, steps, seed, realism, gain, deblock)
        if not self.tiled(header.code_shape):
            rgb = self.render(self.decode_indices(codes, mode, steps, seed, header.code_shape, realism), header)
        elif self.out == "raw":  # the reference ISP demosaics the whole mosaic
            from rawdiff.raw.isp import render

            rgb = render(self._tiled_raw_frame(codes, header, mode, steps, seed, realism))
        else:
            rgb = self._tiled_rgb(codes, header, mode, steps, seed, realism)
        if deblock:
            rgb = self.deblocked(rgb, len(codes))
        return self.textured(rgb, len(codes), seed, gain, self.texture_level(header)) if gain > 0 else rgb

    def _tiled_output_on_device(self, codes, header: bitstream.Header, mode: str, steps: int, seed: int,
                                realism: Optional[float]):
        """The decoder's 3 x H x W output of a frame decoded in tiles (:meth:`tiled_latent`,
        :func:`rawdiff.codec.tiled_decode.decode_latent`), cropped to the frame, gathered in
        one float32 tensor on the device (called under ``torch.inference_mode``)."""
        torch = _needs_torch("decoding")

        latent = self.tiled_latent(codes, mode, steps, seed, header.code_shape, realism)
        height, width = header.height, header.width
        frame = torch.empty((3, height, width), dtype=torch.float32, device=self.device)

        def sink(top: int, left: int, piece) -> None:
            piece = piece[:, : height - top, : width - left]
            frame[:, top: top + piece.shape[1], left: left + piece.shape[2]] = piece

        try:
            self.decode_pieces(latent, sink, on_device=True)
        finally:
            self._tile_norms = None  # one pass: nothing to reuse
        return frame

    def deblocked(self, rgb: np.ndarray, quality: int) -> np.ndarray:
        """uint8 sRGB ``rgb`` decoded at operating point ``quality`` through the model's
        deblocking filter (:mod:`rawdiff.codec.deblock`; in strips of rows, so memory grows with
        the strip); ``rgb`` itself for a model without one."""
        if self.deblock_filters is None:
            return rgb
        return deblock_image(rgb, self.factor, self.deblock_filters[int(quality) - 1])

    def _check_compiled_tiles(self) -> None:
        """A ValueError for a frame decoded in tiles by compiled networks: the tiles' statistics
        passes stop and swap the networks' normalisation mid-forward, which a compiled graph
        does not follow (and CUDA graphs would overwrite the statistics between tiles)."""
        if self.compile_mode != "none":
            raise ValueError("compile_mode %r is for frames decoded whole: this frame's code grid is over the "
                             "tile of %d codes (load with tile=0 where the device has the memory, or compile_mode "
                             "'none')" % (self.compile_mode, self.tile))

    def _tiled_rgb(self, codes, header: bitstream.Header, mode: str, steps: int, seed: int,
                   realism: Optional[float]) -> np.ndarray:
        rgb = np.empty((header.height, header.width, 3), np.uint8)
        latent = self.tiled_latent(codes, mode, steps, seed, header.code_shape, realism)

        def sink(top: int, left: int, piece: np.ndarray) -> None:
            block = self._render_piece(piece, header, top, left, colour_map)
            rgb[top: top + block.shape[0], left: left + block.shape[1]] = block

        try:
            colour_map = self._tiled_colour_map(latent, header)
            self.decode_pieces(latent, sink)
        finally:
            self._tile_norms = None
        return rgb

    # -- the texture stage of the realism path ---------------------------------------------

    def default_realism(self) -> float:
        """The realism a diffusion decode without one uses: the texture stage's (model.json),
        else the diffusion decoder's ``sampling.realism``."""
        if self.texture_settings is not None:
            return float(self.texture_settings["realism"])
        return self.diffusion().realism

    def realism_for(self, realism: Optional[float]) -> float:
        """``realism`` checked, or :meth:`default_realism` for None."""
        return self.default_realism() if realism is None else check_realism(realism)

    def realism_split(self, mode: str, realism: Optional[float], texture: bool = True):
        """(texture gain, latent realism) of a decode: the fast path has neither; a model
        without a texture stage (or ``texture=False``) gives ``realism`` to the latent (None:
        the diffusion decoder's default); with one, the realism's first ``share`` raises the
        texture's gain from none to the model's ``gain`` and the rest the latent's drawn share
        (:func:`rawdiff.models.texture.split_realism`)."""
        if mode == "fast" or not texture or self.texture_settings is None:
            return 0.0, realism
        from rawdiff.models.texture import split_realism

        r = self.realism_for(realism)
        fraction, latent = split_realism(r, self.texture_settings["share"])
        return fraction * float(self.texture_settings["gain"]), latent

    def texture_network(self):
        """The texture stage's network (:class:`rawdiff.models.texture.TextureEnergy`), loaded
        once; a ValueError when the model has none."""
        return self._texture_stage()[0]

    def _texture_stage(self):
        """(network, :class:`rawdiff.models.texture.Synthesis`) of the texture stage, made once."""
        if self._texture is None:
            if self.texture_settings is None:
                raise ValueError("model %s has no texture stage (%s)" % (self.model_id, TEXTURE_FILE))
            from rawdiff.models.texture import Synthesis, load_texture

            synthesis = Synthesis.of_entry(self.texture_settings)
            net = load_texture(os.path.join(self.model_dir, TEXTURE_FILE), int(self.texture_settings["channels"]),
                               len(synthesis.sigmas))
            self._texture = (net.to(self.device).eval(), synthesis)
        return self._texture

    def textured(self, rgb: np.ndarray, quality: int, seed: int, gain: float,
                 log_level: Optional[np.ndarray] = None) -> np.ndarray:
        """uint8 sRGB ``rgb`` decoded at operating point ``quality`` with the texture stage's
        texture at ``gain`` (of the predicted energies: :func:`rawdiff.models.texture.add_texture`),
        its noise drawn from ``seed``'s own stream (not the diffusion sampler's). Frames that
        decode in tiles get it in strips of a tile's height, so memory stays bounded by the tile.
        ``log_level``: the frame's level of the energies (:meth:`texture_level`), or None."""
        torch = _needs_torch("texture synthesis")
        from rawdiff.metrics import to_tensor, to_uint8

        self._texture_stage()
        with torch.inference_mode():
            return to_uint8(self._textured_tensor(to_tensor(rgb).to(self.device), quality, seed, gain, log_level))

    def _textured_tensor(self, img, quality: int, seed: int, gain: float, log_level=None):
        """:meth:`textured` of a float 1 x 3 x H x W image in [0, 1] on the device (called
        under ``torch.inference_mode``)."""
        torch = _needs_torch("texture synthesis")
        from rawdiff.models.texture import synthesize

        net, synthesis = self._texture_stage()
        strip = self.tile * self.factor if self.tile else None
        gen = torch.Generator().manual_seed(int(seed) + TEXTURE_SEED_OFFSET)
        return synthesize(net, img, quality / self.qualities, gain, gen, strip_rows=strip, synthesis=synthesis,
                          log_level=log_level)

    def decompress_raw(self, data: bytes, mode: str = "fast", steps: int = DEFAULT_DIFFUSION_STEPS, seed: int = 0,
                       realism: Optional[float] = None) -> RawFrame:
        """The reconstructed RAW frame of ``data`` (mosaic, CFA, levels, white balance, colour
        matrix): the reference ISP renders it as the frame it came from. With a texture stage
        the latent is drawn as for :meth:`decompress` at the same realism, without the texture
        (which is the sRGB image's)."""
        if mode not in MODES:
            raise ValueError("mode must be one of %s, got %r" % (", ".join(MODES), mode))
        header, codes = self.parse(data)
        _, realism = self.realism_split(mode, realism)  # the texture is the sRGB image's
        if not self.tiled(header.code_shape):
            return self.mosaic_frame(self.decode_indices(codes, mode, steps, seed, header.code_shape, realism),
                                     header)
        return self._tiled_raw_frame(codes, header, mode, steps, seed, realism)

    def _tiled_raw_frame(self, codes, header: bitstream.Header, mode: str, steps: int,
                         seed: int, realism: Optional[float] = None) -> RawFrame:
        self._check_raw_output()
        mosaic = np.empty((header.height, header.width), np.uint16)
        latent = self.tiled_latent(codes, mode, steps, seed, header.code_shape, realism)

        def sink(top: int, left: int, piece: np.ndarray) -> None:
            block = self._mosaic_piece(piece, header, top, left, colour_map)
            mosaic[top: top + block.shape[0], left: left + block.shape[1]] = block

        try:
            colour_map = self._tiled_colour_map(latent, header)
            self.decode_pieces(latent, sink)
        finally:
            self._tile_norms = None
        return self._raw_frame(mosaic, header)

    def _tiled_colour_map(self, latent, header: bitstream.Header):
        """:meth:`colour_map` of a frame decoded in tiles: a first pass gathers the decoded
        statistics over the code cells (memory of one tile), the caller's pass renders."""
        if not self.colour_exact or not any(header.colour_stats):
            return None
        moments = CellMoments(self.factor)

        def sink(top: int, left: int, piece: np.ndarray) -> None:
            moments.add(piece[: header.height - top, : header.width - left])

        self.decode_pieces(latent, sink)
        return transport_map(header.colour_stats, moments.statistics())

    def _autocast(self):
        """The autocast context of :attr:`precision` on the codec's device (nothing for float32)."""
        from rawdiff.device import autocast

        self.embedder  # noqa: B018 - loads the networks, resolves the device and the dtype
        return autocast(self._device, self._autocast_dtype)

    @property
    def has_diffusion(self) -> bool:
        """Whether the model directory has a latent-diffusion decoder."""
        return os.path.isfile(os.path.join(self.model_dir, DIFFUSION_FILE))

    def diffusion(self):
        if self._diffusion is None:
            path = os.path.join(self.model_dir, DIFFUSION_FILE)
            if not self.has_diffusion:
                raise ValueError("model %s has no diffusion decoder (%s missing); decode with the fast "
                                 "decoder (--mode fast, ~mode: fast)" % (self.model_id, path))
            from rawdiff.models.ldm import load_diffusion_decoder

            self._diffusion = load_diffusion_decoder(self, path)
        return self._diffusion
