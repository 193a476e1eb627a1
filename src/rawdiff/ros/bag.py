"""rosbag I/O: opening bags, their topics, and the RAW frames of an image topic.

    IN.bag --iter_raw_frames(topic)--> (record time, RawFrame), ...   (sensor_msgs/Image, RAW)
    IN.bag --BagLogReader--> records as every log format gives them (rawdiff.ros.logs)
    BagLogWriter: copy(record, reader), write(topic, msg, like=record)

No roscore is needed: bags are read and written with ``rosbag.Bag``, imported on first
use. Importing this module registers :func:`read_bag_source` as the reader of ``bag``
sources of ``rawdiff prepare-data`` (:mod:`rawdiff.data.readers`): the data layer never
imports ROS, ROS adds bag reading to it. Transcoding a whole bag is
:mod:`rawdiff.ros.bag_transcode`.
"""

from __future__ import annotations

import os
from typing import Dict, Iterator, Optional, Sequence, Tuple

from rawdiff.data.corpus import BAG, Source
from rawdiff.data.readers import FrameItem, ReadOptions, SkipSource, check_size, even_size, register_reader
from rawdiff.raw.frame import RawFrame
from rawdiff.ros.conversions import image_to_frame
from rawdiff.ros.log_types import LogInfo, Record

CODES_TYPE = "rawdiff/CompressedCodes"
IMAGE_TYPE = "sensor_msgs/Image"


#: The first bytes of a rosbag (format 2.0, the only one rosbag writes).
BAG_MAGIC = b"#ROSBAG V2.0\n"


def open_bag(path: str, mode: str = "r", **kwargs):
    """``rosbag.Bag``; a missing file, a directory, a file that is not a bag and a truncated
    (unindexed) bag are one-line errors (``FileNotFoundError`` / ``ValueError``) naming the
    path and, for a truncated bag, the fix."""
    import rosbag

    name = str(path)
    if mode == "r":
        if os.path.isdir(name):
            raise ValueError("%s is a directory, not a bag" % name)
        if not os.path.exists(name):
            raise FileNotFoundError("bag %s does not exist" % name)
        with open(name, "rb") as f:
            head = f.read(len(BAG_MAGIC))
        if head != BAG_MAGIC:
            raise ValueError("%s is not a rosbag (a bag starts with %r, this file with %r)"
                             % (name, BAG_MAGIC.decode().strip(), head[:16]))
    try:
        return rosbag.Bag(name, mode, **kwargs)
    except rosbag.ROSBagUnindexedException:
        raise ValueError("%s has no index: it is truncated, or its recording did not finish; `rosbag reindex %s` "
                         "rebuilds the index" % (name, name)) from None
    except rosbag.ROSBagException as exc:
        raise ValueError("%s is not a readable bag: %s" % (name, exc)) from None


def read_messages(bag, path: str, **kwargs):
    """``bag.read_messages(**kwargs)``, a damaged chunk raising ``ValueError`` naming the bag."""
    import struct

    import rosbag

    try:
        yield from bag.read_messages(**kwargs)
    except (rosbag.ROSBagException, struct.error, EOFError) as exc:
        raise ValueError("%s: cannot read on (a truncated or damaged bag?): %s" % (path, exc or type(exc).__name__)) \
            from None


def _header_text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _bag_time(time_ns: int):
    import genpy

    secs, nsecs = divmod(int(time_ns), 1000000000)
    return genpy.Time(secs, nsecs)


class BagLogReader:
    """A bag open for reading, as :mod:`rawdiff.ros.logs` reads every format; a context manager.

    Records come in the bag's time order (``rosbag``'s); a record's class is the one rosbag
    generates from the bag's own connection header."""

    format = "bag"

    def __init__(self, path: str):
        self.path = str(path)
        self._bag = open_bag(self.path)
        try:
            info = self._bag.get_type_and_topic_info()
            self._info = LogInfo({t: i.msg_type for t, i in info.topics.items()},
                                 {t: int(i.message_count) for t, i in info.topics.items()},
                                 self._bag.get_compression_info().compression)
        except BaseException:
            self._bag.close()
            raise

    def info(self) -> LogInfo:
        return self._info

    def records(self, topics: Optional[Sequence[str]] = None) -> Iterator[Record]:
        for topic, raw, t, conn in read_messages(self._bag, self.path, topics=topics, raw=True,
                                                 return_connection_header=True):
            yield Record(topic, raw[0], raw[1], int(t.to_nsec()), (raw, t, conn))

    def check_decodable(self, topic: str) -> None:
        """Every message of a bag is ROS 1."""

    def message_class(self, record: Record) -> type:
        return record.native[0][4]

    def connection_header(self, record: Record) -> Dict[str, str]:
        return {_header_text(k): _header_text(v) for k, v in (record.native[2] or {}).items()}

    def close(self) -> None:
        self._bag.close()

    def __enter__(self) -> BagLogReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BagLogWriter:
    """A bag being written, as :mod:`rawdiff.ros.logs` writes every format; ``close()``
    writes its index. A context manager."""

    format = "bag"

    def __init__(self, path: str, compression: str = "none"):
        self.path = str(path)
        self._bag = open_bag(self.path, "w", compression=compression)

    def copy(self, record: Record, reader) -> None:
        """``record`` as it was: raw bytes, record time and connection header (from an MCAP
        file: the header made of its schema and its channel's metadata)."""
        if reader.format == "bag":
            raw, t, conn = record.native
            self._bag.write(record.topic, raw, t, raw=True, connection_header=conn)
            return
        cls = reader.message_class(record)
        header = reader.connection_header(record)
        header.update(topic=record.topic, type=record.msg_type, md5sum=cls._md5sum, message_definition=cls._full_text)
        self._bag.write(record.topic, (record.msg_type, bytes(record.data), cls._md5sum, None, cls),
                        _bag_time(record.time_ns), raw=True, connection_header=header)

    def write(self, topic: str, msg, like: Record) -> None:
        """``msg`` on ``topic`` at ``like``'s record time."""
        native = like.native
        t = native[1] if isinstance(native, tuple) and len(native) == 3 and hasattr(native[1], "to_nsec") \
            else _bag_time(like.time_ns)
        self._bag.write(topic, msg, t)

    def copy_extras(self, reader) -> None:
        """A bag has no place for an MCAP file's metadata and attachments."""

    def close(self) -> None:
        self._bag.close()

    def __enter__(self) -> BagLogWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bag_topics(bag_path: str) -> dict:
    """``{topic: message type}`` of a bag."""
    with open_bag(bag_path) as bag:
        return {t: info.msg_type for t, info in bag.get_type_and_topic_info().topics.items()}


def topic_list(topics: Dict[str, str]) -> str:
    """``/a (type), /b (type)`` for messages about a bag's topics."""
    return ", ".join("%s (%s)" % kv for kv in sorted(topics.items())) or "none"


def check_topic(bag_path: str, topics: Dict[str, str], topic: str, msg_type: str) -> None:
    """``ValueError`` unless ``topic`` is in the bag and carries ``msg_type``."""
    if topic not in topics:
        raise ValueError("topic %r is not in %s; topics: %s" % (topic, bag_path, topic_list(topics)))
    if topics[topic] != msg_type:
        raise ValueError("topic %r carries %s, not %s" % (topic, topics[topic], msg_type))


def iter_raw_frames(bag_path: str, topic: str, **conversion_kwargs) -> Iterator[Tuple[object, RawFrame]]:
    """Yield ``(t, RawFrame)`` for every message of ``topic`` in the bag, in bag order.

    ``t`` is the bag's record time (a ``rospy.Time``, as ``rosbag`` gives it, so a
    transcoder can write its output at the same time); the frame's ``timestamp`` and
    ``frame_id`` come from the message header. ``conversion_kwargs`` go to
    :func:`rawdiff.ros.conversions.image_to_frame` (``cfa``, ``black_level``,
    ``white_level``, ``input_format``). Raises ``ValueError`` when the topic is not in the
    bag or does not carry ``sensor_msgs/Image``.
    """
    with open_bag(bag_path) as bag:
        topics = {t: info.msg_type for t, info in bag.get_type_and_topic_info().topics.items()}
        check_topic(bag_path, topics, topic, IMAGE_TYPE)
        for _, msg, t in read_messages(bag, bag_path, topics=[topic]):
            yield t, image_to_frame(msg, **conversion_kwargs)


def read_bag_source(src: Source, options: ReadOptions) -> Iterator[FrameItem]:
    """The frames of a ``bag`` source of ``rawdiff prepare-data``: every ``every``-th message
    of its topic (default every one), at most ``max_frames`` (default all); the record time
    goes to the manifest as ``bag_time``."""
    every = options.every or 1
    cap_frames = options.max_frames
    taken = 0
    for index, (t, frame) in enumerate(iter_raw_frames(src.path, src.topic, **options.conversion)):
        if cap_frames is not None and taken >= cap_frames:
            break
        if index % every:
            continue
        frame = even_size(frame)
        check_size(frame.height, frame.width, options.min_size)
        yield "m%06d" % index, index, frame, {"bag_time": float(t.to_sec()) if hasattr(t, "to_sec") else t}
        taken += 1
    if taken == 0:
        raise SkipSource("no message on topic %s" % src.topic)


register_reader(BAG, read_bag_source)


__all__ = ["BAG_MAGIC", "BagLogReader", "BagLogWriter", "CODES_TYPE", "IMAGE_TYPE", "bag_topics", "check_topic",
           "iter_raw_frames", "open_bag", "read_bag_source", "read_messages", "topic_list"]
