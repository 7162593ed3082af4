"""Several Redis commands in one round trip, Lua scripts included.

The scorer's reads (customer versions, terminal stamps) and writes (history append,
customer-view write) are each sent as one pipeline: one round trip per phase, which on a
busy machine costs far more than the commands themselves. Scripts are sent by SHA
(``EVALSHA``); a script Redis has not seen yet (a restart, ``SCRIPT FLUSH``) is loaded and
only the commands that failed for that reason are sent again, so no command runs twice.

:func:`send` splits a round trip in two: the commands go out at once and their replies are
read later (:meth:`Sent.replies`), so Redis executes them while the caller computes. The
scorer sends its writes as soon as the features are known and collects the replies after
the model. Where Redis has CPU of its own (its own host, or a spare core), the batch no
longer waits for the writes: 55 – 59 → 20 µs per event in process. On a machine whose cores
are all busy (the streaming benchmark on two cores) the Redis work only moves into the model
step; see ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis


@dataclass(frozen=True)
class Script:
    """A Lua script, called by its SHA-1."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        sha = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", sha)

    def command(self, keys: Sequence[Any], args: Sequence[Any]) -> tuple[Any, ...]:
        """The ``EVALSHA`` command calling this script (for :func:`execute`)."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


def execute(
    client: redis.Redis, commands: Sequence[tuple[Any, ...]], scripts: Sequence[Script] = ()
) -> list[Any]:
    """The replies of ``commands``, sent in one pipeline (no transaction).

    ``scripts`` are those the commands may call: if Redis lacks one, they are loaded and the
    commands that failed with ``NOSCRIPT`` are sent again. Any other error of a command is
    raised (after the others ran), as are connection errors.
    """
    return _settle(client, commands, scripts, _pipeline(client, commands))


def _settle(
    client: redis.Redis,
    commands: Sequence[tuple[Any, ...]],
    scripts: Sequence[Script],
    replies: list[Any],
) -> list[Any]:
    """``replies`` of ``commands`` once those that found a script missing were sent again
    (after loading ``scripts``); raises the first error among them."""
    missing = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
    if missing and scripts:
        for script in scripts:
            client.script_load(script.source)
        for i, reply in zip(
            missing, _pipeline(client, [commands[i] for i in missing]), strict=True
        ):
            replies[i] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _pipeline(client: redis.Redis, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    with client.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute(raise_on_error=False))


class Sent:
    """Commands sent in one pipeline, their replies not read yet (:func:`send`).

    Holds a connection of the client's pool until :meth:`replies` or :meth:`abandon`.
    """

    def __init__(
        self, client: redis.Redis, commands: Sequence[tuple[Any, ...]], scripts: Sequence[Script]
    ) -> None:
        self._client, self._commands, self._scripts = client, commands, scripts
        pool = client.connection_pool
        self._connection: Any = pool.get_connection()
        try:
            packed = self._connection.pack_commands(list(commands))
            self._connection.send_packed_command(packed)
        except BaseException:
            self.abandon()
            raise

    def replies(self) -> list[Any]:
        """The replies, in order, as :func:`execute` returns them (and raises)."""
        connection = self._connection
        if connection is None:
            raise RuntimeError("these replies were read or abandoned already")
        replies: list[Any] = []
        try:
            for command in self._commands:
                try:
                    replies.append(self._client.parse_response(connection, command[0]))
                except redis.exceptions.ResponseError as exc:
                    replies.append(exc)
        except BaseException:
            self.abandon()
            raise
        self._connection = None
        self._client.connection_pool.release(connection)
        return _settle(self._client, self._commands, self._scripts, replies)

    def abandon(self) -> None:
        """Give the connection back without reading (closed: its replies are unread). The
        commands may have run."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.disconnect()
            self._client.connection_pool.release(connection)


def send(
    client: redis.Redis, commands: Sequence[tuple[Any, ...]], scripts: Sequence[Script] = ()
) -> Sent:
    """Send ``commands`` in one pipeline (no transaction) without waiting for the replies:
    read them with :meth:`Sent.replies` (same rules as :func:`execute`)."""
    return Sent(client, commands, scripts)


def scan_keys(client: redis.Redis, prefix: bytes = b"", suffix: bytes = b"") -> Iterator[bytes]:
    """Keys that start with ``prefix`` and end with ``suffix``, by ``SCAN`` (a key may come
    twice, and one written meanwhile may be missed: Redis's ``SCAN`` guarantees)."""
    pattern = _glob_escape(prefix) + b"*" + _glob_escape(suffix)
    for key in client.scan_iter(match=pattern, count=1000):
        yield bytes(key)


T = TypeVar("T")


def in_chunks(
    items: Iterable[T], handle: Callable[[list[T]], object], done: Callable[[], bool], size: int
) -> None:
    """Hand ``items`` (repeats dropped) to ``handle``, ``size`` at a time (one round trip
    each), until they run out or ``done()`` is true after a chunk: how a cache is warmed
    from :func:`scan_keys`."""
    todo: dict[T, None] = {}
    for item in items:
        todo[item] = None
        if len(todo) >= size:
            handle(list(todo))
            todo.clear()
            if done():
                return
    if todo:
        handle(list(todo))


def _glob_escape(text: bytes) -> bytes:
    """``text`` matched literally by a Redis glob pattern."""
    return re.sub(rb"([*?\[\]\\])", rb"\\\1", text)
