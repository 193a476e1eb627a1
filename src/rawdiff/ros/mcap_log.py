"""MCAP I/O for ROS 1 messages (the ``ros1`` profile): reading, copying and writing.

    IN.mcap --McapLogReader--> Record(topic, type, data, log time, (schema, channel, message))
    McapLogWriter: copy(record) keeps schema, channel (with its metadata), log and publish
        time, sequence; write(topic, msg, like=record) adds a message of a new channel

MCAP (https://mcap.dev/spec) is read and written with the format's reference Python
library, ``mcap``; messages stay ROS 1 serialized bytes (message encoding ``ros1``, schema
encoding ``ros1msg``: the full ``.msg`` text with its dependencies, as a bag's connection
header holds it). A message is decoded with a class generated from the file's own schema
by genpy, as rosbag does with a bag's connection header, so a log recorded with other
message versions is read as it was written. A file is read in its own order (chunk by
chunk, not re-sorted by log time), so the output keeps the message order of the input.

The summary (footer, statistics) gives topics and message counts without reading the
messages; a file without one (a recording that did not finish, a truncated copy) is a
one-line error naming `mcap recover`, which rebuilds it. Chunk CRCs are checked while
reading, so a damaged chunk is an error naming the file, never silently wrong data.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Any, Dict, Iterator, Optional, Sequence

from rawdiff.ros.log_types import LogInfo, Record

#: The first bytes of an MCAP file (https://mcap.dev/spec#magic).
MCAP_MAGIC = b"\x89MCAP0\r\n"
PROFILE = "ros1"
MESSAGE_ENCODING = "ros1"
SCHEMA_ENCODING = "ros1msg"
#: The largest MCAP record read (a chunk of frames); a damaged length field claiming more
#: is an error, not an allocation.
RECORD_SIZE_LIMIT = 1 << 30
#: ROS 1 connection-header fields that a channel's schema and topic already say (the rest,
#: e.g. ``callerid`` and ``latching``, travel as channel metadata, as the ros1 profile has it).
CONNECTION_FIELDS = ("topic", "type", "md5sum", "message_definition")

_CLASSES: Dict[str, type] = {}


def _read_errors() -> tuple:
    """What reading a damaged MCAP raises: the library's errors, the codecs', short reads."""
    import zstandard
    from mcap.exceptions import McapError

    return (McapError, zstandard.ZstdError, struct.error, EOFError, KeyError, RuntimeError, ValueError, IndexError)


def message_class(msg_type: str, definition: str) -> type:
    """The genpy class of ``msg_type`` generated from its full ``.msg`` text (cached)."""
    key = hashlib.sha1((msg_type + "\n" + definition).encode("utf-8")).hexdigest()
    cls = _CLASSES.get(key)
    if cls is None:
        import genpy.dynamic
        from genmsg import InvalidMsgSpec, MsgGenerationException

        try:
            cls = genpy.dynamic.generate_dynamic(msg_type, definition)[msg_type]
        except (InvalidMsgSpec, MsgGenerationException, KeyError, ValueError) as exc:
            raise ValueError("the schema of %s is not a valid ROS 1 message definition: %s" % (msg_type, exc)) \
                from None
        _CLASSES[key] = cls
    return cls


def is_mcap(path: str) -> bool:
    """The file starts with the MCAP magic."""
    with open(path, "rb") as f:
        return f.read(len(MCAP_MAGIC)) == MCAP_MAGIC


class McapLogReader:
    """A ROS 1 MCAP file, open for reading; a context manager."""

    format = "mcap"

    def __init__(self, path: str):
        from mcap.reader import SeekingReader

        self.path = name = str(path)
        if os.path.isdir(name):
            raise ValueError("%s is a directory, not an MCAP file" % name)
        if not os.path.exists(name):
            raise FileNotFoundError("MCAP file %s does not exist" % name)
        self._file = open(name, "rb")
        try:
            head = self._file.read(len(MCAP_MAGIC))
            if head != MCAP_MAGIC:
                raise ValueError("%s is not an MCAP file (it starts with %r, not the MCAP magic %r)"
                                 % (name, head[:16], MCAP_MAGIC))
            self._file.seek(0, os.SEEK_END)
            if self._file.tell() >= 2 * len(MCAP_MAGIC):
                self._file.seek(-len(MCAP_MAGIC), os.SEEK_END)
                tail = self._file.read(len(MCAP_MAGIC))
            else:
                tail = b""
            if tail != MCAP_MAGIC:
                raise ValueError("%s is truncated (it does not end with the MCAP magic): its recording did not "
                                 "finish, or the copy was cut; `mcap recover %s -o FIXED.mcap` rebuilds what is "
                                 "left" % (name, name))
            self._file.seek(0)
            try:
                self._reader = SeekingReader(self._file, validate_crcs=True, record_size_limit=RECORD_SIZE_LIMIT)
                self.profile = self._reader.get_header().profile
                summary = self._reader.get_summary()
            except _read_errors() as exc:
                raise ValueError("%s has no readable summary: it is truncated, or its recording did not finish "
                                 "(%s); `mcap recover %s -o FIXED.mcap` rebuilds it"
                                 % (name, _reason(exc), name)) from None
            if summary is None or not summary.chunk_indexes and summary.statistics is None:
                raise ValueError("%s has no summary section; `mcap recover %s -o FIXED.mcap` rebuilds it"
                                 % (name, name))
            self._summary = summary
            self._info = self._read_info()
        except BaseException:
            self._file.close()
            raise

    def _read_info(self) -> LogInfo:
        summary = self._summary
        topics: Dict[str, str] = {}
        for channel in summary.channels.values():
            schema = summary.schemas.get(channel.schema_id)
            topics[channel.topic] = schema.name if schema is not None else ""
        counts = dict.fromkeys(topics, 0)
        if summary.statistics is not None:
            for channel_id, n in summary.statistics.channel_message_counts.items():
                channel = summary.channels.get(channel_id)
                if channel is None:
                    raise ValueError("%s: its statistics count messages of channel %d, which it does not declare"
                                     % (self.path, channel_id))
                counts[channel.topic] += int(n)
        else:  # no statistics record: count from the messages (one pass)
            for record in self.records():
                counts[record.topic] += 1
        compression = summary.chunk_indexes[0].compression if summary.chunk_indexes else ""
        return LogInfo(topics, counts, compression)

    def info(self) -> LogInfo:
        return self._info

    def records(self, topics: Optional[Sequence[str]] = None) -> Iterator[Record]:
        """Every message (of ``topics``), in file order."""
        try:
            for schema, channel, message in self._reader.iter_messages(topics=topics, log_time_order=False):
                yield Record(channel.topic, schema.name if schema is not None else "", message.data,
                             message.log_time, (schema, channel, message))
        except _read_errors() as exc:
            raise ValueError("%s: cannot read on (a truncated or damaged MCAP file?): %s" % (self.path, _reason(exc))) \
                from None

    def check_decodable(self, topic: str) -> None:
        """``ValueError`` unless every channel of ``topic`` is ROS 1 with a ``ros1msg`` schema."""
        for channel in self._summary.channels.values():
            if channel.topic != topic:
                continue
            schema = self._summary.schemas.get(channel.schema_id)
            if channel.message_encoding != MESSAGE_ENCODING or schema is None or schema.encoding != SCHEMA_ENCODING:
                raise ValueError("topic %r of %s is encoded as %r (schema %r), not ROS 1 (%r, %r)"
                                 % (topic, self.path, channel.message_encoding,
                                    schema.encoding if schema is not None else "none", MESSAGE_ENCODING,
                                    SCHEMA_ENCODING))

    def message_class(self, record: Record) -> type:
        schema, channel, _ = record.native
        if channel.message_encoding != MESSAGE_ENCODING or schema is None or schema.encoding != SCHEMA_ENCODING:
            raise ValueError("topic %r of %s is encoded as %r, not ROS 1; it cannot be decoded or written to a bag"
                             % (record.topic, self.path, channel.message_encoding))
        return message_class(schema.name, schema.data.decode("utf-8", "replace"))

    def connection_header(self, record: Record) -> Dict[str, str]:
        """The channel's metadata (ROS 1 connection-header fields such as ``callerid``, ``latching``)."""
        return dict(record.native[1].metadata)

    def extras(self) -> Iterator[Any]:
        """The file's metadata and attachment records."""
        try:
            yield from self._reader.iter_metadata()
            yield from self._reader.iter_attachments()
        except _read_errors() as exc:
            raise ValueError("%s: cannot read its metadata or attachments: %s" % (self.path, _reason(exc))) from None

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> McapLogReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__


_COMPRESSION = {"": "NONE", "none": "NONE", "lz4": "LZ4", "zstd": "ZSTD"}


class McapLogWriter:
    """A ROS 1 MCAP file being written; ``close()`` writes the summary. A context manager."""

    format = "mcap"

    def __init__(self, path: str, compression: str = "zstd", library: str = "rawdiff"):
        from mcap.writer import CompressionType, Writer

        self.path = str(path)
        self._file = open(self.path, "wb")
        kind = getattr(CompressionType, _COMPRESSION.get(compression, "ZSTD"))
        self._writer = Writer(self._file, compression=kind)
        self._writer.start(profile=PROFILE, library=library)
        self._schemas: Dict[Any, int] = {}
        self._channels: Dict[Any, int] = {}

    def _schema(self, key: Any, name: str, encoding: str, data: bytes) -> int:
        if key not in self._schemas:
            self._schemas[key] = self._writer.register_schema(name=name, encoding=encoding, data=data)
        return self._schemas[key]

    def _channel(self, key: Any, topic: str, encoding: str, schema_id: int, metadata: Dict[str, str]) -> int:
        if key not in self._channels:
            self._channels[key] = self._writer.register_channel(topic=topic, message_encoding=encoding,
                                                                schema_id=schema_id, metadata=metadata)
        return self._channels[key]

    def copy(self, record: Record, reader) -> None:
        """``record`` as it was: from an MCAP file with its schema, channel, publish time and
        sequence; from a bag with the message definition and connection header of its topic."""
        if reader.format == "mcap":
            schema, channel, message = record.native
            schema_id = 0 if schema is None else self._schema(
                ("in", schema.id), schema.name, schema.encoding, schema.data)
            channel_id = self._channel(("in", channel.id), channel.topic, channel.message_encoding, schema_id,
                                       dict(channel.metadata))
            self._writer.add_message(channel_id=channel_id, log_time=message.log_time, data=message.data,
                                     publish_time=message.publish_time, sequence=message.sequence)
            return
        cls = reader.message_class(record)
        header = reader.connection_header(record)
        schema_id = self._schema(("def", record.msg_type, cls._md5sum), record.msg_type, SCHEMA_ENCODING,
                                 cls._full_text.encode("utf-8"))
        metadata = {k: v for k, v in header.items() if k not in CONNECTION_FIELDS}
        channel_id = self._channel(("topic", record.topic), record.topic, MESSAGE_ENCODING, schema_id, metadata)
        self._writer.add_message(channel_id=channel_id, log_time=record.time_ns, data=bytes(record.data),
                                 publish_time=record.time_ns, sequence=0)

    def write(self, topic: str, msg: Any, like: Record) -> None:
        """``msg`` (a genpy message) on ``topic`` at ``like``'s log time (and publish time and
        sequence, when ``like`` comes from an MCAP file)."""
        from io import BytesIO

        cls = type(msg)
        schema_id = self._schema(("def", cls._type, cls._md5sum), cls._type, SCHEMA_ENCODING,
                                 cls._full_text.encode("utf-8"))
        channel_id = self._channel(("topic", topic), topic, MESSAGE_ENCODING, schema_id, {})
        buffer = BytesIO()
        msg.serialize(buffer)
        publish_time, sequence = like.time_ns, 0
        native = like.native
        if isinstance(native, tuple) and len(native) == 3 and hasattr(native[2], "publish_time"):
            publish_time, sequence = native[2].publish_time, native[2].sequence
        self._writer.add_message(channel_id=channel_id, log_time=like.time_ns, data=buffer.getvalue(),
                                 publish_time=publish_time, sequence=sequence)

    def copy_extras(self, reader) -> None:
        """The metadata and attachments of an MCAP ``reader``."""
        from mcap.records import Attachment, Metadata

        if reader.format != "mcap":
            return
        for item in reader.extras():
            if isinstance(item, Metadata):
                self._writer.add_metadata(item.name, dict(item.metadata))
            elif isinstance(item, Attachment):
                self._writer.add_attachment(item.create_time, item.log_time, item.name, item.media_type, item.data)

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self._writer.finish()
        finally:
            self._file.close()

    def __enter__(self) -> McapLogWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["MCAP_MAGIC", "McapLogReader", "McapLogWriter", "is_mcap", "message_class"]
