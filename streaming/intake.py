"""Micro-batches of a Faust stream's events, taken from its channel in bulk.

``Stream.take_events`` (what the worker used up to ef239b5) passes every message through the
stream's iterator on its own: a turn of the event loop per message (``await sleep(0)``), a
processor that appends it to the buffer, and futures that hold the intake while a batch is
handled. :class:`BulkIntake` gives the same batches from the same channel queue (the one
Faust's conductor fills), taking whatever is queued at once, with the books Faust's stream
iterator keeps for each event (the Cython ``StreamIterator`` the installed Faust runs;
``Stream._py_aiter`` is its pure-Python twin). Side by side at saturation, the worker spent
77-83 instead of 94-96 µs of CPU per event and scored 9,033-10,559 instead of 7,751-7,830
events/s (``benchmarks/RESULTS.md``, "the worker's intake").

* An event from before a rebalance (its consumer generation is not the current one, or flow
  control is suspended) is skipped and not acked: the new owner of its partition, or this
  worker after seeking to the committed offset, reads it again.
* Every other event is tracked by the consumer as unacked, so that a stop or a rebalance
  waits for it, and passes the app's sensors (``on_message_in``, ``on_stream_event_in``).
* A batch closes when it holds ``size`` events, or once ``within`` seconds have passed since
  the agent asked for it and it holds at least one (``take_events``' window).
* The agent acks a batch (``Event.ack``, ``on_stream_event_out``, ``on_message_out``) once
  it is handled, outputs delivered. Faust commits acked offsets only. Unlike
  ``take_events``, which acks a batch also when its generator is closed, a batch whose
  handling failed stays unacked, so it is read again after a restart.

It mirrors faust-streaming 0.15.3 (:data:`FAUST_STREAM_SHA256`). With another Faust, whose
stream may keep other books, :func:`intake` gives :class:`TakeEventsIntake` instead, with a
warning.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, Protocol, cast

import faust

from streaming.app import source_sha256_is

log = logging.getLogger(__name__)

#: SHA-256 of the sources of ``Stream.take_events``, ``Stream._py_aiter`` and ``Stream.ack``
#: of the faust-streaming (0.15.3) that :func:`intake` mirrors.
FAUST_STREAM_SHA256 = "d75451224200f5bec7aefa25f0c26829c9439b35629c587a62dfc42033355bae"


@functools.cache
def mirrors_faust_stream() -> bool:
    """Whether the installed Faust's stream is the one :class:`BulkIntake` mirrors."""
    stream = faust.Stream
    return source_sha256_is(FAUST_STREAM_SHA256, stream.take_events, stream._py_aiter, stream.ack)


class Intake(Protocol):
    """Where the agent takes its micro-batches from: :func:`intake` builds one."""

    #: The stream has ended (Faust stops a stream by throwing ``StopAsyncIteration`` into it).
    ended: bool

    async def take(self) -> list[faust.EventT]:
        """The next batch: at least one event, unless the stream ended meanwhile (then what
        was taken before it did, maybe nothing)."""
        ...

    def ack(self, events: list[faust.EventT]) -> None:
        """Ack a batch ``take`` gave, once it is fully handled; Faust commits acked offsets."""
        ...

    async def close(self) -> None:
        """Stop taking (a batch taken and not acked stays unacked)."""
        ...


def intake(stream: faust.Stream, size: int, within: float) -> Intake:
    """The agent's intake over ``stream``: :class:`BulkIntake`, or with a Faust whose stream
    differs from the one mirrored here, :class:`TakeEventsIntake` (with a warning)."""
    if mirrors_faust_stream():
        return BulkIntake(stream, size, within)
    log.warning(
        "Faust's stream is not the one streaming.intake mirrors (faust-streaming 0.15.3): "
        "taking batches with Stream.take_events"
    )
    return TakeEventsIntake(stream, size, within)


class BulkIntake:
    """Batches taken from the stream's channel queue in bulk (see the module's docstring)."""

    def __init__(self, stream: faust.Stream, size: int, within: float) -> None:
        self.stream, self.size, self.within = stream, size, within
        self.ended = False
        self._started: bool | None = None
        #: the sensors' state of each event taken and not acked yet, for on_stream_event_out
        self._states: dict[int, dict[str, Any] | None] = {}

    async def take(self) -> list[faust.EventT]:
        if self.ended:
            return []
        stream = self.stream
        if self._started is None:
            self._started = await stream.maybe_start()
        app = stream.app
        # the agent's channel iterator: the conductor fills its queue
        queue = cast(faust.ChannelT, stream.channel).queue
        flow_control = app.flow_control
        add_unacked = app.consumer.unacked.add
        acking_topics = app.topics.acking_topics
        on_message_in, on_event_in = stream._on_message_in, stream._on_stream_event_in
        states = self._states
        loop = asyncio.get_running_loop()
        batch: list[faust.EventT] = []
        deadline = loop.time() + self.within
        while len(batch) < self.size:
            try:
                if not queue.empty():  # also not empty with an error thrown in: raised here
                    event = queue.get_nowait()
                else:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        if batch:
                            break
                        deadline += self.within  # nothing yet: another window
                        continue
                    try:
                        event = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        continue
            except StopAsyncIteration:  # the stream is stopping: as Faust's iterator, end
                self.ended = True
                break
            message = event.message
            if not flow_control.is_active() or message.generation_id != app.consumer_generation_id:
                continue  # from before a rebalance: skipped, not acked (Faust's StreamIterator)
            tp, offset = message.tp, message.offset
            if message.topic in acking_topics and not message.tracked:
                message.tracked = True
                add_unacked(message)
                on_message_in(tp, offset, message)
            states[id(event)] = on_event_in(tp, offset, stream, event)
            batch.append(event)
        stream.events_total += len(batch)
        return batch

    def ack(self, events: list[faust.EventT]) -> None:
        stream = self.stream
        on_event_out, on_message_out = stream._on_stream_event_out, stream._on_message_out
        states = self._states
        for event in events:
            last = event.ack()
            message = event.message
            on_event_out(message.tp, message.offset, stream, event, states.pop(id(event), None))
            if last:
                on_message_out(message.tp, message.offset, message)

    async def close(self) -> None:
        self._states.clear()
        stream = self.stream
        stream._channel_stop_iteration(stream.channel)
        if self._started:
            await stream.stop()
            stream.service_reset()


class TakeEventsIntake:
    """``Stream.take_events``: it acks a batch when the next one is taken (:meth:`ack` does
    nothing), and also when it is closed, handled or not."""

    def __init__(self, stream: faust.Stream, size: int, within: float) -> None:
        self.ended = False
        self._batches = stream.take_events(size, within=within)

    async def take(self) -> list[faust.EventT]:
        try:
            return list(await anext(self._batches))
        except StopAsyncIteration:
            self.ended = True
            return []

    def ack(self, events: list[faust.EventT]) -> None:
        pass

    async def close(self) -> None:
        await self._batches.aclose()
