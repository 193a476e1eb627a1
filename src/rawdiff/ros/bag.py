"""rosbag access: RAW frames out of recorded ``sensor_msgs/Image`` topics.

Reading only for now; transcoding (``rawdiff bag encode|decode``) comes later.
"""

from __future__ import annotations

from typing import Iterator, Tuple

from rawdiff.raw.frame import RawFrame
from rawdiff.ros.conversions import image_to_frame


def bag_topics(bag_path: str) -> dict:
    """``{topic: message type}`` of a bag."""
    import rosbag

    with rosbag.Bag(str(bag_path), "r") as bag:
        return {t: info.msg_type for t, info in bag.get_type_and_topic_info().topics.items()}


def iter_raw_frames(bag_path: str, topic: str, **conversion_kwargs) -> Iterator[Tuple[object, RawFrame]]:
    """Yield ``(t, RawFrame)`` for every message of ``topic`` in the bag, in bag order.

    ``t`` is the bag's record time (a ``rospy.Time``, as ``rosbag`` gives it, so a
    transcoder can write its output at the same time); the frame's ``timestamp`` and
    ``frame_id`` come from the message header. ``conversion_kwargs`` go to
    :func:`rawdiff.ros.conversions.image_to_frame` (``cfa``, ``black_level``,
    ``white_level``, ``input_format``). Raises ``ValueError`` when the topic is not in the
    bag or does not carry ``sensor_msgs/Image``.
    """
    import rosbag

    with rosbag.Bag(str(bag_path), "r") as bag:
        topics = {t: info.msg_type for t, info in bag.get_type_and_topic_info().topics.items()}
        if topic not in topics:
            raise ValueError(
                "topic %r is not in %s; topics: %s"
                % (topic, bag_path, ", ".join("%s (%s)" % kv for kv in sorted(topics.items())) or "none")
            )
        if topics[topic] != "sensor_msgs/Image":
            raise ValueError("topic %r carries %s, not sensor_msgs/Image" % (topic, topics[topic]))
        for _, msg, t in bag.read_messages(topics=[topic]):
            yield t, image_to_frame(msg, **conversion_kwargs)
