"""Labels: replay order and delay, the label schema, and which labels a refresh may use."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from fraudstream.archive import Archive
from fraudstream.labels import LabelEvent, known_history, label_events
from fraudstream.schema import InvalidEvents, validate_frame

pytestmark = pytest.mark.unit

T0 = pd.Timestamp("2026-01-10T00:00:00Z")


def _events(n: int, labels: list[int] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "transaction_id": [f"tx-{i}" for i in range(n)],
            "timestamp": [T0 + pd.Timedelta(hours=5 * (n - i)) for i in range(n)],
            "customer_id": ["c"] * n,
            "terminal_id": ["t"] * n,
            "amount": [1.0] * n,
            "is_fraud": labels if labels is not None else [i % 2 for i in range(n)],
        }
    )
    return validate_frame(frame, keep=("is_fraud",))


def test_label_events_are_delayed_and_in_arrival_order() -> None:
    events = _events(4)
    labels = label_events(events, timedelta(days=7))
    assert labels["reported_at"].is_monotonic_increasing
    by_id = events.set_index("transaction_id")
    for row in labels.itertuples():
        assert row.reported_at == by_id.loc[row.transaction_id, "timestamp"] + timedelta(days=7)
        assert row.label == by_id.loc[row.transaction_id, "is_fraud"]
    with pytest.raises(InvalidEvents, match="is_fraud"):
        label_events(events.drop(columns=["is_fraud"]), timedelta(days=1))
    with pytest.raises(InvalidEvents, match="0 and 1"):
        label_events(events.assign(is_fraud=[0, 1, 2, 0]), timedelta(days=1))


def test_label_message_schema() -> None:
    ok = LabelEvent.model_validate_json(
        b'{"transaction_id": 7, "label": 1, "reported_at": "2026-01-01T10:00:00+01:00"}'
    )
    assert ok.transaction_id == "7" and ok.reported_at == pd.Timestamp("2026-01-01T09:00Z")
    assert ok.to_json_dict()["reported_at"] == "2026-01-01T09:00:00Z"
    for bad in (
        b'{"transaction_id": "a", "label": 2, "reported_at": "2026-01-01T00:00:00Z"}',
        b'{"transaction_id": "a", "label": true, "reported_at": "2026-01-01T00:00:00Z"}',
        b'{"transaction_id": "a", "label": 1, "reported_at": "2026-01-01T00:00:00"}',
        b'{"transaction_id": "a", "label": 1}',
    ):
        with pytest.raises(ValidationError):
            LabelEvent.model_validate_json(bad)


def test_refresh_uses_only_labels_reported_by_as_of(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    events = _events(4, labels=[1, 1, 1, 1])
    archive.append("transactions", events)
    labels = label_events(events, timedelta(days=2))
    archive.append("labels", labels)
    as_of = labels["reported_at"].iloc[1] + timedelta(seconds=1)  # two labels known by then
    known, used = known_history(archive, as_of)
    assert used == 2 and len(known) == 4
    assert known["is_fraud"].sum() == 2  # unreported labels count as genuine, like training
    # the history the archive lacks is added; what the archive has wins
    older = _events(6, labels=[1] * 6)
    older["timestamp"] = older["timestamp"] - pd.Timedelta(days=30)
    older["transaction_id"] = [f"old-{i}" for i in range(6)]
    combined, _ = known_history(archive, as_of, pd.concat([older, events], ignore_index=True))
    assert len(combined) == 10 and combined["is_fraud"].sum() == 8
    assert combined["timestamp"].is_monotonic_increasing


def test_label_schema_file_is_current() -> None:
    import json

    path = Path(__file__).resolve().parents[2] / "docs" / "label.schema.json"
    assert json.loads(path.read_text()) == LabelEvent.json_schema()
