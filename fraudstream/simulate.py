"""A vectorised simulator of labelled card transactions (the handbook's generative process).

The process follows *Reproducible Machine Learning for Credit Card Fraud Detection —
Practical Handbook* (Le Borgne et al.), re-implemented with numpy and one seeded
``numpy.random.Generator(PCG64(seed))``:

- Customers sit at uniform points of a 100×100 grid, with a mean amount ~ U(5, 100),
  std = mean / 2 and a mean number of transactions per day ~ U(0, 4). Terminals sit at
  uniform points of the same grid. A customer uses only terminals at a distance < 5,
  chosen uniformly; a customer with none never transacts.
- Per day, a customer makes Poisson(rate) transactions. Second of day ~ N(43200, 20000),
  floored to a whole second; draws outside [0, 86400) are dropped (as in the handbook).
  Amount ~ N(mean, std); a negative draw is redrawn as U(0, 2·mean); amounts are rounded
  to cents and an amount that rounds to 0.00 is **clipped to 0.01**, so every amount is > 0.
- Fraud, applied in this order (a later scenario overrides the scenario code):
  1. every amount > 220 is fraud;
  2. every day (each of the ``days`` days) two random terminals are compromised: all their
     transactions on that day and the 27 following days are fraud;
  3. every day three random customers are compromised: over that day and the 13 following
     days, one third (``floor(n / 3)``, chosen uniformly) of their ``n`` transactions get
     their amount multiplied by 5 and are fraud. Days are processed in order, so a
     transaction picked by two overlapping compromises is multiplied twice (as in the
     handbook).

Optional fraud-pattern change (``pattern_change_day``, default off; without it the output
is unchanged): from that day on, a new scenario 4, "night card testing", that a model trained
before the change has never seen: every day :data:`SCENARIO4_CUSTOMERS_PER_DAY` random
customers (with a terminal in reach) are compromised, and on that day and the
:data:`SCENARIO4_DAYS` - 1 following days each of them makes :data:`SCENARIO4_TX_PER_DAY`
extra small transactions (amount ~ U(:data:`SCENARIO4_AMOUNT_RANGE`)) between 01:00 and
05:00 at random terminals in reach, all fraud. Its draws come from a generator of their own
(``PCG64([seed, 4])``), so the other scenarios draw exactly as without the change; the extra
transactions are merged in time order and the ids are renumbered.

``start`` is floored to midnight UTC (naive values are taken as UTC); the timestamps are
``start + day + second of day``, whole seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from fraudstream.errors import FraudstreamError
from fraudstream.outputs import write_atomically
from fraudstream.schema import MIN_TIMESTAMP

logger = logging.getLogger(__name__)

GRID_SIZE = 100.0
RADIUS = 5.0
SECONDS_PER_DAY = 86_400
TIME_MEAN = SECONDS_PER_DAY / 2
TIME_STD = 20_000.0
AMOUNT_MEAN_RANGE = (5.0, 100.0)
TX_PER_DAY_RANGE = (0.0, 4.0)
MIN_AMOUNT = 0.01
SCENARIO1_THRESHOLD = 220.0
SCENARIO2_TERMINALS_PER_DAY = 2
SCENARIO2_DAYS = 28
SCENARIO3_CUSTOMERS_PER_DAY = 3
SCENARIO3_DAYS = 14
SCENARIO3_MULTIPLIER = 5.0
SCENARIO4_CUSTOMERS_PER_DAY = 4
SCENARIO4_DAYS = 4
SCENARIO4_TX_PER_DAY = 3
SCENARIO4_AMOUNT_RANGE = (1.0, 10.0)
SCENARIO4_SECONDS = (3_600, 18_000)  # 01:00 to 05:00

TRANSACTION_COLUMNS = (
    "transaction_id",
    "timestamp",
    "customer_id",
    "terminal_id",
    "amount",
    "is_fraud",
    "fraud_scenario",
)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class SimulationError(FraudstreamError, ValueError):
    """An invalid simulator argument (a ``ValueError``, reported to users as a message)."""


@dataclass(frozen=True)
class Simulation:
    """A simulation's transactions together with the geometry and compromises behind them.

    ``customers``: customer_id, x, y, mean_amount, std_amount, mean_nb_tx_per_day,
    nb_terminals (terminals within the radius). ``terminals``: terminal_id, x, y.
    ``compromised_terminals`` (day, terminal_id) and ``compromised_customers``
    (day, customer_id): one row per compromise, ``day`` counted from ``start``.
    """

    transactions: pd.DataFrame
    customers: pd.DataFrame
    terminals: pd.DataFrame
    compromised_terminals: pd.DataFrame
    compromised_customers: pd.DataFrame
    start: pd.Timestamp


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise SimulationError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise SimulationError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _parse_start(start: date | datetime | str) -> pd.Timestamp:
    if not isinstance(start, date | datetime | str):
        raise SimulationError(f"start must be a date, datetime or ISO string, got {start!r}")
    try:
        ts = pd.Timestamp(start)
    except (ValueError, TypeError) as exc:
        raise SimulationError(f"start {start!r} is not a valid date: {exc}") from None
    if ts is pd.NaT:
        raise SimulationError(f"start {start!r} is not a valid date")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if ts < MIN_TIMESTAMP:
        raise SimulationError(f"start {start!r} is before {MIN_TIMESTAMP.date()}")
    return ts.floor("D")


def _check_end(start: pd.Timestamp, days: int) -> None:
    """Refuse a simulation that would run past the last day a timestamp holds."""
    last = (pd.Timestamp.max.tz_localize("UTC") - pd.Timedelta(days=1)).date()
    room = (last - start.date()).days + 1
    if room < 1:
        raise SimulationError(f"start {start.date()} is after {last}")
    if days > room:
        raise SimulationError(
            f"days {days} from start {start.date()} run past {last} (at most {room} from it)"
        )


def terminals_within_radius(
    customer_xy: FloatArray, terminal_xy: FloatArray, radius: float = RADIUS
) -> tuple[IntArray, IntArray]:
    """Terminals at distance < ``radius`` of each customer, as CSR ``(indptr, terminal ids)``.

    Row ``c`` is ``ids[indptr[c]:indptr[c + 1]]``, ascending. Customers are processed in
    x-sorted chunks against the x-sorted terminals within reach, so memory stays small.
    """
    n_cust = len(customer_xy)
    r2 = radius * radius
    t_order = np.argsort(terminal_xy[:, 0], kind="stable")
    t_x = terminal_xy[t_order, 0]
    t_y = terminal_xy[t_order, 1]
    c_order = np.argsort(customer_xy[:, 0], kind="stable")
    rows: list[IntArray] = []
    cols: list[IntArray] = []
    chunk = 256
    for lo in range(0, n_cust, chunk):
        cid = c_order[lo : lo + chunk]
        cx = customer_xy[cid, 0]
        cy = customer_xy[cid, 1]
        a = int(np.searchsorted(t_x, cx.min() - radius, side="left"))
        b = int(np.searchsorted(t_x, cx.max() + radius, side="right"))
        if a >= b:
            continue
        dx = cx[:, None] - t_x[None, a:b]
        dy = cy[:, None] - t_y[None, a:b]
        r, c = np.nonzero(dx * dx + dy * dy < r2)
        rows.append(cid[r].astype(np.int64))
        cols.append(t_order[a + c].astype(np.int64))
    if rows:
        row = np.concatenate(rows)
        col = np.concatenate(cols)
    else:
        row = np.empty(0, np.int64)
        col = np.empty(0, np.int64)
    order = np.lexsort((col, row))
    indptr = np.zeros(n_cust + 1, np.int64)
    np.cumsum(np.bincount(row, minlength=n_cust), out=indptr[1:])
    return indptr, col[order]


def _empty_transactions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": pd.Series(dtype="int64"),
            "timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
            "customer_id": pd.Series(dtype="int64"),
            "terminal_id": pd.Series(dtype="int64"),
            "amount": pd.Series(dtype="float64"),
            "is_fraud": pd.Series(dtype="int8"),
            "fraud_scenario": pd.Series(dtype="int8"),
        }
    )


def simulate_with_profiles(
    customers: int = 5000,
    terminals: int = 10000,
    days: int = 183,
    start: date | datetime | str = "2018-04-01",
    seed: int = 0,
    pattern_change_day: int | None = None,
) -> Simulation:
    """Simulate transactions and return them with the customer/terminal tables and compromises.

    Raises ``SimulationError`` (a ``ValueError``) for non-integer or non-positive counts,
    ``days < 1``, a negative seed, an unparsable ``start``, a ``start`` before 2000-01-01
    or ``days`` that run past 2262-04-10 (pandas' last day) or a ``pattern_change_day``
    outside ``[0, days)``.
    """
    n_cust = _check_count("customers", customers, 1)
    n_term = _check_count("terminals", terminals, 1)
    n_days = _check_count("days", days, 1)
    seed = _check_count("seed", seed, 0)
    if pattern_change_day is not None:
        _check_count("pattern_change_day", pattern_change_day, 0)
        if pattern_change_day >= n_days:
            raise SimulationError(
                f"pattern_change_day must be < days ({n_days}), got {pattern_change_day}"
            )
    start_ts = _parse_start(start)
    _check_end(start_ts, n_days)
    rng = np.random.Generator(np.random.PCG64(seed))

    # Profiles.
    cust_xy = rng.uniform(0.0, GRID_SIZE, size=(n_cust, 2))
    mean_amount = rng.uniform(*AMOUNT_MEAN_RANGE, size=n_cust)
    std_amount = mean_amount / 2.0
    rate = rng.uniform(*TX_PER_DAY_RANGE, size=n_cust)
    term_xy = rng.uniform(0.0, GRID_SIZE, size=(n_term, 2))
    indptr, neighbours = terminals_within_radius(cust_xy, term_xy)
    n_avail = np.diff(indptr)

    # Transactions, generated customer-major then day-major.
    counts = rng.poisson(rate[:, None], size=(n_cust, n_days))
    counts[n_avail == 0] = 0
    flat = counts.ravel()
    n_draw = int(flat.sum())
    cell = np.repeat(np.arange(n_cust * n_days, dtype=np.int64), flat)
    cust = cell // n_days
    day = cell % n_days
    seconds = np.floor(rng.normal(TIME_MEAN, TIME_STD, size=n_draw)).astype(np.int64)
    keep = (seconds >= 0) & (seconds < SECONDS_PER_DAY)
    cust, day, seconds = cust[keep], day[keep], seconds[keep]
    n = len(cust)

    mu = mean_amount[cust]
    amount = rng.normal(mu, std_amount[cust])
    neg = amount < 0
    amount[neg] = rng.uniform(0.0, 2.0 * mu[neg])
    amount = np.maximum(np.round(amount, 2), MIN_AMOUNT)
    pick = np.floor(rng.random(n) * n_avail[cust]).astype(np.int64)
    terminal = neighbours[indptr[cust] + np.minimum(pick, n_avail[cust] - 1)]

    # Scenario 1: large amounts.
    scenario = np.zeros(n, np.int8)
    scenario[amount > SCENARIO1_THRESHOLD] = 1

    # Scenario 2: compromised terminals, active from the compromise day for 28 days.
    k2 = min(SCENARIO2_TERMINALS_PER_DAY, n_term)
    comp_terms = np.stack([rng.choice(n_term, size=k2, replace=False) for _ in range(n_days)])
    comp_days = np.repeat(np.arange(n_days), k2)
    edges = np.zeros((n_term, n_days + 1), np.int32)
    np.add.at(edges, (comp_terms.ravel(), comp_days), 1)
    np.add.at(edges, (comp_terms.ravel(), np.minimum(comp_days + SCENARIO2_DAYS, n_days)), -1)
    active = np.cumsum(edges, axis=1) > 0  # (terminal, day) inside some 28-day window
    scenario[active[terminal, day]] = 2

    # Scenario 3: compromised customers; a third of their next 14 days' transactions.
    k3 = min(SCENARIO3_CUSTOMERS_PER_DAY, n_cust)
    comp_custs = np.stack([rng.choice(n_cust, size=k3, replace=False) for _ in range(n_days)])
    cust_ptr = np.searchsorted(cust, np.arange(n_cust + 1))  # cust is sorted (customer-major)
    for d in range(n_days):
        idx_parts = []
        for c in comp_custs[d]:
            lo, hi = int(cust_ptr[c]), int(cust_ptr[c + 1])
            days_c = day[lo:hi]
            a = lo + int(np.searchsorted(days_c, d, side="left"))
            b = lo + int(np.searchsorted(days_c, d + SCENARIO3_DAYS, side="left"))
            idx_parts.append(np.arange(a, b))
        idx = np.concatenate(idx_parts) if idx_parts else np.empty(0, np.int64)
        k = len(idx) // 3
        if k:
            chosen = rng.choice(idx, size=k, replace=False)
            amount[chosen] *= SCENARIO3_MULTIPLIER
            scenario[chosen] = 3
    amount = np.round(amount, 2)

    if pattern_change_day is not None:
        extra = _night_card_testing(seed, pattern_change_day, n_days, indptr, neighbours)
        cust = np.concatenate([cust, extra[0]])
        day = np.concatenate([day, extra[1]])
        seconds = np.concatenate([seconds, extra[2]])
        amount = np.concatenate([amount, extra[3]])
        terminal = np.concatenate([terminal, extra[4]])
        scenario = np.concatenate([scenario, np.full(len(extra[0]), 4, np.int8)])
        n = len(cust)

    # Sort by time (stable: ties keep generation order) and assemble.
    t = day * SECONDS_PER_DAY + seconds
    order = np.argsort(t, kind="stable")
    start_ns = int(start_ts.value)
    ts_ns = start_ns + t[order] * 1_000_000_000
    scenario = scenario[order]
    transactions = pd.DataFrame(
        {
            "transaction_id": np.arange(n, dtype=np.int64),
            "timestamp": pd.to_datetime(ts_ns, unit="ns", utc=True),
            "customer_id": cust[order],
            "terminal_id": terminal[order],
            "amount": amount[order],
            "is_fraud": (scenario > 0).astype(np.int8),
            "fraud_scenario": scenario,
        }
    )
    if n == 0:
        transactions = _empty_transactions()

    customers_df = pd.DataFrame(
        {
            "customer_id": np.arange(n_cust, dtype=np.int64),
            "x": cust_xy[:, 0],
            "y": cust_xy[:, 1],
            "mean_amount": mean_amount,
            "std_amount": std_amount,
            "mean_nb_tx_per_day": rate,
            "nb_terminals": n_avail,
        }
    )
    terminals_df = pd.DataFrame(
        {"terminal_id": np.arange(n_term, dtype=np.int64), "x": term_xy[:, 0], "y": term_xy[:, 1]}
    )
    logger.info(
        "simulated %d transactions (%d customers, %d terminals, %d days from %s, seed %d), "
        "fraud rate %.4f",
        n,
        n_cust,
        n_term,
        n_days,
        start_ts.date(),
        seed,
        float((scenario > 0).mean()) if n else 0.0,
    )
    return Simulation(
        transactions=transactions,
        customers=customers_df,
        terminals=terminals_df,
        compromised_terminals=pd.DataFrame(
            {"day": comp_days.astype(np.int64), "terminal_id": comp_terms.ravel().astype(np.int64)}
        ),
        compromised_customers=pd.DataFrame(
            {
                "day": np.repeat(np.arange(n_days, dtype=np.int64), k3),
                "customer_id": comp_custs.ravel().astype(np.int64),
            }
        ),
        start=start_ts,
    )


def _night_card_testing(
    seed: int, first_day: int, n_days: int, indptr: IntArray, neighbours: IntArray
) -> tuple[IntArray, IntArray, IntArray, FloatArray, IntArray]:
    """Scenario 4's extra fraudulent transactions: customer, day, second, amount, terminal."""
    rng = np.random.Generator(np.random.PCG64([seed, 4]))
    n_avail = np.diff(indptr)
    reachable = np.flatnonzero(n_avail > 0)
    parts: list[tuple[int, int]] = []
    k = min(SCENARIO4_CUSTOMERS_PER_DAY, len(reachable))
    for d in range(first_day, n_days):
        for c in rng.choice(reachable, size=k, replace=False):
            for active in range(d, min(d + SCENARIO4_DAYS, n_days)):
                parts.extend([(int(c), active)] * SCENARIO4_TX_PER_DAY)
    if not parts:
        empty = np.empty(0, np.int64)
        return empty, empty, empty, np.empty(0), empty
    cust = np.array([c for c, _ in parts], dtype=np.int64)
    day = np.array([d for _, d in parts], dtype=np.int64)
    seconds = rng.integers(*SCENARIO4_SECONDS, size=len(parts), dtype=np.int64)
    amount = np.round(rng.uniform(*SCENARIO4_AMOUNT_RANGE, size=len(parts)), 2)
    pick = np.floor(rng.random(len(parts)) * n_avail[cust]).astype(np.int64)
    terminal = neighbours[indptr[cust] + np.minimum(pick, n_avail[cust] - 1)]
    return cust, day, seconds, amount, terminal


def simulate(
    customers: int = 5000,
    terminals: int = 10000,
    days: int = 183,
    start: date | datetime | str = "2018-04-01",
    seed: int = 0,
    pattern_change_day: int | None = None,
) -> pd.DataFrame:
    """Simulate labelled card transactions, sorted by time.

    Columns: transaction_id (int64, 0.., increasing with time), timestamp
    (datetime64[ns, UTC]), customer_id, terminal_id (int64), amount (float64, > 0),
    is_fraud (int8 0/1), fraud_scenario (int8 0..3; 4 with ``pattern_change_day``).
    Same arguments → identical output.
    """
    sim = simulate_with_profiles(customers, terminals, days, start, seed, pattern_change_day)
    return sim.transactions


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` to Parquet at ``path`` through a temporary file (parent directories
    created); return the path."""
    out = write_atomically(Path(path), lambda tmp: df.to_parquet(tmp, index=False))
    logger.info("wrote %d rows to %s", len(df), out)
    return out
