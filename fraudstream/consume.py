"""Read records from a topic as JSON lines (``fraudstream decisions`` / ``fraudstream dlq``).

The reader **assigns** every partition of the topic explicitly instead of joining a
consumer group: there is no group join to wait for (about ``session_timeout_ms / 2`` on
the local broker), no committed offsets that would make a second run start elsewhere,
and no rebalance of anybody else's group. It never commits. Starting points: the
beginning of every partition (``from_beginning``) or its current end (only new records).

Stopping: at ``limit`` records; with ``follow``, otherwise only on Ctrl-C. Without
``follow`` the reader stops once every partition has reached its end and no record has
arrived for ``idle_timeout`` seconds (0: dump what is there and stop).

Formatting never fails: a value that is not JSON (or not UTF-8) is printed as an object
with ``value_base64`` and the parse ``error``; keys and headers that are not UTF-8 become
``{"base64": ...}``.
"""

from __future__ import annotations

import base64
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

from fraudstream.config import KafkaSettings
from fraudstream.errors import FraudstreamError

POLL_TIMEOUT_S = 0.2
METADATA_TIMEOUT_S = 10.0


class ConsumeError(FraudstreamError):
    """The topic cannot be read (missing, or Kafka failed)."""


@dataclass(frozen=True)
class Record:
    """One Kafka record, decoupled from the client's ``Message``."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


def record_from_message(msg: Any) -> Record:
    ts_type, ts = msg.timestamp()
    return Record(
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        timestamp_ms=ts if ts_type != 0 and ts >= 0 else None,  # 0: TIMESTAMP_NOT_AVAILABLE
        key=msg.key(),
        value=msg.value(),
        headers=tuple(msg.headers() or ()),
    )


def _text(data: bytes | None) -> Any:
    """UTF-8 text, or ``{"base64": ...}`` for other bytes; None stays None."""
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def parse_value(value: bytes | None) -> tuple[Any, str | None]:
    """``(parsed JSON, None)`` or ``(None, error)`` when ``value`` is not JSON."""
    if value is None:
        return None, None
    try:
        return orjson.loads(value), None
    except orjson.JSONDecodeError as exc:
        return None, f"not JSON: {exc}"


def format_record(record: Record, *, metadata: bool = False) -> Any:
    """The JSON-able line of ``record``.

    Without ``metadata`` a JSON value is printed as it is. With ``metadata``, and for every
    value that is not JSON or is null (a tombstone), an envelope: topic, partition,
    offset, timestamp, key, headers and ``value`` (or ``value_base64`` and ``error``).
    """
    parsed, error = parse_value(record.value)
    if not metadata and error is None and record.value is not None:
        return parsed
    out: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": (
            datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
            if record.timestamp_ms is not None
            else None
        ),
        "key": _text(record.key),
    }
    headers: dict[str, Any] = {}
    for name, raw in record.headers:
        text = _text(raw)
        if name in headers:
            previous = headers[name]
            headers[name] = [*previous, text] if isinstance(previous, list) else [previous, text]
        else:
            headers[name] = text
    out["headers"] = headers
    if error is None:
        out["value"] = parsed
    else:
        assert record.value is not None
        out["value_base64"] = base64.b64encode(record.value).decode("ascii")
        out["error"] = error
    return out


def dumps_line(obj: Any) -> str:
    return orjson.dumps(obj).decode("utf-8")


@contextmanager
def sigint_sets(flag: threading.Event) -> Iterator[threading.Event]:
    """Within the block, Ctrl-C sets ``flag`` instead of raising; a second one raises.

    librdkafka's ``poll`` does not survive a ``KeyboardInterrupt`` raised inside it
    (``SystemError: ... returned NULL without setting an exception``), so the loops that
    poll check a flag instead. Outside the main thread this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def read_records(
    kafka: KafkaSettings,
    bootstrap: str,
    topic: str,
    *,
    from_beginning: bool = False,
    limit: int | None = None,
    follow: bool = False,
    idle_timeout: float = 0.0,
    on_ready: Callable[[], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> Iterator[Record]:
    """Yield the records of every partition of ``topic`` (see the module docstring).

    ``stop`` is checked between polls: when it returns True the reader ends quietly.
    ``on_ready`` is called once, when every partition has first reached its end (the
    start positions are established: a record produced after it will be read).
    """
    from fraudstream.kafka import consumer_config

    if limit is not None and limit <= 0:
        return
    conf = consumer_config(kafka, bootstrap, group_id=f"fraudstream-reader-{uuid.uuid4().hex}")
    conf["enable.partition.eof"] = True
    consumer = Consumer(conf)
    try:
        partitions = topic_partitions(consumer, topic)
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in partitions])
        ready = on_ready
        at_end: set[int] = set()
        reached_end: set[int] = set()  # partitions that have reported their end once
        started_ms = int(time.time() * 1000)
        count = 0
        last = time.monotonic()
        while stop is None or not stop():
            msg = consumer.poll(POLL_TIMEOUT_S)
            if msg is None:
                if (
                    not follow
                    and len(at_end) == len(partitions)
                    and time.monotonic() - last >= idle_timeout
                ):
                    return
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition() or 0)
                    reached_end.add(msg.partition() or 0)
                    if ready is not None and len(at_end) == len(partitions):
                        ready()  # every position is established and caught up
                        ready = None
                    if not follow and len(at_end) == len(partitions) and idle_timeout <= 0:
                        return
                    continue
                if err.fatal() or err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise ConsumeError(f"reading {topic!r}: {err.str()}")
                continue  # transient (a reconnect): librdkafka retries
            partition = msg.partition() or 0
            record = record_from_message(msg)
            if not from_beginning and partition not in reached_end and _older(record, started_ms):
                continue  # an old record before the true end (see _older)
            at_end.discard(partition)
            last = time.monotonic()
            yield record
            count += 1
            if limit is not None and count >= limit:
                return
    finally:
        consumer.close()


def _older(record: Record, started_ms: int) -> bool:
    """Whether a record read before its partition's first end is older than the reader.

    Tansu (the local broker) answers the "latest offset" request with the base offset of
    the last batch + 1, so a reader that starts "at the end" begins inside the last batch
    and would print its older records. Records met before a partition first reports its
    end are therefore printed only when they are no older than the reader's start. On
    Kafka that range is normally empty (or holds records produced since the start).
    """
    return record.timestamp_ms is not None and record.timestamp_ms < started_ms


def topic_partitions(consumer: Consumer, topic: str) -> list[int]:
    """The partitions of ``topic``; :class:`ConsumeError` if it does not exist."""
    try:
        metadata = consumer.list_topics(timeout=METADATA_TIMEOUT_S)
    except Exception as exc:
        raise ConsumeError(f"Kafka did not answer within {METADATA_TIMEOUT_S:g}s: {exc}") from None
    info = metadata.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        detail = f" ({info.error})" if info is not None and info.error is not None else ""
        raise ConsumeError(f"topic {topic!r} does not exist{detail}")
    return sorted(info.partitions)
