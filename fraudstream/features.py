"""Every feature of fraudstream, defined once and computed by one vectorised kernel.

Three families:

* **customer** features (real time): windows over the customer's own transactions in
  ``(t - w, t]``, the current one included. :func:`customer_features` computes them for
  every row of an event table from the rows of the same customer at or before it. The
  backfill calls it on the whole history; the stream calls it on the customer's recent
  history (its state) followed by the new events and keeps the new rows. Same code,
  same numbers.
* **terminal** features (batch, label-based): count and fraud rate of the terminal's
  transactions in ``(a - d - w, a - d]`` with the label delay ``d``. With the anchor ``a``
  equal to the transaction time this is the handbook definition
  (:func:`terminal_features`); the served view anchors at the start of each UTC day
  (:func:`terminal_daily_snapshots`), since labels are only known a delay later and the
  view is recomputed and materialised daily.
* **request** features: computed from the transaction itself and the customer features
  (:func:`request_features`): weekend and night flags, amount ratios.

All windows are exact: integer milliseconds since the epoch, binary search on a key that
orders rows by entity and then time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

MS_PER_DAY = 86_400_000
CUSTOMER_WINDOWS_DAYS: tuple[int, ...] = (1, 7, 30)
TERMINAL_WINDOWS_DAYS: tuple[int, ...] = (1, 7, 30)
LABEL_DELAY_DAYS = 7
#: How much customer history the stream must keep to compute every customer window.
CUSTOMER_HISTORY_MS = max(CUSTOMER_WINDOWS_DAYS) * MS_PER_DAY


@dataclass(frozen=True)
class Feature:
    """A model input: its name and where it comes from (Feast view or request)."""

    name: str
    source: str  # "customer" | "terminal" | "request"
    description: str

    @property
    def feast_reference(self) -> str:
        """``view:feature`` for Feast features, ``request:name`` for request features."""
        view = {"customer": "customer_features", "terminal": "terminal_features"}.get(self.source)
        return f"{view}:{self.name}" if view else f"request:{self.name}"


def _customer_defs() -> list[Feature]:
    out = []
    for w in CUSTOMER_WINDOWS_DAYS:
        out.append(Feature(f"customer_nb_tx_{w}d", "customer", f"transactions in (t-{w}d, t]"))
        out.append(Feature(f"customer_avg_amount_{w}d", "customer", f"mean amount in (t-{w}d, t]"))
    return out


def _terminal_defs() -> list[Feature]:
    out = []
    for w in TERMINAL_WINDOWS_DAYS:
        span = f"(a-{LABEL_DELAY_DAYS}d-{w}d, a-{LABEL_DELAY_DAYS}d]"
        out.append(Feature(f"terminal_nb_tx_{w}d", "terminal", f"transactions in {span}"))
        out.append(Feature(f"terminal_risk_{w}d", "terminal", f"fraud share in {span}, 0 if none"))
    return out


CUSTOMER_VIEW = "customer_features"
TERMINAL_VIEW = "terminal_features"
#: Offline (Parquet) file of each feature view, under ``<feature repo>/data/``.
OFFLINE_FILES = {
    CUSTOMER_VIEW: "customer_features.parquet",
    TERMINAL_VIEW: "terminal_features.parquet",
}


def feature_dtype(feature: Feature) -> str:
    """``int64`` for counts and flags, ``float64`` otherwise."""
    return "int64" if "_nb_" in feature.name or feature.name.startswith("tx_") else "float64"


REQUEST_FEATURES = [
    Feature("amount", "request", "transaction amount"),
    Feature("tx_during_weekend", "request", "1 if Saturday or Sunday (UTC)"),
    Feature("tx_during_night", "request", "1 if the UTC hour is <= 6"),
]
CUSTOMER_FEATURES = _customer_defs()
TERMINAL_FEATURES = _terminal_defs()
#: The handbook's 15 features plus the amount, in the handbook's order of families.
HANDBOOK_FEATURES: list[Feature] = REQUEST_FEATURES + CUSTOMER_FEATURES + TERMINAL_FEATURES


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


def _sum_between(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Sum of ``values[lo:hi]`` per row, in extended precision."""
    csum = np.concatenate(([0.0], np.cumsum(values, dtype=np.longdouble)))
    return np.asarray(csum[hi] - csum[lo], dtype=np.float64)


def customer_features(events: pd.DataFrame) -> pd.DataFrame:
    """Customer window features for every row of ``events``, current transaction included.

    ``events`` needs ``customer_id``, ``timestamp`` (UTC) and ``amount``. A row at time t
    sees every transaction of its customer in ``(t - w, t]``, other transactions at the
    very same instant included (so tied rows share their values, as a point-in-time join
    returns them). Returns a frame aligned with ``events``' index.
    """
    n = len(events)
    ms = to_ms(events["timestamp"])
    codes = _codes(events["customer_id"])
    order = np.lexsort((np.arange(n), ms, codes))  # entity, time, arrival
    max_w = max(CUSTOMER_WINDOWS_DAYS) * MS_PER_DAY
    key, _ = _entity_time_key(codes[order], ms[order], max_w)
    amount = events["amount"].to_numpy(dtype=np.float64)[order]
    # (t - w, t]: every transaction of the customer at time t counts, ties included
    end = np.searchsorted(key, key, side="right")
    out = {}
    for w in CUSTOMER_WINDOWS_DAYS:
        start = np.searchsorted(key, key - w * MS_PER_DAY, side="right")
        count = end - start
        total = _sum_between(amount, start, end)
        out[f"customer_nb_tx_{w}d"] = count.astype(np.int64)
        out[f"customer_avg_amount_{w}d"] = total / count
    result = pd.DataFrame(out)
    unsorted = result.set_axis(order).sort_index()
    unsorted.index = events.index
    return unsorted


HISTORY_COLUMNS = ["customer_id", "timestamp", "amount"]


def update_customer_features(
    history: pd.DataFrame, new: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The incremental path: features of ``new`` events given each customer's ``history``.

    ``history`` holds the customers' earlier transactions (``customer_id``, ``timestamp``,
    ``amount``) of at least the last :data:`CUSTOMER_HISTORY_MS`; ``new`` the micro-batch.
    Runs :func:`customer_features` on both, so the stream computes what the backfill
    computes. Returns the features of ``new`` (aligned with its index) and the new history,
    pruned to what any later event can still need.
    """
    new_rows = new[HISTORY_COLUMNS]
    relevant = history[history["customer_id"].isin(new_rows["customer_id"])]
    both = pd.concat([relevant[HISTORY_COLUMNS], new_rows], ignore_index=True)
    features = customer_features(both).iloc[len(relevant) :]
    features.index = new.index
    merged = pd.concat([history[HISTORY_COLUMNS], new_rows], ignore_index=True)
    return features, prune_history(merged)


def prune_history(history: pd.DataFrame) -> pd.DataFrame:
    """Drop rows older than the longest window before each customer's latest transaction."""
    if history.empty:
        return history
    ms = to_ms(history["timestamp"])
    latest = pd.Series(ms).groupby(history["customer_id"].to_numpy()).transform("max").to_numpy()
    keep = ms > latest - CUSTOMER_HISTORY_MS
    return history[keep].reset_index(drop=True)


def _terminal_window_counts(
    codes: np.ndarray,
    ms: np.ndarray,
    labels: np.ndarray,
    anchor_codes: np.ndarray,
    anchor_ms: np.ndarray,
    delay_days: int,
) -> dict[str, np.ndarray]:
    """Count and fraud share of each anchor's terminal in ``(a - d - w, a - d]``."""
    max_back = (delay_days + max(TERMINAL_WINDOWS_DAYS)) * MS_PER_DAY
    all_ms = np.concatenate((ms, anchor_ms))
    origin = int(all_ms.min())
    stride = int(all_ms.max()) - origin + max_back + 1
    if (max(int(codes.max(initial=0)), int(anchor_codes.max(initial=0))) + 1) * stride >= 2**62:
        raise OverflowError("too many terminals over too long a time span for one key")
    order = np.lexsort((ms, codes))
    key = codes[order] * stride + (ms[order] - origin) + max_back
    fraud = labels[order].astype(np.float64)
    akey = anchor_codes * stride + (anchor_ms - origin) + max_back
    end = np.searchsorted(key, akey - delay_days * MS_PER_DAY, side="right")
    out: dict[str, np.ndarray] = {}
    for w in TERMINAL_WINDOWS_DAYS:
        start = np.searchsorted(key, akey - (delay_days + w) * MS_PER_DAY, side="right")
        count = end - start
        frauds = _sum_between(fraud, start, end)
        out[f"terminal_nb_tx_{w}d"] = count.astype(np.int64)
        out[f"terminal_risk_{w}d"] = np.divide(
            frauds, count, out=np.zeros(len(count)), where=count > 0
        )
    return out


def terminal_features(
    events: pd.DataFrame, label: str = "is_fraud", delay_days: int = LABEL_DELAY_DAYS
) -> pd.DataFrame:
    """The handbook's terminal features at each transaction's own time (anchor ``a = t``).

    ``events`` needs ``terminal_id``, ``timestamp`` and the label column.
    """
    ms = to_ms(events["timestamp"])
    codes = _codes(events["terminal_id"])
    labels = events[label].to_numpy()
    out = _terminal_window_counts(codes, ms, labels, codes, ms, delay_days)
    return pd.DataFrame(out, index=events.index)


def terminal_daily_snapshots(
    events: pd.DataFrame,
    days: Sequence[pd.Timestamp] | pd.DatetimeIndex,
    label: str = "is_fraud",
    delay_days: int = LABEL_DELAY_DAYS,
) -> pd.DataFrame:
    """Terminal features of every terminal in ``events`` as of the start of each day in ``days``.

    Returns ``terminal_id``, ``event_timestamp`` (the day start, UTC) and the features: the
    rows of the served terminal view. Only labels of transactions at least ``delay_days``
    before the day start are used.
    """
    day_index = pd.DatetimeIndex(days)
    terminals, codes = np.unique(events["terminal_id"].to_numpy(dtype=object), return_inverse=True)
    codes = codes.astype(np.int64)
    ms = to_ms(events["timestamp"])
    labels = events[label].to_numpy()
    day_ms = to_ms(pd.Series(day_index))
    anchor_codes = np.repeat(np.arange(len(terminals), dtype=np.int64), len(day_ms))
    anchor_ms = np.tile(day_ms, len(terminals))
    out = _terminal_window_counts(codes, ms, labels, anchor_codes, anchor_ms, delay_days)
    frame = pd.DataFrame(out)
    frame.insert(
        0, "terminal_id", pd.array(terminals[anchor_codes].astype(str), dtype="string[pyarrow]")
    )
    frame.insert(1, "event_timestamp", pd.to_datetime(anchor_ms, unit="ms", utc=True))
    return frame


def request_features(timestamp: pd.Series, amount: pd.Series) -> pd.DataFrame:
    """Features of the transaction itself: amount, weekend and night flags (UTC)."""
    ts = pd.DatetimeIndex(timestamp).tz_convert("UTC")
    return pd.DataFrame(
        {
            "amount": np.asarray(amount, dtype=np.float64),
            "tx_during_weekend": (ts.dayofweek >= 5).astype(np.int64),
            "tx_during_night": (ts.hour <= 6).astype(np.int64),
        },
        index=timestamp.index,
    )


# ---------------------------------------------------------------- the model's inputs

#: Model inputs in order. A new model version with other inputs gets a new feature service.
MODEL_FEATURES: list[Feature] = HANDBOOK_FEATURES
FEATURE_SERVICE = "fraud_model_v1"
#: Feature service name → Feast view → feature names it serves (``feature_repo`` reads this).
MODEL_FEATURE_SERVICES: dict[str, dict[str, list[str]]] = {
    FEATURE_SERVICE: {
        CUSTOMER_VIEW: [f.name for f in MODEL_FEATURES if f.source == "customer"],
        TERMINAL_VIEW: [f.name for f in MODEL_FEATURES if f.source == "terminal"],
    }
}


def feast_references(features: Sequence[Feature]) -> list[str]:
    """``view:name`` of the Feast-served features among ``features`` (request ones aside)."""
    return [f.feast_reference for f in features if f.source != "request"]
