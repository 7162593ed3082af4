"""One scoring queue for the API, and the coalescing of concurrent requests.

The scorer is synchronous and not thread-safe, and most of its cost per call is fixed
(one event costs about as much as a few). So every request goes through one queue, served
by one task that runs one :meth:`Scorer.score_records` call at a time, on the event loop
itself: handing each call to a scoring thread cost more than the call (GIL hand-offs between
the loop and the thread). Measured with ``benchmarks/serving.py`` at 200 requests/s:
p50/p99 3.6/11.9 ms with the thread, 3.2/7.6 ms on the loop. A call blocks the loop for its
duration (about a millisecond for one transaction); scale with ``--workers``.
Single-transaction requests that wait together are scored in one call when that cannot
change their result:

* same ``update`` flag only;
* at most one transaction per customer in a call: a customer's real-time features come from
  its stored history plus the call's own events of that customer, so two requests of one
  customer are scored in separate calls, in arrival order, as if they came one by one;
* a batch request is one call of its own, and a single request is never moved ahead of an
  earlier batch request or of a request with the other ``update`` flag.

Customers do not interact in the feature kernel, so each coalesced transaction gets exactly
the decision it would get alone. If a coalesced call fails (one customer's stored state is
corrupt, say), each of its requests is scored again in a call of its own, so only the
request at fault fails. With ``update``, a retried transaction is a replay of the failed
call's, should that call have written its state: the same features and score
(:mod:`fraudstream.scoring`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from fraudstream.schema import TransactionEvent

log = logging.getLogger(__name__)

#: What a scoring call gives per event (the API: a decision record).
R = TypeVar("R")
ScoreFn = Callable[[Sequence[TransactionEvent], bool], list[R]]


@dataclass(eq=False)
class _Job(Generic[R]):
    events: Sequence[TransactionEvent]
    update: bool
    single: bool
    future: asyncio.Future[list[R]]


class ScoringQueue(Generic[R]):
    """Serialises ``score(events, update)`` calls on the event loop, coalescing single requests."""

    def __init__(
        self,
        score: ScoreFn[R],
        *,
        max_coalesce: int,
        on_call: Callable[[int], None] | None = None,
    ) -> None:
        self._score = score
        self._max = max_coalesce
        self._on_call = on_call
        self._pending: deque[_Job[R]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start serving (inside the running event loop)."""
        self._task = asyncio.get_running_loop().create_task(self._serve(), name="scoring-queue")

    async def stop(self) -> None:
        """Stop serving; requests still waiting fail with :class:`RuntimeError`."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the API is shutting down"))

    async def score(
        self, events: Sequence[TransactionEvent], update: bool, *, single: bool
    ) -> list[R]:
        """The decisions of ``events``, in order; ``single``: may share a call with others."""
        if self._task is None or self._task.done():
            raise RuntimeError("the scoring queue is not running (app started without lifespan?)")
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Job(events, update, single and len(events) == 1, future))
        self._wakeup.set()
        return await future

    def _call(self, events: Sequence[TransactionEvent], update: bool) -> list[R]:
        if self._on_call is not None:
            self._on_call(len(events))
        return self._score(events, update)

    def _alone(self, job: _Job[R]) -> None:
        """Score ``job`` in a call of its own and settle its future either way."""
        if job.future.done():  # its client went away meanwhile
            return
        try:
            job.future.set_result(self._call(job.events, job.update))
        except Exception as exc:
            job.future.set_exception(exc)

    def _next_group(self) -> list[_Job[R]]:
        head = self._pending.popleft()
        if not head.single:
            return [head]
        group = [head]
        customers = {head.events[0].customer_id}
        skipped: list[_Job[R]] = []
        while self._pending and len(group) < self._max:
            job = self._pending[0]
            if not job.single or job.update != head.update:
                break  # never reorder across a batch or the other update flag
            self._pending.popleft()
            customer = job.events[0].customer_id
            if customer in customers:
                skipped.append(job)  # the next call, keeping its place in line
            else:
                group.append(job)
                customers.add(customer)
        self._pending.extendleft(reversed(skipped))
        return group

    async def _serve(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                group = [job for job in self._next_group() if not job.future.done()]
                if not group:
                    continue
                events = [event for job in group for event in job.events]
                update = group[0].update
                try:
                    decisions = self._call(events, update)
                except Exception as exc:
                    if len(group) == 1:
                        if not group[0].future.done():
                            group[0].future.set_exception(exc)
                    else:  # one request must not fail the others it was coalesced with
                        log.warning(
                            "a call of %d coalesced requests failed (%s: %s); scoring each alone",
                            len(group),
                            type(exc).__name__,
                            exc,
                        )
                        for job in group:
                            self._alone(job)
                    continue
                start = 0
                for job in group:
                    end = start + len(job.events)
                    if not job.future.done():
                        job.future.set_result(decisions[start:end])
                    start = end
                await asyncio.sleep(0)  # let requests that came meanwhile join the queue
