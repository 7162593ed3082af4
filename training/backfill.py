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
    MS_PER_DAY,
    OFFLINE_FILES,
    TERMINAL_FEATURES,
    TERMINAL_VIEW,
    customer_features,
    terminal_features,
    terminal_features_at,
    terminal_snapshots,
    to_ms,
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
    """``features`` (:func:`~fraudstream.features.terminal_features` of ``events``) with each
    label used only once known: a fraud reported after the label delay (``reported_at`` >
    its time + the delay) counts at a transaction of its terminal only if reported by that
    transaction's time (the handbook assumes every label known at its time + the delay).

    Recomputed: the transactions of a terminal with such a fraud that come between the fraud's
    usable time and its report, per stretch between two of the terminal's late reports
    (the labels known are the same within one); the others keep the handbook's values."""
    labels = events[LABEL_COLUMN].to_numpy()
    ms = to_ms(events["timestamp"])
    reported = pd.to_datetime(events[REPORTED_AT], utc=True)
    known_at = np.full(len(events), np.iinfo(np.int64).min, dtype=np.int64)  # no report: known
    have = reported.notna().to_numpy()
    known_at[have] = to_ms(reported[have])
    late = (labels == 1) & (known_at > ms + LABEL_DELAY_DAYS * MS_PER_DAY)
    if not late.any():
        return features
    codes = pd.factorize(events["terminal_id"])[0]
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(codes.max() + 2))
    names = [f.name for f in TERMINAL_FEATURES]
    columns = {name: features[name].to_numpy(copy=True) for name in names}
    for code in np.unique(codes[late]):
        rows = order[bounds[code] : bounds[code + 1]]
        t, own, late_here, known = ms[rows], labels[rows], late[rows], known_at[rows]
        usable, reports = t[late_here] + LABEL_DELAY_DAYS * MS_PER_DAY, known[late_here]
        pending = ((usable[None, :] <= t[:, None]) & (t[:, None] < reports[None, :])).any(axis=1)
        if not pending.any():
            continue
        stretch = np.searchsorted(np.sort(reports), t, side="right")  # late reports by then
        for k in np.unique(stretch[pending]):
            anchors = np.flatnonzero(pending & (stretch == k))
            unreported = late_here & (known > t[anchors[0]])
            recomputed = terminal_features_at(t, np.where(unreported, 0, own), t[anchors])
            for name in names:
                columns[name][rows[anchors]] = recomputed[name]
    return features.assign(**columns)


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
