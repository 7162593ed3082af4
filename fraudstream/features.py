"""Every feature of fraudstream, defined once and computed by one vectorised kernel.

Three families:

* **customer** features (real time), from the customer's own transactions only:
  count and mean amount in ``(t - w, t]`` (the current transaction and any other at the
  same instant included: the handbook's windows); the mean amount of the *earlier*
  transactions in ``(t - w, t)``; and how many earlier transactions in the last 14 days
  were large for the customer. :func:`customer_features` computes them for every row of
  an event table. The backfill calls it on the whole history; the stream calls it on the
  customer's recent history followed by the new events
  (:func:`customer_features_given_history`).
  Same code, same numbers.
* **terminal** features (label-based, labels usable only :data:`LABEL_DELAY_DAYS` after
  the transaction): count and fraud share of the terminal's transactions in
  ``(a - d - w, a - d]`` (the handbook's), and the fraud run that ends at the terminal's
  latest transaction with a usable label (its label, length and age). ``a`` is the anchor:
  the transaction time for the handbook definition (:func:`terminal_features`), or any
  instant, such as "now" for a refresh (:func:`terminal_snapshots`).
* **request** features, from the transaction itself and the customer features
  (:func:`request_features`): the amount, weekend and night flags (UTC) and the amount
  relative to the customer's earlier mean amounts.

All windows are exact: integer milliseconds since the epoch, binary search on a key that
orders rows by entity and then time. Missing values (no history) are NaN, which XGBoost
treats as missing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

MS_PER_DAY = 86_400_000
CUSTOMER_WINDOWS_DAYS: tuple[int, ...] = (1, 7, 30)
CUSTOMER_PREVIOUS_WINDOWS_DAYS: tuple[int, ...] = (30, 60, 120)
BIG_AMOUNT_RATIO = 3.0
BIG_AMOUNT_LOOKBACK_DAYS = 14
#: A big amount exceeds :data:`BIG_AMOUNT_RATIO` x the mean of this many earlier days.
BIG_BASE_DAYS = 30
TERMINAL_WINDOWS_DAYS: tuple[int, ...] = (1, 7, 30)
LABEL_DELAY_DAYS = 7
#: How much customer history the stream must keep to compute every customer feature.
CUSTOMER_HISTORY_MS = max(*CUSTOMER_WINDOWS_DAYS, *CUSTOMER_PREVIOUS_WINDOWS_DAYS) * MS_PER_DAY
#: How late an event may come (before its customer's latest transaction) and still find its
#: whole history: a customer's state keeps this much more than the longest window. An event
#: later than that is scored ``degraded`` (the scorer), its earliest windows possibly cut.
LATE_MARGIN_MS = 7 * MS_PER_DAY
#: What a customer's state keeps: the transactions after its latest one minus this.
CUSTOMER_STATE_MS = CUSTOMER_HISTORY_MS + LATE_MARGIN_MS

CUSTOMER_VIEW = "customer_features"
TERMINAL_VIEW = "terminal_features"
#: Offline (Parquet) file of each feature view, under ``<feature repo>/data/``.
OFFLINE_FILES = {
    CUSTOMER_VIEW: "customer_features.parquet",
    TERMINAL_VIEW: "terminal_features.parquet",
}
_VIEW_OF = {"customer": CUSTOMER_VIEW, "terminal": TERMINAL_VIEW}


@dataclass(frozen=True)
class Feature:
    """A feature: its name, where it comes from, and (request features) what it reads."""

    name: str
    source: str  # "customer" | "terminal" | "request"
    description: str
    dtype: str = "float64"  # "int64" for counts and flags
    needs: tuple[str, ...] = ()  # served features a request feature is computed from

    @property
    def feast_reference(self) -> str:
        """``view:feature`` for Feast features, ``request:name`` for request features."""
        view = _VIEW_OF.get(self.source)
        return f"{view}:{self.name}" if view else f"request:{self.name}"


def _customer_defs() -> list[Feature]:
    out = []
    for w in CUSTOMER_WINDOWS_DAYS:
        out.append(
            Feature(f"customer_nb_tx_{w}d", "customer", f"transactions in (t-{w}d, t]", "int64")
        )
        out.append(Feature(f"customer_avg_amount_{w}d", "customer", f"mean amount in (t-{w}d, t]"))
    for w in CUSTOMER_PREVIOUS_WINDOWS_DAYS:
        out.append(
            Feature(
                f"customer_prev_avg_amount_{w}d",
                "customer",
                f"mean amount of the earlier transactions in (t-{w}d, t); NaN if none",
            )
        )
    out.append(
        Feature(
            f"customer_nb_big_prev_{BIG_AMOUNT_LOOKBACK_DAYS}d",
            "customer",
            f"earlier transactions in (t-{BIG_AMOUNT_LOOKBACK_DAYS}d, t) whose amount was over "
            f"{BIG_AMOUNT_RATIO:g}x the customer's earlier {BIG_BASE_DAYS}-day mean",
            "int64",
        )
    )
    return out


def _terminal_defs() -> list[Feature]:
    out = []
    d = LABEL_DELAY_DAYS
    for w in TERMINAL_WINDOWS_DAYS:
        span = f"(a-{d}d-{w}d, a-{d}d]"
        out.append(Feature(f"terminal_nb_tx_{w}d", "terminal", f"transactions in {span}", "int64"))
        out.append(Feature(f"terminal_risk_{w}d", "terminal", f"fraud share in {span}, 0 if none"))
    last = f"the terminal's latest transaction at or before a-{d}d"
    out += [
        Feature("terminal_last_known_fraud", "terminal", f"label of {last}; 0 if none", "int64"),
        Feature(
            "terminal_fraud_run_len",
            "terminal",
            f"frauds in a row ending at {last}; 0 if it is genuine or absent",
            "int64",
        ),
        Feature(
            "terminal_fraud_run_age_d",
            "terminal",
            "days from the first fraud of that run to a; NaN without a run",
        ),
    ]
    return out


def _request_defs() -> list[Feature]:
    out = [
        Feature("amount", "request", "transaction amount"),
        Feature("tx_during_weekend", "request", "1 if Saturday or Sunday (UTC)", "int64"),
        Feature("tx_during_night", "request", "1 if the UTC hour is <= 6", "int64"),
    ]
    for w in CUSTOMER_PREVIOUS_WINDOWS_DAYS:
        out.append(
            Feature(
                f"amount_to_prev_avg_{w}d",
                "request",
                f"amount / customer_prev_avg_amount_{w}d; NaN without earlier transactions",
                needs=(f"customer_prev_avg_amount_{w}d",),
            )
        )
    return out


CUSTOMER_FEATURES = _customer_defs()
TERMINAL_FEATURES = _terminal_defs()
REQUEST_FEATURES = _request_defs()
ALL_FEATURES = {f.name: f for f in REQUEST_FEATURES + CUSTOMER_FEATURES + TERMINAL_FEATURES}

#: The handbook's 15 features plus the amount.
HANDBOOK_FEATURES: list[Feature] = [
    ALL_FEATURES[n]
    for n in (
        ["amount", "tx_during_weekend", "tx_during_night"]
        + [f"customer_{k}_{w}d" for w in CUSTOMER_WINDOWS_DAYS for k in ("nb_tx", "avg_amount")]
        + [f"terminal_{k}_{w}d" for w in TERMINAL_WINDOWS_DAYS for k in ("nb_tx", "risk")]
    )
]


def feature_dtype(feature: Feature) -> str:
    return feature.dtype


# ---------------------------------------------------------------- the kernel


def to_ms(timestamps: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Milliseconds since the epoch (int64) of UTC timestamps."""
    values = pd.DatetimeIndex(timestamps)
    if values.tz is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
    return np.asarray(values.tz_convert("UTC").as_unit("ms").asi8, dtype=np.int64)


def _codes(keys: pd.Series | np.ndarray) -> np.ndarray:
    codes, _ = pd.factorize(pd.Series(keys).to_numpy(), sort=False)
    return np.asarray(codes, dtype=np.int64)


def _entity_time_key(codes: np.ndarray, ms: np.ndarray, spare_ms: int) -> tuple[np.ndarray, int]:
    """A key ordering rows by entity then time: ``code * stride + (ms - origin)``.

    ``stride`` exceeds the time span plus ``spare_ms``, so shifting a key by up to
    ``spare_ms`` never reaches a neighbouring entity.
    """
    origin = int(ms.min()) if len(ms) else 0
    stride = int(ms.max()) - origin + spare_ms + 1 if len(ms) else 1
    n_entities = int(codes.max()) + 1 if len(codes) else 1
    if n_entities * stride >= 2**62:
        raise OverflowError("too many entities over too long a time span for one key")
    return codes * stride + (ms - origin) + spare_ms, stride


def _running_sum(values: np.ndarray) -> np.ndarray:
    """The running sum of ``values`` with a leading 0, in extended precision."""
    return np.concatenate(([0.0], np.cumsum(values, dtype=np.longdouble)))


def _sum_between(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Sum of ``values[lo:hi]`` per row, in extended precision."""
    return _between(_running_sum(values), lo, hi)


def _since(key: np.ndarray, k: np.ndarray, days: int) -> np.ndarray:
    """Where the window ``(k - days, ..`` starts in sorted ``key``."""
    return np.searchsorted(key, k - days * MS_PER_DAY, side="right")


def _between(csum: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Sums of rows ``lo:hi`` from ``csum`` (:func:`_running_sum`), as float64."""
    return np.asarray(csum[hi] - csum[lo], dtype=np.float64)


def _previous_mean(
    key: np.ndarray, csum: np.ndarray, k: np.ndarray, before: np.ndarray, days: int
) -> np.ndarray:
    """Mean amount of the rows in ``(k - days, k)`` (NaN when none); ``csum``: the running
    sum of the amounts in ``key`` order with a leading 0, ``before``: where ``k`` starts."""
    start = _since(key, k, days)
    count = before - start
    total = _between(csum, start, before)
    return np.divide(total, count, out=np.full(len(k), np.nan), where=count > 0)


def _is_big(amount: np.ndarray, previous_mean: np.ndarray) -> np.ndarray:
    """The big-amount flag: over :data:`BIG_AMOUNT_RATIO` x the earlier mean (NaN: not big)."""
    with np.errstate(invalid="ignore"):
        return np.asarray(amount > BIG_AMOUNT_RATIO * previous_mean)


def big_flags(key: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """The big-amount flag of every row of (entity, time)-sorted ``key``/``amount``: what
    :func:`_customer_kernel` computes for them, without the other windows."""
    csum = _running_sum(amount)
    before = np.searchsorted(key, key, side="left")
    return _is_big(amount, _previous_mean(key, csum, key, before, BIG_BASE_DAYS))


def _customer_kernel(
    key: np.ndarray, amount: np.ndarray, rows: np.ndarray, big: np.ndarray | None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Customer features at positions ``rows`` of (entity, time)-sorted ``key``/``amount``.

    ``big`` holds the big-amount flag of every row when known (the stream keeps them);
    ``None`` computes them, which needs ``rows`` to be every row. The flags of ``rows``
    are always (re)computed. Returns the features of ``rows`` and the flags of all rows.
    """
    k = key[rows]
    upto = np.searchsorted(key, k, side="right")  # end of (.., t]
    before = np.searchsorted(key, k, side="left")  # end of (.., t)
    csum = _running_sum(amount)

    n = len(rows)
    out: dict[str, np.ndarray] = {}
    for w in CUSTOMER_WINDOWS_DAYS:
        start = _since(key, k, w)
        count = upto - start
        out[f"customer_nb_tx_{w}d"] = count.astype(np.int64)
        out[f"customer_avg_amount_{w}d"] = _between(csum, start, upto) / count
    for w in CUSTOMER_PREVIOUS_WINDOWS_DAYS:
        out[f"customer_prev_avg_amount_{w}d"] = _previous_mean(key, csum, k, before, w)
    if big is None:
        if n != len(key):
            raise ValueError("flags can only be computed for every row at once")
        flags = np.zeros(len(key), dtype=bool)
    else:
        flags = big.copy()
    flags[rows] = _is_big(amount[rows], out[f"customer_prev_avg_amount_{BIG_BASE_DAYS}d"])
    big_total = np.concatenate(([0], np.cumsum(flags, dtype=np.int64)))
    start = _since(key, k, BIG_AMOUNT_LOOKBACK_DAYS)
    out[f"customer_nb_big_prev_{BIG_AMOUNT_LOOKBACK_DAYS}d"] = big_total[before] - big_total[start]
    return {f.name: out[f.name] for f in CUSTOMER_FEATURES}, flags


def customer_features(events: pd.DataFrame) -> pd.DataFrame:
    """Customer features for every row of ``events`` (see the module docstring).

    ``events`` needs ``customer_id``, ``timestamp`` (UTC) and ``amount``. A row at time t
    sees the transactions of its customer up to t; "earlier" means strictly before t, so
    transactions at the very same instant share their values, as a point-in-time join
    returns them. Returns a frame aligned with ``events``' index.
    """
    n = len(events)
    ms = to_ms(events["timestamp"])
    codes = _codes(events["customer_id"])
    order = np.lexsort((np.arange(n), ms, codes))  # entity, time, arrival
    key, _ = _entity_time_key(codes[order], ms[order], CUSTOMER_HISTORY_MS)
    amount = events["amount"].to_numpy(dtype=np.float64)[order]
    out, _ = _customer_kernel(key, amount, np.arange(n), None)
    result = pd.DataFrame(out, index=order).sort_index()
    result.index = events.index
    return result[[f.name for f in CUSTOMER_FEATURES]]


# ---------------------------------------------------------------- the stream's state


def transaction_digests(ids: Sequence[str]) -> np.ndarray:
    """64-bit digests (BLAKE2b) of transaction ids: how the stream's state recognises a replay."""
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little")
            for i in ids
        ),
        dtype=np.uint64,
        count=len(ids),
    )


@dataclass(frozen=True)
class CustomerState:
    """One customer's recent transactions, in time order: the state behind its features.

    ``ids`` are :func:`transaction_digests`; ``big`` each transaction's big-amount flag
    (as :func:`customer_features` computed it), ``None`` when not known yet (state just
    read from storage): the next update computes it.
    """

    ms: np.ndarray
    amount: np.ndarray
    ids: np.ndarray
    big: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ms)

    @classmethod
    def empty(cls) -> CustomerState:
        return cls(
            np.empty(0, np.int64),
            np.empty(0, np.float64),
            np.empty(0, np.uint64),
            np.empty(0, bool),
        )


def with_flags(states: Sequence[CustomerState]) -> list[CustomerState]:
    """``states`` with their big-amount flags computed where not known (read from storage)."""
    todo = [i for i, s in enumerate(states) if s.big is None]
    if not todo:
        return list(states)
    sizes = np.array([len(states[i]) for i in todo], dtype=np.int64)
    codes = np.repeat(np.arange(len(todo)), sizes)
    ms = np.concatenate([states[i].ms for i in todo])
    key, _ = _entity_time_key(codes, ms, CUSTOMER_HISTORY_MS)  # already in (entity, time) order
    amount = np.concatenate([states[i].amount for i in todo])
    flags = big_flags(key, amount)
    out = list(states)
    bounds = np.concatenate(([0], np.cumsum(sizes)))
    for j, i in enumerate(todo):
        s = states[i]
        out[i] = CustomerState(s.ms, s.amount, s.ids, flags[bounds[j] : bounds[j + 1]].copy())
    return out


def advance_customers(
    states: Sequence[CustomerState],
    codes: np.ndarray,
    ms: np.ndarray,
    amount: np.ndarray,
    ids: np.ndarray,
    latest: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], list[CustomerState]]:
    """The incremental path: features of new transactions given their customers' states.

    ``states[c]`` is the state of customer code ``c``; ``codes``, ``ms`` (epoch
    milliseconds), ``amount`` and ``ids`` (:func:`transaction_digests`) describe the new
    transactions in arrival order. Runs the backfill's kernel on the states followed by
    the new transactions, so the stream computes what :func:`customer_features` computes
    on the whole history. A new transaction already in its customer's state (a replay: the
    same id at a time the state already reaches, not after its latest transaction) is left
    out of its own history, so it scores as the first time. Returns the features of
    the new transactions (arrival order) and each customer's next state (pruned).
    ``latest``: :func:`latest_ms` of ``states``, when the caller has it.
    """
    states = list(states)
    latest = latest_ms(states) if latest is None else latest
    dropped = False
    for i, replayed in _replays(states, codes, ms, ids, latest):
        # rare: drop the earlier copy of a replayed transaction
        state = states[codes[i]]
        keep = ~replayed
        big = None if state.big is None else state.big[keep]
        states[codes[i]] = CustomerState(state.ms[keep], state.amount[keep], state.ids[keep], big)
        dropped = True
    if dropped:
        latest = latest_ms(states)
    sizes = np.array([len(s) for s in states], dtype=np.int64)
    old_codes = np.repeat(np.arange(len(states)), sizes)
    old_ms = np.concatenate([*(s.ms for s in states), np.empty(0, np.int64)])
    old_amount = np.concatenate([*(s.amount for s in states), np.empty(0, np.float64)])
    old_ids = np.concatenate([*(s.ids for s in states), np.empty(0, np.uint64)])
    arrival = np.argsort(codes, kind="stable")  # the new rows by customer, in arrival order
    by_customer = codes[arrival]
    # A late event: a customer's new row earlier than one of its rows (kept or new)
    late = bool(np.any(ms < latest[codes])) or bool(
        np.any((by_customer[1:] == by_customer[:-1]) & (np.diff(ms[arrival]) < 0))
    )
    if late:  # sort everything by (customer, time), and recompute every flag as the backfill
        all_codes = np.concatenate((old_codes, codes))
        all_ms = np.concatenate((old_ms, ms))
        key, _ = _entity_time_key(all_codes, all_ms, CUSTOMER_STATE_MS)
        order = np.argsort(key, kind="stable")  # history first among ties, then arrival order
        position = np.empty(len(order), dtype=np.int64)
        position[order] = np.arange(len(order))
        rows = position[len(old_ms) :]
        key, sorted_codes, sorted_ms = key[order], all_codes[order], all_ms[order]
        sorted_amount = np.concatenate((old_amount, amount))[order]
        sorted_ids = np.concatenate((old_ids, ids))[order]
        out, flags = _customer_kernel(key, sorted_amount, np.arange(len(order)), None)
        out = {name: values[rows] for name, values in out.items()}
    else:  # each customer's new rows go right after its history: an insert, no sort
        at = np.cumsum(sizes)[by_customer]
        rows = np.empty(len(codes), dtype=np.int64)
        rows[arrival] = at + np.arange(len(codes))
        sorted_codes = np.insert(old_codes, at, by_customer)
        sorted_ms = np.insert(old_ms, at, ms[arrival])
        sorted_amount = np.insert(old_amount, at, amount[arrival])
        sorted_ids = np.insert(old_ids, at, ids[arrival])
        kept_flags = [s.big for s in with_flags(states) if s.big is not None]
        known: np.ndarray = np.insert(np.concatenate([*kept_flags, np.zeros(0, bool)]), at, False)
        key, _ = _entity_time_key(sorted_codes, sorted_ms, CUSTOMER_STATE_MS)
        out, flags = _customer_kernel(key, sorted_amount, rows, known)
    bounds = np.searchsorted(sorted_codes, np.arange(len(states) + 1))
    # prune: each next state starts after the transactions at or before its latest one
    # minus the longest window and the margin for late events (LATE_MARGIN_MS), which no
    # window of a transaction that late or later can reach
    ends = bounds[1:]
    last = np.where(ends > bounds[:-1], key[np.maximum(ends - 1, 0)], 0) if len(key) else ends
    starts = np.maximum(np.searchsorted(key, last - CUSTOMER_STATE_MS, side="right"), bounds[:-1])
    next_states = [
        CustomerState(
            sorted_ms[lo:hi].copy(),
            sorted_amount[lo:hi].copy(),
            sorted_ids[lo:hi].copy(),
            flags[lo:hi].copy(),
        )
        for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True)
    ]
    return out, next_states


def _replays(
    states: Sequence[CustomerState],
    codes: np.ndarray,
    ms: np.ndarray,
    ids: np.ndarray,
    latest: np.ndarray,
) -> Iterator[tuple[int, np.ndarray]]:
    """The replays among new transactions: a replay has the time of an entry its customer
    keeps (at or before ``latest``, the states' latest times) and an id its state holds.
    Yields each one's position and the mask of its customer's entries with that id, read
    from ``states`` as it is then (a caller may replace a state between two)."""
    for i in np.flatnonzero(ms <= latest[codes]):
        same = states[codes[i]].ids == ids[i]
        if same.any():
            yield int(i), same


def replaced_entries(
    states: Sequence[CustomerState],
    codes: np.ndarray,
    ms: np.ndarray,
    amount: np.ndarray,
    ids: np.ndarray,
    latest: np.ndarray | None = None,
) -> list[CustomerState] | None:
    """The entries of ``states`` that :func:`advance_customers` drops as the earlier copies of
    replayed transactions (its arguments) sent again with another time or amount, per
    customer code (``None`` when there is none): a store of entries removes them too, so
    that it holds what the next states hold. An unchanged replay is the same entry.
    ``latest``: :func:`latest_ms` of ``states``, when the caller has it."""
    latest = latest_ms(states) if latest is None else latest
    out: list[CustomerState] | None = None
    for i, same in _replays(states, codes, ms, ids, latest):
        state = states[codes[i]]
        changed = same & ((state.ms != ms[i]) | (state.amount != amount[i]))
        if changed.any():
            out = out or [CustomerState.empty() for _ in states]
            kept = out[codes[i]]
            out[codes[i]] = CustomerState(
                np.r_[kept.ms, state.ms[changed]],
                np.r_[kept.amount, state.amount[changed]],
                np.r_[kept.ids, state.ids[changed]].astype(np.uint64),
                None,
            )
    return out


def latest_ms(states: Sequence[CustomerState]) -> np.ndarray:
    """Each state's latest time (epoch ms; the smallest int64 when empty)."""
    return np.array(
        [s.ms[-1] if len(s) else np.iinfo(np.int64).min for s in states], dtype=np.int64
    )


def _terminal_anchored(
    codes: np.ndarray,
    ms: np.ndarray,
    labels: np.ndarray,
    anchor_codes: np.ndarray,
    anchor_ms: np.ndarray,
    delay_days: int,
) -> dict[str, np.ndarray]:
    """Terminal features of each anchor ``(terminal code, instant)`` from labelled rows."""
    if len(ms) == 0:
        raise ValueError("terminal features need at least one labelled transaction")
    max_back = (delay_days + max(TERMINAL_WINDOWS_DAYS)) * MS_PER_DAY
    all_ms = np.concatenate((ms, anchor_ms))
    origin = int(all_ms.min())
    stride = int(all_ms.max()) - origin + max_back + 1
    top = max(int(codes.max(initial=0)), int(anchor_codes.max(initial=0))) + 1
    if top * stride >= 2**62:
        raise OverflowError("too many terminals over too long a time span for one key")
    order = np.lexsort((np.arange(len(ms)), ms, codes))
    sorted_codes, sorted_ms = codes[order], ms[order]
    key = sorted_codes * stride + (sorted_ms - origin) + max_back
    fraud = labels[order].astype(np.int64)
    akey = anchor_codes * stride + (anchor_ms - origin) + max_back
    end = np.searchsorted(key, akey - delay_days * MS_PER_DAY, side="right")
    out: dict[str, np.ndarray] = {}
    for w in TERMINAL_WINDOWS_DAYS:
        start = np.searchsorted(key, akey - (delay_days + w) * MS_PER_DAY, side="right")
        count = end - start
        frauds = _sum_between(fraud.astype(np.float64), start, end)
        out[f"terminal_nb_tx_{w}d"] = count.astype(np.int64)
        out[f"terminal_risk_{w}d"] = np.divide(
            frauds, count, out=np.zeros(len(count)), where=count > 0
        )
    # Fraud runs: for each sorted row, the position just before its run of frauds began.
    pos = np.arange(len(key))
    first_of_terminal = np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]
    reset = np.where(fraud == 0, pos, np.where(first_of_terminal, pos - 1, -1))
    before_run = np.maximum.accumulate(reset)
    run_len = pos - before_run
    last = np.clip(end - 1, 0, None)
    has_last = (end > 0) & (sorted_codes[last] == anchor_codes)
    last_label = np.where(has_last, fraud[last], 0)
    length = np.where(has_last & (last_label == 1), run_len[last], 0)
    run_start_ms = sorted_ms[np.minimum(before_run[last] + 1, len(key) - 1)]
    out["terminal_last_known_fraud"] = last_label.astype(np.int64)
    out["terminal_fraud_run_len"] = length.astype(np.int64)
    out["terminal_fraud_run_age_d"] = np.where(
        length > 0, (anchor_ms - run_start_ms) / MS_PER_DAY, np.nan
    )
    return {f.name: out[f.name] for f in TERMINAL_FEATURES}


def terminal_features(
    events: pd.DataFrame, label: str = "is_fraud", delay_days: int = LABEL_DELAY_DAYS
) -> pd.DataFrame:
    """Terminal features at each transaction's own time (anchor ``a = t``): the handbook's.

    ``events`` needs ``terminal_id``, ``timestamp`` and the label column.
    """
    ms = to_ms(events["timestamp"])
    codes = _codes(events["terminal_id"])
    labels = events[label].to_numpy()
    out = _terminal_anchored(codes, ms, labels, codes, ms, delay_days)
    return pd.DataFrame(out, index=events.index)


def terminal_features_at(
    ms: np.ndarray, labels: np.ndarray, anchor_ms: np.ndarray, delay_days: int = LABEL_DELAY_DAYS
) -> dict[str, np.ndarray]:
    """The terminal features of one terminal at each of ``anchor_ms`` (epoch ms), from its
    transactions' times ``ms`` and ``labels``: :func:`terminal_features` at other anchors."""
    ms = np.asarray(ms, dtype=np.int64)
    anchor_ms = np.asarray(anchor_ms, dtype=np.int64)
    one, at = np.zeros(len(ms), np.int64), np.zeros(len(anchor_ms), np.int64)
    return _terminal_anchored(one, ms, np.asarray(labels), at, anchor_ms, delay_days)


def terminal_snapshots(
    events: pd.DataFrame,
    anchors: Sequence[pd.Timestamp] | pd.DatetimeIndex,
    label: str = "is_fraud",
    delay_days: int = LABEL_DELAY_DAYS,
) -> pd.DataFrame:
    """Terminal features of every terminal in ``events`` as of each instant in ``anchors``.

    Returns ``terminal_id``, ``event_timestamp`` (the anchor, UTC) and the features: rows
    for the terminal view as of a given time (for example "now", before a materialisation).
    Only labels of transactions at least ``delay_days`` before the anchor are used.
    """
    anchor_index = pd.DatetimeIndex(anchors)
    terminals, codes = np.unique(events["terminal_id"].to_numpy(dtype=object), return_inverse=True)
    codes = codes.astype(np.int64)
    ms = to_ms(events["timestamp"])
    labels = events[label].to_numpy()
    anchor_ms_one = to_ms(pd.Series(anchor_index))
    anchor_codes = np.repeat(np.arange(len(terminals), dtype=np.int64), len(anchor_ms_one))
    anchor_ms = np.tile(anchor_ms_one, len(terminals))
    out = _terminal_anchored(codes, ms, labels, anchor_codes, anchor_ms, delay_days)
    frame = pd.DataFrame(out)
    ids = terminals[anchor_codes].astype(str)
    frame.insert(0, "terminal_id", pd.array(ids, dtype="string[pyarrow]"))
    frame.insert(1, "event_timestamp", pd.to_datetime(anchor_ms, unit="ms", utc=True))
    return frame


def request_feature_arrays(
    ms: np.ndarray, amount: np.ndarray, prev_avg: Mapping[int, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Request features from epoch milliseconds, amounts and (optionally) the customer's
    earlier means by window in days (a ratio for each window given): the kernel of
    :func:`request_features`."""
    ms = np.asarray(ms, dtype=np.int64)
    value = np.asarray(amount, dtype=np.float64)
    day = ms // MS_PER_DAY
    out = {
        "amount": value,
        "tx_during_weekend": ((day + 3) % 7 >= 5).astype(np.int64),  # 1970-01-01: a Thursday
        "tx_during_night": ((ms - day * MS_PER_DAY) // 3_600_000 <= 6).astype(np.int64),
    }
    if prev_avg is not None:
        for w in CUSTOMER_PREVIOUS_WINDOWS_DAYS:
            if w not in prev_avg:
                continue
            mean = np.asarray(prev_avg[w], dtype=np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[f"amount_to_prev_avg_{w}d"] = np.where(mean > 0, value / mean, np.nan)
    return out


def request_features(
    timestamp: pd.Series, amount: pd.Series, served: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Features of the transaction itself, and its amount against the served customer means.

    ``served`` holds the ``needs`` of the request features (the customer's earlier means),
    aligned with ``timestamp``; the ratio of each window whose mean it holds is returned,
    besides the amount and the time flags.
    """
    prev = (
        None
        if served is None
        else {
            w: served[column].to_numpy(dtype=np.float64)
            for w in CUSTOMER_PREVIOUS_WINDOWS_DAYS
            if (column := f"customer_prev_avg_amount_{w}d") in served.columns
        }
    )
    out = request_feature_arrays(to_ms(timestamp), np.asarray(amount, dtype=np.float64), prev)
    return pd.DataFrame(out, index=timestamp.index)


# ---------------------------------------------------------------- the model's inputs

#: Model inputs in order: the handbook's 16, then the features that measurably helped
#: (ablation in benchmarks/RESULTS.md). A new model version with other inputs gets a new
#: feature service.
MODEL_FEATURES: list[Feature] = HANDBOOK_FEATURES + [
    ALL_FEATURES[n]
    for n in (
        "terminal_last_known_fraud",
        "terminal_fraud_run_len",
        "terminal_fraud_run_age_d",
        "amount_to_prev_avg_30d",
        "amount_to_prev_avg_60d",
        "amount_to_prev_avg_120d",
        f"customer_nb_big_prev_{BIG_AMOUNT_LOOKBACK_DAYS}d",
    )
]
FEATURE_SERVICE = "fraud_model_v1"


def served_features(features: Sequence[Feature]) -> list[Feature]:
    """The Feast-served features that ``features`` read: their own and their ``needs``."""
    names: list[str] = []
    for f in features:
        for name in (f.name,) if f.source != "request" else f.needs:
            if name not in names:
                names.append(name)
    return [ALL_FEATURES[n] for n in names]


def feast_references(features: Sequence[Feature]) -> list[str]:
    """``view:name`` of the Feast features that ``features`` need (request ones computed)."""
    return [f.feast_reference for f in served_features(features)]


#: Feature service name → Feast view → feature names it serves (``feature_repo`` reads this).
MODEL_FEATURE_SERVICES: dict[str, dict[str, list[str]]] = {
    FEATURE_SERVICE: {
        view: [f.name for f in served_features(MODEL_FEATURES) if _VIEW_OF[f.source] == view]
        for view in (CUSTOMER_VIEW, TERMINAL_VIEW)
    }
}
