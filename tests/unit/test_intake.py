"""The agent's intake (:mod:`streaming.intake`): Faust's batches, taken in bulk, acked once
handled. Real Faust streams and channels, and an agent under Faust's ``test_context``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import pytest
from faust.types import Message

import streaming.intake as intake_module
from fraudstream.config import Settings
from streaming.app import create_app
from streaming.intake import BulkIntake, TakeEventsIntake, intake, mirrors_faust_stream

pytestmark = pytest.mark.unit


def _app(name: str) -> faust.App:
    return create_app(Settings(), "127.0.0.1:9", app_id=name)


def _run(name: str, scenario: Callable[[faust.App, faust.Stream], Awaitable[None]]) -> None:
    """Run ``scenario`` with an app and a stream over one of its channels."""

    async def main() -> None:
        app = _app(name)
        app.flow_control.resume()  # as Faust's test_context: suspended until a worker starts
        stream = app.stream(app.channel())
        assert isinstance(stream, faust.Stream)
        await scenario(app, stream)

    asyncio.run(main())


async def _put(app: faust.App, stream: faust.Stream, offsets: range, generation: int = 0) -> None:
    channel = stream.channel
    assert isinstance(channel, faust.ChannelT)
    for offset in offsets:
        message = Message(
            topic="tx",
            partition=0,
            offset=offset,
            timestamp=0.0,
            timestamp_type=0,
            headers=None,
            key=None,
            value=offset,
            checksum=None,
            generation_id=app.consumer_generation_id + generation,
        )
        await channel.put(await channel.decode(message))


def test_batches_hold_every_event_once_in_order_and_at_most_size() -> None:
    async def scenario(app: faust.App, stream: faust.Stream) -> None:
        await _put(app, stream, range(25))
        batches = BulkIntake(stream, size=10, within=0.05)
        taken = [await batches.take() for _ in range(3)]
        await batches.close()
        assert [len(b) for b in taken] == [10, 10, 5]  # the last closed by its window
        assert [e.value for b in taken for e in b] == list(range(25))

    _run("intake-order", scenario)


def test_a_batch_is_acked_only_when_the_agent_acks_it() -> None:
    async def scenario(app: faust.App, stream: faust.Stream) -> None:
        await _put(app, stream, range(6))
        batches = BulkIntake(stream, size=3, within=0.05)
        first = await batches.take()
        second = await batches.take()  # taking the next one acks nothing (take_events would)
        assert not any(e.message.acked for e in first + second)
        batches.ack(first)
        assert all(e.message.acked for e in first)
        assert not any(e.message.acked for e in second)
        await batches.close()  # closing does not ack a batch that was not handled
        assert not any(e.message.acked for e in second)

    _run("intake-ack", scenario)


def test_take_events_acks_a_batch_that_was_not_handled_when_closed() -> None:
    """Why the worker left ``take_events``: a batch whose handling failed got acked (and so
    committed) once the agent's generator was closed."""

    async def scenario(app: faust.App, stream: faust.Stream) -> None:
        await _put(app, stream, range(3))
        batches = TakeEventsIntake(stream, size=3, within=0.05)
        taken = await batches.take()
        batches.ack(taken)  # does nothing: take_events acks on its own
        assert not any(e.message.acked for e in taken)
        await batches.close()
        assert all(e.message.acked for e in taken)

    _run("intake-take-events", scenario)


def test_events_from_before_a_rebalance_are_skipped_and_not_acked() -> None:
    async def scenario(app: faust.App, stream: faust.Stream) -> None:
        await _put(app, stream, range(0, 2), generation=-1)  # fetched by an older generation
        await _put(app, stream, range(2, 4))
        batches = BulkIntake(stream, size=10, within=0.05)
        taken = await batches.take()
        await batches.close()
        assert [e.value for e in taken] == [2, 3]

    _run("intake-generation", scenario)


def test_a_window_with_nothing_in_it_waits_for_the_first_event() -> None:
    async def scenario(app: faust.App, stream: faust.Stream) -> None:
        batches = BulkIntake(stream, size=10, within=0.01)
        taking = asyncio.ensure_future(batches.take())
        await asyncio.sleep(0.05)  # five windows pass empty
        assert not taking.done()
        await _put(app, stream, range(1))
        taken = await asyncio.wait_for(taking, 1.0)
        await batches.close()
        assert [e.value for e in taken] == [0]

    _run("intake-empty-window", scenario)


def test_the_stream_ending_ends_the_intake_with_what_it_took() -> None:
    """Faust stops an agent by throwing ``StopAsyncIteration`` into its stream's channel."""

    async def scenario(app: faust.App, stream: faust.Stream) -> None:
        batches = BulkIntake(stream, size=10, within=10.0)
        await _put(app, stream, range(2))
        taking = asyncio.ensure_future(batches.take())
        await asyncio.sleep(0.01)  # two taken, waiting for more within the window
        channel = stream.channel
        assert isinstance(channel, faust.ChannelT)
        channel._throw(StopAsyncIteration())
        taken = await asyncio.wait_for(taking, 1.0)
        assert [e.value for e in taken] == [0, 1] and batches.ended
        assert await batches.take() == []  # and no more
        await batches.close()

    _run("intake-end", scenario)


def test_an_agent_gets_every_event_in_batches_under_fausts_test_context() -> None:
    app = _app("intake-agent")
    seen: list[list[Any]] = []

    @app.agent()
    async def forward(stream: faust.StreamT[Any]) -> Any:
        assert isinstance(stream, faust.Stream)
        batches = intake(stream, size=4, within=0.02)
        try:
            while not batches.ended:
                events = await batches.take()
                if events:
                    seen.append([e.value for e in events])
                    batches.ack(events)
                    yield len(events)
        finally:
            await batches.close()

    async def scenario() -> None:
        async with forward.test_context() as agent:
            for value in range(10):
                await agent.put(value, wait=False)
            while sum(map(len, seen)) < 10:
                await asyncio.sleep(0.01)

    asyncio.run(asyncio.wait_for(scenario(), 10))
    assert [v for batch in seen for v in batch] == list(range(10))
    assert all(1 <= len(batch) <= 4 for batch in seen)


def test_the_installed_faust_runs_the_stream_mirrored_here() -> None:
    """Fails when Faust's stream changes (an upgrade): review ``BulkIntake`` against it."""
    assert mirrors_faust_stream()


def test_a_faust_with_another_stream_takes_batches_with_take_events(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(intake_module, "FAUST_STREAM_SHA256", "0" * 64)
    mirrors_faust_stream.cache_clear()
    try:

        async def scenario(app: faust.App, stream: faust.Stream) -> None:
            with caplog.at_level(logging.WARNING, logger="streaming.intake"):
                batches = intake(stream, size=3, within=0.05)
            assert isinstance(batches, TakeEventsIntake)
            assert "Stream.take_events" in caplog.text
            await _put(app, stream, range(4))
            assert [e.value for e in await batches.take()] == [0, 1, 2]
            assert [e.value for e in await batches.take()] == [3]
            await batches.close()

        _run("intake-other-faust", scenario)
    finally:
        mirrors_faust_stream.cache_clear()
