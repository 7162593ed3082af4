"""The transaction simulator: determinism, schema, geometry, fraud rules and data shape."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from fraudstream.errors import FraudstreamError
from fraudstream.simulate import (
    TRANSACTION_COLUMNS,
    Simulation,
    SimulationError,
    simulate,
    simulate_with_profiles,
    write_parquet,
)

DTYPES = {
    "transaction_id": "int64",
    "timestamp": "datetime64[ns, UTC]",
    "customer_id": "int64",
    "terminal_id": "int64",
    "amount": "float64",
    "is_fraud": "int8",
    "fraud_scenario": "int8",
}


@pytest.fixture(scope="module")
def full() -> tuple[Simulation, float]:
    """The handbook-size simulation (5,000 customers, 10,000 terminals, 183 days), timed."""
    t0 = time.perf_counter()
    sim = simulate_with_profiles(seed=0)
    return sim, time.perf_counter() - t0


@pytest.fixture(scope="module")
def small() -> Simulation:
    return simulate_with_profiles(customers=300, terminals=2000, days=60, seed=7)


def day_index(sim: Simulation) -> np.ndarray:
    seconds = (sim.transactions["timestamp"] - sim.start).dt.total_seconds().to_numpy()
    return (seconds // 86400).astype(np.int64)


@pytest.mark.unit
def test_same_seed_identical_other_seed_different() -> None:
    a = simulate(customers=200, terminals=400, days=20, seed=3)
    b = simulate(customers=200, terminals=400, days=20, seed=3)
    c = simulate(customers=200, terminals=400, days=20, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) > 0
    assert not (len(a) == len(c) and a.equals(c))


@pytest.mark.unit
def test_schema_dtypes_and_utc(small: Simulation) -> None:
    df = small.transactions
    assert tuple(df.columns) == TRANSACTION_COLUMNS
    assert {k: str(v) for k, v in df.dtypes.items()} == DTYPES
    assert str(df["timestamp"].dt.tz) == "UTC"
    assert df["timestamp"].min() >= pd.Timestamp("2018-04-01", tz="UTC")
    assert df["timestamp"].max() < pd.Timestamp("2018-04-01", tz="UTC") + pd.Timedelta(days=60)
    assert set(df["is_fraud"].unique()) <= {0, 1}
    assert set(df["fraud_scenario"].unique()) <= {0, 1, 2, 3}
    assert df.index.equals(pd.RangeIndex(len(df)))


@pytest.mark.unit
def test_amounts_positive_and_in_cents(full: tuple[Simulation, float]) -> None:
    amount = full[0].transactions["amount"].to_numpy()
    assert (amount > 0).all()
    assert amount.min() >= 0.01
    assert np.allclose(amount, np.round(amount, 2), rtol=0, atol=1e-9)


@pytest.mark.unit
def test_ids_unique_and_increasing_with_time(full: tuple[Simulation, float]) -> None:
    df = full[0].transactions
    ids = df["transaction_id"].to_numpy()
    assert (ids == np.arange(len(df))).all()
    assert df["timestamp"].is_monotonic_increasing


@pytest.mark.unit
def test_times_of_day_around_noon(full: tuple[Simulation, float]) -> None:
    ts = full[0].transactions["timestamp"]
    sec = (ts.dt.hour * 3600 + ts.dt.minute * 60 + ts.dt.second).to_numpy()
    assert abs(sec.mean() - 43200) < 300
    assert 18000 < sec.std() < 20000  # N(43200, 20000) truncated to one day


@pytest.mark.unit
def test_customers_use_only_terminals_within_radius(small: Simulation) -> None:
    cust = small.customers[["x", "y"]].to_numpy()
    term = small.terminals[["x", "y"]].to_numpy()
    d2 = ((cust[:, None, :] - term[None, :, :]) ** 2).sum(axis=2)
    within = d2 < 25.0
    assert (small.customers["nb_terminals"].to_numpy() == within.sum(axis=1)).all()
    tx = small.transactions
    c, t = tx["customer_id"].to_numpy(), tx["terminal_id"].to_numpy()
    assert within[c, t].all()
    # Each customer spreads over many of its terminals, not one.
    used = tx.groupby("customer_id")["terminal_id"].nunique()
    assert used.median() > 10


@pytest.mark.unit
def test_distance_rule_at_full_size(full: tuple[Simulation, float]) -> None:
    sim = full[0]
    tx = sim.transactions
    cxy = sim.customers[["x", "y"]].to_numpy()[tx["customer_id"].to_numpy()]
    txy = sim.terminals[["x", "y"]].to_numpy()[tx["terminal_id"].to_numpy()]
    assert (((cxy - txy) ** 2).sum(axis=1) < 25.0).all()


@pytest.mark.unit
def test_customer_without_terminals_does_not_transact() -> None:
    sim = simulate_with_profiles(customers=200, terminals=5, days=10, seed=1)
    lonely = sim.customers.loc[sim.customers["nb_terminals"] == 0, "customer_id"]
    assert len(lonely) > 0
    assert not sim.transactions["customer_id"].isin(lonely).any()


@pytest.mark.unit
def test_scenario_1_every_large_amount_is_fraud(full: tuple[Simulation, float]) -> None:
    df = full[0].transactions
    assert (df.loc[df["amount"] > 220, "is_fraud"] == 1).all()
    assert (df.loc[df["fraud_scenario"] == 1, "amount"] > 220).all()
    assert ((df["fraud_scenario"] > 0) == (df["is_fraud"] == 1)).all()


@pytest.mark.unit
def test_scenario_2_compromised_terminals_28_days(full: tuple[Simulation, float]) -> None:
    sim = full[0]
    df = sim.transactions
    day = day_index(sim)
    term = df["terminal_id"].to_numpy()
    n_days = int(day.max()) + 1
    active = np.zeros((len(sim.terminals), n_days), bool)
    for d, t in sim.compromised_terminals[["day", "terminal_id"]].itertuples(index=False):
        active[t, d : d + 28] = True
    assert (sim.compromised_terminals.groupby("day").size() == 2).all()
    in_window = active[term, day]
    scen = df["fraud_scenario"].to_numpy()
    assert in_window.sum() > 1000
    assert (df["is_fraud"].to_numpy()[in_window] == 1).all()
    assert np.isin(scen[in_window], [2, 3]).all()
    assert in_window[scen == 2].all()


@pytest.mark.unit
def test_scenario_3_compromised_customers_14_days(full: tuple[Simulation, float]) -> None:
    sim = full[0]
    df = sim.transactions
    day = day_index(sim)
    cust = df["customer_id"].to_numpy()
    scen3 = df["fraud_scenario"].to_numpy() == 3
    assert (sim.compromised_customers.groupby("day").size() == 3).all()
    ever = np.flatnonzero(np.isin(cust, sim.compromised_customers["customer_id"].to_numpy()))
    c, dd, s3 = cust[ever], day[ever], scen3[ever]
    covered = np.zeros(len(ever), bool)
    for d, group in sim.compromised_customers.groupby("day"):
        window = np.isin(c, group["customer_id"].to_numpy()) & (dd >= d) & (dd < d + 14)
        covered |= window
        assert s3[window].sum() >= window.sum() // 3
    assert covered[s3].all()
    assert scen3.sum() == s3.sum()  # no scenario-3 fraud outside compromised customers
    # Amounts are multiplied by 5: compare with each customer's mean amount.
    mean_amount = sim.customers["mean_amount"].to_numpy()[cust[scen3]]
    ratio = df["amount"].to_numpy()[scen3] / (5 * mean_amount)
    assert 0.85 < ratio.mean() < 1.3


@pytest.mark.unit
def test_start_variants_and_utc() -> None:
    kwargs = {"customers": 50, "terminals": 200, "days": 3, "seed": 2}
    base = simulate(start="2020-02-28", **kwargs)
    as_date = simulate(start=date(2020, 2, 28), **kwargs)
    pd.testing.assert_frame_equal(base, as_date)
    tz = timezone(timedelta(hours=2))
    # 01:00+02:00 on Feb 28 is 23:00 UTC on Feb 27, floored to that midnight.
    shifted = simulate(start=datetime(2020, 2, 28, 1, 0, tzinfo=tz), **kwargs)
    assert (base["timestamp"] - shifted["timestamp"] == pd.Timedelta(days=1)).all()
    assert base["timestamp"].min() >= pd.Timestamp("2020-02-28", tz="UTC")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"customers": 0}, "customers must be >= 1"),
        ({"terminals": -3}, "terminals must be >= 1"),
        ({"days": 0}, "days must be >= 1"),
        ({"customers": 1.5}, "customers must be an integer"),
        ({"days": True}, "days must be an integer"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"start": "not a date"}, "start 'not a date' is not a valid date"),
        ({"start": 20180401}, "start must be a date"),
        ({"start": "1500-01-01"}, "start '1500-01-01' is before 2000-01-01"),
        ({"start": "3000-01-01"}, "start 3000-01-01 is after 2262-04-10"),
        ({"start": "2262-04-01", "days": 11}, "days 11 from start 2262-04-01 run past 2262-04-10"),
    ],
)
def test_invalid_arguments_raise(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        simulate(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, SimulationError)
    assert isinstance(info.value, FraudstreamError)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("customers", "terminals", "days"),
    [(1, 1, 1), (10, 50, 3)],  # (no terminal in reach: no rows), a tiny world with rows
)
def test_tiny_and_empty_simulations_keep_schema(customers: int, terminals: int, days: int) -> None:
    df = simulate(customers=customers, terminals=terminals, days=days, seed=0)
    assert tuple(df.columns) == TRANSACTION_COLUMNS
    assert {k: str(v) for k, v in df.dtypes.items()} == DTYPES
    if customers > 1:
        assert len(df) > 0
        assert df["customer_id"].nunique() <= customers


@pytest.mark.unit
def test_write_parquet_round_trip(tmp_path, small: Simulation) -> None:
    path = write_parquet(small.transactions, tmp_path / "a" / "b" / "tx.parquet")
    assert path.exists()
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, small.transactions)


@pytest.mark.unit
def test_handbook_size_data_shape(full: tuple[Simulation, float]) -> None:
    sim, seconds = full
    df = sim.transactions
    assert seconds < 60  # measured ~0.6 s on the 2-core dev machine
    assert 0.007 <= df["is_fraud"].mean() <= 0.010
    per_day = len(df) / 183
    assert 9_000 <= per_day <= 11_000
    assert set(df["fraud_scenario"].unique()) == {0, 1, 2, 3}
    assert df["customer_id"].nunique() > 4_900
