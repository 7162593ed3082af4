"""KeyWatch on a real redis-server of the test's own: Redis's invalidation messages decide
which cached keys are still current, and anything that may have lost one (a flush, a
broken or silent connection) trusts nothing until it is back."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from fraudstream import stack
from fraudstream.invalidation import KeyWatch

from .private_redis import start_redis

pytestmark = pytest.mark.integration

PREFIXES = [b"fs:v:", b"\x01term:"]


class Clock:
    """A monotonic clock the test moves (the watch's PING schedule and silence)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server(tmp_path: Path) -> Iterator[redis.Redis]:
    port = stack.free_port()
    info = start_redis(port, tmp_path / "redis")
    client = redis.Redis(port=port, socket_timeout=2)
    try:
        yield client
    finally:
        client.close()
        stack.stop_process(info)


@pytest.fixture
def watch_of(server: redis.Redis) -> Iterator[Callable[..., KeyWatch]]:
    made: list[KeyWatch] = []

    def make(**kwargs: object) -> KeyWatch:
        options: dict[str, object] = {"max_silence_s": 60.0, **kwargs}
        watch = KeyWatch(server, PREFIXES, **options)  # type: ignore[arg-type]
        watch.poll()
        assert watch.connected and watch.healthy
        made.append(watch)
        return watch

    yield make
    for watch in made:
        watch.stop()


def read(watch: KeyWatch, keys: list[bytes]) -> None:
    """What a scorer does around a round trip that cached ``keys``."""
    window = watch.open()
    watch.confirm(window, keys)


def until(condition: Callable[[], bool], watch: KeyWatch) -> bool:
    """Poll ``watch`` until ``condition()`` (an invalidation takes microseconds to arrive)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        watch.poll()
        if condition():
            return True
        time.sleep(0.001)
    return False


def test_a_read_key_is_current_until_any_client_changes_it(
    server: redis.Redis, watch_of: Callable[..., KeyWatch]
) -> None:
    watch = watch_of()
    a, b, term = b"fs:v:a", b"fs:v:b", b"\x01term:7"
    server.mset({a: 1, b: 1})
    # (a read whose window sees these invalidations would trust neither key: wait for them)
    assert until(lambda: watch.invalidations == 2, watch)
    assert not watch.current([a])  # never read
    read(watch, [a, b, term])
    assert watch.current([a, b, term])
    server.set(a, 2)
    assert until(lambda: not watch.current([a]), watch)
    assert watch.current([b, term])
    # a script's write and a hash field are changes too
    server.eval("redis.call('HSET', KEYS[1], 'f', 1)", 1, term)
    assert until(lambda: not watch.current([term]), watch)
    assert watch.current([b])
    server.delete(b)  # (deleting a key that does not exist changes nothing)
    assert until(lambda: not watch.current([b]), watch)
    assert watch.invalidations == 5


def test_a_change_during_the_read_leaves_the_key_untrusted(
    server: redis.Redis, watch_of: Callable[..., KeyWatch]
) -> None:
    watch = watch_of()
    a, b = b"fs:v:a", b"fs:v:b"
    window = watch.open()
    server.set(a, 1)  # between the read's round trip and the caching of its reply
    assert until(lambda: a in window.invalidated, watch)
    watch.confirm(window, [a, b])
    assert not watch.current([a]) and watch.current([b])


def test_keys_outside_the_prefixes_are_never_trusted(watch_of: Callable[..., KeyWatch]) -> None:
    watch = watch_of()
    read(watch, [b"other:a", b"fs:v:a"])
    assert watch.current([b"fs:v:a"]) and not watch.current([b"other:a"])


def test_a_flush_forgets_every_key(server: redis.Redis, watch_of: Callable[..., KeyWatch]) -> None:
    watch = watch_of()
    read(watch, [b"fs:v:a", b"fs:v:b"])
    window = watch.open()
    server.flushall()
    assert until(lambda: not watch.current([b"fs:v:a"]), watch)
    assert not watch.current([b"fs:v:b"])
    watch.confirm(window, [b"fs:v:a"])  # a read under way during the flush: not trusted
    assert not watch.current([b"fs:v:a"])


def test_a_broken_connection_trusts_nothing_and_reconnects(
    server: redis.Redis, watch_of: Callable[..., KeyWatch]
) -> None:
    clock = Clock()
    watch = watch_of(clock=clock, retry_s=5.0)
    read(watch, [b"fs:v:a"])
    window = watch.open()
    server.client_kill_filter(_type="pubsub")  # the watch's connection
    assert until(lambda: not watch.connected, watch)
    assert not watch.current([b"fs:v:a"])
    watch.confirm(window, [b"fs:v:a"])  # a read that began before the break
    assert not watch.current([b"fs:v:a"])
    watch.poll()
    assert not watch.connected  # not before retry_s
    clock.now += 5.0
    watch.poll()
    assert watch.connected and watch.connects == 2
    assert not watch.current([b"fs:v:a"])  # what was trusted before stays untrusted
    read(watch, [b"fs:v:a"])
    assert watch.current([b"fs:v:a"])
    server.set(b"fs:v:a", 1)  # and the new connection is told of changes
    assert until(lambda: not watch.current([b"fs:v:a"]), watch)


def test_silence_longer_than_the_limit_makes_the_watch_unhealthy(
    server: redis.Redis, watch_of: Callable[..., KeyWatch]
) -> None:
    clock = Clock()
    watch = watch_of(clock=clock, max_silence_s=0.1)
    read(watch, [b"fs:v:a"])
    assert watch.current([b"fs:v:a"])
    clock.now += 0.1  # nothing heard for max_silence_s: no promise holds
    assert not watch.healthy and not watch.current([b"fs:v:a"])
    watch.poll()  # sends a PING; its answer vouches for everything sent before it
    assert until(lambda: watch.healthy, watch)
    assert watch.current([b"fs:v:a"])
    # a PING never answered for long: the connection is treated as broken
    server.execute_command("CLIENT", "PAUSE", 500, "ALL")  # a server that stops answering
    clock.now += 0.06
    watch.poll()  # PING due (half the limit)
    clock.now += 1.01  # ten times the limit, at least 1 s, without the PING's answer
    watch.poll()
    assert not watch.connected and not watch.current([b"fs:v:a"])


def test_a_server_that_refuses_tracking_turns_the_watch_off(server: redis.Redis) -> None:
    server.acl_setuser(
        "limited", enabled=True, passwords=["+pw"], keys=["*"], categories=["+@all"],
        commands=["-client"],
    )  # fmt: skip
    port = server.connection_pool.connection_kwargs["port"]
    limited = redis.Redis(port=port, username="limited", password="pw")
    watch = KeyWatch(limited, PREFIXES, 60.0)
    watch.poll()
    assert not watch.enabled and not watch.connected
    read(watch, [b"fs:v:a"])
    assert not watch.current([b"fs:v:a"])
    watch.poll()  # never tries again
    assert not watch.connected
    limited.close()


def test_a_backlog_over_the_limit_drops_the_connection_instead_of_stalling(
    server: redis.Redis, watch_of: Callable[..., KeyWatch]
) -> None:
    clock = Clock()
    watch = watch_of(clock=clock, max_backlog=10, retry_s=1.0)
    read(watch, [b"fs:v:keep"])
    for i in range(50):  # one message each (a command's keys come in one message)
        server.set(f"fs:v:{i}", i)
    time.sleep(0.2)
    watch.poll()
    assert not watch.connected and not watch.current([b"fs:v:keep"])
    assert watch.invalidations == 10  # read no more than the limit
    clock.now += 1.0
    watch.poll()
    assert watch.connected and watch.healthy


def test_reconnecting_takes_nothing_from_the_client_s_pool(server: redis.Redis) -> None:
    """A client whose pool is bounded (``max_connections`` in the Redis URL): the watch's
    reconnects leave the scorer's pool whole, and the client still gets its connections."""
    port = server.connection_pool.connection_kwargs["port"]
    client = redis.Redis.from_url(f"redis://127.0.0.1:{port}/0?max_connections=2")
    clock = Clock()
    watch = KeyWatch(client, PREFIXES, max_silence_s=60.0, retry_s=1.0, clock=clock)
    try:
        for _ in range(5):
            watch.poll()
            assert watch.connected
            server.client_kill_filter(_type="pubsub")
            assert until(lambda: not watch.connected, watch)
            clock.now += 1.0
        watch.poll()
        assert watch.connected and watch.connects == 6
        assert client.ping() and client.set(b"fs:v:x", 1)  # the client's pool is whole
    finally:
        watch.stop()
        client.close()
