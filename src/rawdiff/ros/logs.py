"""Log files of ROS 1 messages, whatever their format: ROS 1 bags and MCAP, by suffix.

    open_log(IN.bag | IN.mcap) --> reader: info() (topics, counts), records(), message_class()
    create_log(OUT, fmt, compression) --> writer: copy(record, reader), write(topic, msg, like)

``.mcap`` is MCAP (:mod:`rawdiff.ros.mcap_log`), every other name a bag
(:class:`rawdiff.ros.bag.BagLogReader`: a file that is not one says so in one line). A
writer copies a record of either format into its own, so ``rawdiff bag encode IN.bag
OUT.mcap`` converts while it transcodes: MCAP channel metadata and bag connection-header
fields (``callerid``, ``latching``) map onto each other; an MCAP file's metadata and
attachments are kept in MCAP outputs and have no place in a bag.
"""

from __future__ import annotations

import os
from typing import Dict, Union

from rawdiff.ros.bag import CODES_TYPE, BagLogReader, BagLogWriter, topic_list
from rawdiff.ros.log_types import LogInfo, Record
from rawdiff.ros.mcap_log import McapLogReader, McapLogWriter

#: Suffix -> format of the log files the bag commands read and write.
LOG_FORMATS = {".bag": "bag", ".mcap": "mcap"}
LOG_SUFFIXES = tuple(LOG_FORMATS)

LogReader = Union[BagLogReader, McapLogReader]
LogWriter = Union[BagLogWriter, McapLogWriter]


def log_format(path: str) -> str:
    """``mcap`` for a ``.mcap`` name, else ``bag``."""
    return LOG_FORMATS.get(os.path.splitext(str(path))[1].lower(), "bag")


def open_log(path: str) -> LogReader:
    """A reader of the bag or MCAP file at ``path``; a file that is missing, a directory,
    of another format, truncated or without its index is a one-line ``ValueError`` /
    ``FileNotFoundError`` naming it."""
    return McapLogReader(path) if log_format(path) == "mcap" else BagLogReader(path)


def output_compression(reader: LogReader, fmt: str) -> str:
    """The output's chunk compression: the input's in the same format; zstd for MCAP made
    from a bag (what MCAP tools write by default); none for a bag made from MCAP."""
    compression = reader.info().compression
    if reader.format == fmt:
        return compression
    return "zstd" if fmt == "mcap" else "none"


def create_log(path: str, fmt: str, compression: str = "") -> LogWriter:
    """A writer of a ``fmt`` (``bag`` or ``mcap``) file at ``path``."""
    if fmt == "mcap":
        from rawdiff import __version__

        return McapLogWriter(path, compression=compression or "zstd", library="rawdiff %s" % __version__)
    return BagLogWriter(path, compression=compression or "none")


def log_info(path: str) -> LogInfo:
    """Topics, types and message counts of a log, from its index or summary alone."""
    with open_log(path) as log:
        return log.info()


def log_topics(path: str) -> Dict[str, str]:
    """``{topic: message type}`` of a log."""
    return log_info(path).topics


def codes_topic(path: str) -> str:
    """The one ``rawdiff/CompressedCodes`` topic of a log; ``ValueError`` for none or several."""
    topics = log_topics(path)
    found = sorted(t for t, ty in topics.items() if ty == CODES_TYPE)
    if len(found) != 1:
        raise ValueError("%s has %s %s topic%s; name one with --topic (topics: %s)"
                         % (path, "no" if not found else len(found), CODES_TYPE, "" if len(found) == 1 else "s",
                            topic_list(topics)))
    return found[0]


__all__ = ["LOG_FORMATS", "LOG_SUFFIXES", "LogInfo", "LogReader", "LogWriter", "Record", "codes_topic",
           "create_log", "log_format", "log_info", "log_topics", "open_log", "output_compression"]
