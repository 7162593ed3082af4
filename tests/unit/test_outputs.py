"""Output paths: a command refuses, before any work, an output that would destroy data (an
input, an existing file without ``--force``, a directory that is not a model artifact) or
that cannot be written (a directory where a file goes); exit code 2, one line, no traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from fraudstream.batch_scoring import write_decisions
from fraudstream.cli import app
from fraudstream.config import KafkaSettings, Settings
from fraudstream.errors import FraudstreamError
from fraudstream.outputs import OutputError
from fraudstream.simulate import simulate, write_parquet

pytestmark = pytest.mark.unit


@pytest.fixture
def tx(clean_env: Callable[[], Settings], tmp_path: Path) -> Path:
    """A small transactions file in an empty working directory without settings."""
    return write_parquet(simulate(customers=20, terminals=200, days=2), tmp_path / "tx.parquet")


def refused(args: list[str], message: str) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # no traceback
    line = result.output.strip()
    assert "\n" not in line and message in line, line
    return line


def never(*_args: Any, **_kwargs: Any) -> Any:
    pytest.fail("called after the output was refused")


def test_train_refuses_a_directory_that_is_not_a_model_artifact(
    tx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.train

    monkeypatch.setattr(training.train, "train", never)
    mine = tmp_path / "models"
    (mine / "registry").mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    (tmp_path / "models.old").mkdir()
    message = "--out models exists and is not a model artifact (no manifest.json"
    refused(["train", "--out", "models", "--transactions", str(tx)], message)
    monkeypatch.setenv("FRAUDSTREAM_MODEL__DIR", "models")
    refused(["train", "--transactions", str(tx)], "FRAUDSTREAM_MODEL__DIR models exists and is")
    refused(["train", "--out", ".", "--transactions", str(tx)], "would replace the input")
    refused(["train", "--out", str(tx)], "exists and is not a directory")
    assert (mine / "notes.txt").read_text() == "mine" and (tmp_path / "models.old").is_dir()


def test_train_refuses_a_directory_inside_the_registry(
    tx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.train

    monkeypatch.setattr(training.train, "train", never)
    version = tmp_path / "reg" / "versions" / "v1"
    version.mkdir(parents=True)
    (version / "manifest.json").write_text('{"model_version": "v1"}')  # an artifact
    monkeypatch.setenv("FRAUDSTREAM_MODEL__REGISTRY_DIR", str(tmp_path / "reg"))
    for out in (version, tmp_path / "reg"):
        refused(
            ["train", "--out", str(out), "--transactions", str(tx)], "inside the model registry"
        )
    assert (version / "manifest.json").read_text() == '{"model_version": "v1"}'


def test_score_batch_refuses_its_input_an_existing_file_and_a_directory(
    tx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fraudstream.batch_scoring

    monkeypatch.setattr(fraudstream.batch_scoring, "score_file", never)
    before = tx.read_bytes()
    args = ["score-batch", "--transactions", str(tx), "--out"]
    refused([*args, str(tx), "--force"], f"--out {tx} would replace the input {tx}")
    (tmp_path / "link.parquet").symlink_to(tx)
    refused([*args, "link.parquet", "--force"], "would replace the input")
    (tmp_path / "old.csv").write_text("mine")
    refused([*args, "old.csv"], "--out old.csv exists; pass --force to replace it")
    (tmp_path / "out").mkdir()
    refused([*args, "out", "--force"], "--out out is a directory; give a file path")
    assert tx.read_bytes() == before and (tmp_path / "old.csv").read_text() == "mine"

    decisions = pd.DataFrame({"action": ["approve"], "degraded": [False], "model_version": ["v"]})
    monkeypatch.setattr(fraudstream.batch_scoring, "score_file", lambda *a, **k: decisions)
    result = CliRunner().invoke(app, [*args, "old.csv", "--force"])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(tmp_path / "old.csv")["action"].tolist() == ["approve"]


def test_writing_decisions_to_a_directory_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="is a directory"):
        write_decisions(pd.DataFrame({"a": [1]}), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_simulate_refuses_an_existing_file_another_format_a_directory_and_old_dates(
    tx: Path, tmp_path: Path
) -> None:
    before = tx.read_bytes()
    small = ["--customers", "20", "--terminals", "200", "--days", "1"]
    refused(["simulate", "--out", str(tx), *small], "exists; pass --force to replace it")
    assert tx.read_bytes() == before
    refused(["simulate", "--out", "tx.csv", *small], "give a name ending in .parquet")
    (tmp_path / "dir.parquet").mkdir()
    refused(["simulate", "--out", "dir.parquet", *small], "is a directory; give a file path")
    refused(["simulate", "--out", "new.parquet", "--start", "1500-01-01", *small], "before 2000")
    assert not (tmp_path / "tx.csv").exists() and not (tmp_path / "new.parquet").exists()
    result = CliRunner().invoke(app, ["simulate", "--out", str(tx), *small, "--force"])
    assert result.exit_code == 0, result.output
    assert tx.read_bytes() != before


def test_publish_refuses_labels_out_before_anything_is_sent(
    tx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fraudstream.kafka
    import fraudstream.publish

    monkeypatch.setenv("FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS", "localhost:9")
    monkeypatch.setattr(fraudstream.kafka, "check_kafka", never)
    monkeypatch.setattr(fraudstream.publish, "publish_events", never)
    before = tx.read_bytes()
    args = ["publish", "--transactions", str(tx), "--labels-out"]
    refused([*args, str(tx), "--force"], f"--labels-out {tx} would replace the input {tx}")
    (tmp_path / "labels.parquet").write_text("mine")
    refused([*args, "labels.parquet"], "--labels-out labels.parquet exists; pass --force")
    assert tx.read_bytes() == before and (tmp_path / "labels.parquet").read_text() == "mine"

    def no_kafka(*_args: Any) -> None:
        raise FraudstreamError("no Kafka here")

    monkeypatch.setattr(fraudstream.kafka, "check_kafka", no_kafka)  # --force: checked, allowed
    refused([*args, "labels.parquet", "--force"], "no Kafka here")


def test_publish_events_refuses_a_directory_for_labels_before_sending(
    tx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fraudstream.publish
    from fraudstream.schema import read_transactions

    monkeypatch.setattr(fraudstream.publish, "send_paced", never)
    with pytest.raises(OutputError, match="is a directory"):
        fraudstream.publish.publish_events(
            read_transactions(tx),
            kafka=KafkaSettings(),
            bootstrap="localhost:9",
            topic="t",
            labels_out=tmp_path,
        )


def test_report_refuses_an_existing_file(
    tx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fraudstream.archive import Archive
    from fraudstream.quality import write_report

    (tmp_path / "notes.txt").write_text("mine")
    refused(["report", "--out", "notes.txt"], "--out notes.txt exists and is not a directory")
    missing = tmp_path / "no" / "archive"
    monkeypatch.setenv("FRAUDSTREAM_MONITORING__ARCHIVE_DIR", str(missing))
    refused(["report", "--out", "r"], "no archive at")
    assert not (tmp_path / "r").exists()
    with pytest.raises(OutputError, match="is not a directory"):
        write_report(Settings(), Archive(tmp_path / "archive"), tmp_path / "notes.txt", days=1)
    assert (tmp_path / "notes.txt").read_text() == "mine"
