"""The customer history's in-process cache against a real Redis, with two writers.

Each process (worker, API) caches the states it read; a batch reads the versions of its
customers with the histories it does not have, in one round trip, and reads again only the
histories another writer changed (and only then, in a second one).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fraudstream.config import Settings
from fraudstream.features import CustomerState, advance_customers, transaction_digests
from fraudstream.history import SCRIPTS, CorruptStateError, CustomerHistory
from fraudstream.redis_batch import execute
from fraudstream.stack import redis_client

pytestmark = pytest.mark.integration


def _events(customer: str, n: int, start: datetime, prefix: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": [f"{prefix}-{i}" for i in range(n)],
            "customer_id": customer,
            "timestamp": [start + timedelta(hours=i) for i in range(n)],
            "amount": np.linspace(10.0, 50.0, n),
        }
    )


def _read(history: CustomerHistory, customers: list[str]) -> tuple[list[CustomerState], int]:
    """The states as a batch reads them, and the round trips (pipelines) it took."""
    calls = 0
    real_pipeline = history.client.pipeline

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return real_pipeline(*args, **kwargs)

    history.client.pipeline = counting  # type: ignore[method-assign]
    try:
        replies = execute(history.client, history.read_commands(customers), SCRIPTS)
        return history.states_from(customers, replies), calls
    finally:
        history.client.pipeline = real_pipeline  # type: ignore[method-assign]


def test_histories_are_read_once_then_again_only_after_another_writer(redis_url: str) -> None:
    client = redis_client(redis_url, Settings())
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    api, worker = CustomerHistory(client, namespace), CustomerHistory(client, namespace)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    known, unknown = f"c-{uuid.uuid4().hex[:6]}", f"c-{uuid.uuid4().hex[:6]}"
    worker.append(_events(known, 30, start, "a"))

    states, calls = _read(api, [known, unknown])
    assert calls == 1  # the histories came with the versions
    assert [len(s) for s in states] == [30, 0]
    assert api.reads == 2
    assert states[0].big is not None  # flags computed once, on read
    np.testing.assert_array_equal(states[0].ids, transaction_digests([f"a-{i}" for i in range(30)]))

    again, calls = _read(api, [known, unknown])
    assert calls == 1 and api.reads == 2  # both cached, versions unchanged: nothing re-read
    assert again[0] is states[0]

    # another writer adds to one customer: only that one is read again
    worker.append(_events(known, 5, start + timedelta(days=2), "b"))
    after, calls = _read(api, [known, unknown])
    assert calls == 2 and api.reads == 3  # the versions, then the changed history
    assert len(after[0]) == 35 and after[1] is again[1]


def test_a_state_read_back_advances_like_the_writer_s_own(redis_url: str) -> None:
    client = redis_client(redis_url, Settings())
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    customer = f"c-{uuid.uuid4().hex[:6]}"
    start = datetime(2026, 11, 1, tzinfo=UTC)
    events = _events(customer, 40, start, "h")
    CustomerHistory(client, namespace).append(events)

    (read_back,), _ = _read(CustomerHistory(client, namespace), [customer])
    own = CustomerState(
        np.asarray(events["timestamp"].astype("int64") // 1_000_000, dtype=np.int64),
        events["amount"].to_numpy(),
        transaction_digests(events["transaction_id"].tolist()),
        None,
    )
    ms = np.array([int((start + timedelta(days=3)).timestamp() * 1000)], dtype=np.int64)
    ids = transaction_digests(["next"])
    got, _ = advance_customers([read_back], np.zeros(1, np.int64), ms, np.array([99.0]), ids)
    want, _ = advance_customers([own], np.zeros(1, np.int64), ms, np.array([99.0]), ids)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_warm_reads_stored_customers_until_full_or_told_to_stop(redis_url: str) -> None:
    client = redis_client(redis_url, Settings())
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    writer = CustomerHistory(client, namespace)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    customers = [f"c*{i}" for i in range(25)]  # a glob character in the ids, matched literally
    writer.append(pd.concat([_events(c, 4, start, c) for c in customers], ignore_index=True))
    CustomerHistory(client, f"{namespace}x").append(_events("other", 3, start, "o"))

    warm = CustomerHistory(client, namespace)
    assert warm.warm(lambda: False, chunk=10) == 25 and warm.reads == 25
    assert sorted(warm._cache) == sorted(customers)  # this namespace's customers only
    states, calls = _read(warm, customers)
    assert calls == 1 and warm.reads == 25  # every state came from the cache
    expected, _ = _read(CustomerHistory(client, namespace), customers)
    for got, want in zip(states, expected, strict=True):
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.amount, want.amount)
        assert got.big is not None and want.big is not None
        np.testing.assert_array_equal(got.big, want.big)

    stopped = CustomerHistory(client, namespace)
    assert stopped.warm(lambda: True, chunk=10) == 10  # asked after the first round trip
    full = CustomerHistory(client, namespace, cache_rows=8)  # two customers of 4 rows
    full.warm(lambda: False, chunk=2)
    assert full.reads == 2 and len(full._cache) == 2
    assert CustomerHistory(client, namespace, cache_rows=0).warm(lambda: False) == 0


def test_warm_leaves_out_a_corrupt_state_and_reads_the_rest(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis_client(redis_url, Settings())
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    writer = CustomerHistory(client, namespace)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    customers = [f"c{i}" for i in range(6)]
    writer.append(pd.concat([_events(c, 3, start, c) for c in customers], ignore_index=True))
    client.zadd(writer.prefix + b"broken", {b"short": 1})  # not a 24-byte entry

    warm = CustomerHistory(client, namespace)
    with caplog.at_level(logging.WARNING):
        assert warm.warm(lambda: False, chunk=4) == 6
    assert sorted(warm._cache) == customers
    assert "1 customer state(s) not warmed" in caplog.text and "broken" in caplog.text
    # scoring it still reads it, and fails for it alone, naming its key; nothing is cached
    with pytest.raises(CorruptStateError, match=f"not whole 24-byte entries: .*{namespace}") as err:
        _read(warm, ["c0", "broken", "c1"])
    assert err.value.customer_ids == ["broken"] and "broken" not in warm._cache
    assert len(_read(warm, ["c0", "c1"])[0]) == 2


def _write(
    history: CustomerHistory, customer: str, state: CustomerState, events: pd.DataFrame
) -> CustomerState:
    """Score ``events`` of one customer from ``state`` and write them as the scorer does
    (the script, then :meth:`CustomerHistory.saved` with its reply); the next state."""
    ms = np.asarray(events["timestamp"].astype("int64") // 1_000_000, dtype=np.int64)
    ids = transaction_digests(events["transaction_id"].tolist())
    amount = events["amount"].to_numpy(dtype=np.float64)
    codes = np.zeros(len(events), np.int64)
    _, (after,) = advance_customers([state], codes, ms, amount, ids)
    command = history.append_command([customer], codes, ms, ids, amount)
    (versions,) = execute(history.client, [command], SCRIPTS)
    history.saved([customer], [after], versions)
    return after


def _two_processes(redis_url: str) -> tuple[Any, str, CustomerHistory, CustomerHistory, str]:
    """A Redis client, a namespace of the test's own, two processes' histories in it (an
    API's, a worker's), and a customer id."""
    client = redis_client(redis_url, Settings())
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    api, worker = CustomerHistory(client, namespace), CustomerHistory(client, namespace)
    return client, namespace, api, worker, f"c-{uuid.uuid4().hex[:6]}"


def test_a_state_cached_before_the_keys_were_lost_is_never_taken_for_current(
    redis_url: str,
) -> None:
    """The keys go (expiry after a quiet period, a flush, a restart without persistence) and
    another writer starts them again: a cached state is read again, whatever its version."""
    client, _, api, worker, customer = _two_processes(redis_url)
    start = datetime(2026, 11, 1, tzinfo=UTC)

    (empty,), _ = _read(worker, [customer])
    own = _write(worker, customer, empty, _events(customer, 3, start, "a"))
    (cached,), _ = _read(worker, [customer])
    assert cached is own and worker.reads == 1  # its own write stays cached: no read back
    (seen,), _ = _read(api, [customer])
    assert len(seen) == 3 and api.reads == 1

    client.delete(worker._key(customer), worker._version_key(customer))  # the keys are lost
    (empty,), _ = _read(worker, [customer])
    assert len(empty) == 0
    _write(worker, customer, empty, _events(customer, 1, start + timedelta(days=1), "b"))

    (now,), _ = _read(api, [customer])  # the API's cached 3 transactions are out of date
    assert len(now) == 1 and api.reads == 2
    np.testing.assert_array_equal(now.ids, transaction_digests(["b-0"]))


def test_a_state_cached_before_redis_went_back_to_older_data_is_read_again(
    redis_url: str,
) -> None:
    """Redis restarted from an older snapshot (or a failover to a replica behind): the keys
    hold an older version and older entries; the next write's version is still new."""
    client, namespace, api, worker, customer = _two_processes(redis_url)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    (empty,), _ = _read(worker, [customer])
    state = _write(worker, customer, empty, _events(customer, 2, start, "a"))
    snapshot = (
        client.get(worker._version_key(customer)),
        client.zrange(worker._key(customer), 0, -1, withscores=True),
    )
    state = _write(worker, customer, state, _events(customer, 1, start + timedelta(hours=5), "w1"))
    (seen,), _ = _read(api, [customer])
    assert len(seen) == 3 and api.reads == 1  # cached with w1, at the version after w1

    client.set(worker._version_key(customer), snapshot[0])  # back to the older data
    client.delete(worker._key(customer))
    client.zadd(worker._key(customer), dict(snapshot[1]))
    other = CustomerHistory(client, namespace)  # a third process
    (old,), _ = _read(other, [customer])
    _write(other, customer, old, _events(customer, 1, start + timedelta(hours=6), "w2"))

    (now,), _ = _read(api, [customer])  # w1 is lost, w2 is there: read again
    assert api.reads == 2 and len(now) == 3
    assert transaction_digests(["w2-0"])[0] in now.ids
    assert transaction_digests(["w1-0"])[0] not in now.ids


def test_many_replaced_entries_are_removed_in_one_write(redis_url: str) -> None:
    """More entries to remove than Lua's unpack takes at once (about 8,000)."""
    client = redis_client(redis_url, Settings())
    history = CustomerHistory(client, f"test-{uuid.uuid4().hex[:8]}")
    customer = f"c-{uuid.uuid4().hex[:6]}"
    start = datetime(2026, 11, 1, tzinfo=UTC)
    events = _events(customer, 9000, start, "r")
    events["timestamp"] = [start + timedelta(minutes=i) for i in range(9000)]
    history.append(events)
    (stored,), _ = _read(history, [customer])
    assert len(stored) == 9000  # more than Lua unpacks at once
    one = _events(customer, 1, datetime(2026, 11, 30, tzinfo=UTC), "n")
    ms = np.asarray(one["timestamp"].astype("int64") // 1_000_000, dtype=np.int64)
    command = history.append_command(
        [customer],
        np.zeros(1, np.int64),
        ms,
        transaction_digests(["n-0"]),
        np.array([5.0]),
        [stored],
    )
    execute(client, [command], SCRIPTS)
    assert client.zcard(history._key(customer)) == 1
