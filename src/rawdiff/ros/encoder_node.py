"""rawdiff encoder node: RAW camera frames in, entropy-coded VQ codes out.

    image_raw (sensor_msgs/Image, RAW Bayer) --> RawFrame --Codec.compress-->
    compressed_codes (rawdiff/CompressedCodes, header copied from the image)

One node per camera (``launch/encoder.launch`` puts it in the camera's namespace). The
model is loaded once at start; per frame the node only runs the codec.

Subscribed topics:
    ``image_raw`` (sensor_msgs/Image): ``bayer_{rggb,bggr,gbrg,grbg}{8,16}``, ``mono8`` /
    ``mono16`` with ``~cfa``, or packed MIPI CSI-2 RAW10/RAW12 (``~input_format``, or an
    encoding starting with ``raw10p``/``raw12p``) with width and height from the message.

Published topics:
    ``compressed_codes`` (rawdiff/CompressedCodes): the bitstream of each frame (the same
    bytes as a ``.rdc`` file), the model id, the source encoding and size, the code grid.
    ``/diagnostics`` (diagnostic_msgs/DiagnosticArray), via diagnostic_updater: input
    and output rate, encode latency (arrival to publication) and encode time, bytes in
    and out per frame, bits per pixel, frames received, published, dropped, rejected
    and failed, the last error.

Parameters (private; defaults in ``config/encoder.yaml``, which matches :data:`DEFAULTS`):
    ``~model`` (str, ``""``: the package's ``models/default``): model directory.
    ``~backend`` (str, ``auto``): ``onnx`` (the model's ``encoder.onnx``, onnxruntime with
        TensorRT, CUDA or CPU), ``torch``, or ``auto``: onnx when the model has a current
        ``encoder.onnx``, else torch (the reason is logged).
    ``~threads`` (int, ``0``): CPU threads of the encoder (torch and onnxruntime); ``0``:
        ``OMP_NUM_THREADS`` when set, else the libraries' defaults (all cores).
    ``~device`` (str, ``auto``): ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:1``.
    ``~cfa`` (str, ``""``): RGGB, BGGR, GRBG or GBRG; needed for mono and packed input
        without a pattern in the encoding; must agree with a ``bayer_*`` encoding.
    ``~black_level`` (float or 4 floats, ``0``): sensor black level (2x2 tile, row-major).
    ``~white_level`` (float, ``0``): saturation value; ``0`` means the container's full
        scale (255, 65535, 1023 for RAW10, 4095 for RAW12).
    ``~input_format`` (str, ``""``): ``raw10p`` or ``raw12p`` for packed CSI-2 data.
    ``~wb_gains`` (3 floats, ``[]``): the camera's white-balance gains (R, G, B), sent in
        every frame's bitstream for the decoder's colour stage; ``[]``: each frame's gray-world
        estimate over the whole frame (what the reference ISP computes).
    ``~color_matrix`` (9 floats or 3x3, ``[]``): white-balanced camera RGB -> linear sRGB,
        sent in the bitstream; ``[]``: the reference ISP's default (identity).
    ``~queue_size`` (int, ``1``): frames kept while the node is busy. When full, the
        oldest waiting frame is dropped and counted ("frames dropped"): the subscriber
        hands every message to a bounded queue (rospy's own queue is off, so no drop is
        hidden); a frame pushed out of it is one that arrived while the node was busy.
        Under overload the node drops, it never builds a backlog.
    ``~buff_size`` (int, ``2**28``): rospy receive buffer; large, so a whole image is read
        at once instead of stale frames piling up in the socket.
    ``~wait_for_subscribers`` (int, ``0``): subscribe to ``image_raw`` only once this many
        nodes listen on ``compressed_codes`` (``pipeline.launch`` with a bag uses it).
    ``~error_throttle_s`` (float, ``5``): each kind of bad input is logged at most once in
        this period (the repeats are counted and reported with the next line).
    ``~diagnostic_period`` (float, ``1``): seconds between /diagnostics messages.

Bad input (a wrong byte count, an unknown encoding, a zero or odd size, levels that do
not fit) is logged as a throttled error naming the problem, counted as rejected, and
the node goes on with the next frame.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional

from rawdiff.ros.node import CodecNode, read_params, resolve_model_dir, run_node
from rawdiff.ros.transcode import encode_image

DEFAULTS: Dict[str, Any] = {
    "model": "",
    "backend": "auto",
    "threads": 0,
    "device": "auto",
    "cfa": "",
    "black_level": 0,
    "white_level": 0,
    "input_format": "",
    "wb_gains": [],
    "color_matrix": [],
    "queue_size": 1,
    "buff_size": 1 << 28,
    "wait_for_subscribers": 0,
    "error_throttle_s": 5.0,
    "diagnostic_period": 1.0,
}


def conversion_args(params: Dict[str, Any]) -> Dict[str, Any]:
    """``image_to_frame`` keyword arguments from the node's parameters; raises
    ``ValueError`` for a CFA, input format or levels that cannot work."""
    import numpy as np

    from rawdiff.raw.frame import RawFrame, check_cfa

    cfa = str(params["cfa"] or "").strip() or None
    if cfa is not None:
        cfa = check_cfa(cfa)
    fmt = str(params["input_format"] or "").strip().lower() or None
    if fmt is not None and fmt not in ("raw10p", "raw12p"):
        raise ValueError("~input_format %r is not raw10p or raw12p" % (params["input_format"],))
    black = params["black_level"]
    if isinstance(black, str):
        raise ValueError("~black_level must be a number or 4 numbers, got %r" % (black,))
    white = params["white_level"]
    try:
        white = float(white) if white not in (None, "") and float(white) != 0 else None
    except (TypeError, ValueError):
        raise ValueError("~white_level must be a number, got %r" % (white,)) from None
    gains = _optional_numbers(params.get("wb_gains"), "~wb_gains", (3,))
    ccm = _optional_numbers(params.get("color_matrix"), "~color_matrix", (3, 3))
    # The frame checks the levels (finite, white above black), the gains (positive, finite) and
    # the matrix (3x3, finite, not singular) as it does for every message.
    try:
        RawFrame(np.zeros((2, 2), np.uint16), black_level=black,
                 white_level=white if white is not None else 65535.0, wb_gains=gains, color_matrix=ccm)
    except ValueError as exc:
        raise ValueError("parameter %s" % exc) from None
    return {"cfa": cfa, "black_level": black, "white_level": white, "input_format": fmt,
            "wb_gains": gains, "color_matrix": ccm}


def _optional_numbers(value: Any, name: str, shape):
    """None for an empty parameter, else the numbers as an array of ``shape``; ValueError."""
    import numpy as np

    if value is None or (isinstance(value, (list, tuple, str)) and len(value) == 0):
        return None
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("%s must be %d numbers, got %r" % (name, int(np.prod(shape)), value)) from None
    if arr.size != int(np.prod(shape)):
        raise ValueError("%s must be %d numbers, got %r" % (name, int(np.prod(shape)), value))
    return arr.reshape(shape)


class EncoderNode(CodecNode):
    """``image_raw`` -> :func:`rawdiff.ros.transcode.encode_image` -> ``compressed_codes``."""

    verb = "encode"
    in_topic = "image_raw"
    out_topic = "compressed_codes"
    out_queue_size = 10

    def __init__(self, params: Dict[str, Any]):
        from sensor_msgs.msg import Image

        from rawdiff.codec import Codec
        from rawdiff.msg import CompressedCodes

        self.in_type, self.out_type = Image, CompressedCodes
        self.conversion = conversion_args(params)
        self.codec = Codec.load(resolve_model_dir(str(params["model"])), device=str(params["device"]),
                                backend=str(params["backend"]), threads=encoder_threads(params["threads"]))
        super().__init__(params)

    def process(self, msg):
        return encode_image(self.codec, msg, **self.conversion)

    def describe(self, msg) -> str:
        return "%s (%s %sx%s)" % (super().describe(msg), msg.encoding or "no encoding", msg.width, msg.height)

    def hardware_id(self) -> str:
        return "rawdiff model %s" % self.codec.model_id

    def status_extra(self) -> Dict[str, str]:
        return {"model_id": self.codec.model_id, "model": self.codec.model_dir,
                "backend": self.codec.backend, "device": str(self.codec.device),
                "threads": str(torch_threads()), "torch": torch_version()}


def encoder_threads(value: Any) -> Optional[int]:
    """``~threads``: a positive count, or 0 for OMP_NUM_THREADS when set, else None (defaults)."""
    try:
        threads = int(value)
    except (TypeError, ValueError):
        raise ValueError("~threads must be an integer, got %r" % (value,)) from None
    if threads < 0:
        raise ValueError("~threads must be 0 (automatic) or a positive count, got %d" % threads)
    if threads == 0:
        env = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(env) if env.isdigit() else 0
    return threads or None


def torch_threads() -> int:
    """torch's CPU threads, or 0 where torch is not installed (the vehicle runs encoder.onnx)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.get_num_threads()


def torch_version() -> str:
    """torch's version, or "not installed" (a vehicle install: requirements-vehicle.txt)."""
    try:
        import torch
    except ImportError:
        return "not installed"
    return torch.__version__


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point of ``scripts/encoder_node``; ``argv`` as ``rospy.init_node`` takes it."""
    code = run_node("rawdiff_encoder", lambda: EncoderNode(read_params(DEFAULTS)), argv)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
