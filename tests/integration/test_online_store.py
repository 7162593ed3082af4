"""The online-store fast path against real Feast on real Redis: the same bytes both ways.

Each test backfills and ``feast apply``s a private copy of the feature repo under its own
project name (so keys never collide with other tests sharing the Redis), then checks
that Feast reads what the fast path writes, the fast path reads what Feast writes, the
hashes are byte-identical, Feast's last-write rule holds, and a batch read is one
round trip.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis

from fraudstream import online_store, stack
from fraudstream.config import FEAST_REDIS_ENV, Settings
from fraudstream.feast_env import feast_environment, run_feast
from fraudstream.features import (
    CUSTOMER_FEATURES,
    CUSTOMER_VIEW,
    TERMINAL_FEATURES,
    TERMINAL_VIEW,
)
from fraudstream.online_store import CachedViewReader, OnlineStore
from fraudstream.schema import validate_frame
from fraudstream.simulate import simulate
from training.backfill import backfill, customer_table, terminal_table

pytestmark = pytest.mark.integration

CUSTOMER_NAMES = [f.name for f in CUSTOMER_FEATURES]
TERMINAL_NAMES = [f.name for f in TERMINAL_FEATURES]
ALL_REFS = [f"{CUSTOMER_VIEW}:{n}" for n in CUSTOMER_NAMES] + [
    f"{TERMINAL_VIEW}:{n}" for n in TERMINAL_NAMES
]
INT_FEATURES = {f.name for f in CUSTOMER_FEATURES + TERMINAL_FEATURES if f.dtype == "int64"}


@dataclass
class Repo:
    store: Any  # feast.FeatureStore
    fast: OnlineStore
    client: redis.Redis
    events: pd.DataFrame
    customers: pd.DataFrame  # latest backfilled row per customer
    terminals: pd.DataFrame  # latest backfilled row per terminal
    project: str
    redis_url: str


@pytest.fixture
def repo(
    feature_repo_copy: Path,
    redis_url: str,
    kafka_bootstrap: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Repo:
    project = f"fs_{uuid.uuid4().hex[:10]}"
    yaml = feature_repo_copy / "feature_store.yaml"
    yaml.write_text(re.sub(r"(?m)^project: .*$", f"project: {project}", yaml.read_text()))
    now = datetime.now(UTC)
    start = (now - pd.Timedelta(days=12)).date().isoformat()
    events = validate_frame(
        simulate(customers=60, terminals=120, days=12, start=start, seed=5), keep=("is_fraud",)
    )
    backfill(events, feature_repo_copy)
    settings = Settings(
        kafka={"bootstrap_servers": kafka_bootstrap},
        redis={"url": redis_url},
        feast={"repo_path": feature_repo_copy},
        stack={"dir": tmp_path / "stack"},
    )
    endpoints = stack.resolve_endpoints(settings)
    assert run_feast(settings, endpoints, ["apply"]) == 0
    for key, value in feast_environment(settings, endpoints).items():
        monkeypatch.setenv(key, value)
    assert FEAST_REDIS_ENV in feast_environment(settings, endpoints)
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(feature_repo_copy))
    client = stack.redis_client(redis_url, settings)
    fast = OnlineStore.from_feature_store(store, client)
    customers = _latest(customer_table(events), "customer_id")
    terminals = _latest(terminal_table(events), "terminal_id")
    return Repo(store, fast, client, events, customers, terminals, project, redis_url)


def _latest(table: pd.DataFrame, key: str) -> pd.DataFrame:
    """The latest row of each entity (what a materialisation writes)."""
    table = table.sort_values("event_timestamp", kind="stable")
    return table.drop_duplicates(key, keep="last").set_index(key)


def _rows(table: pd.DataFrame, key: str, ids: list[str], when: pd.Timestamp) -> pd.DataFrame:
    """Rows of a view for ``ids`` at ``when`` (seconds apart, sub-microsecond parts too)."""
    out = table.loc[ids].reset_index()
    out["event_timestamp"] = [
        when + pd.Timedelta(seconds=i, nanoseconds=789) for i in range(len(ids))
    ]
    return out


def _with_nans(frame: pd.DataFrame) -> pd.DataFrame:
    """Nulls in every float column of every other row, so both encodings meet NaN."""
    out = frame.copy()
    floats = [c for c in out.columns if out[c].dtype == np.float64]
    out.loc[out.index[::2], floats] = np.nan
    return out


def _hashes(client: redis.Redis, keys: list[bytes]) -> list[dict[bytes, bytes]]:
    return [client.hgetall(k) for k in keys]


def _feast_online(repo: Repo, pairs: list[tuple[str, str]]) -> dict[str, list[Any]]:
    return repo.store.get_online_features(
        features=ALL_REFS,
        entity_rows=[{"customer_id": c, "terminal_id": t} for c, t in pairs],
    ).to_dict()


def _assert_feast_equals_fast(feast: dict[str, list[Any]], fast: pd.DataFrame) -> None:
    for name in CUSTOMER_NAMES + TERMINAL_NAMES:
        for i, value in enumerate(feast[name]):
            mine = fast[name].iloc[i]
            if value is None:
                assert np.isnan(mine), (name, i, mine)
            else:
                assert isinstance(value, int if name in INT_FEATURES else float), (name, value)
                assert value == mine, (name, i, value, mine)


def _micros(ts: pd.Series) -> pd.Series:
    return pd.to_datetime(ts, utc=True).dt.floor("us")


def test_fast_write_is_read_by_feast(repo: Repo) -> None:
    now = pd.Timestamp.now(tz="UTC").floor("s")
    cids = list(repo.customers.index[:8])
    tids = list(repo.terminals.index[:8])
    cust = _with_nans(_rows(repo.customers, "customer_id", cids, now))
    term = _with_nans(_rows(repo.terminals, "terminal_id", tids, now))
    assert repo.fast.write(CUSTOMER_VIEW, cust) == len(cids)
    assert repo.fast.write(TERMINAL_VIEW, term) == len(tids)

    pairs = [*zip(cids, tids, strict=True), ("no-such-customer", "no-such-terminal")]
    pairs.append((cids[1], "no-such-terminal"))
    feast = _feast_online(repo, pairs)
    fast = repo.fast.read(pd.DataFrame(pairs, columns=["customer_id", "terminal_id"]))
    _assert_feast_equals_fast(feast, fast)
    # what was written, NaN included, and nothing for the absent entities
    for i in range(len(cids)):
        for name in CUSTOMER_NAMES:
            expected = cust[name].iloc[i]
            got = feast[name][i]
            assert (got is None) if pd.isna(expected) else got == expected, (name, i)
        for name in TERMINAL_NAMES:
            expected = term[name].iloc[i]
            got = feast[name][i]
            assert (got is None) if pd.isna(expected) else got == expected, (name, i)
    assert all(feast[n][len(cids)] is None for n in CUSTOMER_NAMES + TERMINAL_NAMES)
    assert all(feast[n][-1] is None for n in TERMINAL_NAMES)
    assert all(feast[n][-1] is not None for n in ("customer_nb_tx_1d", "customer_nb_tx_30d"))
    assert feast["customer_prev_avg_amount_30d"][0] is None  # a NaN written as Feast's null
    assert fast[f"{CUSTOMER_VIEW}__event_timestamp"].iloc[len(cids)] is pd.NaT
    assert list(fast[f"{CUSTOMER_VIEW}__event_timestamp"].iloc[: len(cids)]) == list(
        _micros(cust["event_timestamp"])
    )


def test_feast_writes_are_read_and_byte_identical(repo: Repo) -> None:
    store, fast = repo.store, repo.fast
    now = pd.Timestamp.now(tz="UTC").floor("s")
    # materialised rows: the latest backfilled row of each entity
    first = repo.events["timestamp"].min() - pd.Timedelta(days=1)
    store.materialize(start_date=first.to_pydatetime(), end_date=now.to_pydatetime())
    latest = repo.events.sort_values("timestamp").tail(30)
    pairs = list(zip(latest["customer_id"], latest["terminal_id"], strict=True))
    got = fast.read(pd.DataFrame(pairs, columns=["customer_id", "terminal_id"]))
    _assert_feast_equals_fast(_feast_online(repo, pairs), got)
    for i, (c, t) in enumerate(pairs):
        for name in CUSTOMER_NAMES:
            assert got[name].iloc[i] == pytest.approx(repo.customers.loc[c, name], nan_ok=True)
        for name in TERMINAL_NAMES:
            assert got[name].iloc[i] == pytest.approx(repo.terminals.loc[t, name], nan_ok=True)
        assert (
            got[f"{CUSTOMER_VIEW}__event_timestamp"].iloc[i]
            == repo.customers.loc[c, "event_timestamp"]
        )
        assert (
            got[f"{TERMINAL_VIEW}__event_timestamp"].iloc[i]
            == repo.terminals.loc[t, "event_timestamp"]
        )

    # pushed (customer view) and written (terminal view) by Feast, NaNs included
    cids = list(repo.customers.index[10:20])
    tids = list(repo.terminals.index[10:20])
    cust = _with_nans(_rows(repo.customers, "customer_id", cids, now + pd.Timedelta(hours=1)))
    term = _with_nans(_rows(repo.terminals, "terminal_id", tids, now + pd.Timedelta(hours=1)))
    store.push("customer_features_push", cust)
    store.write_to_online_store(TERMINAL_VIEW, term)
    got = fast.read(pd.DataFrame({"customer_id": cids, "terminal_id": tids}))
    for name in CUSTOMER_NAMES:
        np.testing.assert_array_equal(got[name].to_numpy(), cust[name].to_numpy(np.float64))
    for name in TERMINAL_NAMES:
        np.testing.assert_array_equal(got[name].to_numpy(), term[name].to_numpy(np.float64))
    assert list(got[f"{CUSTOMER_VIEW}__event_timestamp"]) == list(_micros(cust["event_timestamp"]))
    assert list(got[f"{TERMINAL_VIEW}__event_timestamp"]) == list(_micros(term["event_timestamp"]))

    # the fast path writes the very same bytes: same keys, same fields, same values
    keys = [fast.key(CUSTOMER_VIEW, c) for c in cids] + [fast.key(TERMINAL_VIEW, t) for t in tids]
    by_feast = _hashes(repo.client, keys)
    assert all(len(h) == 1 + len(CUSTOMER_NAMES) for h in by_feast[: len(cids)])
    repo.client.delete(*keys)
    assert fast.write(CUSTOMER_VIEW, cust) == len(cids)
    assert fast.write(TERMINAL_VIEW, term) == len(tids)
    assert _hashes(repo.client, keys) == by_feast


def test_cached_reader_reads_what_a_full_read_reads(repo: Repo) -> None:
    """The scorer's terminal reader re-reads only entities whose row changed, and so
    always returns what a full read returns: materialised rows, newer rows Feast writes
    later, deleted rows, absent entities, repeated ids."""
    store, fast = repo.store, repo.fast
    now = pd.Timestamp.now(tz="UTC").floor("s")
    first = repo.events["timestamp"].min() - pd.Timedelta(days=1)
    store.materialize(start_date=first.to_pydatetime(), end_date=now.to_pydatetime())
    tids = [*repo.terminals.index[:50], "absent"]
    ids = tids + tids[:10]
    reader = CachedViewReader(fast, TERMINAL_VIEW, TERMINAL_NAMES)

    def check() -> int:
        """Asserts equality; returns how many of the distinct ids have a row."""
        values, stamps = reader.read(ids)
        full = fast.read_arrays({"terminal_id": ids}, TERMINAL_NAMES)
        np.testing.assert_array_equal(values, full.values)
        np.testing.assert_array_equal(stamps, full.event_timestamps[TERMINAL_VIEW])
        return int((stamps[: len(tids)] != np.iinfo(np.int64).min).sum())

    stored = check()
    assert 0 < stored < len(tids) and reader.reads == stored
    check()
    assert reader.reads == stored  # nothing changed: nothing re-read
    newer = _with_nans(
        _rows(repo.terminals, "terminal_id", tids[5:15], now + pd.Timedelta(hours=1))
    )
    store.write_to_online_store(TERMINAL_VIEW, newer)
    check()
    assert reader.reads == stored + 10  # exactly the ten new rows
    repo.client.delete(fast.key(TERMINAL_VIEW, tids[0]))
    check()
    values, _ = reader.read([tids[0]])
    assert np.isnan(values).all()


def test_older_rows_do_not_overwrite_newer(repo: Repo) -> None:
    store, fast = repo.store, repo.fast
    assert store.config.online_store.skip_dedup is False  # Feast's default: dedup on write
    assert fast.dedup
    t0 = pd.Timestamp.now(tz="UTC").floor("s")
    a, b, c = (list(repo.customers.index[i : i + 1]) for i in (30, 31, 32))
    newer = _rows(repo.customers, "customer_id", a, t0)
    older = newer.assign(event_timestamp=t0 - pd.Timedelta(minutes=5), customer_nb_tx_1d=999)
    same = newer.assign(customer_nb_tx_1d=555)

    def nb_tx(cid: str) -> float:
        return float(fast.read({"customer_id": [cid]})["customer_nb_tx_1d"].iloc[0])

    # fast path against itself: older and same-instant rows are skipped
    assert fast.write(CUSTOMER_VIEW, newer) == 1
    assert fast.write(CUSTOMER_VIEW, older) == 0
    assert fast.write(CUSTOMER_VIEW, same) == 0
    assert nb_tx(a[0]) == newer["customer_nb_tx_1d"].iloc[0]
    # Feast behaves so on the fast path's bytes, and the fast path on Feast's
    store.push("customer_features_push", older)
    assert nb_tx(a[0]) == newer["customer_nb_tx_1d"].iloc[0]
    store.push("customer_features_push", _rows(repo.customers, "customer_id", b, t0))
    assert fast.write(CUSTOMER_VIEW, older.assign(customer_id=b[0])) == 0
    assert nb_tx(b[0]) == repo.customers.loc[b[0], "customer_nb_tx_1d"]
    # within one batch the newest row wins, whatever the order, as in Feast
    batch = pd.concat(
        [
            newer.assign(customer_id=c[0], event_timestamp=t0, customer_nb_tx_1d=1),
            newer.assign(
                customer_id=c[0], event_timestamp=t0 + pd.Timedelta(1, "s"), customer_nb_tx_1d=3
            ),
            newer.assign(
                customer_id=c[0], event_timestamp=t0 - pd.Timedelta(1, "s"), customer_nb_tx_1d=2
            ),
        ],
        ignore_index=True,
    )
    assert fast.write(CUSTOMER_VIEW, batch) == 2
    assert nb_tx(c[0]) == 3
    feast_c = repo.customers.index[33]
    store.push("customer_features_push", batch.assign(customer_id=feast_c))
    assert nb_tx(feast_c) == 3
    # and a newer row does overwrite
    assert (
        fast.write(
            CUSTOMER_VIEW,
            newer.assign(event_timestamp=t0 + pd.Timedelta(1, "h"), customer_nb_tx_1d=7),
        )
        == 1
    )
    assert nb_tx(a[0]) == 7


class CountingConnection(redis.Connection):
    """A real connection that counts how often it sends to Redis: one send per round trip."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)


def _command_calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def test_one_read_of_500_pairs_is_one_round_trip(repo: Repo) -> None:
    pool = redis.ConnectionPool.from_url(repo.redis_url, connection_class=CountingConnection)
    counted = redis.Redis(connection_pool=pool)
    fast = OnlineStore.from_feature_store(repo.store, counted)
    rng = np.random.default_rng(3)
    pairs = pd.DataFrame(
        {
            "customer_id": rng.choice([*repo.customers.index, "absent"], 500),
            "terminal_id": rng.choice([*repo.terminals.index, "absent"], 500),
        }
    )
    counted.ping()  # connect first, so the count below holds commands only
    # the counter sees every round trip: two commands, two sends
    before = CountingConnection.sends
    counted.ping()
    counted.ping()
    assert CountingConnection.sends - before == 2

    calls_before = _command_calls(repo.client)
    before = CountingConnection.sends
    out = fast.read(pairs)
    assert CountingConnection.sends - before == 1
    calls = _command_calls(repo.client)
    delta = {k: v - calls_before.get(k, 0) for k, v in calls.items() if v != calls_before.get(k, 0)}
    delta["info"] = delta.get("info", 0) - 1  # the second INFO itself
    delta = {k: v for k, v in delta.items() if v}
    unique = pairs["customer_id"].nunique() + pairs["terminal_id"].nunique()
    assert delta == {"hmget": unique}
    assert len(out) == 500
    assert out.loc[pairs["customer_id"] == "absent", "customer_nb_tx_1d"].isna().all()
    pool.disconnect()


def test_cached_reader_reads_new_entities_in_one_round_trip(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entities not cached come whole with the stamps; a changed one costs a second trip."""
    store, fast = repo.store, repo.fast
    now = pd.Timestamp.now(tz="UTC").floor("s")
    first = repo.events["timestamp"].min() - pd.Timedelta(days=1)
    store.materialize(start_date=first.to_pydatetime(), end_date=now.to_pydatetime())
    tids = list(repo.terminals.index[:20])
    trips: list[int] = []
    real = online_store.execute

    def counting(*args: Any, **kwargs: Any) -> Any:
        trips.append(len(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(online_store, "execute", counting)
    reader = CachedViewReader(fast, TERMINAL_VIEW, TERMINAL_NAMES)
    reader.read(tids)
    assert reader.reads == len(tids)
    assert trips == [1 + len(tids)]  # the stamps and every row, together
    newer = _rows(repo.terminals, "terminal_id", tids[:3], now + pd.Timedelta(hours=2))
    store.write_to_online_store(TERMINAL_VIEW, newer)
    trips.clear()
    reader.read(tids)
    assert trips == [1, 3]  # the stamps, then the three changed rows
    full = fast.read_arrays({"terminal_id": tids}, TERMINAL_NAMES)
    np.testing.assert_array_equal(reader.read(tids)[0], full.values)
