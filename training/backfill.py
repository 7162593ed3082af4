"""Feature backfill: compute the offline tables of every feature view from history.

Writes ``<repo>/data/customer_features.parquet`` (one row per transaction, the
customer's windows with that transaction included) and
``<repo>/data/terminal_features.parquet`` (one row per terminal transaction, the
label-delayed windows as of that time). The same ``fraudstream.features`` functions feed
the stream, so these rows are what the stream would have pushed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fraudstream.features import (
    CUSTOMER_VIEW,
    LABEL_DELAY_DAYS,
    OFFLINE_FILES,
    TERMINAL_FEATURES,
    TERMINAL_VIEW,
    customer_features,
    terminal_features,
    terminal_snapshots,
)
from fraudstream.schema import LABEL_COLUMN, InvalidEvents

log = logging.getLogger(__name__)

#: Optional column of the events: when each one's label became known (UTC). Without it, or
#: where it is empty (a label of the training data), a label counts from the transaction's
#: time plus the label delay on, the handbook's assumption (:func:`terminal_table`).
REPORTED_AT = "reported_at"


@dataclass(frozen=True)
class BackfillResult:
    customer_path: Path
    terminal_path: Path
    customer_rows: int
    terminal_rows: int
    seconds: float


def offline_dir(repo_path: Path) -> Path:
    return repo_path / "data"


def customer_table(events: pd.DataFrame) -> pd.DataFrame:
    """Rows of the customer view: ``customer_id``, ``event_timestamp`` and the windows.

    When one customer has several transactions at the same instant, the last one's
    values (which include all of them) are kept, so a point-in-time join is unambiguous.
    """
    features = customer_features(events)
    table = pd.concat(
        [
            events[["customer_id"]].reset_index(drop=True),
            events[["timestamp"]]
            .rename(columns={"timestamp": "event_timestamp"})
            .reset_index(drop=True),
            features.reset_index(drop=True),
        ],
        axis=1,
    )
    return table.drop_duplicates(["customer_id", "event_timestamp"], keep="last")


def terminal_table(events: pd.DataFrame) -> pd.DataFrame:
    """Rows of the terminal view: the handbook's delayed windows at each transaction's time.

    One row per terminal and transaction instant (``event_timestamp`` = the transaction
    time), so a point-in-time join of a transaction gets the exact handbook values. With
    :data:`REPORTED_AT`, a fraud reported after the label delay counts only from its report
    on (:func:`_labels_as_known`), as ``features refresh`` serves it.
    """
    if LABEL_COLUMN not in events.columns:
        raise InvalidEvents(f"the terminal backfill needs the label column {LABEL_COLUMN!r}")
    features = terminal_features(events)
    if REPORTED_AT in events.columns:
        features = _labels_as_known(events, features)
    table = pd.concat(
        [
            events[["terminal_id"]].reset_index(drop=True),
            events[["timestamp"]]
            .rename(columns={"timestamp": "event_timestamp"})
            .reset_index(drop=True),
            features.reset_index(drop=True),
        ],
        axis=1,
    )
    return table.drop_duplicates(["terminal_id", "event_timestamp"], keep="last")


def _labels_as_known(events: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """``features`` (:func:`~fraudstream.features.terminal_features` of ``events``) with the
    rows that a late-reported fraud changes recomputed from the labels known then.

    A fraud whose label came after the delay (``reported_at`` > its time + the delay) is
    unknown, so genuine, before the UTC day of its report is over: each row of a terminal
    with such a fraud is recomputed from the labels reported before its own UTC day began,
    as a daily ``features refresh`` at midnight would have served them (a day's worth
    earlier than its report at most, never later). Only the days and terminals where a
    late label was pending are recomputed."""
    labels = events[LABEL_COLUMN].to_numpy()
    reported = pd.to_datetime(events[REPORTED_AT], utc=True)
    usable_from = events["timestamp"] + pd.Timedelta(days=LABEL_DELAY_DAYS)
    late = (labels == 1) & (reported > usable_from).to_numpy()
    if not late.any():
        return features
    terminals = events["terminal_id"].to_numpy()
    sub = events[pd.Series(terminals).isin(set(terminals[late])).to_numpy()]
    sub_late = late[events.index.get_indexer(sub.index)]
    sub_reported = reported.loc[sub.index]
    pending_from = usable_from.loc[sub.index][sub_late].dt.floor("D")
    pending_until = sub_reported[sub_late]
    day = sub["timestamp"].dt.floor("D")
    columns = [f.name for f in TERMINAL_FEATURES]
    out = features.copy()
    for start in day.unique():
        if not ((pending_from <= start) & (pending_until > start)).any():
            continue  # every label usable on this day was known: the handbook's values hold
        known = np.where(sub_late & (sub_reported > start).to_numpy(), 0, sub[LABEL_COLUMN])
        recomputed = terminal_features(sub.assign(**{LABEL_COLUMN: known}))
        rows = sub.index[(day == start).to_numpy()]
        out.loc[rows, columns] = recomputed.loc[rows, columns].to_numpy()
    return out


def backfill(events: pd.DataFrame, repo_path: Path) -> BackfillResult:
    """Compute and write both offline tables for the canonical, labelled ``events``."""
    start = time.perf_counter()
    out = offline_dir(repo_path)
    out.mkdir(parents=True, exist_ok=True)
    customers = customer_table(events)
    terminals = terminal_table(events)
    customer_path = out / OFFLINE_FILES[CUSTOMER_VIEW]
    terminal_path = out / OFFLINE_FILES[TERMINAL_VIEW]
    for table, path in ((customers, customer_path), (terminals, terminal_path)):
        # microseconds: DuckDB (Feast's offline store) cannot cast TIMESTAMPTZ_NS
        table["event_timestamp"] = table["event_timestamp"].astype("datetime64[us, UTC]")
        tmp = path.with_suffix(".tmp")
        table.to_parquet(tmp, index=False)
        tmp.replace(path)
    took = time.perf_counter() - start
    log.info(
        "backfill: %d customer rows, %d terminal rows in %.1fs",
        len(customers),
        len(terminals),
        took,
    )
    return BackfillResult(customer_path, terminal_path, len(customers), len(terminals), took)


def refresh_terminal_snapshot(events: pd.DataFrame, repo_path: Path, as_of: pd.Timestamp) -> int:
    """Append one row per terminal as of ``as_of`` to the terminal view's offline table.

    The daily refresh before ``feast materialize``: every terminal then has a row at
    ``as_of`` (labels usable by then only), so the online store serves each terminal's
    values as of the refresh, within the view's TTL, instead of as of its last transaction.
    Rows already at ``as_of`` are replaced. Returns the number of rows added.
    """
    path = offline_dir(repo_path) / OFFLINE_FILES[TERMINAL_VIEW]
    table = pd.read_parquet(path)
    stamp = pd.Timestamp(as_of).tz_convert("UTC")
    snapshot = terminal_snapshots(events, [stamp])
    snapshot["event_timestamp"] = snapshot["event_timestamp"].astype("datetime64[us, UTC]")
    table = table[table["event_timestamp"] != stamp]
    table = pd.concat([table, snapshot], ignore_index=True)
    tmp = path.with_suffix(".tmp")
    table.to_parquet(tmp, index=False)
    tmp.replace(path)
    log.info("terminal snapshot as of %s: %d rows", stamp.isoformat(), len(snapshot))
    return len(snapshot)
