"""The archive: the offline store's log of what flowed through Kafka, as Parquet part files.

Layout: ``<root>/<kind>/part-<UTC time>-<random>.parquet``, one file per append, written
to a temporary name and renamed (atomic: a reader sees a whole part or none). Kinds and
their columns (:data:`SCHEMAS`):

* ``transactions``: the canonical event columns (``transaction_id``, ``timestamp``,
  ``customer_id``, ``terminal_id``, ``amount``, ``currency``);
* ``decisions``: the decision record's columns (``reasons`` and ``degraded_reasons`` as
  JSON text), including ``model_version`` and the shadow fields when present;
* ``labels``: ``transaction_id``, ``label`` (1 = fraud, 0 = confirmed genuine),
  ``reported_at`` (when the label became known, UTC);
* ``rejected``: messages the archive could not read: topic, partition, offset, the
  original key and value bytes, and the reason.

Appends are at-least-once (a consumer that crashes after writing and before committing
writes the batch again), so :meth:`Archive.read` deduplicates: one row per
``transaction_id``, the latest by :data:`LATEST_BY` (a label corrected later wins).

:func:`run_archive` is ``fraudstream archive``: a consumer group on the transactions,
decisions and labels topics that appends each polled batch and commits its offsets only
after the part files are written.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pydantic import ValidationError

from fraudstream.errors import FraudstreamError
from fraudstream.schema import LABEL_COLUMN, MAX_FUTURE_S, decode_event

if TYPE_CHECKING:
    from confluent_kafka import Message

    from fraudstream.config import Settings

log = logging.getLogger(__name__)

Kind = Literal["transactions", "decisions", "labels", "rejected"]
KINDS: tuple[Kind, ...] = ("transactions", "decisions", "labels", "rejected")

_TS = pa.timestamp("us", tz="UTC")
SCHEMAS: dict[str, pa.Schema] = {
    "transactions": pa.schema(
        [
            ("transaction_id", pa.string()),
            ("timestamp", _TS),
            ("customer_id", pa.string()),
            ("terminal_id", pa.string()),
            ("amount", pa.float64()),
            ("currency", pa.string()),
        ]
    ),
    "decisions": pa.schema(
        [
            ("transaction_id", pa.string()),
            ("customer_id", pa.string()),
            ("terminal_id", pa.string()),
            ("amount", pa.float64()),
            ("event_time", _TS),
            ("score", pa.float64()),
            ("action", pa.string()),
            ("model_version", pa.string()),
            ("reasons", pa.string()),
            ("reasons_method", pa.string()),
            ("features_age_s", pa.float64()),
            ("degraded", pa.bool_()),
            ("degraded_reasons", pa.string()),
            ("decided_at", _TS),
            ("latency_ms", pa.float64()),
            ("schema_version", pa.int32()),
            ("shadow_score", pa.float64()),
            ("shadow_model_version", pa.string()),
        ]
    ),
    "labels": pa.schema(
        [("transaction_id", pa.string()), ("label", pa.int8()), ("reported_at", _TS)]
    ),
    "rejected": pa.schema(
        [
            ("topic", pa.string()),
            ("partition", pa.int32()),
            ("offset", pa.int64()),
            ("key", pa.binary()),
            ("value", pa.binary()),
            ("reason", pa.string()),
            ("archived_at", _TS),
        ]
    ),
}
#: The time column of each kind: ``read(start, end)`` selects on it.
TIME_COLUMN: dict[str, str] = {
    "transactions": "timestamp",
    "decisions": "event_time",
    "labels": "reported_at",
    "rejected": "archived_at",
}
#: Which copy of a transaction id ``read`` keeps: the latest by this column.
LATEST_BY: dict[str, str] = {
    "transactions": "timestamp",
    "decisions": "decided_at",
    "labels": "reported_at",
}


#: ``--once``: the longest wait for the group to assign partitions.
ASSIGN_TIMEOUT_S = 60.0


class ArchiveError(FraudstreamError):
    """An archive operation failed (unknown kind, a frame without the kind's columns)."""


def _check_kind(kind: str) -> None:
    if kind not in SCHEMAS:
        raise ArchiveError(f"unknown archive kind {kind!r}; kinds: {', '.join(KINDS)}")


def _utc(value: datetime | pd.Timestamp | str | None) -> pd.Timestamp | None:
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        raise ArchiveError(f"{value!r} has no time zone; give UTC times")
    return stamp.tz_convert("UTC")


def _fsync_directory(directory: Path) -> None:
    """Make the entries of ``directory`` (a rename into it, a new subdirectory) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Archive:
    """Append-only Parquet parts per kind under ``root``; reads deduplicate."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, kind: str) -> Path:
        _check_kind(kind)
        return self.root / kind

    def append(self, kind: str, frame: pd.DataFrame) -> Path:
        """Write ``frame`` (the kind's columns; extra ones ignored, missing optional ones
        null) as a new part file, atomically; return its path."""
        _check_kind(kind)
        table = _to_table(kind, frame)
        directory = self.path(kind)
        created = not directory.is_dir()
        directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        final = directory / f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet"
        tmp = directory / f".{final.name}.tmp"
        pq.write_table(table, tmp)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        tmp.replace(final)
        # the rename (and a new kind's directory) reach the disk before the caller commits
        # the offsets: else a crash could lose a part whose messages Kafka no longer serves
        _fsync_directory(directory)
        if created:
            _fsync_directory(self.root)
        return final

    def parts(self, kind: str) -> list[Path]:
        directory = self.path(kind)
        return sorted(directory.glob("part-*.parquet")) if directory.is_dir() else []

    def read(
        self,
        kind: str,
        start: datetime | pd.Timestamp | str | None = None,
        end: datetime | pd.Timestamp | str | None = None,
        *,
        dedup: bool = True,
    ) -> pd.DataFrame:
        """Rows of ``kind`` whose time column (:data:`TIME_COLUMN`) is in ``[start, end)``.

        Deduplicated (unless ``dedup=False``): one row per ``transaction_id``, the latest by
        :data:`LATEST_BY` among the rows selected (so ``read("labels", end=t)`` gives each
        transaction's label as known just before ``t``).
        """
        _check_kind(kind)
        schema = SCHEMAS[kind]
        lo, hi = _utc(start), _utc(end)
        files = self.parts(kind)
        if not files:
            return schema.empty_table().to_pandas()
        dataset = ds.dataset([str(f) for f in files], schema=schema, format="parquet")
        column = ds.field(TIME_COLUMN[kind])
        expression = None
        if lo is not None:
            expression = column >= pa.scalar(lo.to_pydatetime(), type=_TS)
        if hi is not None:
            upper = column < pa.scalar(hi.to_pydatetime(), type=_TS)
            expression = upper if expression is None else expression & upper
        frame = dataset.to_table(filter=expression).to_pandas()
        if dedup and kind in LATEST_BY and len(frame):
            frame = (
                frame.sort_values(LATEST_BY[kind], kind="stable")
                .drop_duplicates("transaction_id", keep="last")
                .sort_values(TIME_COLUMN[kind], kind="stable")
                .reset_index(drop=True)
            )
        return frame


def _to_table(kind: str, frame: pd.DataFrame) -> pa.Table:
    schema = SCHEMAS[kind]
    required = [n for n in ("transaction_id", TIME_COLUMN[kind]) if n in schema.names]
    missing = [n for n in required if n not in frame.columns]
    if missing:
        raise ArchiveError(f"{kind}: missing column(s) {missing}; found {list(frame.columns)}")
    arrays = []
    for f in schema:
        if f.name in frame.columns:
            values = frame[f.name]
            if pa.types.is_timestamp(f.type):
                values = pd.to_datetime(values, utc=True)
            arrays.append(pa.array(values, type=f.type, from_pandas=True))
        else:
            arrays.append(pa.nulls(len(frame), type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def archive_root(settings: Settings) -> Path:
    """The configured archive root (default: ``<feature repo>/data/archive``)."""
    configured = settings.monitoring.archive_dir
    return configured if configured is not None else settings.feast.repo_path / "data" / "archive"


def labelled_transactions(
    archive: Archive,
    start: datetime | pd.Timestamp | str | None = None,
    end: datetime | pd.Timestamp | str | None = None,
    *,
    as_of: datetime | pd.Timestamp | str | None = None,
    unlabelled: Literal["drop", "genuine"] = "drop",
) -> pd.DataFrame:
    """Archived transactions with ``timestamp`` in ``[start, end)`` and their labels.

    Canonical columns plus ``is_fraud`` (int8), ordered by time. A label counts when it was
    reported before ``as_of`` (default: every label in the archive; the latest report of a
    transaction wins). Transactions without a label are left out (``unlabelled="drop"``) or
    counted as genuine (``"genuine"``: the handbook's convention for unreported fraud).
    """
    events = archive.read("transactions", start, end)
    labels = archive.read("labels", end=as_of)[["transaction_id", "label"]]
    joined = events.merge(labels, on="transaction_id", how="left")
    if unlabelled == "drop":
        joined = joined[joined["label"].notna()]
    joined[LABEL_COLUMN] = joined.pop("label").fillna(0).astype("int8")
    if joined["currency"].isna().all():
        joined = joined.drop(columns=["currency"])
    return joined.sort_values("timestamp", kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------ the archive consumer


def _decision_row(value: bytes) -> dict[str, Any]:
    from fraudstream.decision import Decision

    decision = Decision.model_validate_json(value)
    row = decision.model_dump()
    row["reasons"] = orjson.dumps(row["reasons"]).decode()
    row["degraded_reasons"] = orjson.dumps(row["degraded_reasons"]).decode()
    return row


class _Refused(ValueError):
    """A transaction the worker refuses too; its message is the worker's ``error``."""


def _transaction_row(value: bytes, now_s: float, whose: str, max_ahead_s: float) -> dict[str, Any]:
    """The worker's rule (:func:`~fraudstream.schema.decode_event`), with ``now_s`` for the
    worker's clock: what the worker dead-letters is ``rejected`` here, with the same reason."""
    verdict = decode_event(value, now_s, max_ahead_s, whose)
    if isinstance(verdict, str):
        raise _Refused(verdict)
    return verdict.model_dump()


def _kafka_time_s(msg: Message) -> float | None:
    """The message's Kafka timestamp in seconds (None when the broker gives none)."""
    kind, ms = msg.timestamp()
    return ms / 1000 if kind and ms >= 0 else None


def _label_row(value: bytes) -> dict[str, Any]:
    from fraudstream.labels import LabelEvent

    return LabelEvent.model_validate_json(value).model_dump()


def _reason(exc: Exception) -> str:
    if isinstance(exc, _Refused):
        return str(exc)
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        return f"{where}: {first['msg']}"
    return f"message: {exc}"


@dataclass
class ArchiveStats:
    """What one run of the archive consumer did."""

    messages: int = 0
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    files: int = 0
    batches: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "rows": dict(self.rows),
            "files": self.files,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "rate": round(self.messages / self.seconds, 1) if self.seconds > 0 else 0.0,
        }


def archive_batch(
    archive: Archive,
    kinds: dict[str, str],
    messages: Sequence[Message],
    max_ahead_s: float = MAX_FUTURE_S,
) -> dict[str, int]:
    """Parse ``messages`` (topic name -> kind in ``kinds``) and append one part per kind.

    A message that is not valid for its kind goes to ``rejected`` with the reason and its
    original bytes. A transaction is valid as the worker decides
    (:func:`~fraudstream.schema.decode_event`: the size limit, the schema, and a time at most
    ``max_ahead_s`` after the message's Kafka timestamp, which stands for the worker's clock
    when it read the message; so a later or repeated run decides the same). Returns the rows
    written per kind.
    """
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    parsers: dict[str, Callable[[bytes], dict[str, Any]]] = {
        "decisions": _decision_row,
        "labels": _label_row,
    }
    now = datetime.now(UTC)
    for msg in messages:
        topic = msg.topic() or ""
        kind = kinds[topic]
        value = msg.value()
        try:
            if value is None:
                raise ValueError("empty value (a tombstone)")
            if kind == "transactions":
                sent_s = _kafka_time_s(msg)
                clock, whose = (
                    (now.timestamp(), "the archive's clock")
                    if sent_s is None
                    else (sent_s, "its Kafka timestamp")
                )
                rows[kind].append(_transaction_row(value, clock, whose, max_ahead_s))
            else:
                rows[kind].append(parsers[kind](value))
        except (ValidationError, ValueError) as exc:
            rows["rejected"].append(
                {
                    "topic": topic,
                    "partition": msg.partition(),
                    "offset": msg.offset(),
                    "key": msg.key(),
                    "value": value,
                    "reason": _reason(exc),
                    "archived_at": now,
                }
            )
    for kind, items in rows.items():
        archive.append(kind, pd.DataFrame(items))
    return {kind: len(items) for kind, items in rows.items()}


@contextmanager
def stop_on_signals(flag: threading.Event) -> Iterator[threading.Event]:
    """SIGTERM and Ctrl-C set ``flag`` (the loop finishes its batch); a second Ctrl-C raises."""
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and flag.is_set():
            raise KeyboardInterrupt
        flag.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_archive(
    settings: Settings,
    bootstrap: str,
    archive: Archive,
    *,
    once: bool = False,
    stop: Callable[[], bool] | None = None,
    on_batch: Callable[[dict[str, int]], None] | None = None,
    idle_s: float = 1.0,
) -> ArchiveStats:
    """Consume the transactions, decisions and labels topics into ``archive``.

    A consumer group (``monitoring.archive_group_id``) with manual commits: each polled
    batch is appended (one part per kind) and only then are its offsets committed, so a
    crash re-archives at most the batch in flight (``read`` deduplicates). ``once``: stop
    when every assigned partition has reached its end and nothing arrived for ``idle_s``;
    otherwise until ``stop()`` is true (checked between batches). ``on_batch`` is called
    after each commit with the rows written per kind.
    """
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    from fraudstream.kafka import consumer_config, ensure_topics

    topics = settings.topics
    topics.require_distinct("transactions", "decisions", "labels")
    kinds = {
        topics.transactions: "transactions",
        topics.decisions: "decisions",
        topics.labels: "labels",
    }
    ensure_topics(settings.kafka, bootstrap, list(kinds))
    conf = consumer_config(settings.kafka, bootstrap, settings.monitoring.archive_group_id)
    conf["enable.partition.eof"] = True
    consumer = Consumer(conf)
    assigned: set[tuple[str, int]] = set()
    at_end: set[tuple[str, int]] = set()

    def on_assign(_c: Any, partitions: list[Any]) -> None:
        assigned.update((p.topic, p.partition) for p in partitions)

    def on_revoke(_c: Any, partitions: list[Any]) -> None:
        for p in partitions:
            assigned.discard((p.topic, p.partition))
            at_end.discard((p.topic, p.partition))

    consumer.subscribe(list(kinds), on_assign=on_assign, on_revoke=on_revoke)
    stats = ArchiveStats()
    started = time.monotonic()
    last_data = started
    max_batch = settings.monitoring.archive_max_batch
    try:
        while stop is None or not stop():
            polled = consumer.consume(num_messages=max_batch, timeout=0.5)
            data = []
            for msg in polled:
                err = msg.error()
                if err is None:
                    data.append(msg)
                    at_end.discard((msg.topic() or "", msg.partition() or 0))
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add((msg.topic() or "", msg.partition() or 0))
                elif err.fatal():
                    raise KafkaException(err)
                else:
                    log.warning("archive consumer: %s", err.str())
            if data:
                written = archive_batch(archive, kinds, data, settings.scoring.max_event_ahead_s)
                offsets: dict[tuple[str, int], int] = {}
                for msg in data:
                    key = (msg.topic() or "", msg.partition() or 0)
                    offsets[key] = max(offsets.get(key, -1), (msg.offset() or 0) + 1)
                try:
                    consumer.commit(
                        offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                        asynchronous=False,
                    )
                except KafkaException as exc:
                    if exc.args and exc.args[0].fatal():
                        raise
                    # a rebalance took partitions away: their new owner archives the batch
                    # again from the last commit; read() deduplicates
                    log.warning("archive: commit failed (%s); the batch is kept", exc)
                stats.messages += len(data)
                stats.batches += 1
                stats.files += len(written)
                for kind, count in written.items():
                    stats.rows[kind] += count
                last_data = time.monotonic()
                if on_batch is not None:
                    on_batch(written)
            elif once and assigned and at_end >= assigned:
                if time.monotonic() - last_data >= idle_s:
                    break
            elif once and not assigned and time.monotonic() - started > ASSIGN_TIMEOUT_S:
                raise ArchiveError(
                    f"no partition assigned to group {conf['group.id']!r} within "
                    f"{ASSIGN_TIMEOUT_S:g}s (another member holds them all?)"
                )
    finally:
        consumer.close()
        stats.seconds = time.monotonic() - started
    return stats
