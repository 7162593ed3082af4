"""Bad transaction tables given to the CLI: one line naming the file and what is wrong, exit 2,
before anything is computed or sent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fraudstream.cli import app
from fraudstream.config import Settings
from fraudstream.errors import FraudstreamError

pytestmark = pytest.mark.unit


def table(**extra: object) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": [1, 2],
            "timestamp": ["2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"],
            "customer_id": [10, 11],
            "terminal_id": ["t1", "t2"],
            "amount": [1.0, 2.5],
            **extra,
        }
    )


def refused(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.exception is not None
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "not a Parquet file"),
        (lambda p: p.write_text("transaction_id,amount\n1,2.5\n"), "not a Parquet file"),
        (lambda p: p.mkdir(), "a directory, not a Parquet file"),
        (lambda p: None, "no such file"),
        (lambda p: table().iloc[:0].to_parquet(p), "no rows"),
        (lambda p: table(is_fraud=["yes", "0"]).to_parquet(p), "column 'is_fraud'"),
    ],
)
def test_score_batch_names_the_bad_file(
    clean_env: Callable[[], Settings],
    tmp_path: Path,
    make: Callable[[Path], object],
    message: str,
) -> None:
    path = tmp_path / "events.parquet"
    make(path)
    line = refused("score-batch", "--transactions", str(path), "--out", str(tmp_path / "o.pq"))
    assert line.startswith(f"error: {path}: {message}"), line


def test_retrain_on_a_table_without_rows_says_so(
    clean_env: Callable[[], Settings], tmp_path: Path
) -> None:
    path = tmp_path / "zero.parquet"
    table(is_fraud=[0, 1]).iloc[:0].to_parquet(path)
    assert refused("retrain", "--transactions", str(path)) == f"error: {path}: no rows"


def test_features_backfill_of_an_unlabelled_table_is_an_error(
    clean_env: Callable[[], Settings], tmp_path: Path
) -> None:
    path = tmp_path / "unlabelled.parquet"
    table().to_parquet(path)
    line = refused("features", "backfill", "--transactions", str(path))
    assert line.startswith(f"error: {path}: ") and "'is_fraud'" in line, line


def test_publish_refuses_bad_labels_before_sending(
    clean_env: Callable[[], Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(*args: object, **kwargs: object) -> None:
        raise FraudstreamError("Kafka was contacted")

    monkeypatch.setenv("FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setattr("fraudstream.kafka.check_kafka", unreachable)
    monkeypatch.setattr("fraudstream.publish.publish_events", unreachable)
    path = tmp_path / "events.parquet"
    table(is_fraud=[0.0, np.nan]).to_parquet(path)
    line = refused("publish", "--transactions", str(path))
    assert line == f"error: {path}: column 'is_fraud': missing values in 1 row(s) (positions 1)"


def test_retrain_of_no_rows_does_not_ask_for_the_label_column(tmp_path: Path) -> None:
    from fraudstream.registry import ModelRegistry
    from training.retrain import retrain

    empty = table(is_fraud=[0, 1]).iloc[:0]
    with pytest.raises(ValueError, match="no rows"):
        retrain(empty, tmp_path, ModelRegistry(tmp_path / "reg"), fallback_dir=tmp_path)
