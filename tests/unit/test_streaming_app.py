"""The Faust app built from settings: what it hands to the Kafka client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP

import streaming.app as streaming_app
from fraudstream.config import Settings
from streaming.app import (
    HELD_BACK_FETCH_WAIT_S,
    YIELD_EVERY,
    _Consumer,
    create_app,
    mirrors_faust_drain_loop,
    mirrors_faust_wait_next_records,
)

pytestmark = pytest.mark.unit


def test_worker_consumer_takes_the_fetch_wait_from_the_settings() -> None:
    settings = Settings(kafka={"fetch_max_wait_ms": 25})
    app = create_app(settings, "127.0.0.1:9", app_id="fetch-wait-test")

    async def build() -> int:
        thread = app.consumer._thread  # type: ignore[attr-defined]
        consumer = thread._create_worker_consumer(app.transport)
        return int(consumer._fetch_max_wait_ms)

    assert asyncio.run(build()) == 25
    assert app.conf.web_enabled is False  # never an open port by default


Fetch = list[tuple[TP, Any]]


def _message(tp: TP, offset: int) -> SimpleNamespace:
    return SimpleNamespace(
        topic=tp.topic, partition=tp.partition, offset=offset, key=None, value=b""
    )


async def _drain(
    consumer: _Consumer,
    fetches: list[Fetch],
    callback: Callable[[Any], Awaitable[None]],
    until: Callable[[], Awaitable[None]],
) -> None:
    """Run the consumer's drain loop over ``fetches`` (then empty ones) until ``until`` returns."""
    fetcher = SimpleNamespace(_stopped=asyncio.Event())

    async def getmany(timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        for item in fetches.pop(0) if fetches else []:
            if not consumer.flow_active:  # as Faust's getmany: nothing more once suspended
                break
            yield item
        await asyncio.sleep(0)

    consumer.getmany = getmany  # type: ignore[method-assign]
    consumer.callback = callback
    drain = asyncio.ensure_future(consumer._drain_messages(fetcher))
    await asyncio.wait_for(until(), 5)
    fetcher._stopped.set()
    await asyncio.wait_for(drain, 5)


def test_drain_hands_every_message_of_every_fetch_over_in_order() -> None:
    """The drain loop (one race per fetch, not per message) delivers what Faust's does."""
    a, b = TP("tx", 0), TP("tx", 1)
    n = 2 * YIELD_EVERY + 5  # past the loop's periodic yield
    first: Fetch = [(tp, _message(tp, i)) for i in range(n) for tp in (a, b)]
    second: Fetch = [(a, _message(a, n)), (a, _message(a, n - 1))]  # the second: an old offset
    seen: list[tuple[int, int]] = []

    async def callback(message: Any) -> None:
        seen.append((message.partition, message.offset))

    async def scenario() -> dict[TP, int | None]:
        consumer = create_app(Settings(), "127.0.0.1:9", app_id="drain-test").consumer
        assert isinstance(consumer, _Consumer)

        async def until() -> None:
            while len(seen) < 2 * n + 1:
                await asyncio.sleep(0)

        await _drain(consumer, [first, second], callback, until)
        return dict(consumer._read_offset)

    offsets = asyncio.run(scenario())
    assert seen == [(tp.partition, m.offset) for tp, m in first] + [(0, n)]
    assert offsets == {a: n, b: n - 1}


def test_the_drain_loop_waits_less_for_records_while_a_partition_is_held_back() -> None:
    """Faust waits 1 s for records; with a partition held back (its stream buffer full), the
    wait does not end when that buffer drains, so the loop asks again after a short wait."""
    held = TP("tx", 1)
    waits: list[float] = []

    async def scenario() -> None:
        consumer = create_app(Settings(), "127.0.0.1:9", app_id="held-back").consumer
        assert isinstance(consumer, _Consumer)
        fetcher = SimpleNamespace(_stopped=asyncio.Event())

        async def getmany(timeout: float) -> AsyncIterator[tuple[TP, Any]]:
            waits.append(timeout)
            if len(waits) == 2:
                consumer._buffered_partitions.add(held)  # type: ignore[attr-defined]
            if len(waits) == 4:
                consumer._buffered_partitions.discard(held)  # type: ignore[attr-defined]
            if len(waits) == 5:
                fetcher._stopped.set()
            await asyncio.sleep(0)
            return
            yield

        consumer.getmany = getmany  # type: ignore[method-assign]
        await asyncio.wait_for(consumer._drain_messages(fetcher), 5)  # type: ignore[attr-defined]

    asyncio.run(scenario())
    assert waits == [1.0, 1.0, HELD_BACK_FETCH_WAIT_S, HELD_BACK_FETCH_WAIT_S, 1.0]


def test_with_every_partition_held_back_the_next_fetch_waits_for_one_to_drain() -> None:
    """Faust sleeps a whole second when no partition may be fetched; here the wait ends as
    soon as a stream buffer drains (``on_buffer_drop``), and after a second at most."""
    tp = TP("tx", 0)

    async def scenario() -> tuple[float, Any, float]:
        consumer = create_app(Settings(), "127.0.0.1:9", app_id="all-held").consumer
        assert isinstance(consumer, _Consumer)
        consumer._active_partitions = set()  # type: ignore[attr-defined]
        consumer.on_buffer_full(tp)  # the only partition, held back
        started = time.perf_counter()
        waiting = asyncio.ensure_future(consumer._wait_next_records(1.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        consumer.on_buffer_drop(tp)
        records, active = await asyncio.wait_for(waiting, 5)
        woke = time.perf_counter() - started
        result = records, set(active)  # Faust's own set, changed by the next call
        consumer.on_buffer_full(tp)
        started = time.perf_counter()
        await consumer._wait_next_records(1.0)  # nothing drains: the second passes
        return woke, result, time.perf_counter() - started

    woke, (records, active), idle = asyncio.run(scenario())
    assert woke < 0.5 and records == {} and active == {tp}
    assert 0.9 <= idle < 2.0


def test_the_installed_faust_waits_for_records_as_mirrored_here() -> None:
    """Fails when Faust's ``Consumer._wait_next_records`` changes (an upgrade): review
    ``_Consumer._wait_next_records`` against it."""
    assert mirrors_faust_wait_next_records()


def test_a_faust_with_another_wait_for_records_runs_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(streaming_app, "FAUST_WAIT_NEXT_RECORDS_SHA256", "0" * 64)
    mirrors_faust_wait_next_records.cache_clear()
    ran: list[float] = []

    async def faust_wait(self: Any, timeout: float) -> tuple[Any, Any]:
        ran.append(timeout)
        return {}, set()

    monkeypatch.setattr(faust_consumer.Consumer, "_wait_next_records", faust_wait)
    try:

        async def scenario() -> None:
            consumer = create_app(Settings(), "127.0.0.1:9", app_id="wait-other").consumer
            consumer._active_partitions = set()  # type: ignore[attr-defined]
            await consumer._wait_next_records(0.5)  # type: ignore[attr-defined]

        asyncio.run(scenario())
    finally:
        mirrors_faust_wait_next_records.cache_clear()
    assert ran == [0.5]


def test_a_rebalance_cancels_the_callback_in_progress_as_faust_does() -> None:
    """Flow suspended (a rebalance) while a callback waits on a full buffer: the callback is
    cancelled, the fetch's later messages are not handed over, the read offset of the
    interrupted message is set (Faust's behaviour), and the loop goes on fetching."""
    tp = TP("tx", 0)
    fetch: Fetch = [(tp, _message(tp, i)) for i in range(3)]
    later: Fetch = [(tp, _message(tp, 7))]
    seen: list[int] = []
    cancelled: list[int] = []
    blocked = asyncio.Event()

    async def callback(message: Any) -> None:
        seen.append(message.offset)
        if message.offset == 1:  # a full stream buffer: waits until the stream takes it
            blocked.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(message.offset)
                raise

    async def scenario() -> dict[TP, int | None]:
        consumer = create_app(Settings(), "127.0.0.1:9", app_id="drain-suspend").consumer
        assert isinstance(consumer, _Consumer)

        async def until() -> None:
            await blocked.wait()
            consumer.stop_flow()  # what Faust does when partitions are revoked
            while not cancelled or consumer._read_offset.get(tp) != 1:
                await asyncio.sleep(0)
            fetches.append(later)
            consumer.resume_flow()
            while 7 not in seen:
                await asyncio.sleep(0)

        fetches = [fetch]
        await _drain(consumer, fetches, callback, until)
        return dict(consumer._read_offset)

    offsets = asyncio.run(scenario())
    assert cancelled == [1]
    assert seen == [0, 1, 7]
    assert offsets == {tp: 7}


def test_a_rebalance_does_not_cancel_a_commit_the_loop_started() -> None:
    """Faust awaits its ``broker_commit_every`` commit outside the race; so does this loop."""
    tp = TP("tx", 0)
    events: list[str] = []
    release = asyncio.Event()

    async def commit() -> None:
        events.append("commit started")
        try:
            await release.wait()
        except asyncio.CancelledError:
            events.append("commit cancelled")
            raise
        events.append("commit done")

    async def callback(message: Any) -> None:
        events.append(f"message {message.offset}")

    async def scenario() -> None:
        consumer = create_app(Settings(), "127.0.0.1:9", app_id="drain-commit").consumer
        assert isinstance(consumer, _Consumer)
        consumer.commit = commit  # type: ignore[method-assign,assignment]
        consumer._commit_every = 1
        consumer._n_acked = 1  # one message acked: the next one commits first

        async def until() -> None:
            while "commit started" not in events:
                await asyncio.sleep(0)
            consumer.stop_flow()  # a rebalance while the commit runs
            for _ in range(10):
                await asyncio.sleep(0)
            release.set()
            while "commit done" not in events and "commit cancelled" not in events:
                await asyncio.sleep(0)

        await _drain(consumer, [[(tp, _message(tp, 0))]], callback, until)

    asyncio.run(scenario())
    assert [e for e in events if e.startswith("commit")] == ["commit started", "commit done"]


def test_the_installed_faust_runs_the_drain_loop_mirrored_here() -> None:
    """Fails when Faust's drain loop changes (an upgrade): review ``_Consumer`` against it."""
    assert mirrors_faust_drain_loop()


def test_a_faust_with_another_drain_loop_runs_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[object] = []

    async def faust_loop(self: Any, fetcher: Any) -> None:
        ran.append(fetcher)

    monkeypatch.setattr(streaming_app, "FAUST_DRAIN_LOOP_SHA256", "0" * 64)
    monkeypatch.setattr(aiokafka_driver.Consumer, "_drain_messages", faust_loop)
    mirrors_faust_drain_loop.cache_clear()
    try:

        async def scenario() -> None:
            consumer = create_app(Settings(), "127.0.0.1:9", app_id="drain-other").consumer
            await consumer._drain_messages("fetcher")  # type: ignore[attr-defined]

        asyncio.run(scenario())
    finally:
        mirrors_faust_drain_loop.cache_clear()
    assert ran == ["fetcher"]


@pytest.mark.parametrize(
    ("key", "value"),
    [(b"k-1", b'{"amount": 1}'), (None, b"\xff\x00 not utf-8"), (b"k-2", None), (None, None)],
)
def test_the_worker_topic_hands_over_what_fausts_raw_serializer_gives(
    key: bytes | None, value: bytes | None
) -> None:
    from faust.types import Message

    from streaming.worker import RawSchema

    app = create_app(Settings(), "127.0.0.1:9", app_id="raw-schema-test")
    stock = app.topic("tx", key_serializer="raw", value_serializer="raw").schema
    message = Message("tx", 0, 7, 0.0, 0, [], key, value, None)

    async def decoded(schema: Any) -> tuple[Any, Any]:
        event = await schema.decode(app, message)
        return event.key, event.value

    raw = asyncio.run(decoded(RawSchema()))
    assert raw == asyncio.run(decoded(stock))
    assert raw == (key, value)
