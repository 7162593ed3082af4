"""The event schema: one message and a whole table, with errors that name what is wrong."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from fraudstream.schema import (
    InvalidEvents,
    TransactionEvent,
    from_handbook,
    read_transactions,
    validate_frame,
)

pytestmark = pytest.mark.unit

GOOD = {
    "transaction_id": 1,
    "timestamp": "2026-01-02T03:04:05+01:00",
    "customer_id": "c-1",
    "terminal_id": 77,
    "amount": 12.5,
}


def frame(**overrides: object) -> pd.DataFrame:
    base = {
        "transaction_id": [1, 2, 3],
        "timestamp": ["2026-01-01T00:00:00Z", "2026-01-01T01:00:00+02:00", "2026-01-01T02:00:00Z"],
        "customer_id": [10, 11, 10],
        "terminal_id": ["t1", "t2", "t3"],
        "amount": [1.0, 2.5, 3.0],
    }
    base.update(overrides)  # type: ignore[arg-type]
    return pd.DataFrame(base)


def test_event_is_normalised_to_utc_and_string_ids() -> None:
    event = TransactionEvent.model_validate_json(json.dumps(GOOD))
    assert event.timestamp.isoformat() == "2026-01-02T02:04:05+00:00"
    assert (event.transaction_id, event.customer_id, event.terminal_id) == ("1", "c-1", "77")
    assert event.to_json_dict()["timestamp"] == "2026-01-02T02:04:05Z"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timestamp", "2026-01-02T03:04:05"),
        ("timestamp", "yesterday"),
        ("timestamp", 1700000000),
        ("amount", 0),
        ("amount", -3),
        ("amount", "12"),
        ("amount", True),
        ("customer_id", True),
        ("customer_id", 1.5),
        ("customer_id", ""),
        ("terminal_id", None),
        ("currency", "eur"),
    ],
)
def test_bad_event_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as err:
        TransactionEvent.model_validate({**GOOD, field: value})
    assert field in str(err.value)


def test_nan_and_infinite_amounts_are_refused() -> None:
    for text in ("NaN", "Infinity", "1e999"):
        raw = json.dumps({**GOOD, "amount": 1}).replace('"amount": 1', f'"amount": {text}')
        with pytest.raises(ValidationError, match="amount"):
            TransactionEvent.model_validate_json(raw)


def test_missing_field_and_bad_json() -> None:
    with pytest.raises(ValidationError, match="terminal_id"):
        TransactionEvent.model_validate({k: v for k, v in GOOD.items() if k != "terminal_id"})
    with pytest.raises(ValidationError, match="json"):
        TransactionEvent.model_validate_json(b"\xff\xfe not json")


def test_json_schema_file_is_current() -> None:
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "docs" / "transaction.schema.json"
    assert json.loads(path.read_text()) == TransactionEvent.json_schema()


def test_frame_is_canonical() -> None:
    out = validate_frame(frame())
    assert list(out.columns) == [
        "transaction_id",
        "customer_id",
        "terminal_id",
        "timestamp",
        "amount",
    ]
    assert str(out["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert out["timestamp"].is_monotonic_increasing
    # in time order: 01:00+02:00 is 23:00 UTC the day before, the earliest
    assert out["transaction_id"].tolist() == ["2", "1", "3"]
    assert out["customer_id"].tolist() == ["11", "10", "10"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"amount": [1.0, np.nan, 3.0]}, r"'amount'.*1 row\(s\) \(positions 1\)"),
        ({"amount": [1.0, 0.0, -2.0]}, r"'amount'.*2 row\(s\) \(positions 1, 2\)"),
        ({"amount": [1.0, np.inf, 3.0]}, r"'amount'"),
        ({"transaction_id": [1, 2, 1]}, r"'transaction_id'.*duplicate.*positions 0, 2"),
        (
            {"timestamp": ["2026-01-01T00:00:00", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"]},
            r"'timestamp'.*no UTC offset.*positions 0",
        ),
        (
            {"timestamp": ["2026-01-01T00:00:00Z", "garbage", "2026-01-01T00:00:00Z"]},
            r"'timestamp'.*unparsable.*positions 1",
        ),
        ({"customer_id": [1, None, 3]}, r"'customer_id'.*missing"),
    ],
)
def test_bad_frames_name_rows_and_columns(overrides: dict, message: str) -> None:
    with pytest.raises(InvalidEvents, match=message):
        validate_frame(frame(**overrides))


def test_naive_datetime_column_is_refused() -> None:
    df = frame(timestamp=pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"]))
    with pytest.raises(InvalidEvents, match="naive"):
        validate_frame(df)


def test_missing_columns_are_named() -> None:
    with pytest.raises(InvalidEvents, match=r"\['amount'\]"):
        validate_frame(frame().drop(columns=["amount"]))


def test_handbook_adapter_repairs_zero_amounts_and_counts_them(tmp_path) -> None:
    hb = pd.DataFrame(
        {
            "TRANSACTION_ID": [0, 1],
            "TX_DATETIME": pd.to_datetime(["2018-04-01 00:00:31", "2018-04-01 00:02:10"]),
            "CUSTOMER_ID": [596, 4961],
            "TERMINAL_ID": [3156, 3412],
            "TX_AMOUNT": [57.16, 0.0],
            "TX_FRAUD": [0, 1],
            "TX_FRAUD_SCENARIO": [0, 2],
        }
    )
    out = from_handbook(hb)
    assert out["amount"].tolist() == [57.16, 0.01]
    assert out.attrs["repairs"] == {"zero_amount_to_0.01": 1}
    assert str(out["timestamp"].iloc[0]) == "2018-04-01 00:00:31+00:00"
    path = tmp_path / "hb.parquet"
    hb.to_parquet(path)
    assert read_transactions(path)["is_fraud"].tolist() == [0, 1]
    hb.loc[1, "TX_AMOUNT"] = -1.0
    with pytest.raises(InvalidEvents, match="amount"):
        from_handbook(hb)


def test_decision_schema_file_is_current() -> None:
    from pathlib import Path

    from fraudstream.decision import Decision

    path = Path(__file__).resolve().parents[2] / "docs" / "decision.schema.json"
    assert json.loads(path.read_text()) == Decision.model_json_schema()


def _handbook(**overrides: object) -> pd.DataFrame:
    base = {
        "TRANSACTION_ID": [0, 1],
        "TX_DATETIME": ["2018-04-01 00:00:31", "2018-04-01 00:02:10"],
        "CUSTOMER_ID": [596, 4961],
        "TERMINAL_ID": [3156, 3412],
        "TX_AMOUNT": [57.16, 3.0],
        "TX_FRAUD": [0, 1],
    }
    base.update(overrides)  # type: ignore[arg-type]
    return pd.DataFrame(base)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"not a Parquet file \(.*0 bytes"),
        (b"transaction_id,amount\n1,2.5\n", r"not a Parquet file \(.*magic bytes"),
        (None, "no such file"),
    ],
)
def test_a_file_that_is_not_parquet_is_named(tmp_path, content: bytes | None, message: str) -> None:
    path = tmp_path / "events.parquet"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InvalidEvents, match=f"^{path}: {message}"):
        read_transactions(path)


def test_a_table_without_rows_is_refused(tmp_path) -> None:
    path = tmp_path / "empty.parquet"
    frame(is_fraud=[0, 1, 0]).iloc[:0].to_parquet(path)
    with pytest.raises(InvalidEvents, match=f"^{path}: no rows$"):
        read_transactions(path)


def test_table_errors_name_the_file(tmp_path) -> None:
    path = tmp_path / "bad.parquet"
    frame(amount=[1.0, -1.0, 3.0]).to_parquet(path)
    with pytest.raises(InvalidEvents, match=f"^{path}: column 'amount'.*positions 1"):
        read_transactions(path)


def test_handbook_times_as_text_naive_are_utc_offsets_converted() -> None:
    out = from_handbook(_handbook(TX_DATETIME=["2018-04-01 02:00:00+02:00", "2018-04-01 01:00:00"]))
    assert out["timestamp"].tolist() == [
        pd.Timestamp("2018-04-01T00:00:00Z"),
        pd.Timestamp("2018-04-01T01:00:00Z"),
    ]
    aware = from_handbook(_handbook(TX_DATETIME=["2018-04-01T02:00:00+02:00"] * 2))
    assert aware["timestamp"].iloc[0] == pd.Timestamp("2018-04-01T00:00:00Z")


@pytest.mark.parametrize("bad", ["garbage", None])
def test_unparsable_handbook_times_name_the_rows(bad: str | None) -> None:
    with pytest.raises(InvalidEvents, match=r"'TX_DATETIME'.*1 row\(s\) \(positions 1\)"):
        from_handbook(_handbook(TX_DATETIME=["2018-04-01 00:00:31", bad]))


def test_rows_before_the_earliest_timestamp_are_refused() -> None:
    # epoch seconds are read as nanoseconds: 1970
    with pytest.raises(
        InvalidEvents, match=r"'timestamp': before 2000-01-01.*positions 0, 1.*1970"
    ):
        from_handbook(_handbook(TX_DATETIME=[1522540800, 1522540930]))
    stamps = pd.to_datetime(["2026-01-01 00:00", "1999-12-31 23:59", "2026-01-02 00:00"], utc=True)
    with pytest.raises(InvalidEvents, match=r"'timestamp': before 2000-01-01.*positions 1\)"):
        validate_frame(frame(timestamp=stamps))
    with pytest.raises(InvalidEvents, match=r"'timestamp': missing values.*positions 1\)"):
        validate_frame(frame(timestamp=stamps.where([True, False, True])))
    edge = frame(
        timestamp=["2000-01-01T00:00:00Z", "2000-01-01T01:00:00+01:00", "2026-01-01T00:00:00Z"]
    )
    assert len(validate_frame(edge)) == 3


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["yes", "0", "1"], r"values other than 0 and 1 in 3 row\(s\)"),
        ([0, 3, 1], r"values other than 0 and 1 in 1 row\(s\) \(positions 1\)"),
        ([0.0, 0.5, 1.0], r"values other than 0 and 1 in 1 row\(s\) \(positions 1\)"),
        ([0, np.nan, 1], r"missing values in 1 row\(s\) \(positions 1\)"),
    ],
)
def test_bad_labels_name_the_column_and_rows(labels: list, message: str) -> None:
    with pytest.raises(InvalidEvents, match=f"column 'is_fraud': {message}"):
        validate_frame(frame(is_fraud=labels), keep=("is_fraud",))
    with pytest.raises(InvalidEvents, match="column 'is_fraud'"):
        from_handbook(_handbook(TX_FRAUD=labels[:2]))


@pytest.mark.parametrize("labels", [[0, 1, 0], [0.0, 1.0, 0.0], [False, True, False]])
def test_labels_are_0_or_1_as_int8(labels: list) -> None:
    out = validate_frame(frame(is_fraud=labels), keep=("is_fraud",))
    assert str(out["is_fraud"].dtype) == "int8"
    assert out.set_index("transaction_id")["is_fraud"].to_dict() == {"1": 0, "2": 1, "3": 0}
