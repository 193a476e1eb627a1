"""rawdiff decoder node: latent codes in, RGB images out.

    compressed_codes (rawdiff/CompressedCodes) --checks--> Codec.decompress(mode, steps, seed)
    --> image_decoded (sensor_msgs/Image rgb8, header of the codes: stamp and frame_id)
    compressed_codes/camera_info --the newest calibration at or before the frame, the image's
    header--> camera_info beside image_decoded (one per decoded image)

The header travels unchanged from the camera image through the codes to the decoded
image, so time synchronisation with other sensors keeps working. The model is loaded
once at start (the diffusion decoder on the first frame that needs it).

Subscribed topics:
    ``compressed_codes`` (rawdiff/CompressedCodes).
    ``<codes topic>/camera_info`` (sensor_msgs/CameraInfo): the calibration the encoder
    relays (``/compressed_codes/camera_info``); optional.

Published topics:
    ``image_decoded`` (sensor_msgs/Image, ``rgb8`` or ``bayer_<cfa>16``, the source frame's size).
    ``camera_info`` (sensor_msgs/CameraInfo) beside ``image_decoded`` as image_transport
    names it (``/camera/image_decoded`` -> ``/camera/camera_info``), or ``~camera_info_topic``:
    one per decoded image, published just before it, with its stamp and frame_id; the
    calibration received last at or before the frame's stamp, else an uncalibrated one (the
    image size, zero matrices), as ``camera_info_manager`` gives an uncalibrated camera.
    ``/diagnostics`` (diagnostic_msgs/DiagnosticArray), via diagnostic_updater: input
    and output rate, decode latency and time, bytes per frame, bits per pixel of the
    codes, frames received, published, dropped, rejected and failed, the last error; and
    diagnostic_updater's rate and stamp checks of ``compressed_codes`` and of
    ``image_decoded`` (``"<topic> topic status"``).

Parameters (private; defaults in ``config/decoder.yaml``, which matches :data:`DEFAULTS`):
    ``~model`` (str, ``""``: the package's ``models/default``): model directory; the
        encoder's model (same ``model_id``) or one that decodes its streams (model.json's
        ``streams_of``: the same codes and prior, e.g. a decoder update of it).
    ``~mode`` (str, ``fast``): ``fast`` (the VQ decoder, one pass) or ``diffusion``.
    ``~steps`` (int, ``4``): diffusion sampling steps.
    ``~seed`` (int, ``0``): diffusion noise seed; a frame decodes the same for a seed.
    ``~realism`` (float, ``-1``: the model's default): diffusion's trade of fidelity for
        realism, finest scale first, from 0 (the fast path) to 1 (a whole sample: texture
        back, less like the scene pixel for pixel): with a texture stage its first share
        raises the drawn pixel texture, the rest the share of the latent's channels that get
        the drawn residual (``rawdiff.codec.Codec.realism_split``).
    ``~output`` (str, ``rgb8``): ``rgb8`` (sRGB, the reference ISP's colour stage with the
        frame's white balance and colour matrix from the bitstream) or ``bayer16`` (the
        reconstructed RAW mosaic, ``bayer_<cfa>16`` with the source's CFA, in the source's
        black and white levels, for ML pipelines that want RAW).
    ``~device`` (str, ``auto``): ``auto`` (the GPU when present), ``cpu``, ``cuda``, ...
    ``~max_pixels`` (int, ``33667072``: 4 x 3868 x 2176): codes declaring a larger frame are
        rejected from their header, before anything is allocated (0: no limit).
    ``~tile`` (int, ``256``): frames larger than this many codes a side decode in tiles of
        that size, so the networks' memory stays that of a tile (0: never). On a GPU the
        tiles are gathered into one float frame in its memory and rendered there (about 50
        bytes a pixel at the peak); with the memory to spare, 0 decodes an 8 Mpixel frame in
        0.11 s rather than 0.15 (README, decoder speed).
    ``~queue_size`` (int, ``1``): messages kept while the node is busy; when full the
        oldest is dropped and counted, as in the encoder (see ``rawdiff.ros.node``).
    ``~buff_size`` (int, ``2**24``): rospy receive buffer.
    ``~wait_for_subscribers`` (int, ``0``): subscribe to ``compressed_codes`` only once this
        many nodes listen on ``image_decoded`` (``pipeline.launch`` recording a bag uses it).
    ``~error_throttle_s`` (float, ``5``): each kind of problem is logged at most once in
        this period.
    ``~diagnostic_period`` (float, ``1``): seconds between /diagnostics messages.
    ``~camera_info_topic`` (str, ``""``): where the decoded images' camera_info goes; ``""``:
        beside ``image_decoded``. On the camera's own master that is the camera's
        ``camera_info``, so launch files running both sides there give another
        (``pipeline.launch``: ``/camera/decoded/camera_info``).
    ``~expected_rate`` (float, ``0``), ``~rate_tolerance`` (float, ``0.1``), ``~rate_window``
        (int, ``5``), ``~max_delay`` (float, ``1``): the topic statuses' rate and stamp
        checks, as in the encoder (``rawdiff.ros.encoder_node``); ``0`` turns the rate
        bounds, or the stamp check, off.

Codes from another model (``model_id`` of the message or of the bitstream, neither the
model's nor one of its ``streams_of``), an empty,
corrupted or truncated bitstream, fields that disagree with it, or a frame over
``~max_pixels``: a throttled error naming the problem (both model ids for a mismatch, the
declared size and the limit for a frame too large), counted as rejected; the node goes
on with the next message. Errors of the decode mode itself (a model without a
diffusion decoder) are handled the same way.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional

from rawdiff.codec.limits import DEFAULT_MAX_PIXELS, DEFAULT_TILE, check_max_pixels, check_tile
from rawdiff.codec.modeldir import check_realism
from rawdiff.ros.camera_info import CameraInfoHistory, codes_camera_info_topic, sibling_camera_info_topic
from rawdiff.ros.diagnostics import TOPIC_DEFAULTS
from rawdiff.ros.node import CodecNode, read_params, resolve_model_dir, run_node
from rawdiff.ros.transcode import decode_codes

DEFAULTS: Dict[str, Any] = {
    "model": "",
    "mode": "fast",
    "steps": 4,
    "seed": 0,
    "realism": -1.0,
    "output": "rgb8",
    "device": "auto",
    "max_pixels": DEFAULT_MAX_PIXELS,
    "tile": DEFAULT_TILE,
    "queue_size": 1,
    "buff_size": 1 << 24,
    "wait_for_subscribers": 0,
    "error_throttle_s": 5.0,
    "diagnostic_period": 1.0,
    "camera_info_topic": "",
}
DEFAULTS.update(TOPIC_DEFAULTS)


def decode_args(params: Dict[str, Any]) -> Dict[str, Any]:
    """``Codec.decompress`` keyword arguments from the parameters; raises ``ValueError``."""
    from rawdiff.codec.codec import MODES
    from rawdiff.ros.transcode import OUTPUTS

    output = str(params.get("output", "rgb8"))
    if output not in OUTPUTS:
        raise ValueError("~output (decoder.launch's output_encoding) must be one of %s, got %r"
                         % (", ".join(OUTPUTS), output))
    mode = str(params["mode"])
    if mode not in MODES:
        raise ValueError("~mode must be one of %s, got %r" % (", ".join(MODES), mode))
    try:
        steps, seed = int(params["steps"]), int(params["seed"])
    except (TypeError, ValueError):
        raise ValueError("~steps and ~seed must be integers, got %r and %r"
                         % (params["steps"], params["seed"])) from None
    if steps < 1:
        raise ValueError("~steps must be >= 1, got %d" % steps)
    realism = params.get("realism", -1.0)
    if realism != -1.0:  # -1: the model's default
        try:
            realism = check_realism(realism)
        except ValueError as exc:
            raise ValueError("~%s (or -1 for the model's default)" % exc) from None
    return {"mode": mode, "steps": steps, "seed": seed, "output": output,
            "realism": None if realism == -1.0 else realism}


class DecoderNode(CodecNode):
    """``compressed_codes`` -> :func:`rawdiff.ros.transcode.decode_codes` -> ``image_decoded``."""

    verb = "decode"
    in_topic = "compressed_codes"
    out_topic = "image_decoded"
    out_queue_size = 5

    def __init__(self, params: Dict[str, Any]):
        from sensor_msgs.msg import Image

        from rawdiff.codec import Codec
        from rawdiff.msg import CompressedCodes

        self.in_type, self.out_type = CompressedCodes, Image
        self.decode = decode_args(params)
        self.codec = Codec.load(resolve_model_dir(str(params["model"])), device=str(params["device"]),
                                max_pixels=check_max_pixels(params["max_pixels"], "~max_pixels"),
                                tile=check_tile(params["tile"], "~tile"))
        self.camera_info = CameraInfoHistory()
        self.info_topics = ("", "")  # (relayed, decoded images'), known once started
        self.info_pub = None
        self.info_sub = None
        super().__init__(params)

    def process(self, msg):
        return decode_codes(self.codec, msg, **self.decode)

    def advertise_more(self) -> None:
        import rospy
        from sensor_msgs.msg import CameraInfo

        out = str(self.params.get("camera_info_topic") or "").strip()
        self.info_topics = (codes_camera_info_topic(rospy.resolve_name(self.in_topic)),
                            rospy.resolve_name(out) if out else sibling_camera_info_topic(self.pub.resolved_name))
        self.info_pub = rospy.Publisher(self.info_topics[1], CameraInfo, queue_size=self.out_queue_size)

    def subscribe_more(self) -> None:
        import rospy
        from sensor_msgs.msg import CameraInfo

        self.info_sub = rospy.Subscriber(self.info_topics[0], CameraInfo, self.camera_info.add, queue_size=5)

    def publish(self, out) -> None:
        self.info_pub.publish(self.camera_info.for_image(out.header, out.height, out.width))
        self.pub.publish(out)

    def describe(self, msg) -> str:
        return "%s (model %s, %d bytes)" % (super().describe(msg), msg.model_id or "?", len(msg.data))

    def hardware_id(self) -> str:
        return "rawdiff model %s" % self.codec.model_id

    def status_extra(self) -> Dict[str, str]:
        return {"model_id": self.codec.model_id, "model": self.codec.model_dir, "device": str(self.codec.device),
                "mode": self.decode["mode"], "output": self.decode["output"], "steps": str(self.decode["steps"]),
                "seed": str(self.decode["seed"]), "max_pixels": str(self.codec.max_pixels or "none"),
                "tile": str(self.codec.tile),
                "camera_info": "%s -> %s: %s" % (self.info_topics + (self.camera_info.describe(),))}


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point of ``scripts/decoder_node``; ``argv`` as ``rospy.init_node`` takes it."""
    code = run_node("rawdiff_decoder", lambda: DecoderNode(read_params(DEFAULTS)), argv)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
