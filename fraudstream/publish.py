"""Publish canonical transaction events to the ``transactions`` topic.

Every message is one :class:`~fraudstream.schema.TransactionEvent` as the JSON object of
:meth:`~fraudstream.schema.TransactionEvent.to_json_dict` (orjson), keyed by
``customer_id`` (so one customer's events stay in one partition, in order), with the
Kafka message timestamp set to the wall-clock send time: the worker measures its latency
from it. Labels (``is_fraud``) are never sent; the ``transaction_id → label`` mapping of
the events actually sent is returned (and can be written to Parquet) for scoring later.

Pacing (``rate``): event ``i`` is due at ``t0 + i / rate`` on the monotonic clock. Each
wait is computed from that absolute schedule, not from the previous send, so sleep
overshoot and send time never accumulate: after ``n`` events the elapsed time is
``(n - 1) / rate`` plus at most one event's lateness, however long the run.

Simulated events (:func:`publish_simulated`): the simulator's order is kept but its time
gaps are **compressed** to the pacing: every event's ``timestamp`` is rewritten to its send
time (equal to the message timestamp, to the millisecond). Event time therefore tracks
wall time, never lies in the future, and is non-decreasing per customer, so the worker's
freshness and latency checks are meaningful. The price: windowed features (counts over a
day or a week) see compressed time during a fast replay. Transaction ids get a per-run
prefix (``sim<seed>-<run>-<id>``) so that they never collide with the simulated history
the model was trained on, nor with an earlier run.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from fraudstream.config import KafkaSettings
from fraudstream.errors import FraudstreamError
from fraudstream.outputs import check_output_file, write_atomically
from fraudstream.schema import LABEL_COLUMN, TransactionEvent, validate_frame

#: Progress callback: called with the number of events sent so far.
Progress = Callable[[int], None]

#: How often (in events) the progress callback is called at most.
PROGRESS_EVERY = 100
#: The longest wait for the cluster's metadata before sending.
METADATA_TIMEOUT_S = 10.0
#: The longest wait for outstanding deliveries at the end.
FLUSH_TIMEOUT_S = 60.0
#: Simulated transactions per customer and day, at least (the handbook's mean is 2).
_MIN_TX_PER_CUSTOMER_DAY = 1.0
_MAX_SIMULATED_DAYS = 3660


class PublishError(FraudstreamError):
    """Publishing failed before or while sending (bad arguments, Kafka unreachable)."""


class Pacer:
    """An absolute, drift-free schedule: event ``i`` is due at ``start + i / rate``.

    ``rate=None`` means as fast as possible. ``wait(i, idle)`` calls ``idle(seconds)``
    until event ``i`` is due; ``idle`` may return early (a producer's ``poll``).
    """

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise PublishError(f"rate must be a finite number > 0, got {rate!r}")
        self.rate = rate
        self.clock = clock
        self.start: float | None = None

    def due(self, i: int) -> float:
        """The monotonic time at which event ``i`` (0-based) is due."""
        if self.start is None:
            self.start = self.clock()
        if self.rate is None:
            return self.start
        return self.start + i / self.rate

    def delay(self, i: int) -> float:
        """Seconds until event ``i`` is due (0 when it is already due)."""
        return max(0.0, self.due(i) - self.clock())

    def wait(
        self,
        i: int,
        idle: Callable[[float], Any] = time.sleep,
        stop: Callable[[], bool] | None = None,
        step: float = 0.2,
    ) -> bool:
        """Idle until event ``i`` is due; False if ``stop()`` turned True meanwhile.

        ``idle`` is called with at most ``step`` seconds when ``stop`` is given, so that a
        slow rate does not delay a stop.
        """
        while (remaining := self.delay(i)) > 0:
            if stop is not None:
                if stop():
                    return False
                remaining = min(remaining, step)
            idle(remaining)
        return stop is None or not stop()


def poll_then_sleep(
    poll: Callable[[float], Any], sleep: Callable[[float], Any] = time.sleep
) -> Callable[[float], None]:
    """An ``idle`` for :meth:`Pacer.wait` that serves delivery reports while it waits.

    librdkafka's ``poll`` takes whole milliseconds (confluent-kafka truncates), so a wait
    under one returns at once: the pacing loop then spun at full speed for the rest of every
    gap. At 1,000 events/s, where nearly every gap is under a millisecond, the publisher used
    most of a core (``benchmarks/RESULTS.md``). Waits of a millisecond or more poll; shorter
    ones, and the remainders, sleep.
    """

    def idle(seconds: float) -> None:
        if seconds >= 0.001:
            poll(seconds)
        else:
            sleep(seconds)

    return idle


@dataclass
class PublishResult:
    """What was sent; ``labels`` maps the sent ``transaction_id`` to ``is_fraud`` (or None)."""

    topic: str
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    labels: pd.DataFrame | None = None
    labels_path: Path | None = None
    interrupted: bool = False

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        """The producer's delivery report: counted, the first errors kept."""
        if err is None:
            self.delivered += 1
        else:
            self.failed += 1
            if len(self.errors) < 10:
                self.errors.append(str(err))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "topic": self.topic,
            "sent": self.sent,
            "delivered": self.delivered,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
        }
        if self.interrupted:
            out["interrupted"] = True
        if self.errors:
            out["first_error"] = self.errors[0]
        if self.labels_path is not None:
            out["labels"] = str(self.labels_path)
        return out


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def event_payloads(events: pd.DataFrame) -> Iterator[TransactionEvent]:
    """The rows of a canonical table as events (the table is already validated)."""
    columns = [events[c].tolist() for c in ("transaction_id", "customer_id", "terminal_id")]
    stamps = events["timestamp"].dt.tz_convert("UTC").tolist()
    amounts = events["amount"].tolist()
    currencies = events["currency"].tolist() if "currency" in events.columns else None
    for i, (tx, customer, terminal) in enumerate(zip(*columns, strict=True)):
        currency = currencies[i] if currencies is not None else None
        # Already validated by validate_frame: construct without re-validating.
        yield TransactionEvent.model_construct(
            transaction_id=str(tx),
            timestamp=stamps[i].to_pydatetime(),
            customer_id=str(customer),
            terminal_id=str(terminal),
            amount=float(amounts[i]),
            currency=None if currency is None or pd.isna(currency) else str(currency),
        )


def encode(event: TransactionEvent) -> tuple[bytes, bytes]:
    """``(key, value)`` of the message for ``event``."""
    return event.customer_id.encode(), orjson.dumps(event.to_json_dict())


def label_table(events: pd.DataFrame) -> pd.DataFrame | None:
    """``transaction_id → is_fraud`` (and ``fraud_scenario`` when present), or None."""
    if LABEL_COLUMN not in events.columns:
        return None
    columns = ["transaction_id", LABEL_COLUMN]
    if "fraud_scenario" in events.columns:
        columns.append("fraud_scenario")
    out = events[columns].reset_index(drop=True).copy()
    out["transaction_id"] = out["transaction_id"].astype(str)
    out[LABEL_COLUMN] = out[LABEL_COLUMN].astype("int8")
    return out


def write_labels(labels: pd.DataFrame, path: Path) -> Path:
    """Write ``labels`` to Parquet at ``path`` through a temporary file."""
    return write_atomically(path, lambda tmp: labels.to_parquet(tmp, index=False))


def publish_events(
    events: pd.DataFrame,
    *,
    kafka: KafkaSettings,
    bootstrap: str,
    topic: str,
    rate: float | None = None,
    limit: int | None = None,
    retime: bool = False,
    labels_out: Path | None = None,
    progress: Progress | None = None,
    producer_conf: dict[str, Any] | None = None,
    stop: Callable[[], bool] | None = None,
) -> PublishResult:
    """Publish the rows of a canonical table (``read_transactions``) to ``topic``.

    ``rate``: events per second (None: as fast as the producer takes them); ``limit``: the
    first ``limit`` rows only; ``retime``: stamp each event with its send time (the table's
    order is kept, its time gaps become the pacing). ``labels_out``: write the sent ids'
    labels to this Parquet file (the table must have ``is_fraud``). ``stop`` (checked before
    each event and while pacing) or Ctrl-C ends the sending early; what was sent is still
    delivered, counted and labelled, and the summary says ``interrupted``.
    """
    from fraudstream.kafka import producer_config

    if limit is not None and limit < 0:
        raise PublishError(f"limit must be >= 0, got {limit}")
    if labels_out is not None and LABEL_COLUMN not in events.columns:
        raise PublishError(f"--labels-out needs a {LABEL_COLUMN!r} column; the table has none")
    if labels_out is not None:  # before sending: a path that cannot be written is refused
        check_output_file(labels_out, "--labels-out", force=True)
    if limit is not None:
        events = events.iloc[:limit]
    conf = dict(producer_conf or producer_config(kafka, bootstrap))

    def message(event: TransactionEvent) -> Callable[[int], tuple[bytes, bytes]]:
        def make(now_ms: int) -> tuple[bytes, bytes]:
            if retime:
                stamped = datetime.fromtimestamp(now_ms / 1000, UTC)
                return encode(event.model_copy(update={"timestamp": stamped}))
            return encode(event)

        return make

    result = send_paced(
        (message(e) for e in event_payloads(events)),
        conf=conf,
        topic=topic,
        rate=rate,
        progress=progress,
        stop=stop,
    )
    labels = label_table(events.iloc[: result.sent])
    result.labels = labels
    if labels_out is not None and labels is not None:
        result.labels_path = write_labels(labels, labels_out)
    return result


def send_paced(
    messages: Iterable[Callable[[int], tuple[bytes, bytes]]],
    *,
    conf: dict[str, Any],
    topic: str,
    rate: float | None = None,
    progress: Progress | None = None,
    stop: Callable[[], bool] | None = None,
) -> PublishResult:
    """Send ``messages`` to ``topic`` in order with a producer of ``conf``, paced at ``rate``
    per second: each is a function of the send time (epoch ms, also the Kafka timestamp)
    returning the key and value. ``stop`` (checked before each message and while pacing)
    or Ctrl-C ends the sending early; what was sent is still delivered and counted, and the
    result says ``interrupted``."""
    pacer = Pacer(rate)
    result = PublishResult(topic=topic)
    producer = Producer({"error_cb": _raise_fatal, **conf})
    _warm_up(producer, topic)
    idle = poll_then_sleep(producer.poll)
    started = time.monotonic()
    try:
        for i, make in enumerate(messages):
            if not pacer.wait(i, idle, stop):
                result.interrupted = True
                break
            now_ms = int(time.time() * 1000)
            key, value = make(now_ms)
            produce_retrying(producer, topic, key, value, now_ms, result.on_delivery)
            result.sent += 1
            producer.poll(0)
            if progress is not None and result.sent % PROGRESS_EVERY == 0:
                progress(result.sent)
    except KeyboardInterrupt:  # Ctrl-C: stop sending, deliver what was sent, report it
        result.interrupted = True
    finally:
        remaining = producer.flush(FLUSH_TIMEOUT_S)
        result.seconds = time.monotonic() - started
        if remaining:
            result.failed += remaining
            result.errors.append(f"{remaining} message(s) undelivered after {FLUSH_TIMEOUT_S}s")
    if progress is not None:
        progress(result.sent)
    return result


def _warm_up(producer: Producer, topic: str) -> None:
    """Connect and fetch the topic's metadata before the clock starts.

    Otherwise the first events wait for the connection (about 0.5 s on the local broker)
    while carrying their send time, and the worker would count that as its latency.
    """
    try:
        metadata = producer.list_topics(topic, timeout=METADATA_TIMEOUT_S)
    except KafkaException as exc:
        raise PublishError(f"Kafka did not answer within {METADATA_TIMEOUT_S:g}s: {exc}") from None
    info = metadata.topics.get(topic)
    if info is None or info.error is not None:
        detail = f": {info.error}" if info is not None else ""
        raise PublishError(f"topic {topic!r} is not available{detail}")


def _raise_fatal(err: KafkaError) -> None:
    # Transient errors (a broker reconnect) are retried by librdkafka; a fatal one (the
    # idempotent producer's sequence broken) ends the run.
    if err.fatal():
        raise KafkaException(err)


def produce_retrying(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes,
    timestamp_ms: int = 0,
    on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    headers: list[tuple[str, str | bytes | None]] | None = None,
) -> None:
    """``producer.produce``, waiting (and serving deliveries) while its queue is full.
    ``timestamp_ms`` 0: the send time."""
    while True:
        try:
            producer.produce(
                topic,
                value=value,
                key=key,
                timestamp=timestamp_ms,
                headers=headers,
                on_delivery=on_delivery,
            )
            return
        except BufferError:  # the local queue is full: serve deliveries, then retry
            producer.poll(0.1)


def simulated_events(
    count: int,
    *,
    seed: int = 0,
    customers: int = 5000,
    terminals: int = 10000,
    run_id: str | None = None,
    today: datetime | None = None,
) -> pd.DataFrame:
    """The last ``count`` events of a simulation ending yesterday, as a canonical table.

    The simulation covers at least 28 days (the longest compromise), so the events come
    from the steady state of the fraud scenarios (about 0.9 % fraud with the defaults)
    rather than from a first day with almost none (about 0.1 %).

    Same ``seed``, ``customers`` and ``terminals`` as the training simulation give the
    same customer and terminal profiles. ``transaction_id`` becomes
    ``sim<seed>-<run_id>-<id>`` (unique per run). Timestamps are the simulator's; the
    publisher rewrites them to the send time.
    """
    from fraudstream.simulate import SCENARIO2_DAYS, simulate

    if count < 1:
        raise PublishError(f"--count must be >= 1, got {count}")
    run_id = run_id or uuid.uuid4().hex[:8]
    today = today or datetime.now(UTC)
    per_day = max(1.0, customers * _MIN_TX_PER_CUSTOMER_DAY)
    days = max(SCENARIO2_DAYS, math.ceil(count / per_day))
    while True:
        start = (today - timedelta(days=days)).date()
        try:
            raw = simulate(
                customers=customers, terminals=terminals, days=days, start=start, seed=seed
            )
        except ValueError as exc:
            raise PublishError(str(exc)) from None
        if len(raw) >= count:
            break
        if days >= _MAX_SIMULATED_DAYS:
            raise PublishError(
                f"{customers} customers make only {len(raw)} transactions in {days} days; "
                f"ask for fewer than {count} or more customers"
            )
        days = min(_MAX_SIMULATED_DAYS, days * 2)
    raw = raw.iloc[len(raw) - count :].reset_index(drop=True)
    raw["transaction_id"] = [f"sim{seed}-{run_id}-{tx}" for tx in raw["transaction_id"]]
    return validate_frame(raw, keep=(LABEL_COLUMN, "fraud_scenario"))


def publish_simulated(
    count: int,
    *,
    kafka: KafkaSettings,
    bootstrap: str,
    topic: str,
    rate: float | None,
    seed: int = 0,
    customers: int = 5000,
    terminals: int = 10000,
    labels_out: Path | None = None,
    progress: Progress | None = None,
    stop: Callable[[], bool] | None = None,
) -> PublishResult:
    """Simulate ``count`` events and stream them, stamped with their send time."""
    events = simulated_events(count, seed=seed, customers=customers, terminals=terminals)
    return publish_events(
        events,
        kafka=kafka,
        bootstrap=bootstrap,
        topic=topic,
        rate=rate,
        retime=True,
        labels_out=labels_out,
        progress=progress,
        stop=stop,
    )
