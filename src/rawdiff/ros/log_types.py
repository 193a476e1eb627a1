"""What the log readers of :mod:`rawdiff.ros.logs` hand out, whatever the file format.

    LogInfo(topics {topic: type}, counts {topic: messages}, compression)   from the index alone
    Record(topic, msg_type, data, time_ns, native)                         one message, still serialized

``data`` is the ROS 1 serialized message; ``time_ns`` its record (log) time in nanoseconds;
``native`` what the format itself gave (a bag's raw tuple, time and connection header; an
MCAP file's schema, channel and message record), so that a copy into the same format
loses nothing.
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple


class LogInfo(NamedTuple):
    topics: Dict[str, str]
    counts: Dict[str, int]
    compression: str

    @property
    def message_count(self) -> int:
        return sum(self.counts.values())


class Record(NamedTuple):
    topic: str
    msg_type: str
    data: bytes
    time_ns: int
    native: Any


__all__ = ["LogInfo", "Record"]
