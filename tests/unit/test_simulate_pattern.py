"""The fraud-pattern change option of the simulator (scenario 4, night card testing)."""

from __future__ import annotations

import pandas as pd
import pytest

from fraudstream.simulate import (
    SCENARIO4_AMOUNT_RANGE,
    SCENARIO4_CUSTOMERS_PER_DAY,
    SCENARIO4_DAYS,
    SCENARIO4_SECONDS,
    SCENARIO4_TX_PER_DAY,
    SimulationError,
    simulate,
)

pytestmark = pytest.mark.unit

DAYS = 20


def sim(pattern_change_day: int | None = None) -> pd.DataFrame:
    return simulate(120, 240, DAYS, "2026-01-01", 9, pattern_change_day=pattern_change_day)


COLUMNS = ["timestamp", "customer_id", "terminal_id", "amount", "is_fraud", "fraud_scenario"]


def test_without_the_option_nothing_changes_and_with_it_only_scenario_4_is_added() -> None:
    plain = sim()
    assert plain.equals(simulate(120, 240, DAYS, "2026-01-01", 9))
    changed = sim(12)
    others = changed[changed["fraud_scenario"] != 4].drop(columns="transaction_id")
    pd.testing.assert_frame_equal(
        others.reset_index(drop=True), plain.drop(columns="transaction_id")[COLUMNS]
    )
    assert changed["transaction_id"].tolist() == list(range(len(changed)))
    assert changed["timestamp"].is_monotonic_increasing


def test_scenario_4_is_small_night_fraud_from_the_change_day_on() -> None:
    changed = sim(12)
    new = changed[changed["fraud_scenario"] == 4]
    start = pd.Timestamp("2026-01-01", tz="UTC")
    days = (new["timestamp"] - start).dt.days
    seconds = (new["timestamp"] - new["timestamp"].dt.floor("D")).dt.total_seconds()
    assert (new["is_fraud"] == 1).all()
    assert days.min() == 12 and days.max() == DAYS - 1
    assert seconds.between(*SCENARIO4_SECONDS).all()
    assert new["amount"].between(*SCENARIO4_AMOUNT_RANGE).all()
    # every compromised customer: SCENARIO4_TX_PER_DAY a day over SCENARIO4_DAYS days (cut at
    # the end of the simulation)
    per_day = new.groupby([days, new["customer_id"]]).size()
    assert (per_day % SCENARIO4_TX_PER_DAY == 0).all()
    assert len(new) <= (DAYS - 12) * SCENARIO4_CUSTOMERS_PER_DAY * SCENARIO4_DAYS * 3


@pytest.mark.parametrize("day", [-1, 20, 1.5])
def test_a_change_day_outside_the_simulation_is_refused(day: object) -> None:
    with pytest.raises(SimulationError, match="pattern_change_day"):
        sim(day)  # type: ignore[arg-type]
