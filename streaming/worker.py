"""The scoring agent: ``transactions`` → :class:`~fraudstream.scoring.Scorer` → ``decisions``.

Thin wiring around the scoring core. :func:`register` defines one agent (concurrency 1;
scale with partitions and workers) on the transactions topic, read as raw bytes, in
micro-batches of ``settings.scoring.batch_size`` events or ``batch_timeout_s`` seconds.

Micro-batches and offsets. The agent takes :class:`faust.Event` objects from its stream's
channel in bulk (:mod:`streaming.intake`: the batches of ``Stream.take_events``, without
its cost per message), so each message's original bytes, key, partition, offset and Kafka
timestamp are at hand (``event.message``). It acks a batch's events only once the batch is
handled and its outputs delivered; Faust commits acked offsets only. A batch that could
not even be dead-lettered stays unacked.

Scoring runs on the event loop, not in a thread. Faust's consumer already runs aiokafka
in a thread of its own; a scoring thread beside it and the event loop made three threads
taking turns on the GIL, and every time the scorer released it (a Redis round trip, an
XGBoost call) it could wait up to the interpreter's switch interval (5 ms) to get it back.
Measured with the streaming benchmark's paced runs at 1,000 events/s (same machine, same
load, one after the other): p50/p99 latency 167/880 ms in a thread, 105/285 ms on the loop.
A batch blocks the loop for its duration (tens of ms); heartbeats are unaffected (the
consumer thread sends them).

Warm start. Faust starts its agents before the consumer joins the group, which takes
seconds (``benchmarks/RESULTS.md``, "Faust worker start-to-ready"). The agent spends that
time filling the scorer's caches from Redis, terminal rows first, then customer states
(:func:`warm_up`, for at most ``worker.warm_cache_s``, default 5 s; 0: off), in a helper
thread so that the join goes on; its first batch waits only for what is left of the
warm-up. A restarted or added worker then does not read every customer's history on its
first batches. Decisions are the same either way: the caches are checked against Redis on
every batch. A warm-up that fails (Redis down, a corrupt state) is logged, and the worker
starts with what it has.

Commit after produce. Every decision and dead letter goes through an idempotent
confluent-kafka producer (``acks=all``, :mod:`streaming.delivery`) and the agent awaits
every message's delivery report before it finishes the batch; a failed send is retried,
with a growing pause, until it is delivered. So an offset is committed only after
everything its message produced is in Kafka: at-least-once, never a lost event.

State writes settle after produce. The batch's customer-state writes (history append and
customer view, :class:`~fraudstream.scoring.PendingUpdate`) are sent to Redis before the
model runs, and their replies are read only after the decisions are delivered, so Redis
works while the broker acknowledges instead of while the agent waits. The batch finishes
(and its offsets may be committed) only once Redis has confirmed them. Both writes are
idempotent, so a write that fails is sent again, :data:`SETTLE_ATTEMPTS` times in all with a
growing pause; if Redis still does not confirm, the failure is logged and counted
(``fraudstream_worker_state_writes_lost``) and the worker goes on: the decisions are out,
and those customers' next features miss the batch's transactions, as when Redis is down. No
exception leaves the loop body (an exception in an agent would ack the batch), and a batch
in flight is finished even if the agent is cancelled. Between batches the agent switches to
a model promoted in the registry (:class:`~fraudstream.registry.HotReload`, at most every
``model.poll_interval_s``), so each batch is scored by one model. Metrics and liveness:
:class:`~fraudstream.metrics.WorkerMetrics`, served when ``worker.metrics_port`` is set.

Per message:

* refused by :func:`~fraudstream.schema.decode_event` (the archive applies the same rule):
  over :data:`~fraudstream.schema.MAX_MESSAGE_BYTES` (checked before parsing), not UTF-8,
  not JSON, or not a valid :class:`~fraudstream.schema.TransactionEvent` (missing or wrongly typed fields,
  amount not finite and > 0, timestamp without offset or before 2000-01-01Z), or a timestamp
  more than ``settings.scoring.max_event_ahead_s`` (default 1 day) after the worker's clock:
  a dead letter on ``settings.topics.dead_letter`` with the original key and bytes and the headers ``error`` (what is wrong, without traceback), ``error_type``
  (``invalid_event``), ``source_topic``, ``source_partition``, ``source_offset`` and
  ``source_timestamp_ms``. The ``error`` is one line and starts with the field at fault
  (``amount: ...``) or ``message:`` when the whole message is. A dead letter whose key,
  value and headers together exceed :data:`DEAD_LETTER_MAX_BYTES` (an oversized message, or
  one just under the limit that the headers push over it) carries only the first
  :data:`DEAD_LETTER_MAX_VALUE_BYTES` bytes of its value, and of its key if that is longer,
  with the headers ``value_bytes`` / ``key_bytes`` (the full sizes), so it fits the
  producer's message limit (``message.max.bytes``, which counts all three). A dead letter
  the broker still refuses as too large (a topic with a smaller limit) is sent again with
  the first :data:`DEAD_LETTER_MAX_VALUE_BYTES` bytes, then none, of its value and key
  (:meth:`BatchProcessor.produce`), and retried unchanged only once nothing is left to cut
  (its headers alone are a few kB at most: ``redriven_from`` is taken only up to 512 bytes);
* valid but unusual, scored as usual: extra fields are ignored; any finite amount > 0 is
  scored, however large; timestamps in the past (since 2000) and out-of-order events are
  scored at their own event time; an unknown customer or terminal is scored ``degraded``
  (see :mod:`fraudstream.scoring`); duplicate ids are replays (below);
* valid: scored with the batch's other valid events in one :meth:`Scorer.score` call, then
  one decision on ``settings.topics.decisions``, keyed by ``transaction_id``, value
  :meth:`Decision.to_json_dict` with ``latency_ms`` = emission time − the message's Kafka
  timestamp.

A message ``fraudstream redrive`` sent back carries the header ``redriven_from`` (its dead
letter's ``topic:partition:offset``): its decision, or its new dead letter, carries it too.

If scoring a batch fails (a bug, a corrupt state), its valid events are scored one by one;
an event that still fails goes to the dead-letter topic with ``error_type``
``scoring_failed`` and the error, and the failure is logged. A batch that fails as a
whole (a bug outside scoring) before its outputs are delivered sends all its messages there,
``worker_error``; one that fails after (confirming its state writes, counting) is only logged
and counted, since each of its messages already has its decision or dead letter
(:meth:`BatchProcessor.process`). Once the cause is repaired, ``fraudstream redrive``
(:mod:`fraudstream.redrive`) sends both kinds back.

Duplicates: a ``transaction_id`` that occurs more than once in one batch is scored once
per message, each copy as a replay (the scorer leaves a replayed transaction out of its
own history, and the history append is idempotent by id): the first copies are scored
together, then the second copies, and so on. Every message gets its own decision; the
copies get the same score. Across batches the scorer's replay rule gives the same result.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import faust
from confluent_kafka import KafkaError, KafkaException

from fraudstream.config import Settings
from fraudstream.dead_letters import (
    ERROR,
    ERROR_TYPE,
    INVALID_EVENT,
    KEY_BYTES,
    REDRIVEN_FROM,
    SCORING_FAILED,
    VALUE_BYTES,
    WORKER_ERROR,
    redriven_from,
)
from fraudstream.decision import encode_record
from fraudstream.metrics import AFTER_DELIVERY, BEFORE_DELIVERY, WorkerMetrics, track_gc_pauses
from fraudstream.registry import HotReload, hot_reload
from fraudstream.schema import TransactionEvent, decode_event
from fraudstream.scoring import PendingUpdate, Scorer, warm_caches
from fraudstream.stack import Endpoints
from fraudstream.startup import StartupSignals
from streaming.delivery import DeliveringProducer
from streaming.intake import intake

log = logging.getLogger(__name__)

AGENT_NAME = "score_transactions"
#: First pause before re-sending undelivered messages; doubles up to the maximum.
RETRY_PAUSE_S = 0.5
RETRY_PAUSE_MAX_S = 10.0
MAX_ERROR_LENGTH = 2000
#: The largest dead letter (key + value + header names and values) sent whole: librdkafka's
#: ``message.max.bytes`` (default 1,000,000) counts all three, plus a little framing.
DEAD_LETTER_MAX_BYTES = 990_000
#: A larger dead letter keeps this many bytes of its value (and of its key).
DEAD_LETTER_MAX_VALUE_BYTES = 65_536
#: Tries to have a batch's state writes confirmed by Redis (the first wait, then re-sends).
SETTLE_ATTEMPTS = 3

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Incoming:
    """One input message, detached from Faust (so the logic is testable without Kafka)."""

    topic: str
    partition: int
    offset: int
    timestamp_s: float | None
    key: bytes | None
    value: bytes | None
    #: Its ``redriven_from`` header: the dead letter ``fraudstream redrive`` sent it back from.
    redriven_from: bytes | None = None


@dataclass(frozen=True)
class Outgoing:
    """One message to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers


def dead_letter(message: Incoming, error: str, error_type: str, topic: str) -> Outgoing:
    """The dead letter of ``message``: its own key and bytes, the error in the headers; only
    their heads when the whole would exceed :data:`DEAD_LETTER_MAX_BYTES`."""
    stamp = "" if message.timestamp_s is None else str(round(message.timestamp_s * 1000))
    headers: Headers = [
        (ERROR, error[:MAX_ERROR_LENGTH].encode()),
        (ERROR_TYPE, error_type.encode()),
        ("source_topic", message.topic.encode()),
        ("source_partition", str(message.partition).encode()),
        ("source_offset", str(message.offset).encode()),
        ("source_timestamp_ms", stamp.encode()),
    ]
    if message.redriven_from is not None:  # failed again: where it was sent back from
        headers.append((REDRIVEN_FROM, message.redriven_from))
    letter = Outgoing(topic, message.key, message.value, headers)
    if message_bytes(letter) > DEAD_LETTER_MAX_BYTES:
        letter = truncated(letter, DEAD_LETTER_MAX_VALUE_BYTES)
    return letter


def message_bytes(out: Outgoing) -> int:
    """What librdkafka's message size limit counts of ``out`` (without its framing)."""
    headers = sum(len(name.encode()) + len(value or b"") for name, value in out.headers)
    return len(out.key or b"") + len(out.value or b"") + headers


def truncated(out: Outgoing, keep: int) -> Outgoing:
    """``out`` with at most the first ``keep`` bytes of its value and of its key; the full
    size of each one cut goes in a header (:data:`VALUE_BYTES`, :data:`KEY_BYTES`; kept
    from an earlier cut)."""
    headers = list(out.headers)
    names = {name for name, _ in headers}

    def cut(data: bytes | None, header: str) -> bytes | None:
        if data is None or len(data) <= keep:
            return data
        if header not in names:
            headers.append((header, str(len(data)).encode()))
        return data[:keep]

    value = cut(out.value, VALUE_BYTES)
    key = cut(out.key, KEY_BYTES)
    return Outgoing(out.topic, key, value, headers)


def _too_large(error: BaseException) -> bool:
    """Whether a delivery ``error`` says the message is too large (never delivered as is)."""
    return (
        isinstance(error, KafkaException)
        and bool(error.args)
        and isinstance(error.args[0], KafkaError)
        and error.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    )


def _is_dead_letter(out: Outgoing) -> bool:
    return any(name == ERROR_TYPE for name, _ in out.headers)


def decision_message(
    record: dict[str, Any], message: Incoming, topic: str, now_s: float | None = None
) -> Outgoing:
    """The decision record of ``message``, with its latency from the Kafka timestamp; the
    message's ``redriven_from`` header, if any, goes along."""
    now_s = time.time() if now_s is None else now_s
    latency = None if message.timestamp_s is None else (now_s - message.timestamp_s) * 1000.0
    value = encode_record(record, latency)
    origin = message.redriven_from
    headers: Headers = [] if origin is None else [(REDRIVEN_FROM, origin)]
    return Outgoing(topic, record["transaction_id"].encode(), value, headers)


def _count_taken(metrics: WorkerMetrics, batch: Sequence[Incoming]) -> None:
    """Count ``batch`` as consumed, and its redriven messages (hold ``metrics.lock``)."""
    metrics.consumed.inc(amount=len(batch))
    redriven = sum(m.redriven_from is not None for m in batch)
    if redriven:
        metrics.redriven.inc(amount=redriven)


class BatchProcessor:
    """Turns a micro-batch into decisions and dead letters, and produces them."""

    def __init__(
        self,
        settings: Settings,
        scorer: Scorer,
        *,
        retry_pause_s: float = RETRY_PAUSE_S,
        delivery: DeliveringProducer,
        metrics: WorkerMetrics,
        reload: HotReload | None = None,
    ) -> None:
        """``reload``: checked before each batch, to switch to a promoted model between
        batches (:mod:`fraudstream.registry`)."""
        self.scorer = scorer
        self.reload = reload
        self.decisions_topic = settings.topics.decisions
        self.dead_letter_topic = settings.topics.dead_letter
        self.max_ahead_s = settings.scoring.max_event_ahead_s
        self.metrics = metrics
        self.delivery = delivery
        self.retry_pause_s = retry_pause_s

    async def handle(self, batch: Sequence[Incoming]) -> None:
        """Process ``batch``; if that fails before its outputs are delivered (a bug), send all
        its messages to the dead-letter topic (``worker_error``) instead. Raises only when
        even that fails: the batch then stays unacked."""
        try:
            if self.reload is not None and self.reload.due():
                await asyncio.to_thread(self.reload.check)
            await self.process(batch)
        except Exception as exc:  # a bug: keep the events, on the dead-letter topic
            log.exception("batch of %d message(s) failed", len(batch))
            await self.dead_letter_all(batch, exc)

    async def process(self, batch: Sequence[Incoming]) -> None:
        """Score ``batch`` and produce every output; returns once all are delivered.

        Raises if anything fails before every output is delivered. A failure after that
        (confirming the state writes, counting) is logged and counted
        (``fraudstream_worker_batch_failures_total{when="after_delivery"}``), not raised:
        every message already has its decision or dead letter, so dead-lettering the batch
        again would decide its events twice after a redrive."""
        started = time.perf_counter()
        stamps = [m.timestamp_s for m in batch if m.timestamp_s is not None]
        age_ms = (time.time() - min(stamps)) * 1000 if stamps else None
        outputs: list[Outgoing] = []
        valid: list[tuple[Incoming, TransactionEvent]] = []
        for message in batch:
            result = decode_event(message.value, max_ahead_s=self.max_ahead_s)
            if isinstance(result, str):
                log.warning(
                    "dead letter %s[%d]@%d: %s",
                    message.topic,
                    message.partition,
                    message.offset,
                    result,
                )
                outputs.append(dead_letter(message, result, INVALID_EVENT, self.dead_letter_topic))
            else:
                valid.append((message, result))
        decoded = time.perf_counter()
        timings = self.scorer.timings
        before = dict(timings)
        reads = self.scorer.history.reads
        records: list[dict[str, Any]] = []
        pending: PendingUpdate | None = None
        try:  # once scored, the writes are settled whatever happens next
            if valid:
                events = [event for _, event in valid]
                try:
                    records, pending = self.scorer.score_deferred(events)
                except Exception:
                    log.exception(
                        "scoring a batch of %d event(s) failed; scoring one by one", len(valid)
                    )
                    more, records = await self._one_by_one(valid)
                    outputs.extend(more)
                else:
                    now_s = time.time()
                    outputs.extend(
                        decision_message(record, message, self.decisions_topic, now_s)
                        for (message, _), record in zip(valid, records, strict=True)
                    )
            scored = time.perf_counter()
            await self.produce(outputs)
        except BaseException:
            if pending is not None:  # Redis ran the writes meanwhile
                await self._settle(pending)
            raise
        produced = time.perf_counter()
        settled = pending is None
        try:
            if pending is not None:
                await self._settle(pending)
            settled = True
            done = time.perf_counter()
            stages_ms = {
                k: (timings[k] - before[k]) * 1000 for k in ("features", "model", "update")
            }
            stages_ms.update(
                decode=(decoded - started) * 1000,
                produce=(produced - scored) * 1000,
                batch=(done - started) * 1000,
            )
            self._record(batch, outputs, records, reads, stages_ms, age_ms)
        except Exception:
            log.exception(
                "batch of %d message(s): every output delivered, then the worker failed; "
                "not dead-lettered (each message has its decision or dead letter)",
                len(batch),
            )
            with self.metrics.lock:
                self.metrics.batch_failures.inc(AFTER_DELIVERY)
            if not settled and pending is not None:  # the next batch must not wait on them
                pending.abandon()
                with self.metrics.lock:
                    self.metrics.state_writes_lost.inc(amount=pending.events)

    async def _settle(self, pending: PendingUpdate) -> None:
        """Have Redis confirm the batch's state writes (:func:`confirm_writes`), timed into
        the ``update`` stage; count the events whose writes it never confirmed."""
        started = time.perf_counter()
        confirmed = await confirm_writes(pending, self.retry_pause_s)
        self.scorer.timings["update"] += time.perf_counter() - started
        if not confirmed:
            with self.metrics.lock:
                self.metrics.state_writes_lost.inc(amount=pending.events)

    def _record(
        self,
        batch: Sequence[Incoming],
        outputs: Sequence[Outgoing],
        records: Sequence[dict[str, Any]],
        reads_before: int,
        stages_ms: dict[str, float],
        age_ms: float | None = None,
    ) -> None:
        metrics = self.metrics
        with metrics.lock:
            _count_taken(metrics, batch)
            metrics.batch_events.observe(len(batch))
            if age_ms is not None:
                metrics.batch_age_ms.observe(age_ms)
            for stage, ms in stages_ms.items():
                metrics.stage_ms.observe(ms, stage)
            metrics.history_reads.inc(amount=self.scorer.history.reads - reads_before)
            for out in outputs:
                if out.topic == self.dead_letter_topic:
                    metrics.dead_letters.inc(dict(out.headers)[ERROR_TYPE].decode())
            for record in records:
                metrics.decisions.inc(record["action"])
                if record["degraded"]:
                    metrics.degraded.inc()

    async def _one_by_one(
        self, valid: Sequence[tuple[Incoming, TransactionEvent]]
    ) -> tuple[list[Outgoing], list[dict[str, Any]]]:
        """Score each event alone, so one that cannot be scored does not take its batch along:
        it goes to the dead-letter topic (``scoring_failed``) with the error."""
        outputs, records = [], []
        for message, event in valid:
            try:
                [record] = self.scorer.score_records([event], update=True)
            except Exception as exc:
                log.exception("scoring %s failed", event.transaction_id)
                error = f"scoring failed: {type(exc).__name__}: {exc}"
                outputs.append(dead_letter(message, error, SCORING_FAILED, self.dead_letter_topic))
            else:
                outputs.append(decision_message(record, message, self.decisions_topic))
                records.append(record)
        return outputs, records

    async def dead_letter_all(self, batch: Sequence[Incoming], exc: Exception) -> None:
        """Send every message of ``batch`` to the dead-letter topic (``worker_error``)."""
        error = f"worker error: {type(exc).__name__}: {exc}"
        await self.produce(
            [dead_letter(m, error, WORKER_ERROR, self.dead_letter_topic) for m in batch]
        )
        with self.metrics.lock:  # once delivered: if not, the batch stays unacked, uncounted
            _count_taken(self.metrics, batch)
            self.metrics.batch_failures.inc(BEFORE_DELIVERY)
            self.metrics.dead_letters.inc(WORKER_ERROR, amount=len(batch))

    async def produce(self, outputs: Sequence[Outgoing]) -> None:
        """Send ``outputs`` and wait for every delivery; re-send failures until delivered. A
        dead letter refused as too large is re-sent smaller (:func:`smaller_dead_letter`)."""
        pending = list(outputs)
        pause = self.retry_pause_s
        while pending:
            results = await self.delivery.deliver(pending)
            failed = [
                (out, res) for out, res in zip(pending, results, strict=True) if res is not None
            ]
            if not failed:
                return
            log.error(
                "%d of %d message(s) not delivered (%r); retrying in %.1fs",
                len(failed),
                len(pending),
                failed[0][1],
                pause,
            )
            pending = [smaller_dead_letter(out, res) for out, res in failed]
            await asyncio.sleep(pause)
            pause = min(pause * 2, RETRY_PAUSE_MAX_S)


def smaller_dead_letter(out: Outgoing, error: BaseException) -> Outgoing:
    """What to send again after ``error``: for a dead letter refused as too large, a copy
    with the first :data:`DEAD_LETTER_MAX_VALUE_BYTES` bytes of its value and key, then (if
    that was refused too) none; anything else, or a dead letter already empty, unchanged."""
    if not _too_large(error) or not _is_dead_letter(out):
        return out
    keep = DEAD_LETTER_MAX_VALUE_BYTES
    if len(out.value or b"") <= keep and len(out.key or b"") <= keep:
        keep = 0  # cut to the heads already
    smaller = truncated(out, keep)
    if smaller != out:
        log.warning(
            "a dead letter of %d bytes was refused as too large: sending it with the first "
            "%d bytes of its value and key",
            message_bytes(out),
            keep,
        )
    return smaller


async def warm_up(scorer: Scorer, seconds: float) -> None:
    """Fill ``scorer``'s caches from Redis for at most ``seconds``
    (:func:`~fraudstream.scoring.warm_caches`) in a helper thread, so the event loop goes on
    with Faust's start (the consumer group's join takes seconds) meanwhile. Never raises but
    ``CancelledError``, which also tells the thread to stop after its round trip under way."""
    if seconds <= 0:
        return
    cancelled = threading.Event()
    try:
        await asyncio.to_thread(warm_caches, scorer, seconds, cancelled.is_set)
    except asyncio.CancelledError:
        cancelled.set()
        raise


async def confirm_writes(pending: PendingUpdate, first_pause_s: float = RETRY_PAUSE_S) -> bool:
    """Wait for ``pending``'s replies; after a failure re-send the writes (idempotent), up
    to :data:`SETTLE_ATTEMPTS` tries in all with a growing pause. True once Redis confirmed
    them; False (logged) if it never did. Never raises: the decisions are delivered."""
    pause = first_pause_s
    for attempt in range(1, SETTLE_ATTEMPTS + 1):
        try:
            if attempt == 1:
                pending.settle()
            else:
                pending.resend()
            return True
        except Exception as exc:  # Redis errors, and any bug: the batch is out already
            log.warning(
                "state writes of %d event(s) not confirmed (attempt %d of %d): %s: %s",
                pending.events,
                attempt,
                SETTLE_ATTEMPTS,
                type(exc).__name__,
                exc,
            )
            if attempt < SETTLE_ATTEMPTS:
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_PAUSE_MAX_S)
    pending.abandon()
    log.error(
        "state writes of %d event(s) lost: Redis did not confirm them; their decisions were "
        "delivered, and their customers' next features miss them",
        pending.events,
    )
    return False


def incoming(event: faust.EventT) -> Incoming:
    message = event.message
    value = message.value
    key = message.key
    return Incoming(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_s=message.timestamp if message.timestamp and message.timestamp > 0 else None,
        key=key if isinstance(key, bytes | None) else bytes(key),
        value=value if isinstance(value, bytes | None) else bytes(value),
        redriven_from=redriven_from(message.headers),
    )


class RawSchema(faust.Schema):
    """Keys and values as Kafka holds them (bytes, or None for a tombstone): what Faust's
    ``raw`` serializer gives, without its codec registry's calls for every message (three
    lookups and a payload check each). The worker decodes and validates values itself."""

    def __init__(self) -> None:
        super().__init__(key_serializer="raw", value_serializer="raw")

    def loads_key(self, app: faust.types.AppT, message: faust.types.Message, **_: Any) -> Any:
        return message.key

    def loads_value(self, app: faust.types.AppT, message: faust.types.Message, **_: Any) -> Any:
        return message.value


def register(
    app: faust.App, settings: Settings, scorer: Scorer, bootstrap: str, metrics: WorkerMetrics
) -> faust.types.AgentT:
    """Define the scoring agent on ``app`` (transactions → decisions / dead letters), and the
    timer that keeps ``metrics``' lag, commit age and liveness current."""
    source = app.topic(settings.topics.transactions, schema=RawSchema())
    delivery = DeliveringProducer(settings.kafka, bootstrap)
    reload = hot_reload(settings, scorer, metrics)
    processor = BatchProcessor(settings, scorer, delivery=delivery, metrics=metrics, reload=reload)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def flush_outputs(app: faust.App, **kwargs: Any) -> None:
        left = await asyncio.to_thread(delivery.close)
        if left:
            log.error("%d output message(s) undelivered at shutdown", left)

    @app.timer(settings.worker.check_interval_s)
    async def check_partitions() -> None:
        """Lag and commit age per assigned partition; not live when one stalls."""
        consumer = app.consumer
        highwater, committed = {}, {}
        for tp in consumer.assignment():
            if tp.topic != source.get_topic_name():
                continue
            high = consumer.highwater(tp)
            if high is None:  # no fetch answered yet
                continue
            highwater[(tp.topic, tp.partition)] = high
            committed[(tp.topic, tp.partition)] = consumer._committed_offset.get(tp)  # type: ignore[attr-defined]
        state = metrics.check_partitions(highwater, committed)
        if not state.live:
            log.error("worker not live: %s", "; ".join(state.stalled))

    size, within = settings.scoring.batch_size, settings.scoring.batch_timeout_s
    warm_s = settings.worker.warm_cache_s

    async def score_transactions(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        assert isinstance(stream, faust.Stream)  # the intake reads faust.Stream's books
        # Faust starts its agents before the consumer joins the group: the caches fill
        # while it joins, and the first batch waits only for what is left of the warm-up
        await warm_up(scorer, warm_s)
        batches = intake(stream, size, within)
        try:
            while not (stream.should_stop or batches.ended):
                events = await batches.take()
                if not events:  # the stream ended
                    break
                batch = [incoming(event) for event in events]
                # Finish the batch even if the agent is cancelled meanwhile (a stop that
                # skips Faust's wait for streams), then ack it: never acked unsent
                work = asyncio.ensure_future(processor.handle(batch))
                cancelled = False
                while not work.done():
                    try:
                        await asyncio.shield(work)
                    except asyncio.CancelledError:
                        cancelled = True
                work.result()  # a failure to even dead-letter the batch stops here, unacked
                batches.ack(events)
                if cancelled:
                    raise asyncio.CancelledError
                log.debug("batch of %d message(s) done", len(batch))
                yield None
        finally:
            await batches.close()

    agent: faust.types.AgentT = app.agent(source, name=AGENT_NAME, concurrency=1)(
        score_transactions
    )
    return agent


#: Consumer group (and internal-topic prefix) of the scoring worker.
WORKER_APP_ID = "fraudstream-worker"


def build_worker_app(
    settings: Settings,
    endpoints: Endpoints,
    *,
    app_id: str = WORKER_APP_ID,
    scorer: Scorer | None = None,
) -> faust.App:
    """The scoring worker's app: topics ensured, scorer built (unless given), agent defined.

    Raises a :class:`~fraudstream.errors.FraudstreamError` when the model fails its
    SHA-256 check or reads a feature the store does not define.
    """
    from fraudstream.kafka import ensure_topics

    settings.topics.require_distinct("transactions", "decisions", "dead_letter")
    from fraudstream.scoring import build_scorer
    from streaming.app import create_app

    topics = settings.topics
    created = ensure_topics(
        settings.kafka,
        endpoints.kafka_bootstrap,
        [topics.transactions, topics.decisions, topics.dead_letter],
    )
    if created:
        log.info("created topics %s", ", ".join(created))
    if scorer is None:
        scorer = build_scorer(settings, endpoints)
    # Faust's data directory (unused with the memory store) beside the stack state, not in cwd
    datadir = settings.stack.dir / f"{app_id}-data"
    datadir.parent.mkdir(parents=True, exist_ok=True)  # Faust creates only the last part
    app = create_app(settings, endpoints.kafka_bootstrap, app_id=app_id, datadir=datadir)
    metrics = WorkerMetrics(settings.worker.stall_after_s)
    register(app, settings, scorer, endpoints.kafka_bootstrap, metrics)
    # Keep the ~300,000 start-up objects (Feast, pandas, Faust, the model) out of the garbage
    # collector's scans: a full collection of them took 155 ms on an idle core, a latency
    # spike on whatever batch it lands in.
    gc.collect()
    gc.freeze()
    track_gc_pauses(metrics.gc.pauses)
    if settings.worker.metrics_port is not None:
        from fraudstream.metrics import serve

        serve(metrics, settings.worker.metrics_host, settings.worker.metrics_port)
    log.info(
        "worker %s: %s -> %s (dead letters: %s), model %s, batches of %d / %gs",
        app_id,
        topics.transactions,
        topics.decisions,
        topics.dead_letter,
        scorer.model.version,
        settings.scoring.batch_size,
        settings.scoring.batch_timeout_s,
    )
    return app


class Worker(faust.Worker):
    """Faust's worker; a SIGTERM recorded during start-up is sent again once its handlers
    are in, so it stops the worker as any later SIGTERM does (``fraudstream.startup``)."""

    def __init__(self, app: faust.App, *, startup: StartupSignals, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._startup = startup

    def install_signal_handlers(self) -> None:
        super().install_signal_handlers()
        self._startup.replay()
