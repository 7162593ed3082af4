"""The worker's output producer: confluent-kafka (librdkafka), awaited from asyncio.

Why not Faust's producer: sending through ``Topic.send`` or ``app.producer.send`` costs
about 0.2 ms of Python per message on this machine (futures, callbacks and aiokafka's
Python batching), measured as the worker's ``produce`` stage (``fraudstream_worker_stage_
duration_ms``); librdkafka batches and sends in C. The producer is idempotent with
``acks=all`` (:func:`fraudstream.kafka.producer_config`, which also carries the TLS and SASL
settings), and :meth:`DeliveringProducer.deliver` returns only when the broker has answered
for every message of a batch, so the worker still acks its input only after delivery.

How a batch is awaited: the whole batch is queued, then ``flush`` (in a helper thread, so the
event loop runs meanwhile) sends it at once, whatever ``linger.ms`` says, and returns when
every message has its answer. Delivery reports come back only for failures
(``delivery.report.only.error``), so a delivered message costs no Python call. Against a
report per message served by a poll thread, this measured 7.6 instead of 14.2 µs of the
producing process's CPU and 6.9 instead of 8.7 µs of the broker's per message, in batches
of 500 (``benchmarks/output_producer.py``, medians of three alternating runs; in the whole
worker the difference is under the run-to-run noise, ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Protocol

from confluent_kafka import KafkaException, Producer

from fraudstream.config import KafkaSettings
from fraudstream.kafka import producer_config

log = logging.getLogger(__name__)

POLL_S = 0.05
#: How long one ``flush`` call waits before the helper thread checks again (no busy loop:
#: a flush returns as soon as the last answer is in).
FLUSH_S = 1.0
#: Messages queued between flushes wait for the flush, not for the linger; this only keeps
#: librdkafka from sending a batch in pieces while it is being queued.
LINGER_MS = 100

#: ``(topic, key, value)``: what a delivery report tells of its message (librdkafka's reports
#: carry no headers), or the message's position in its batch (:meth:`DeliveringProducer._produce`).
Identity = tuple[str, bytes | None, bytes | None]
Failure = tuple[Identity | int, BaseException]


class Output(Protocol):
    """A message to produce (``streaming.worker.Outgoing``)."""

    @property
    def topic(self) -> str: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> list[tuple[str, bytes]]: ...


class DeliveringProducer:
    """Produce batches, one at a time, and await every message's answer from the broker."""

    def __init__(
        self, kafka: KafkaSettings, bootstrap: str, *, message_timeout_ms: int | None = None
    ) -> None:
        """``message_timeout_ms``: librdkafka's limit on one message's delivery, retries
        included (default 300,000: a broker outage shorter than that loses nothing)."""
        conf = producer_config(kafka, bootstrap, linger_ms=LINGER_MS)
        conf["delivery.report.only.error"] = True
        conf["on_delivery"] = self._on_failure  # called from flush, in the helper thread
        if message_timeout_ms is not None:
            conf["message.timeout.ms"] = message_timeout_ms
        self._producer = Producer(conf)
        self._failures: list[Failure] = []
        self._failures_lock = threading.Lock()
        self._flusher = ThreadPoolExecutor(1, thread_name_prefix="output-producer")
        self._one_batch = asyncio.Lock()
        self._closed = False

    def _on_failure(self, err: Any, msg: Any) -> None:
        if err is None:  # only failures are reported; keep whatever else comes
            return
        with self._failures_lock:
            self._failures.append(((msg.topic(), msg.key(), msg.value()), KafkaException(err)))

    def _on_failure_at(self, index: int, err: Any, _msg: Any) -> None:
        if err is None:
            return
        with self._failures_lock:
            self._failures.append((index, KafkaException(err)))

    async def deliver(self, outputs: Sequence[Output]) -> list[BaseException | None]:
        """Send ``outputs``; returns, in order, ``None`` for each delivered message or the error."""
        if self._closed:
            raise RuntimeError("the output producer is closed (the worker is stopping)")
        if not outputs:
            return []
        async with self._one_batch:  # failures are matched to the batch being flushed
            results: list[BaseException | None] = [None] * len(outputs)
            for i, out in enumerate(outputs):
                try:
                    self._produce(out, i)
                except KafkaException as exc:  # refused before sending (too large, ...)
                    results[i] = exc
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._flusher, self._flush_all)
            with self._failures_lock:
                failures, self._failures = self._failures, []
            return match_failures(outputs, results, failures)

    def _produce(self, out: Output, index: int) -> None:
        """Queue ``out``, the ``index``-th of its batch. A message with headers (a dead letter,
        a redriven decision) reports a failure with its index: librdkafka's report carries
        no headers, so two such messages of the same key and value (dead letters of the same
        bytes) could not be told apart. Others are matched by topic, key and value, which
        is free (no callback object per message) and enough: identical ones are
        interchangeable for a resend."""
        extra: dict[str, Any] = {}
        if out.headers:
            extra = {
                "headers": list(out.headers),
                "on_delivery": partial(self._on_failure_at, index),
            }
        while True:
            try:
                self._producer.produce(out.topic, value=out.value, key=out.key, **extra)
                return
            except BufferError:  # the local queue is full: let deliveries drain
                self._producer.flush(POLL_S)

    def _flush_all(self) -> None:
        while self._producer.flush(FLUSH_S):
            pass

    def close(self, timeout_s: float = 10.0) -> int:
        """Flush and stop; returns the number of messages still undelivered."""
        self._closed = True
        left = int(self._producer.flush(timeout_s))
        self._flusher.shutdown(wait=False)
        return left


def match_failures(
    outputs: Sequence[Output],
    results: list[BaseException | None],
    failures: Sequence[Failure],
) -> list[BaseException | None]:
    """``results`` with each reported failure set on the message it names: by its position
    (messages with headers), else by topic, key and value among the messages without
    headers (identical ones told apart by count, which is all a resend needs)."""
    if not failures:
        return results
    pending: dict[Identity, list[BaseException]] = {}
    for where, exc in failures:
        if isinstance(where, int):
            results[where] = exc
        else:
            pending.setdefault(where, []).append(exc)
    for i, out in enumerate(outputs):
        identity = (out.topic, out.key, out.value)
        if results[i] is None and not out.headers and (excs := pending.get(identity)):
            results[i] = excs.pop()
    unmatched = sum(len(excs) for excs in pending.values())
    if unmatched:  # a report of a message not in this batch: should not happen; say so
        log.error("%d delivery failure(s) matched no message of the batch", unmatched)
    return results
