"""One message through the codec: the code path of the nodes and of bag transcoding.

    sensor_msgs/Image (RAW) --image_to_frame--> RawFrame --Codec.compress--> bitstream
        --> rawdiff/CompressedCodes (header copied, fields from the bitstream header)
    rawdiff/CompressedCodes --checks--> Codec.decompress(mode, steps, seed)
        --> sensor_msgs/Image rgb8 (header copied: stamp and frame_id)
        or Codec.decompress_raw --> sensor_msgs/Image bayer_<cfa>16

Every problem with a message raises ``ValueError`` naming it (the bitstream's
``BitstreamError`` and ``ModelMismatchError`` are ``ValueError`` too).
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional, Sequence, Tuple

from rawdiff.codec.bitstream import accepts_model, check_model, read_header
from rawdiff.codec.modeldir import DEFAULT_DIFFUSION_STEPS
from rawdiff.ros.conversions import frame_to_image, image_to_frame, rgb_to_image


def copy_header(header):
    """A new ``std_msgs/Header`` with the same stamp and frame_id (seq is the publisher's)."""
    from std_msgs.msg import Header

    out = Header()
    out.stamp = header.stamp
    out.frame_id = header.frame_id
    out.seq = header.seq
    return out


def encode_image(codec, msg, cfa: Optional[str] = None, black_level=0, white_level: Optional[float] = None,
                 input_format: Optional[str] = None, wb_gains=None, color_matrix=None,
                 quality: Optional[int] = None) -> Tuple[Any, Dict[str, float]]:
    """``(CompressedCodes, info)`` of a RAW ``sensor_msgs/Image`` at ``quality`` (None: the
    model's default); ``info`` has ``work_s``, ``bytes_in``, ``bytes_out``, ``code_bytes``,
    ``pixels``, ``quality``, ``clipped`` (pixels above the white level, which the encoder
    clips to it) and ``peak`` (the brightest pixel's share of the range from the black level
    to the white level: a 12-bit sensor's frame read with 16-bit levels reaches 1/16 at most).
    ``wb_gains`` and ``color_matrix`` (None: gray world, the ISP's default matrix) go into the
    bitstream."""
    from rawdiff.msg import CompressedCodes
    from rawdiff.raw.io import brightest_share, pixels_above_white

    start = time.perf_counter()
    frame = image_to_frame(msg, cfa=cfa, black_level=black_level, white_level=white_level,
                           input_format=input_format)
    if wb_gains is not None or color_matrix is not None:
        frame = frame.copy(wb_gains=wb_gains, color_matrix=color_matrix)
    payload = codec.compress(frame, source_encoding=frame.extra.get("source_encoding", ""), quality=quality)
    header = read_header(payload, verify=False)
    out = CompressedCodes()
    out.header = copy_header(msg.header)
    out.model_id = header.model_id
    out.source_encoding = header.source_encoding
    out.height, out.width = header.height, header.width
    out.code_height, out.code_width = header.code_height, header.code_width
    out.data = payload
    work_s = time.perf_counter() - start
    top = int(frame.mosaic.max())  # one pass for both level figures (pixels counted only when clipped)
    info = {"work_s": work_s, "bytes_in": len(msg.data), "bytes_out": len(payload),
            "code_bytes": len(payload), "pixels": frame.height * frame.width, "quality": header.quality,
            "clipped": pixels_above_white(frame, top)[0], "peak": brightest_share(frame, top)}
    return out, info


def check_codes(msg, model_id: str, also: Sequence[str] = ()):
    """The bitstream header of a ``CompressedCodes`` message after checking that the
    message agrees with it (sizes; model_id and source_encoding where the message fills them)
    and was made by ``model_id`` (or one of ``also``: the models whose
    streams the decoder's model decodes too); raises ``ValueError``."""
    data = msg.data
    if not isinstance(data, bytes):
        data = bytes(bytearray(data))
    if not data:
        raise ValueError("codes message has no data (empty bitstream)")
    claimed = str(msg.model_id or "").strip().lower()
    if claimed and not accepts_model(claimed, model_id, also):
        raise ValueError("model mismatch: codes from model %s, but this decoder runs model %s%s"
                         % (claimed, model_id, " (which also decodes the streams of %s)" % ", ".join(also)
                            if also else ""))
    header = read_header(data)  # magic, version, length, CRC, field checks
    check_model(header, model_id, also)  # the stream's own model first: both ids named
    fields = (("height", header.height), ("width", header.width),
              ("code_height", header.code_height), ("code_width", header.code_width))
    for name, value in fields:
        if int(getattr(msg, name)) != value:
            raise ValueError("message field %s=%d disagrees with the bitstream (%s=%d)"
                             % (name, int(getattr(msg, name)), name, value))
    # an empty field says nothing; a filled one must be the stream's
    if claimed and claimed != header.model_id:
        raise ValueError("message field model_id=%r disagrees with the bitstream (model_id=%r)"
                         % (msg.model_id, header.model_id))
    encoding = str(msg.source_encoding or "").strip()
    if encoding and encoding != header.source_encoding:
        raise ValueError("message field source_encoding=%r disagrees with the bitstream (source_encoding=%r)"
                         % (msg.source_encoding, header.source_encoding))
    return header, data


OUTPUTS = ("rgb8", "bayer16")


def decode_codes(codec, msg, mode: str = "fast", steps: int = DEFAULT_DIFFUSION_STEPS, seed: int = 0,
                 output: str = "rgb8", realism: Optional[float] = None) -> Tuple[Any, Dict[str, float]]:
    """``(sensor_msgs/Image, info)`` of a ``CompressedCodes`` message: ``rgb8`` (sRGB through
    the reference ISP's colour stage) or ``bayer16`` (the reconstructed mosaic as
    ``bayer_<cfa>16`` with the source's CFA, in its black and white levels). ``realism``:
    the diffusion decoder's (None: the model's default)."""
    if output not in OUTPUTS:
        raise ValueError("output must be one of %s, got %r" % (", ".join(OUTPUTS), output))
    start = time.perf_counter()
    header, data = check_codes(msg, codec.model_id, codec.streams_of)
    if output == "bayer16":
        frame = codec.decompress_raw(data, mode=mode, steps=steps, seed=seed, realism=realism)
        out = frame_to_image(frame)
        out.header = copy_header(msg.header)
    else:
        rgb = codec.decompress(data, mode=mode, steps=steps, seed=seed, realism=realism)
        out = rgb_to_image(rgb, header=copy_header(msg.header))
    info = {"work_s": time.perf_counter() - start, "bytes_in": len(data), "bytes_out": len(out.data),
            "code_bytes": len(data), "pixels": header.height * header.width}
    return out, info
