"""rosbag I/O: opening bags, their topics, and the RAW frames of an image topic.

    IN.bag --iter_raw_frames(topic)--> (record time, RawFrame), ...   (sensor_msgs/Image, RAW)
    IN.bag --codes_topic--> the one rawdiff/CompressedCodes topic

No roscore is needed: bags are read and written with ``rosbag.Bag``, imported on first
use. Importing this module registers :func:`read_bag_source` as the reader of ``bag``
sources of ``rawdiff prepare-data`` (:mod:`rawdiff.data.readers`): the data layer never
imports ROS, ROS adds bag reading to it. Transcoding a whole bag is
:mod:`rawdiff.ros.bag_transcode`.
"""

from __future__ import annotations

import os
from typing import Dict, Iterator, Tuple

from rawdiff.data.corpus import BAG, Source
from rawdiff.data.readers import FrameItem, ReadOptions, SkipSource, check_size, even_size, register_reader
from rawdiff.raw.frame import RawFrame
from rawdiff.ros.conversions import image_to_frame

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


def codes_topic(bag_path: str) -> str:
    """The one ``rawdiff/CompressedCodes`` topic of a bag; ``ValueError`` for none or several."""
    topics = bag_topics(bag_path)
    found = sorted(t for t, ty in topics.items() if ty == CODES_TYPE)
    if len(found) != 1:
        raise ValueError("%s has %s %s topic%s; name one with --topic (topics: %s)"
                         % (bag_path, "no" if not found else len(found), CODES_TYPE, "" if len(found) == 1 else "s",
                            topic_list(topics)))
    return found[0]


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


__all__ = ["BAG_MAGIC", "CODES_TYPE", "IMAGE_TYPE", "bag_topics", "check_topic", "codes_topic", "iter_raw_frames",
           "open_bag", "read_bag_source", "read_messages", "topic_list"]
