"""The customer history's in-process cache against a real Redis, with two writers.

Each process (worker, API) caches the states it read; a batch's one read call returns the
versions of all its customers and the entries of those not cached, so a first-seen
customer costs no extra round trip, and a cached customer another writer changed is read
again (and only then).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from fraudstream.config import Settings
from fraudstream.features import advance_customers, transaction_digests
from fraudstream.history import SCRIPTS, CustomerHistory
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


def _read(history: CustomerHistory, customers: list[str]) -> tuple[list, int]:  # type: ignore[type-arg]
    """The states as a batch reads them, and how many round trips the read took."""
    calls = 0
    real_pipeline = history.client.pipeline

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return real_pipeline(*args, **kwargs)

    history.client.pipeline = counting  # type: ignore[method-assign]
    try:
        reply = execute(history.client, [history.read_command(customers)], SCRIPTS)[0]
        states = history.states_from(customers, reply)
    finally:
        history.client.pipeline = real_pipeline  # type: ignore[method-assign]
    return states, calls


def test_first_read_in_one_call_then_cached_then_reread_after_another_writer(
    redis_url: str,
) -> None:
    client = redis_client(redis_url, Settings())
    for script in SCRIPTS:  # loaded: a first call's NOSCRIPT retry would count as a trip
        client.script_load(script.source)
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    api, worker = CustomerHistory(client, namespace), CustomerHistory(client, namespace)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    known, unknown = f"c-{uuid.uuid4().hex[:6]}", f"c-{uuid.uuid4().hex[:6]}"
    worker.append(_events(known, 30, start, "a"))

    states, calls = _read(api, [known, unknown])
    assert calls == 1  # the read call only: the entries came with the versions
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
    assert calls == 2  # the read call, then the changed customer's history
    assert api.reads == 3
    assert len(after[0]) == 35 and after[1] is again[1]


def test_a_state_read_in_the_batch_call_advances_like_a_loaded_one(redis_url: str) -> None:
    client = redis_client(redis_url, Settings())
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    customer = f"c-{uuid.uuid4().hex[:6]}"
    start = datetime(2026, 11, 1, tzinfo=UTC)
    CustomerHistory(client, namespace).append(_events(customer, 40, start, "h"))

    fresh, _ = _read(CustomerHistory(client, namespace), [customer])
    loaded = CustomerHistory(client, namespace)._load([customer])[0][0]
    np.testing.assert_array_equal(fresh[0].ms, loaded.ms)
    np.testing.assert_array_equal(fresh[0].big, loaded.big)
    ms = np.array([int((start + timedelta(days=3)).timestamp() * 1000)], dtype=np.int64)
    ids = transaction_digests(["next"])
    got, _ = advance_customers(fresh, np.zeros(1, np.int64), ms, np.array([99.0]), ids)
    want, _ = advance_customers([loaded], np.zeros(1, np.int64), ms, np.array([99.0]), ids)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
