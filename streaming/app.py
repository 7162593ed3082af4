"""The Faust application, built from :class:`~fraudstream.config.Settings`.

:func:`create_app` is the one place that turns settings into a :class:`faust.App`.
Its consumer-group timeouts derive from ``settings.kafka.session_timeout_ms``
because they decide how long a worker takes to start (measured in
``benchmarks/RESULTS.md``, "Faust worker start-to-ready"):

* the local broker (Tansu) holds a JoinGroup for about half the session timeout,
  so Faust's default of 60 s costs about 30 s on every start (6 s: 3 s);
* after a crash, the dead member keeps the group until its session expires and the
  new worker joins twice: about 13 s with a 6 s session, 110 s with Faust's 60 s.

``faust -A streaming.app worker`` finds the module attribute ``app``; it is built
lazily on first access (reading the settings once, at that point), never at import,
and is the scoring worker of :mod:`streaming.worker` (``fraudstream worker`` runs the
same app with start-up checks and clear errors).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import faust
from faust.transport import consumer as faust_consumer
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP

from fraudstream.config import Settings
from fraudstream.kafka import faust_broker_url, faust_credentials

log = logging.getLogger(__name__)

#: Faust's own defaults for the settings :func:`create_app` tunes (faust-streaming
#: 0.15), for comparisons: ``create_app(settings, bootstrap, **FAUST_DEFAULTS)``.
FAUST_DEFAULTS: dict[str, Any] = {
    "broker_session_timeout": 60.0,
    "broker_heartbeat_interval": 3.0,
    "broker_rebalance_timeout": 60.0,
}


def group_timeouts(session_timeout_ms: int) -> dict[str, float]:
    """Faust consumer-group settings (seconds) for a session timeout in milliseconds.

    Heartbeats go three times per session (the Kafka rule of thumb). The rebalance
    timeout (how long live members may take to finish revoking and rejoin) stays at
    Faust's 60 s or more: it does not delay start-up, a dead member is dropped when
    its session expires (measured: 6 s and 60 s start equally fast), and a short one
    would evict a worker that is still finishing its in-flight events.
    """
    session = session_timeout_ms / 1000.0
    return {
        "broker_session_timeout": session,
        "broker_heartbeat_interval": max(0.1, session / 3.0),
        "broker_rebalance_timeout": max(session, FAUST_DEFAULTS["broker_rebalance_timeout"]),
    }


#: How long the drain loop waits for fetched records while a partition is held back because
#: its stream buffer is full (Faust: 1 s). A held-back partition is fetched again once its
#: buffer is down to 40 % of ``stream_buffer_maxsize`` (1,638 events by default, about 0.15 s
#: of the worker's work at saturation), so this wait ends before the buffer runs dry.
HELD_BACK_FETCH_WAIT_S = 0.05
#: Faust's drain loop yields to the event loop after this many messages of one fetch.
YIELD_EVERY = 100
#: SHA-256 of the source of the Faust drain loop :class:`_Consumer` mirrors (0.15.3's).
FAUST_DRAIN_LOOP_SHA256 = "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"


#: SHA-256 of the source of Faust's ``Consumer._wait_next_records`` (0.15.3's), whose wait
#: while every partition's stream buffer is full :class:`_Consumer` replaces.
FAUST_WAIT_NEXT_RECORDS_SHA256 = "6218e1969a636b3ff504ad1b8e7ad58a113572e43d746cc96d684ed5153032c6"


def source_sha256_is(expected: str, *functions: Any) -> bool:
    """Whether the sources of ``functions``, joined, hash to ``expected`` (SHA-256): how this
    package checks that the Faust it mirrors is the one installed. False when a source cannot
    be read (assume it changed)."""
    try:
        source = "".join(inspect.getsource(f) for f in functions)
    except (OSError, TypeError):
        return False
    return hashlib.sha256(source.encode()).hexdigest() == expected


@functools.cache
def mirrors_faust_wait_next_records() -> bool:
    """Whether the installed Faust's ``Consumer._wait_next_records`` is the one replaced here."""
    wait = faust_consumer.Consumer._wait_next_records
    return source_sha256_is(FAUST_WAIT_NEXT_RECORDS_SHA256, wait)


@functools.cache
def mirrors_faust_drain_loop() -> bool:
    """Whether the installed Faust's ``Consumer._drain_messages`` is the one mirrored here."""
    return source_sha256_is(FAUST_DRAIN_LOOP_SHA256, aiokafka_driver.Consumer._drain_messages)


class _ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """Faust's consumer thread with the fetch wait of :class:`App` (Faust hard-codes 1500 ms)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = cast(App, self.app).fetch_max_wait_ms  # read by start()
        return consumer


class _Consumer(aiokafka_driver.Consumer):
    """Faust's consumer with a drain loop that races a rebalance once per fetch, not per message.

    Faust's ``Consumer._drain_messages`` hands each fetched message to the conductor with
    ``wait_first(callback(message), suspend_flow.wait())``: four tasks created and three
    cancelled per message, so that a rebalance (``suspend_flow``) can interrupt a callback
    blocked on a full stream buffer. In the worker that was 14 % of the time the event loop
    held the GIL at saturation (py-spy ``--gil``; ``benchmarks/RESULTS.md``).

    :meth:`_drain_messages` runs Faust's loop step for step (gaps, ``broker_commit_every``,
    read offsets, a yield every 100 messages of a fetch), but hands a whole fetch's messages
    over in one task, raced against the same events. A rebalance, stop or crash still cancels
    the callback in progress. As in Faust, the read offset of the message it interrupted is
    set all the same, ``getmany`` hands out no more of the fetch once the flow is suspended,
    and a commit the loop started runs to its end.

    The loop mirrors faust-streaming 0.15.3's. Should the installed Faust's loop differ from
    that one (:data:`FAUST_DRAIN_LOOP_SHA256`), Faust's own runs instead, with a warning.

    Held-back partitions. Faust stops fetching a partition whose stream buffer is under
    pressure (``on_buffer_full``, at 80 % of ``stream_buffer_maxsize``) and fetches it again
    once the stream has taken the buffer down to 40 % (``on_buffer_drop``). Faust then waits
    for records in two ways that do not end when that buffer drains, so a worker on a backlog
    ran out of events and idled: ``getmany`` waits up to 1 s for records of the other
    partitions (19 % of the worker's time over 30,000 events; ``benchmarks/RESULTS.md``,
    "the worker's intake"), and with no partition left to fetch it sleeps 1 s. Here the first
    wait is :data:`HELD_BACK_FETCH_WAIT_S` while a partition is held back, and the second ends
    as soon as a buffer drains (:meth:`_wait_next_records`).
    """

    _buffer_drained: asyncio.Event | None = None

    def on_buffer_drop(self, tp: TP) -> None:
        """Faust's (the partition is fetched again), and wake a drain loop waiting for it."""
        super().on_buffer_drop(tp)
        if self._buffer_drained is not None:
            self._buffer_drained.set()

    async def _wait_next_records(self, timeout: float) -> tuple[Any, set[TP] | None]:
        """Faust's, but with every partition held back (a worker with one partition, say),
        wait for a stream buffer to drain, up to the second Faust sleeps whatever happens.
        With another Faust (:data:`FAUST_WAIT_NEXT_RECORDS_SHA256`), Faust's own."""
        if (
            self.flow_active
            and not self.app.client_only
            and not self._get_active_partitions()
            and mirrors_faust_wait_next_records()
        ):
            if self._buffer_drained is None:
                self._buffer_drained = asyncio.Event()
            drained = self._buffer_drained
            drained.clear()
            self.not_waiting_next_records.set()
            if not self._get_active_partitions():  # none drained meanwhile
                await self.wait_first(drained.wait(), timeout=1.0)  # or the consumer stops
            return {}, self._get_active_partitions()
        return await super()._wait_next_records(timeout)

    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        if not mirrors_faust_drain_loop():
            log.warning(
                "Faust's consumer drain loop is not the one streaming.app mirrors "
                "(faust-streaming 0.15.3): running Faust's own, one race per message"
            )
            return await super()._drain_messages(fetcher)
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                # Faust waits up to 1 s here. While a partition is held back (its stream
                # buffer full), a wait that finds nothing for the other partitions does not end
                # when that buffer drains: on a backlog the worker ran out of events and idled
                # for most of that second. So wait less while one is held back.
                fetched = self.getmany(
                    timeout=HELD_BACK_FETCH_WAIT_S if self._buffered_partitions else 1.0
                )
                # Faust's own pause: getmany can return at once, again and again
                await self.sleep(0)
                if not self.should_stop:
                    current: list[tuple[TP, int]] = []  # the message being delivered
                    await self.wait_first(self._deliver(fetched, current), self.suspend_flow.wait())
                    if current:
                        # interrupted mid-callback: Faust sets the read offset all the same
                        tp, offset = current[0]
                        self._read_offset[tp] = offset
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _deliver(
        self, fetched: AsyncIterator[tuple[TP, Any]], current: list[tuple[TP, int]]
    ) -> None:
        """Hand each message of one fetch to the conductor, in order (Faust's loop body).
        ``current`` holds the (partition, offset) whose callback is running."""
        callback = self.callback
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        since_yield = 0
        async for tp, message in fetched:
            since_yield += 1
            if since_yield > YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield = 0
            offset = message.offset
            r_offset = get_read_offset(tp)
            if r_offset is None or offset >= r_offset:
                gap = offset - (r_offset or 0)
                if gap > 1 and r_offset and acks_enabled_for(message.topic):
                    await self._add_gap(tp, r_offset + 1, offset)
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    # Faust awaits this commit outside its race: a rebalance does not cancel it
                    await asyncio.shield(self.commit())
                current[:] = [(tp, offset)]
                await callback(message)
                current.clear()
                set_read_offset(tp, offset)
            else:
                self.log.dev(
                    "DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, message.key, message.value
                )


class _Transport(aiokafka_driver.Transport):
    Consumer = _Consumer


class App(faust.App):
    """A Faust app whose worker consumer takes ``fetch_max_wait_ms`` from the settings.

    On the local broker (Tansu) a fetch with no data waits its whole maximum wait even when
    data arrives (measured: p50 event-to-consumer latency 379 ms with Faust's 1,500 ms,
    141 ms with 500 ms, 6 ms with 20 ms; ``benchmarks/RESULTS.md``); on Kafka the value only
    sets how often an idle consumer asks.
    """

    fetch_max_wait_ms: int = 1500

    def _new_transport(self) -> Any:
        url = self.conf.broker_consumer[0]
        if url.scheme in ("kafka", "aiokafka"):
            return _Transport(self.conf.broker_consumer, self)
        return super()._new_transport()


def create_app(
    settings: Settings, bootstrap: str, *, app_id: str = "fraudstream", **overrides: Any
) -> faust.App:
    """Build the Faust app for ``bootstrap`` from ``settings``; ``overrides`` win.

    ``app_id`` is also the consumer-group id and the prefix of Faust's internal
    topics. Faust does not read the environment here (``env={}``): every value
    comes from ``settings`` or ``overrides``.
    """
    kafka = settings.kafka
    options: dict[str, Any] = {
        "broker": faust_broker_url(bootstrap),
        "broker_credentials": faust_credentials(kafka),
        "env": {},
        "autodiscover": False,
        "web_enabled": False,
        "store": "memory://",
        "topic_partitions": kafka.partitions,
        "topic_replication_factor": kafka.replication_factor,
        "producer_acks": -1,
        "consumer_auto_offset_reset": "earliest",
        "stream_recovery_delay": 0.0,
        **group_timeouts(kafka.session_timeout_ms),
    }
    options.update(overrides)
    log.debug(
        "faust app %s: broker %s, session %.1fs",
        app_id,
        options["broker"],
        options["broker_session_timeout"],
    )
    app = App(app_id, **options)
    app.fetch_max_wait_ms = kafka.fetch_max_wait_ms
    return app


@functools.cache
def _default_app() -> faust.App:
    """The app of ``faust -A streaming.app worker``: settings read once, here.

    It is the scoring worker (:func:`streaming.worker.build_worker_app`, the same
    consumer group as ``fraudstream worker``): topics ensured, scorer built, agent defined.
    """
    from fraudstream.config import load_settings
    from fraudstream.stack import resolve_endpoints
    from streaming.worker import build_worker_app

    settings = load_settings()
    endpoints = resolve_endpoints(settings)
    return build_worker_app(settings, endpoints)


def __getattr__(name: str) -> Any:
    """Build the module-level ``app`` lazily (PEP 562), so importing reads no settings."""
    if name == "app":
        return _default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
