"""The stream's incremental path equals the batch backfill, whatever the micro-batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudstream.features import (
    CUSTOMER_FEATURES,
    CUSTOMER_HISTORY_MS,
    CUSTOMER_STATE_MS,
    LATE_MARGIN_MS,
    MS_PER_DAY,
    CustomerState,
    advance_customers,
    customer_features,
    replaced_entries,
    to_ms,
    transaction_digests,
    with_flags,
)
from fraudstream.schema import validate_frame
from fraudstream.simulate import simulate

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return validate_frame(
        simulate(customers=120, terminals=240, days=50, seed=2), keep=("is_fraud",)
    )


def advance(states: dict[str, CustomerState], batch: pd.DataFrame) -> pd.DataFrame:
    """Features of ``batch`` given ``states`` (updated in place): the stream's step."""
    customers, codes = np.unique(batch["customer_id"].to_numpy(dtype=object), return_inverse=True)
    out, nxt = advance_customers(
        [states.get(c, CustomerState.empty()) for c in customers],
        codes.astype(np.int64),
        to_ms(batch["timestamp"]),
        batch["amount"].to_numpy(np.float64),
        transaction_digests(batch["transaction_id"].astype(str).tolist()),
    )
    states.update(zip(customers, nxt, strict=True))
    return pd.DataFrame(out, index=batch.index)[[f.name for f in CUSTOMER_FEATURES]]


def replay(events: pd.DataFrame, cuts: list[int]) -> tuple[pd.DataFrame, int]:
    """Feed ``events`` through the incremental path in batches ending at ``cuts``."""
    states: dict[str, CustomerState] = {}
    parts, largest = [], 0
    for lo, hi in zip([0, *cuts], [*cuts, len(events)], strict=True):
        batch = events.iloc[lo:hi]
        if batch.empty:
            continue
        parts.append(advance(states, batch))
        largest = max(largest, sum(len(s) for s in states.values()))
    return pd.concat(parts), largest


def timestamp_cuts(events: pd.DataFrame, raw: list[int]) -> list[int]:
    """Batch ends moved off equal timestamps (a tie split across batches cannot see ahead)."""
    t = events["timestamp"].to_numpy()
    out = []
    for c in sorted(set(raw)):
        while 0 < c < len(t) and t[c] == t[c - 1]:
            c += 1
        out.append(c)
    return sorted(set(out))


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=12000), min_size=1, max_size=60))
def test_any_batching_equals_the_backfill(events: pd.DataFrame, raw_cuts: list[int]) -> None:
    cuts = timestamp_cuts(events, [c % len(events) for c in raw_cuts])
    streamed, _ = replay(events, cuts)
    batch = customer_features(events)
    np.testing.assert_allclose(streamed.to_numpy(float), batch.to_numpy(float), rtol=0, atol=1e-9)


def test_history_stays_bounded() -> None:
    """After 200 days of events, the state holds each customer's last 120 days and the
    margin for late events (7), no more."""
    long = validate_frame(
        simulate(customers=40, terminals=80, days=200, seed=4), keep=("is_fraud",)
    )
    cuts = list(range(300, len(long), 300))
    streamed, largest = replay(long, cuts)
    np.testing.assert_allclose(
        streamed.to_numpy(float), customer_features(long).to_numpy(float), rtol=0, atol=1e-9
    )
    ms = to_ms(long["timestamp"])
    latest = pd.Series(ms).groupby(long["customer_id"].to_numpy()).transform("max").to_numpy()
    needed = int((ms > latest - CUSTOMER_STATE_MS).sum())
    assert largest <= needed + 300  # never more than the window plus one batch
    assert largest < 0.75 * len(long)


def test_prune_keeps_exactly_the_window_and_the_late_margin() -> None:
    span = CUSTOMER_STATE_MS
    t0 = 1_800_000_000_000
    state = CustomerState(
        np.array([t0 - span, t0 - span + 1000], dtype=np.int64),
        np.array([1.0, 2.0]),
        np.arange(2, dtype=np.uint64),
        np.zeros(2, bool),
    )
    _, [kept] = advance_customers(  # the next state after one transaction at t0
        [state],
        np.zeros(1, np.int64),
        np.array([t0], dtype=np.int64),
        np.array([3.0]),
        np.array([2], dtype=np.uint64),
    )
    assert kept.amount.tolist() == [2.0, 3.0]
    assert kept.big is not None and len(kept.big) == 2


def test_a_replay_scores_as_the_first_time(events: pd.DataFrame) -> None:
    """A batch seen again (a worker restarted before its commit) gets the same features."""
    states: dict[str, CustomerState] = {}
    first = advance(states, events.iloc[:3000])
    second = advance(states, events.iloc[2500:3000])
    np.testing.assert_allclose(
        second.to_numpy(float), first.iloc[2500:].to_numpy(float), rtol=0, atol=1e-9
    )


def test_an_id_seen_before_but_later_in_time_is_a_new_transaction(
    events: pd.DataFrame,
) -> None:
    """A replay carries its original time; the same id after the customer's latest
    transaction is kept as a new one (as the history in Redis keeps it: its member differs)."""
    states: dict[str, CustomerState] = {}
    first = events.iloc[:200]
    advance(states, first)
    again = first.iloc[[0]].copy()
    customer = again["customer_id"].iloc[0]
    latest = states[customer].ms[-1]
    again["timestamp"] = pd.Timestamp(int(latest) + 60_000, unit="ms", tz="UTC")
    digest = transaction_digests([str(again["transaction_id"].iloc[0])])[0]
    assert int((states[customer].ids == digest).sum()) == 1
    advance(states, again)
    assert int((states[customer].ids == digest).sum()) == 2


def test_an_empty_batch_changes_nothing() -> None:
    out, nxt = advance_customers(
        [],
        np.empty(0, np.int64),
        np.empty(0, np.int64),
        np.empty(0, np.float64),
        np.empty(0, np.uint64),
    )
    assert nxt == []
    assert all(len(v) == 0 for v in out.values())


def test_late_events_match_the_backfill(events: pd.DataFrame) -> None:
    """Events arriving out of time order still get the backfill's values for what they see."""
    shuffled = events.iloc[:4000].sample(frac=1.0, random_state=3)
    states: dict[str, CustomerState] = {}
    parts = [advance(states, shuffled.iloc[i : i + 250]) for i in range(0, 4000, 250)]
    # each batch's events equal the backfill over every event that arrived up to that batch
    for i, part in zip(range(0, 4000, 250), parts, strict=True):
        expected = customer_features(shuffled.iloc[: i + 250]).loc[part.index]
        np.testing.assert_allclose(
            part.to_numpy(float), expected.to_numpy(float), rtol=0, atol=1e-9
        )


def test_state_read_back_without_flags_continues_exactly(events: pd.DataFrame) -> None:
    """A worker that restarts reads states without flags: its features do not change."""
    kept: dict[str, CustomerState] = {}
    advance(kept, events.iloc[:5000])
    reread = {c: CustomerState(s.ms, s.amount, s.ids, None) for c, s in kept.items()}
    after = events.iloc[5000:7000]
    np.testing.assert_allclose(
        advance(reread, after).to_numpy(float),
        customer_features(events.iloc[:7000]).loc[after.index].to_numpy(float),
        rtol=0,
        atol=1e-9,
    )


def test_flags_read_back_equal_the_flags_the_stream_kept(events: pd.DataFrame) -> None:
    """``with_flags`` (a state read from Redis) recomputes exactly the big-amount flags the
    stream's kernel kept for the same transactions."""
    kept: dict[str, CustomerState] = {}
    for start in range(0, 6000, 500):
        advance(kept, events.iloc[start : start + 500])
    states = list(kept.values())
    reread = with_flags([CustomerState(s.ms, s.amount, s.ids, None) for s in states])
    assert sum(int(s.big.sum()) for s in states if s.big is not None) > 0  # some are big
    for before, after in zip(states, reread, strict=True):
        np.testing.assert_array_equal(after.big, before.big)


@pytest.mark.parametrize("days_late", [0.04, 5, 7])
def test_a_late_event_within_the_margin_finds_its_whole_history(days_late: float) -> None:
    """One customer, a transaction a day for 200 days streamed in order (its state pruned
    all along), then one event ``days_late`` before the latest: the backfill's values."""
    t0 = 1_700_000_000_000
    days = 200
    ms = t0 + np.arange(days, dtype=np.int64) * MS_PER_DAY
    amount = 10.0 + (np.arange(days) % 13) * 7.5
    ids = transaction_digests([f"t{i}" for i in range(days)])
    state = CustomerState.empty()
    for i in range(days):
        _, (state,) = advance_customers(
            [state], np.zeros(1, np.int64), ms[i : i + 1], amount[i : i + 1], ids[i : i + 1]
        )
    late_ms = np.array([ms[-1] - int(days_late * MS_PER_DAY) + 1], dtype=np.int64)
    assert late_ms[0] >= ms[-1] - LATE_MARGIN_MS
    got, _ = advance_customers(
        [state], np.zeros(1, np.int64), late_ms, np.array([55.0]), transaction_digests(["late"])
    )
    everything = pd.DataFrame(
        {
            "customer_id": "c",
            "timestamp": pd.to_datetime(np.r_[ms, late_ms], unit="ms", utc=True),
            "amount": np.r_[amount, 55.0],
        }
    ).sort_values("timestamp", kind="stable")
    want = customer_features(everything).loc[days]  # the late row, by its original index
    for name, value in got.items():
        np.testing.assert_allclose(value[0], want[name], rtol=0, atol=1e-9, err_msg=name)
    assert CUSTOMER_STATE_MS - CUSTOMER_HISTORY_MS == LATE_MARGIN_MS


def test_replaced_entries_are_the_earlier_copies_of_changed_replays() -> None:
    ms = np.array([1000, 2000, 3000], dtype=np.int64)
    ids = transaction_digests(["a", "b", "c"])
    state = CustomerState(ms, np.array([1.0, 2.0, 3.0]), ids, None)
    one = np.zeros(1, np.int64)

    def entries(s: CustomerState) -> set[tuple[int, float, int]]:
        return set(zip(s.ms.tolist(), s.amount.tolist(), s.ids.tolist(), strict=True))

    def replaced(t: int, amount: float, name: str) -> list[CustomerState] | None:
        args = (one, np.array([t]), np.array([amount]), transaction_digests([name]))
        got = replaced_entries([state], *args)
        # exactly the entries advance_customers drops from the state
        _, (after,) = advance_customers([state], *args)
        assert entries(state) - entries(after) == (set() if got is None else entries(got[0]))
        return got

    assert replaced(2000, 2.0, "b") is None  # the same entry again
    assert replaced(4000, 9.0, "b") is None  # later than the state: a new transaction
    assert replaced(2500, 5.0, "x") is None  # a late, new transaction
    (changed,) = replaced(2000, 7.0, "b")  # type: ignore[misc]
    assert (changed.ms.tolist(), changed.amount.tolist()) == ([2000], [2.0])
    (moved,) = replaced(1500, 2.0, "b")  # type: ignore[misc]
    assert (moved.ms.tolist(), moved.ids.tolist()) == ([2000], [int(ids[1])])
