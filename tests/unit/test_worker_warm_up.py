"""The worker's warm start (:func:`streaming.worker.warm_up`): once, off the event loop,
never failing the agent, and stopping its thread when the agent is cancelled."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import pytest
import redis

from fraudstream.scoring import Scorer
from streaming.worker import warm_up

pytestmark = pytest.mark.unit


class StubScorer:
    """Records :meth:`Scorer.warm` calls; may fail, or run until cancelled."""

    def __init__(self, error: Exception | None = None, until_cancelled: bool = False) -> None:
        self.calls: list[float] = []
        self.threads: list[threading.Thread] = []
        self.error = error
        self.until_cancelled = until_cancelled
        self.started = threading.Event()
        self.saw_cancel = threading.Event()

    def warm(self, seconds: float, cancelled: Callable[[], bool]) -> tuple[int, int]:
        self.calls.append(seconds)
        self.threads.append(threading.current_thread())
        self.started.set()
        if self.error is not None:
            raise self.error
        if self.until_cancelled:
            deadline = time.monotonic() + 10
            while not cancelled() and time.monotonic() < deadline:
                time.sleep(0.005)
            if cancelled():
                self.saw_cancel.set()
        return 7, 11


def run(stub: StubScorer, seconds: float) -> None:
    asyncio.run(warm_up(cast(Scorer, stub), seconds))


def test_the_caches_are_warmed_once_in_a_helper_thread(caplog: pytest.LogCaptureFixture) -> None:
    stub = StubScorer()
    with caplog.at_level(logging.INFO):
        run(stub, 2.5)
    assert stub.calls == [2.5]
    assert stub.threads[0] is not threading.main_thread()
    assert "caches warmed" in caplog.text and "7 terminals, 11 customers" in caplog.text


def test_zero_seconds_turns_the_warm_up_off() -> None:
    stub = StubScorer()
    run(stub, 0.0)
    assert stub.calls == []


@pytest.mark.parametrize(
    ("error", "logged"),
    [
        (redis.ConnectionError("refused"), "caches not warmed, Redis: refused"),
        (ValueError("buffer size"), "caches not warmed: ValueError: buffer size"),
    ],
)
def test_a_failed_warm_up_is_logged_and_the_worker_goes_on(
    caplog: pytest.LogCaptureFixture, error: Exception, logged: str
) -> None:
    stub = StubScorer(error=error)
    with caplog.at_level(logging.WARNING):
        run(stub, 1.0)  # does not raise
    assert stub.calls == [1.0] and logged in caplog.text


def test_cancelling_the_agent_stops_the_warm_up_thread() -> None:
    stub = StubScorer(until_cancelled=True)

    async def main() -> Any:
        task = asyncio.ensure_future(warm_up(cast(Scorer, stub), 60.0))
        await asyncio.to_thread(stub.started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())  # asyncio.run waits for the default executor's threads
    assert stub.saw_cancel.wait(5)
