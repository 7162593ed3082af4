"""Labels: the verdicts (chargebacks, analyst reviews) that arrive days after a transaction.

A label is a JSON message on the ``labels`` topic, keyed by ``transaction_id``::

    {"transaction_id": "tx-1", "label": 1, "reported_at": "2026-11-28T10:15:00Z"}

``label`` is 1 for fraud and 0 for a transaction confirmed genuine; a transaction without a
label is unknown (not yet reported), not genuine. ``reported_at`` is when the verdict became
known (UTC): label-based features and quality figures use a label only from then on. A
later label for the same transaction replaces an earlier one (a corrected verdict).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
import pandas as pd
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from fraudstream.archive import Archive, labelled_transactions
from fraudstream.errors import FraudstreamError
from fraudstream.features import TERMINAL_VIEW
from fraudstream.publish import Progress, PublishResult
from fraudstream.schema import LABEL_COLUMN, Identifier, InvalidEvents, UtcTimestamp

if TYPE_CHECKING:
    from fraudstream.config import KafkaSettings, Settings

log = logging.getLogger(__name__)


def _label(value: Any) -> int:
    if isinstance(value, bool) or value not in (0, 1):
        raise ValueError("must be 0 (genuine) or 1 (fraud)")
    return int(value)


Label = Annotated[Literal[0, 1], BeforeValidator(_label)]


class LabelEvent(BaseModel):
    """One verdict on one transaction, as it arrives on the ``labels`` topic."""

    model_config = ConfigDict(frozen=True, extra="ignore", title="LabelEvent")

    transaction_id: Identifier = Field(description="the labelled transaction")
    label: Label = Field(description="1: fraud, 0: confirmed genuine")
    reported_at: UtcTimestamp = Field(description="when the verdict became known (UTC)")

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of the message (``docs/label.schema.json``)."""
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "LabelEvent",
            "description": cls.__doc__,
            "type": "object",
            "required": ["transaction_id", "label", "reported_at"],
            "properties": {
                "transaction_id": {
                    "anyOf": [
                        {"type": "string", "minLength": 1, "maxLength": 128},
                        {"type": "integer"},
                    ],
                    "description": "the labelled transaction; the message key",
                },
                "label": {"enum": [0, 1], "description": "1: fraud, 0: confirmed genuine"},
                "reported_at": {
                    "type": "string",
                    "format": "date-time",
                    "description": "when the verdict became known: ISO-8601 with a UTC offset",
                },
            },
            "additionalProperties": True,
        }

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "transaction_id": self.transaction_id,
            "label": self.label,
            "reported_at": _iso(self.reported_at),
        }


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------ replaying labels


def label_events(events: pd.DataFrame, delay: timedelta) -> pd.DataFrame:
    """One label per transaction of a labelled canonical table (``is_fraud``), reported
    ``delay`` after the transaction: ``transaction_id``, ``label``, ``reported_at``, in
    ``reported_at`` order (the order they would arrive in)."""
    if LABEL_COLUMN not in events.columns:
        raise InvalidEvents(f"labels need a {LABEL_COLUMN!r} column (or the handbook's TX_FRAUD)")
    labels = events[LABEL_COLUMN]
    bad = ~labels.isin([0, 1])
    if bad.any():
        raise InvalidEvents(
            f"column {LABEL_COLUMN!r}: values other than 0 and 1 in {int(bad.sum())} row(s)"
        )
    out = pd.DataFrame(
        {
            "transaction_id": events["transaction_id"].astype(str).to_numpy(),
            "label": labels.astype("int8").to_numpy(),
            "reported_at": (events["timestamp"] + delay).dt.tz_convert("UTC").to_numpy(),
        }
    )
    return out.sort_values(["reported_at", "transaction_id"], kind="stable").reset_index(drop=True)


def publish_labels(
    labels: pd.DataFrame,
    *,
    kafka: KafkaSettings,
    bootstrap: str,
    topic: str,
    rate: float | None = None,
    progress: Progress | None = None,
    stop: Callable[[], bool] | None = None,
) -> PublishResult:
    """Publish ``labels`` (:func:`label_events` columns) in their order, keyed by
    ``transaction_id``, with an idempotent producer; paced at ``rate`` per second."""
    from fraudstream.kafka import producer_config
    from fraudstream.publish import send_paced

    ids = labels["transaction_id"].tolist()
    values = labels["label"].tolist()
    stamps = [_iso(t) for t in pd.DatetimeIndex(labels["reported_at"]).to_pydatetime()]

    def message(tx: str, label: int, reported: str) -> Callable[[int], tuple[bytes, bytes]]:
        value = orjson.dumps({"transaction_id": tx, "label": int(label), "reported_at": reported})
        return lambda _now_ms: (tx.encode(), value)

    return send_paced(
        (message(*row) for row in zip(ids, values, stamps, strict=True)),
        conf=producer_config(kafka, bootstrap),
        topic=topic,
        rate=rate,
        progress=progress,
        stop=stop,
    )


# ------------------------------------------------------------------ features refresh


@dataclass(frozen=True)
class RefreshResult:
    as_of: pd.Timestamp
    transactions: int
    labels_known: int
    frauds_known: int
    terminals: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "transactions": self.transactions,
            "labels_known": self.labels_known,
            "frauds_known": self.frauds_known,
            "terminals": self.terminals,
            "seconds": round(self.seconds, 2),
        }


def known_history(
    archive: Archive, as_of: pd.Timestamp, history: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, int]:
    """Every transaction before ``as_of`` with its label as known at ``as_of``.

    The archive's transactions with the labels reported before ``as_of`` (a transaction
    whose label is not reported yet counts as genuine, as in training), plus ``history`` (a
    labelled table, e.g. the training data, whose labels count as known) for transactions
    the archive does not have. Returns the table and the number of archived labels used.
    """
    archived = labelled_transactions(archive, end=as_of, as_of=as_of, unlabelled="genuine")
    labels_used = len(archive.read("labels", end=as_of))
    parts = [archived]
    if history is not None and len(history):
        older = history[history["timestamp"] < as_of]
        older = older[~older["transaction_id"].astype(str).isin(set(archived["transaction_id"]))]
        parts.insert(0, older[list(archived.columns.intersection(older.columns))].copy())
    for part in parts:
        part["timestamp"] = part["timestamp"].astype("datetime64[ns, UTC]")
    events = pd.concat(parts, ignore_index=True)
    events[LABEL_COLUMN] = events[LABEL_COLUMN].astype("int8")
    return events.sort_values("timestamp", kind="stable").reset_index(drop=True), labels_used


def refresh_features(
    settings: Settings,
    archive: Archive,
    as_of: pd.Timestamp,
    *,
    history: pd.DataFrame | None = None,
    materialize: bool = True,
) -> RefreshResult:
    """Recompute the label-based terminal features as of ``as_of`` and materialise them.

    Appends one row per terminal at ``as_of`` to the terminal view's offline table (the
    rows already there, e.g. the training backfill's, are kept:
    :func:`training.backfill.refresh_terminal_snapshot`), computed from
    :func:`known_history` with the terminal features' own label delay
    (:data:`~fraudstream.features.LABEL_DELAY_DAYS`), then runs ``feast
    materialize-incremental`` for the terminal view.
    """
    from fraudstream import stack
    from fraudstream.feast_env import run_feast
    from training.backfill import refresh_terminal_snapshot

    started = time.perf_counter()
    events, labels_used = known_history(archive, as_of, history)
    if events.empty:
        raise InvalidEvents(f"no transactions before {as_of.isoformat()} in the archive or history")
    terminals = refresh_terminal_snapshot(events, settings.feast.repo_path, as_of)
    if materialize:
        endpoints = stack.resolve_endpoints(settings)
        end = (as_of + pd.Timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
        code = run_feast(
            settings, endpoints, ["materialize-incremental", end, "--views", TERMINAL_VIEW]
        )
        if code != 0:
            raise FraudstreamError(f"feast materialize-incremental failed (exit code {code})")
    log.info("features refreshed as of %s: %d terminals", as_of.isoformat(), terminals)
    return RefreshResult(
        as_of=as_of,
        transactions=len(events),
        labels_known=labels_used,
        frauds_known=int(events[LABEL_COLUMN].sum()),
        terminals=terminals,
        seconds=time.perf_counter() - started,
    )
