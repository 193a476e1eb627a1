"""``sensor_msgs/Image`` <-> :class:`~rawdiff.raw.frame.RawFrame` and RGB arrays.

Accepted input encodings (``msg.encoding``):

* ``bayer_rggb8``, ``bayer_bggr8``, ``bayer_gbrg8``, ``bayer_grbg8`` and their ``16``
  variants: the CFA comes from the encoding (a ``cfa`` argument must agree with it);
* ``mono8`` / ``mono16``: a driver that does not name the pattern; ``cfa`` is required;
* packed MIPI CSI-2 RAW10 / RAW12 (``input_format="raw10p"`` or ``"raw12p"``, or an
  encoding that starts with ``raw10p`` / ``raw12p`` such as ``raw12p_grbg``): the bytes
  are unpacked with :func:`rawdiff.raw.csi2.unpack`; the CFA comes from ``cfa`` or from a
  pattern name inside the encoding.

``msg.step`` (the row stride in bytes, which may include padding) and
``msg.is_bigendian`` (16-bit data) are honoured. The default white level is the
container's full scale: 255, 65535, 1023 (RAW10) or 4095 (RAW12); pass ``white_level``
for a 12-bit sensor delivered in 16-bit words.

Message classes are imported lazily, so :func:`image_to_frame` also works on any
object with the ``sensor_msgs/Image`` fields.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from rawdiff.raw.frame import CFA_PATTERNS, RawFrame, check_cfa

_BAYER_BITS = {8: np.uint8, 16: np.uint16}
_MONO = {"mono8": 8, "mono16": 16}
_PACKED = {"raw10p": 10, "raw12p": 12}


def _pattern_in(encoding: str) -> Optional[str]:
    low = encoding.lower()
    for cfa in CFA_PATTERNS:
        if cfa.lower() in low:
            return cfa
    return None


def _resolve_cfa(encoding: str, cfa: Optional[str], required: bool) -> str:
    named = _pattern_in(encoding)
    if cfa is not None:
        cfa = check_cfa(cfa)
        if named is not None and named != cfa:
            raise ValueError("cfa %s contradicts the encoding %r (%s)" % (cfa, encoding, named))
        return cfa
    if named is None:
        if required:
            raise ValueError("encoding %r does not name a Bayer pattern; pass cfa=RGGB|BGGR|GRBG|GBRG"
                             % encoding)
        raise ValueError("encoding %r has no Bayer pattern" % encoding)
    return named


def _parse_encoding(encoding: str, input_format: Optional[str]):
    """-> (kind, bits) with kind 'packed' or 'plain'."""
    enc = encoding.strip().lower()
    fmt = input_format.strip().lower() if input_format else None
    if fmt is None:
        for name in _PACKED:
            if enc.startswith(name):
                fmt = name
    if fmt is not None:
        if fmt not in _PACKED:
            raise ValueError("input_format %r is not one of %s" % (input_format, ", ".join(_PACKED)))
        return "packed", _PACKED[fmt]
    if enc in _MONO:
        return "plain", _MONO[enc]
    if enc.startswith("bayer_") and _pattern_in(enc) is not None:
        rest = enc[len("bayer_") + 4:]
        if rest in ("8", "16"):
            return "plain", int(rest)
    raise ValueError(
        "unsupported image encoding %r: expected bayer_{rggb,bggr,gbrg,grbg}{8,16}, mono8, mono16 "
        "(with cfa) or a packed raw10p/raw12p (input_format)" % encoding
    )


def image_to_frame(
    msg,
    cfa: Optional[str] = None,
    black_level=0,
    white_level: Optional[float] = None,
    input_format: Optional[str] = None,
) -> RawFrame:
    """Convert a ``sensor_msgs/Image`` carrying a RAW Bayer mosaic into a :class:`RawFrame`.

    Raises ``ValueError`` for unknown encodings, a missing CFA, zero sizes, a ``step``
    shorter than one row, or a data length that is not ``step * height``.
    """
    encoding = str(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ValueError("image has zero size (%dx%d)" % (width, height))
    kind, bits = _parse_encoding(encoding, input_format)
    mono = encoding.strip().lower() in _MONO or (kind == "packed" and _pattern_in(encoding) is None)
    cfa = _resolve_cfa(encoding, cfa, required=mono)
    data = msg.data
    if isinstance(data, (list, tuple)):  # rospy hands uint8[] over as bytes, but be lenient
        data = bytes(bytearray(data))
    nbytes = len(data)
    if step <= 0:
        raise ValueError("image step must be positive, got %d" % step)
    if nbytes != step * height:
        raise ValueError(
            "image data has %d bytes, expected step*height = %d*%d = %d" % (nbytes, step, height, step * height)
        )

    if kind == "packed":
        from rawdiff.raw.csi2 import unpack

        mosaic = unpack(bytes(data), width, height, bits, stride=step)
        default_white = float((1 << bits) - 1)
    else:
        bpp = bits // 8
        if step < width * bpp:
            raise ValueError(
                "image step %d is shorter than one row of %d %d-bit pixels (%d bytes)"
                % (step, width, bits, width * bpp)
            )
        rows = np.frombuffer(data, dtype=np.uint8).reshape(height, step)[:, : width * bpp]
        if bits == 8:
            mosaic = rows.astype(np.uint16)
        else:
            dtype = np.dtype(">u2" if int(msg.is_bigendian) else "<u2")
            mosaic = np.ascontiguousarray(rows).view(dtype).astype(np.uint16)
        default_white = float((1 << bits) - 1)

    header = getattr(msg, "header", None)
    stamp = getattr(header, "stamp", None)
    timestamp = float(stamp.to_sec()) if stamp is not None and hasattr(stamp, "to_sec") else None
    frame_id = str(getattr(header, "frame_id", "") or "") or None
    return RawFrame(
        mosaic=mosaic,
        cfa=cfa,
        black_level=black_level,
        white_level=default_white if white_level is None else white_level,
        timestamp=timestamp,
        frame_id=frame_id,
        extra={"source_encoding": encoding if kind != "packed" or input_format is None
               else "%s_%s" % (input_format.lower(), cfa.lower())},
    )


def _header(stamp=None, frame_id: str = ""):
    import rospy
    from std_msgs.msg import Header

    header = Header()
    if stamp is not None:
        header.stamp = stamp if hasattr(stamp, "to_sec") else rospy.Time.from_sec(float(stamp))
    header.frame_id = frame_id or ""
    return header


def frame_to_image(frame: RawFrame, stamp=None, frame_id: str = ""):
    """A ``bayer_<cfa>16`` little-endian ``sensor_msgs/Image`` of ``frame``'s mosaic.

    ``stamp`` (a ``rospy.Time`` or seconds) defaults to ``frame.timestamp`` and
    ``frame_id`` to ``frame.frame_id``. The black and white levels do not travel in an
    ``Image``; the receiver passes them to :func:`image_to_frame`.
    """
    from sensor_msgs.msg import Image

    if stamp is None:
        stamp = frame.timestamp
    msg = Image()
    msg.header = _header(stamp, frame_id or (frame.frame_id or ""))
    msg.height, msg.width = frame.height, frame.width
    msg.encoding = "bayer_%s16" % frame.cfa.lower()
    msg.is_bigendian = 0
    msg.step = 2 * frame.width
    msg.data = np.ascontiguousarray(frame.mosaic, dtype="<u2").tobytes()
    return msg


def rgb_to_image(rgb: np.ndarray, header=None):
    """An ``rgb8`` ``sensor_msgs/Image`` of a uint8 HxWx3 array; ``header`` is copied as is."""
    from sensor_msgs.msg import Image

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError("rgb must be a non-empty HxWx3 array, got shape %s" % (rgb.shape,))
    if rgb.dtype != np.uint8:
        raise ValueError("rgb must be uint8, got %s" % rgb.dtype)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = 3 * msg.width
    msg.data = np.ascontiguousarray(rgb).tobytes()
    return msg
