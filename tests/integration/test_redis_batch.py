"""Split round trips against a real Redis: commands sent now, replies read later.

The scorer sends its writes before the model runs and reads the replies after it
(:func:`fraudstream.redis_batch.send`); the replies must be those of one ``execute``, a
script Redis does not know must be loaded and only its calls sent again, an error must be
raised, and a connection must go back to the pool usable whatever happened.
"""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from fraudstream.config import Settings
from fraudstream.redis_batch import Script, execute, send
from fraudstream.stack import redis_client

pytestmark = pytest.mark.integration

INCR_BY = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis_client(redis_url, Settings())


def test_replies_read_later_are_those_of_execute(client: redis.Redis) -> None:
    key = f"test:send:{uuid.uuid4().hex}"
    commands = [("SET", key, "1"), INCR_BY.command([key], [41]), ("GET", key)]
    execute(client, [("SCRIPT", "LOAD", INCR_BY.source)])
    sent = send(client, commands, [INCR_BY])
    # Redis runs the commands before their replies are read: another connection sees them
    deadline = time.monotonic() + 5.0
    while client.get(key) != b"42":
        assert time.monotonic() < deadline, "the sent commands did not run"
        time.sleep(0.01)
    assert sent.replies() == [True, 42, b"42"]
    with pytest.raises(RuntimeError, match="already"):
        sent.replies()
    assert execute(client, commands, [INCR_BY]) == [True, 42, b"42"]
    client.delete(key)


def test_an_unknown_script_is_loaded_and_only_its_calls_sent_again(client: redis.Redis) -> None:
    key = f"test:send:{uuid.uuid4().hex}"
    client.script_flush()
    sent = send(client, [("INCR", key), INCR_BY.command([key], [10])], [INCR_BY])
    assert sent.replies() == [1, 11]  # INCR ran once: 1 + 10, not 2 + 10
    assert client.get(key) == b"11"
    client.delete(key)


def test_an_error_reply_is_raised_and_the_pool_stays_usable(client: redis.Redis) -> None:
    key = f"test:send:{uuid.uuid4().hex}"
    client.set(key, "not a number")
    sent = send(client, [("INCR", key), ("GET", key)])
    with pytest.raises(redis.ResponseError, match="not an integer"):
        sent.replies()
    assert client.get(key) == b"not a number"
    abandoned = send(client, [("SET", key, "x"), ("GET", key)])
    abandoned.abandon()  # the replies are never read: the connection is closed, not reused
    for _ in range(3):  # every pooled connection answers its own commands
        assert execute(client, [("PING",), ("GET", key)]) == [True, b"x"]
    client.delete(key)
