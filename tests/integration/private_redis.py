"""A redis-server of a test's own, on a port it can stop and start again (outage tests)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from fraudstream import stack


def start_redis(port: int, work: Path, *, durable: bool = False) -> stack.ProcessInfo:
    """Start redis-server on ``port`` with its files in ``work``; wait until it answers.

    ``durable``: an append-only file, so a stop and start on the same ``work`` keeps the data.
    """
    work.mkdir(parents=True, exist_ok=True)
    argv = [
        stack.redis_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(work),
        "--save", "",
        "--appendonly", "yes" if durable else "no",
        "--appendfsync", "always",
    ]  # fmt: skip
    info = stack.start_process(argv, work / "redis.log")
    client = redis.Redis(port=port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            client.ping()
            return info
        time.sleep(0.05)
    stack.stop_process(info)
    pytest.fail(f"private redis-server on {port} did not answer")
