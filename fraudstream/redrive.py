"""Send dead letters back to the transactions topic once their cause is fixed.

The worker dead-letters an event it could not score (``scoring_failed``: a corrupt customer
state, a bug) and every event of a batch it failed on (``worker_error``), with the event's
own key and bytes (``streaming.worker.dead_letter``). Once the cause is repaired,
:func:`redrive` publishes those bytes again under the same key (a customer's redriven events
keep their order) to the transactions topic, with the header ``redriven_from``
(``topic:partition:offset`` of the dead letter) and the send time as the Kafka timestamp.
The worker then scores them as any event, at their own event time; one that was decided
before (a replay) gets the same decision again. The worker copies ``redriven_from`` onto the
decision (or onto the new dead letter of one that fails again) and counts them
(``fraudstream_worker_redriven_total``).

Which: the dead letters whose ``error_type`` is chosen (default :data:`RECOVERABLE`;
``invalid_event`` would fail again, unless it was refused only for a timestamp too far
ahead). Passed over and counted: the other types, any whose value or key was truncated
(``value_bytes`` / ``key_bytes``: the dead letter would have been over the producer's size
limit, only the head was kept), and any without a value.

Progress: a consumer group (default :data:`DEFAULT_GROUP`) whose offsets are committed every
:data:`CHECKPOINT_EVERY` dead letters read and at the end, each time only once every message
sent before is delivered (``acks=all``), so the next run reads only dead letters that arrived
since. The group moves past every dead letter read, sent or passed over: to send another
type later, read from the start (``from_beginning``, which sets the group back to where that
run stops) or use another group. The run reads each partition up to its end, or up to its
first dead letter stamped at or after the run's start (such as a redriven event failing
again), which is left for the next run: a run always ends. That compares the worker's clock
(or the broker's, for log-append time) with this host's, so they must agree to well under a
worker's batch time (NTP); one stamped over :data:`FUTURE_WARNING_S` ahead is logged as a
warning. (The topic's end offsets at the start would need no clock, but the local broker
reports the start of its last stored batch as the end.) A run that cannot read, send or
deliver fails without committing again; running it again sends again those read since its
last commit (harmless to scores: the worker treats them as replays; the decisions topic may
then carry a decision twice). ``dry_run`` reads and counts only. Run one redrive at a time
per group: two at once could both send the same dead letters.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_STORED,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from fraudstream.config import KafkaSettings
from fraudstream.consume import (
    POLL_TIMEOUT_S,
    Record,
    record_from_message,
    topic_partitions,
)
from fraudstream.dead_letters import (
    KEY_BYTES,
    REDRIVEN_FROM,
    SCORING_FAILED,
    VALUE_BYTES,
    WORKER_ERROR,
    error_type_of,
)
from fraudstream.errors import FraudstreamError
from fraudstream.kafka import consumer_config, producer_config
from fraudstream.publish import FLUSH_TIMEOUT_S, produce_retrying

log = logging.getLogger(__name__)

#: What a redrive sends by default: the failures that a repair can undo.
RECOVERABLE = (SCORING_FAILED, WORKER_ERROR)
#: Why a chosen dead letter is passed over: only the head of its value or key was kept,
TRUNCATED = "truncated"
#: or it has no value at all.
NO_VALUE = "no_value"
DEFAULT_GROUP = "fraudstream-redrive"
#: Dead letters read between two commits (each once all sent before are delivered).
CHECKPOINT_EVERY = 100_000
#: A dead letter stamped this far after the run's start is logged as a warning.
FUTURE_WARNING_S = 60.0


class RedriveError(FraudstreamError):
    """A redrive that could not read, send or commit (nothing committed unless it says so)."""


def passed_over(record: Record, error_types: Collection[str]) -> str | None:
    """``None`` if the dead letter ``record`` is to be sent again, else why it is not: its
    ``error_type`` (``unknown`` without one), :data:`TRUNCATED` or :data:`NO_VALUE`."""
    headers = dict(record.headers)
    error_type = error_type_of(headers)
    if error_type not in error_types:
        return error_type
    if VALUE_BYTES in headers or KEY_BYTES in headers:
        return TRUNCATED
    return NO_VALUE if record.value is None else None


@dataclass
class RedriveResult:
    """What one run read, sent and committed."""

    dead_letter_topic: str
    to_topic: str
    dry_run: bool
    read: int = 0
    redriven: int = 0
    passed_over: Counter[str] = field(default_factory=Counter)
    #: The next offset per partition of the dead-letter topic, as committed (empty: none).
    committed: dict[int, int] = field(default_factory=dict)
    #: False when stopped (Ctrl-C) before every partition was read to its end.
    complete: bool = False
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(err.str())

    def summary(self) -> dict[str, Any]:
        return {
            "dead_letter_topic": self.dead_letter_topic,
            "to": self.to_topic,
            "dry_run": self.dry_run,
            "read": self.read,
            "redriven": self.redriven,
            "passed_over": dict(sorted(self.passed_over.items())),
            "committed": {str(p): o for p, o in sorted(self.committed.items())},
            "complete": self.complete,
        }


def redrive(
    kafka: KafkaSettings,
    bootstrap: str,
    dead_letter_topic: str,
    to_topic: str,
    *,
    error_types: Collection[str] = RECOVERABLE,
    group_id: str = DEFAULT_GROUP,
    from_beginning: bool = False,
    dry_run: bool = False,
    stop: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.time,
    checkpoint_every: int = CHECKPOINT_EVERY,
    producer_settings: Mapping[str, Any] | None = None,
) -> RedriveResult:
    """Send the chosen dead letters of ``dead_letter_topic`` to ``to_topic`` (see the module).

    Every ``checkpoint_every`` dead letters read, and at the end, it waits until all it sent
    are delivered and commits how far it has read, so a run that fails or is killed sends
    again at most the dead letters read since its last commit. ``stop`` is checked between
    polls: the run then ends early, and still delivers and commits what it has read.
    ``clock`` (wall time, seconds) stamps the run's start. ``producer_settings``:
    librdkafka settings over the producer's defaults (idempotent, ``acks=all``).

    Raises :class:`~fraudstream.consume.ConsumeError` when a topic is missing or Kafka does
    not answer before anything is read, :class:`RedriveError` once the run has begun.
    """
    if checkpoint_every < 1:
        raise ValueError("checkpoint_every must be at least 1")
    result = RedriveResult(dead_letter_topic, to_topic, dry_run)
    conf = consumer_config(kafka, bootstrap, group_id)
    conf["enable.partition.eof"] = True
    consumer = Consumer(conf)
    producer: Producer | None = None
    next_offsets: dict[int, int] = {}

    def checkpoint() -> None:
        if producer is None or next_offsets == result.committed:
            return
        _deliver(producer, result)
        offsets = [TopicPartition(dead_letter_topic, p, o) for p, o in next_offsets.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            raise RedriveError(
                f"dead letters sent, but committing group {group_id!r} failed ({exc}): "
                "the next run sends again those read since the last commit"
            ) from None
        result.committed = dict(next_offsets)
        log.info("redrive: committed %s (%d read)", result.committed, result.read)

    try:
        partitions = topic_partitions(consumer, dead_letter_topic)
        topic_partitions(consumer, to_topic)  # it exists: else every send waits to time out
        if not dry_run:
            producer = Producer({**producer_config(kafka, bootstrap), **(producer_settings or {})})
        start = OFFSET_BEGINNING if from_beginning else OFFSET_STORED
        consumer.assign([TopicPartition(dead_letter_topic, p, start) for p in partitions])
        started_ms = int(clock() * 1000)
        reading = set(partitions)
        while reading and not stop():
            msg = consumer.poll(POLL_TIMEOUT_S)
            if msg is None:
                continue
            err = msg.error()
            partition = msg.partition() or 0
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    reading.discard(partition)
                elif err.fatal() or err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise RedriveError(
                        f"reading {dead_letter_topic!r} failed ({err.str()}); nothing "
                        "committed since the last commit"
                    )
                continue  # transient (a reconnect): librdkafka retries
            if partition not in reading:
                continue
            record = record_from_message(msg)
            if record.timestamp_ms is not None and record.timestamp_ms >= started_ms:
                reading.discard(partition)  # written since the run began: the next run's
                consumer.pause([TopicPartition(dead_letter_topic, partition)])
                _left_for_next_run(record, started_ms)
                continue
            if result.read and result.read % checkpoint_every == 0:
                checkpoint()
            result.read += 1
            next_offsets[partition] = record.offset + 1
            why = passed_over(record, error_types)
            if why is not None:
                result.passed_over[why] += 1
                continue
            result.redriven += 1
            if producer is not None:
                assert record.value is not None  # passed_over() refused a missing one
                origin = f"{dead_letter_topic}:{partition}:{record.offset}"
                try:
                    produce_retrying(
                        producer,
                        to_topic,
                        record.key,
                        record.value,
                        int(clock() * 1000),
                        result.on_delivery,
                        headers=[(REDRIVEN_FROM, origin.encode())],
                    )
                except KafkaException as exc:  # refused at once (too large, producer fenced)
                    raise RedriveError(
                        f"{origin} could not be sent ({exc}); nothing committed since the "
                        "last commit"
                    ) from None
        result.complete = not reading
        checkpoint()
        log.info("redrive: %s", result.summary())
        return result
    finally:
        consumer.close()


def _left_for_next_run(record: Record, started_ms: int) -> None:
    ahead_s = ((record.timestamp_ms or 0) - started_ms) / 1000
    where = f"{record.topic}:{record.partition}:{record.offset}"
    if ahead_s > FUTURE_WARNING_S:  # it holds its partition back until that time passes
        log.warning(
            "redrive: %s is stamped %.0f s after this host's clock (clocks out of sync?); "
            "it and its partition's later dead letters are left for a later run",
            where,
            ahead_s,
        )
    else:
        log.info("redrive: %s is newer than this run; left for the next one", where)


def _deliver(producer: Producer, result: RedriveResult) -> None:
    """Wait for every send; any not delivered fails the run before it commits again."""
    left = producer.flush(FLUSH_TIMEOUT_S)
    if left or result.failed:
        undelivered = left + result.failed
        detail = f": {result.errors[0]}" if result.errors else ""
        raise RedriveError(
            f"{undelivered} of {result.redriven} redriven message(s) not delivered to "
            f"{result.to_topic!r}{detail}; nothing committed since the last commit: run it "
            "again to send those read since then again"
        )
