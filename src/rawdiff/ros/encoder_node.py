"""rawdiff encoder node: RAW camera frames in, entropy-coded VQ codes out.

    image_raw (sensor_msgs/Image, RAW Bayer) --> RawFrame --Codec.compress-->
    compressed_codes (rawdiff/CompressedCodes, header copied from the image)
    camera_info (beside image_raw) --on change, else once a period--> compressed_codes/camera_info

One node per camera (``launch/encoder.launch`` puts it in the camera's namespace). The
model is loaded once at start; per frame the node only runs the codec.

Subscribed topics:
    ``image_raw`` (sensor_msgs/Image): ``bayer_{rggb,bggr,gbrg,grbg}{8,16}``, ``mono8`` /
    ``mono16`` with ``~cfa``, or packed MIPI CSI-2 RAW10/RAW12 (``~input_format``, or an
    encoding starting with ``raw10p``/``raw12p``) with width and height from the message.
    ``camera_info`` (sensor_msgs/CameraInfo) beside the image topic, as image_transport
    names it (``/front/image_raw`` -> ``/front/camera_info``); optional.

Published topics:
    ``compressed_codes`` (rawdiff/CompressedCodes): the bitstream of each frame (the same
    bytes as a ``.rdc`` file), the model id, the source encoding and size, the code grid.
    ``<codes topic>/camera_info`` (sensor_msgs/CameraInfo, latched; e.g.
    ``/compressed_codes/camera_info``): the camera's calibration, relayed as received when
    it changes and otherwise once per ``~camera_info_period`` (see ``rawdiff.ros.camera_info``).
    ``/diagnostics`` (diagnostic_msgs/DiagnosticArray), via diagnostic_updater: input
    and output rate, encode latency (arrival to publication) and encode time, bytes in
    and out per frame, bits per pixel, frames received, published, dropped, rejected
    and failed, the last error; the quality: mode (fixed or target), the last frame's
    quality, the model's qualities, target and achieved kbit/s (over 5 s), the input frame
    rate, the rate control's bucket and bpp estimates, and whether the budget is met (WARN
    when quality 1 alone needs more); and diagnostic_updater's rate and stamp checks of
    ``image_raw`` and of ``compressed_codes`` (``"<topic> topic status"``).
    ``~parameter_descriptions``, ``~parameter_updates`` and the ``~set_parameters`` service
    of dynamic_reconfigure (``~quality`` and ``~target_kbps``, see below).

Parameters (private; defaults in ``config/encoder.yaml``, which matches :data:`DEFAULTS`):
    ``~model`` (str, ``""``: the package's ``models/default``): model directory.
    ``~quality`` (int, ``0``): the operating point of every frame while ``~target_kbps`` is
        0: 1 (the fewest bits) to the model's number of quantizer stages; 0: the model's
        default quality. Outside that range the node does not start (one line naming it).
    ``~target_kbps`` (float, ``0``): a bit budget for the codes in kbit/s; the node picks
        each frame's quality to hold it at the input frame rate (:mod:`rawdiff.ros.rate_control`);
        0: off. Both change while the node runs through dynamic_reconfigure
        (``rosrun dynamic_reconfigure dynparam set /camera/rawdiff_encoder quality 2``,
        rqt_reconfigure); a change outside the range is clamped to it, with a warning.
    ``~backend`` (str, ``auto``): ``onnx`` (the model's ``encoder.onnx``, onnxruntime with
        TensorRT, CUDA or CPU), ``torch``, or ``auto``: onnx when the model has a current
        ``encoder.onnx``, else torch (the reason is logged).
    ``~threads`` (int, ``0``): CPU threads of the encoder (torch and onnxruntime); ``0``:
        ``OMP_NUM_THREADS`` when set, else the libraries' defaults (all cores).
    ``~encode_rows`` (int, ``576``): plane rows (half the RAW rows) the encoder codes at a
        time, which bounds its memory (its code search holds a table a code per position); the
        codes are the same; ``0``: whole frames. The default keeps a 1936x1112 frame whole.
    ``~adaptive_coding`` (bool, ``true``): code each stage with the model's tables adapted to
        the frame (bitstream format version 9, the counts aged; 4 to 12 % fewer bytes); ``false``:
        the tables as
        they are, for receivers that read format version 6 and before only.
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
    ``~camera_info_period`` (float, ``1``): an unchanged calibration is relayed at most once
        in this many seconds (``0``: every camera_info); a changed one at once.
    ``~expected_rate`` (float, ``0``): the camera's frame rate in Hz; the topic statuses WARN
        when a topic's rate over ``~rate_window`` updates is outside it by more than
        ``~rate_tolerance``. ``0``: no rate bounds, only a stall is reported.
    ``~rate_tolerance`` (float, ``0.1``): allowed relative deviation from ``~expected_rate``.
    ``~rate_window`` (int, ``5``): diagnostic updates the rate is measured over; none in
        the window: WARN "No events recorded." (the input stalled).
    ``~max_delay`` (float, ``1``): WARN when a message's stamp is older than this many
        seconds on arrival (or on publication, for the output); ``0``: no stamp check.

Quality and bit budget: the next frame after a change is coded at the new quality (its
bitstream header says which: ``rawdiff info``). With ``~target_kbps`` the node learns what
each quality costs per pixel from the frames it codes (a stream cut to a lower quality is
what coding at it gives, so one frame measures every quality up to its own), starting from
the model's measured operating points when ``model.json`` lists them; below the rate of
quality 1 it codes every frame at quality 1 and reports WARN.

Bad input (a wrong byte count, an unknown encoding, a zero or odd size, a frame too small
for the model, levels that do not fit) is logged as a throttled error naming the problem,
counted as rejected, and the node goes on with the next frame.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional

from rawdiff.codec.bitstream import read_header, truncated_sizes
from rawdiff.codec.limits import DEFAULT_ENCODE_ROWS, check_encode_rows
from rawdiff.raw.io import dim_note
from rawdiff.ros.camera_info import CameraInfoRelay, codes_camera_info_topic, sibling_camera_info_topic
from rawdiff.ros.diagnostics import TOPIC_DEFAULTS
from rawdiff.ros.node import CodecNode, named, read_params, resolve_model_dir, run_node
from rawdiff.ros.rate_control import RateControl, check_target_kbps
from rawdiff.ros.reconfigure import clamping_server, narrowed
from rawdiff.ros.transcode import encode_image

DEFAULTS: Dict[str, Any] = {
    "model": "",
    "quality": 0,
    "target_kbps": 0.0,
    "backend": "auto",
    "threads": 0,
    "encode_rows": DEFAULT_ENCODE_ROWS,
    "adaptive_coding": True,
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
    "camera_info_period": 1.0,
}
DEFAULTS.update(TOPIC_DEFAULTS)


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


def coding_status(adaptive_coding: bool) -> str:
    """How the node codes the indices, for /diagnostics: adaptive (compiled, or the Python
    reference where the extension was not built, about 100 times slower) or static."""
    if not adaptive_coding:
        return "static tables (format version 6 and before)"
    from rawdiff.codec.adaptive import compiled

    return "adaptive (format version 9, %s)" % ("compiled" if compiled() else "Python reference: not built, slow")


def check_flag(value: Any, name: str) -> bool:
    """A boolean parameter: true or false (also as the strings a hand-set parameter may hold)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError("%s must be true or false, got %r" % (name, value))


def start_quality(value: Any, qualities: int, default: int) -> int:
    """``~quality`` as the quality of the model's frames (0: ``default``); a ``ValueError``
    naming the range otherwise."""
    valid = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= qualities
    if not valid:
        raise ValueError("~quality %r is not one of this model's operating points: 1..%d, or 0 for its default (%d)"
                         % (value, qualities, default))
    return value or default


def config_type():
    """The generated ``rawdiff.cfg.EncoderConfig`` (catkin builds it from cfg/Encoder.cfg)."""
    try:
        from rawdiff.cfg import EncoderConfig
    except ImportError as exc:
        raise ValueError("the dynamic_reconfigure module rawdiff.cfg.EncoderConfig is missing (%s): catkin builds "
                         "it from cfg/Encoder.cfg; run `make setup` and source build/env.sh" % exc) from None
    return EncoderConfig


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
        target_kbps = check_target_kbps(params["target_kbps"])
        base_config = config_type()
        self.camera_info = CameraInfoRelay(params["camera_info_period"])
        self.info_topics = ("", "")  # (camera's, relayed), known once started
        self.info_pub = None
        self.info_sub = None
        self.codec = Codec.load(resolve_model_dir(str(params["model"])), device=str(params["device"]),
                                backend=str(params["backend"]), threads=encoder_threads(params["threads"]),
                                encode_rows=check_encode_rows(params["encode_rows"], "~encode_rows"))
        self.codec.adaptive_coding = check_flag(params["adaptive_coding"], "~adaptive_coding")
        self.quality = start_quality(params["quality"], self.codec.qualities, self.codec.default_quality)
        self.rate = RateControl(self.codec.qualities, self.codec.operating_points)
        self.rate.set_target(target_kbps)
        self.pixels = 0  # of the last frame, for the budget check
        super().__init__(params)
        self.reconfigure = self._serve_reconfigure(base_config, target_kbps)

    def _serve_reconfigure(self, base_config, target_kbps: float):
        """The dynamic_reconfigure server of ``~quality`` and ``~target_kbps``, in this model's
        range; its first call of :meth:`_reconfigure` applies the start values."""
        import rospy

        # the parameter server's values are the server's start values: give them their types
        rospy.set_param("~quality", int(self.quality))
        rospy.set_param("~target_kbps", float(target_kbps))
        qualities, default = self.codec.qualities, self.codec.default_quality
        notes = {"quality": "this model's operating points 1..%d, or 0 for its default %d" % (qualities, default),
                 "target_kbps": "kbit/s; 0: off"}
        return clamping_server(narrowed(base_config, {"quality": (0, qualities)}), self._reconfigure,
                               named(rospy.logwarn), notes)

    def _reconfigure(self, config, level):
        """dynamic_reconfigure's callback: the values are in range (the server clamped them)."""
        import rospy

        quality = int(config["quality"]) or self.codec.default_quality
        target = check_target_kbps(config["target_kbps"])
        changed = (quality, target) != (self.quality, self.rate.target_kbps) or level == ~0
        self.quality = quality
        self.rate.set_target(target)
        config["quality"] = quality  # 0 comes back as the quality it stands for
        if changed:
            rospy.loginfo("%s: %s", rospy.get_name(), self.quality_mode())
        return config

    def quality_mode(self) -> str:
        if self.rate.target_kbps > 0:
            return "quality picked per frame for %.1f kbit/s (qualities 1..%d)" % (self.rate.target_kbps,
                                                                                   self.codec.qualities)
        return "quality %d of %d for every frame" % (self.quality, self.codec.qualities)

    #: (pixels, frames) above the white level so far, clipped to it
    clipped = (0, 0)
    #: the brightest pixel so far as a share of the range up to the white level
    #: (rawdiff.raw.io.brightest_share), and whether the first frames were looked at
    brightest = 0.0
    dim_warned = False
    #: frames after which a node whose frames all stayed dim says so (rawdiff.raw.io.dim_note)
    DIM_FRAMES = 10

    def arrived(self, msg, now: float) -> None:
        self.rate.arrived(now)

    def process(self, msg):
        pixels = int(msg.width) * int(msg.height)
        quality = self.rate.choose(pixels) if self.rate.target_kbps > 0 else self.quality
        out, info = encode_image(self.codec, msg, quality=quality, **self.conversion)
        data = out.data
        # what each lower quality would have cost: the stage table says, no stream is cut
        sizes = truncated_sizes(read_header(data, verify=False), len(data))
        self.rate.coded(info["quality"], sizes, info["pixels"])
        self.pixels = info["pixels"]
        if info.get("clipped"):  # pixels above the white level, clipped to it: counted, not refused
            self.clipped = (self.clipped[0] + int(info["clipped"]), self.clipped[1] + 1)
        self.brightest = max(self.brightest, float(info["peak"]))
        if not self.dim_warned and self.rate.frames >= self.DIM_FRAMES:
            self.dim_warned = True  # looked at once: a scene that darkens later is no configuration problem
            dim = dim_note(self.brightest, self.rate.frames, "~black_level, ~white_level", first=True)
            if dim:
                import rospy

                named(rospy.logwarn)(dim)
        return out, info

    def advertise_more(self) -> None:
        import rospy
        from sensor_msgs.msg import CameraInfo

        self.info_topics = (sibling_camera_info_topic(rospy.resolve_name(self.in_topic)),
                            codes_camera_info_topic(self.pub.resolved_name))
        self.info_pub = rospy.Publisher(self.info_topics[1], CameraInfo, queue_size=5, latch=True)

    def subscribe_more(self) -> None:
        import rospy
        from sensor_msgs.msg import CameraInfo

        self.info_sub = rospy.Subscriber(self.info_topics[0], CameraInfo, self._camera_info, queue_size=5)

    def _camera_info(self, msg) -> None:
        if self.camera_info.offer(msg):
            self.info_pub.publish(msg)

    def describe(self, msg) -> str:
        return "%s (%s %sx%s)" % (super().describe(msg), msg.encoding or "no encoding", msg.width, msg.height)

    def hardware_id(self) -> str:
        return "rawdiff model %s" % self.codec.model_id

    def status_extra(self) -> Dict[str, str]:
        return {"model_id": self.codec.model_id, "model": self.codec.model_dir,
                "backend": self.codec.backend, "device": self.codec.encoder_device,
                "threads": str(torch_threads()), "torch": torch_version(),
                "camera_info": "%s -> %s: %d received, %d relayed" % (
                    self.info_topics + (self.camera_info.received, self.camera_info.relayed)),
                "qualities": "1..%d (default %d)" % (self.codec.qualities, self.codec.default_quality),
                "entropy coding": coding_status(self.codec.adaptive_coding)}

    def status_now(self) -> Dict[str, str]:
        values = {"quality mode": "target" if self.rate.target_kbps > 0 else "fixed"}
        pixels, frames = getattr(self, "clipped", (0, 0))
        values["pixels above white_level since start (clipped)"] = "%d in %d frame%s" % (
            pixels, frames, "" if frames == 1 else "s")
        values["brightest pixel since start (share of the range up to white_level)"] = "%.3f" % self.brightest
        values.update(self.rate.status(self.pixels))
        if self.rate.target_kbps <= 0:
            values["target (kbps)"] = "0 (off)"
            if not self.rate.frames:
                values["quality"] = str(self.quality)
        return values

    def status_warning(self) -> str:
        budget = self.rate.status(self.pixels).get("budget", "")
        return "budget %s" % budget if budget.startswith("not met") else ""


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
