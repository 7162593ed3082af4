"""Which cached Redis keys are still current, as Redis itself tells (client-side caching).

The API caches customers' states and terminals' rows, and every call used to check them
against Redis: one round trip, which on a busy host is most of a call's tail
(``benchmarks/RESULTS.md``). Since Redis 6 a connection can ask to be told of every change to
the keys under some prefixes (``CLIENT TRACKING ON ... BCAST PREFIX``, "server-assisted
client-side caching"). :class:`KeyWatch` holds such a connection, subscribed to the
invalidation channel, and keeps the set of keys read since it connected and not changed
since: while it is *healthy*, a call whose keys are all in that set needs no round trip.

The guarantee, compared with a round trip per call: a write another process completed is
taken into account by the next call that starts after its invalidation message arrived;
Redis queues the message before it answers the writer (microseconds on one host, one
network hop otherwise). ``max_silence_s`` bounds the rest: the watch PINGs Redis every
``max_silence_s / 2`` while calls come, and it is healthy only while its last answered PING
was sent less than ``max_silence_s`` ago. Messages come in order on one connection, so an
answered PING means the messages of every write completed before it was sent have been read;
a connection that hangs without closing thus costs at most ``max_silence_s`` of staleness,
after which every call checks Redis again (so calls further apart than ``max_silence_s``
always do). Any break, a ``FLUSHALL``/``FLUSHDB``, or more than ``max_backlog`` messages
waiting at a call forgets every key; the watch reconnects at most once per ``retry_s``. A
server that refuses ``CLIENT TRACKING`` (before 6.0, or an ACL user without ``CLIENT`` or
``SUBSCRIBE``) turns the watch off: every call checks Redis, as before.

Not thread-safe: one scorer's calls, one thread (the API's event loop).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

log = logging.getLogger(__name__)

#: The channel Redis publishes invalidations on for a RESP2 connection (``REDIRECT``).
CHANNEL = b"__redis__:invalidate"


@dataclass(eq=False)
class Window:
    """A read under way (:meth:`KeyWatch.open`): the keys invalidated since it began."""

    epoch: int
    invalidated: set[bytes] = field(default_factory=set)


class KeyWatch:
    """The keys under ``prefixes`` read from Redis and not changed since (see the module)."""

    def __init__(
        self,
        client: redis.Redis,
        prefixes: Sequence[bytes],
        max_silence_s: float,
        *,
        max_keys: int = 1 << 21,
        max_backlog: int = 1000,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_silence_s <= 0:
            raise ValueError("max_silence_s must be positive")
        self.client = client
        self.prefixes = list(prefixes)
        self._watched = tuple(self.prefixes)  # a key outside them is never trusted
        self.max_silence_s = max_silence_s
        self.max_keys = max_keys
        self.max_backlog = max_backlog
        self.retry_s = retry_s
        self.clock = clock
        #: Changes on every connect, flush and break: windows of an older epoch trust nothing.
        self.epoch = 0
        self.enabled = True  # false once the server refused CLIENT TRACKING
        self._conn: Any = None
        self._trusted: set[bytes] = set()
        self._windows: list[Window] = []
        self._confirmed_at = float("-inf")  # send time of the last answered PING
        self._ping_sent_at: float | None = None
        self._retry_at = float("-inf")
        #: Calls answered from the cache (no round trip) and calls that checked Redis.
        self.hits = 0
        self.misses = 0
        self.invalidations = 0
        self.connects = 0

    # ------------------------------------------------------------ state

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def healthy(self) -> bool:
        """Connected, and the last answered PING was sent less than ``max_silence_s`` ago."""
        return self._conn is not None and self.clock() - self._confirmed_at < self.max_silence_s

    def current(self, keys: Iterable[bytes]) -> bool:
        """Whether every key in ``keys`` is still as last read (call :meth:`poll` first)."""
        trusted = self._trusted
        return self.healthy and all(k in trusted for k in keys)

    def open(self) -> Window:
        """Start a read: invalidations from now on are held against its keys."""
        window = Window(self.epoch)
        self._windows.append(window)
        return window

    def confirm(self, window: Window, keys: Iterable[bytes]) -> None:
        """End ``window``'s read, whose values for ``keys`` are now cached: trust those not
        invalidated since it began (none if the connection broke or Redis was flushed, nor
        a key under none of the prefixes, of which no change would be reported)."""
        self.poll()
        self.close(window)
        if window.epoch != self.epoch or self._conn is None:
            return
        trusted, gone, watched = self._trusted, window.invalidated, self._watched
        trusted.update(k for k in keys if k not in gone and k.startswith(watched))
        if len(trusted) > self.max_keys:  # forget all: the next reads check Redis again
            trusted.clear()

    def close(self, window: Window) -> None:
        """End ``window`` without trusting anything (the read failed)."""
        with contextlib.suppress(ValueError):
            self._windows.remove(window)

    # ------------------------------------------------------------ connection

    def poll(self) -> None:
        """Read what Redis sent (never blocks on Redis being idle), PING when due, and
        (re)connect when disconnected and ``retry_s`` has passed since the last attempt.
        More than ``max_backlog`` messages waiting (calls rare, writes many) drop the
        connection instead of stalling this call: nothing is trusted until it is back."""
        if self._conn is None:
            if self.enabled and self.clock() >= self._retry_at:
                self._connect()
            return
        conn = self._conn
        try:
            read = 0
            while conn.can_read(timeout=0):
                if read == self.max_backlog:  # dropping them all is cheaper than reading them
                    raise redis.ConnectionError(f"over {self.max_backlog} messages behind")
                self._handle(conn.read_response())
                read += 1
            now = self.clock()
            if self._ping_sent_at is None:
                if now - self._confirmed_at >= self.max_silence_s / 2:
                    conn.send_command("PING")
                    self._ping_sent_at = now
            elif now - self._ping_sent_at > max(1.0, 10 * self.max_silence_s):
                raise redis.ConnectionError("no answer to PING")
        except (redis.RedisError, OSError) as exc:
            self._broken(exc)

    def stop(self) -> None:
        """Close the connection; nothing is trusted any more (:meth:`poll` reconnects)."""
        self._drop()

    def _connect(self) -> None:
        self._retry_at = self.clock() + self.retry_s
        # the client's settings, but not one of its pool's connections: each reconnect
        # would take a slot the pool never gets back (a pool with max_connections runs out)
        pool = self.client.connection_pool
        conn = pool.connection_class(**pool.connection_kwargs)
        try:
            conn.connect()
            conn.send_command("CLIENT", "ID")
            own_id = conn.read_response()
            started = self.clock()
            args: list[Any] = ["CLIENT", "TRACKING", "ON", "REDIRECT", own_id, "BCAST"]
            for prefix in self.prefixes:
                args += ["PREFIX", prefix]
            conn.send_command(*args)
            conn.read_response()
            conn.send_command("SUBSCRIBE", CHANNEL)
            reply = conn.read_response()
            if not (isinstance(reply, list) and reply and reply[0] == b"subscribe"):
                raise redis.ResponseError(f"unexpected reply to SUBSCRIBE: {reply!r}")
        except redis.ResponseError as exc:
            conn.disconnect()
            self.enabled = False
            log.warning("Redis refuses key tracking (%s): every call checks Redis", exc)
            return
        except (redis.RedisError, OSError) as exc:
            conn.disconnect()
            log.warning("key watch not connected (%s); next try in %.1f s", exc, self.retry_s)
            return
        self._conn, self.epoch = conn, self.epoch + 1
        self._confirmed_at, self._ping_sent_at = started, None
        self.connects += 1
        log.info("key watch connected: %d prefixes tracked", len(self.prefixes))

    def _handle(self, message: Any) -> None:
        kind = message[0] if isinstance(message, list) and message else None
        if kind == b"message" and message[1] == CHANNEL:
            keys = message[2]
            if keys is None:  # FLUSHALL / FLUSHDB: everything may have changed
                self._forget()
                return
            self.invalidations += len(keys)
            trusted = self._trusted
            for key in keys:
                trusted.discard(key)
            for window in self._windows:
                window.invalidated.update(keys)
        elif kind == b"pong" and self._ping_sent_at is not None:
            self._confirmed_at, self._ping_sent_at = self._ping_sent_at, None

    def _broken(self, exc: BaseException) -> None:
        log.warning("key watch lost (%s): every call checks Redis until it is back", exc)
        self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()
        self._forget()
        self._confirmed_at, self._ping_sent_at = float("-inf"), None

    def _forget(self) -> None:
        self._trusted.clear()
        self.epoch += 1
