"""The archive's Parquet parts: atomic appends, time selection, deduplication, the labelled join."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fraudstream.archive import Archive, ArchiveError, labelled_transactions

pytestmark = pytest.mark.unit

T0 = pd.Timestamp("2026-01-10T00:00:00Z")


def _transactions(ids: list[str], hours: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": ids,
            "timestamp": [T0 + pd.Timedelta(hours=h) for h in hours],
            "customer_id": ["c1"] * len(ids),
            "terminal_id": ["t1"] * len(ids),
            "amount": [10.0 + i for i in range(len(ids))],
        }
    )


def _labels(ids: list[str], labels: list[int], days: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": ids,
            "label": labels,
            "reported_at": [T0 + pd.Timedelta(days=d) for d in days],
        }
    )


def test_append_writes_whole_parts_and_read_deduplicates(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    first = archive.append("transactions", _transactions(["a", "b"], [1, 2]))
    archive.append("transactions", _transactions(["b", "c"], [2, 3]))  # b again: a replay
    assert first.parent == tmp_path / "transactions" and first.suffix == ".parquet"
    assert not list((tmp_path / "transactions").glob(".*tmp"))
    frame = archive.read("transactions")
    assert frame["transaction_id"].tolist() == ["a", "b", "c"]
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert frame["currency"].isna().all()  # an optional column absent from the input
    assert len(archive.read("transactions", dedup=False)) == 4
    window = archive.read("transactions", T0 + pd.Timedelta(hours=2), T0 + pd.Timedelta(hours=3))
    assert window["transaction_id"].tolist() == ["b"]  # [start, end)


def test_latest_label_wins_as_known_at_a_time(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    archive.append("labels", _labels(["a", "b"], [0, 0], [7, 7]))
    archive.append("labels", _labels(["a"], [1], [9]))  # corrected two days later
    assert archive.read("labels").set_index("transaction_id")["label"].to_dict() == {
        "a": 1,
        "b": 0,
    }
    before = archive.read("labels", end=T0 + pd.Timedelta(days=8))
    assert before.set_index("transaction_id")["label"].to_dict() == {"a": 0, "b": 0}


def test_labelled_transactions_join(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    archive.append("transactions", _transactions(["a", "b", "c"], [1, 2, 3]))
    archive.append("labels", _labels(["a", "b"], [1, 0], [7, 7]))
    joined = labelled_transactions(archive)
    assert joined["transaction_id"].tolist() == ["a", "b"]
    assert joined["is_fraud"].tolist() == [1, 0]
    assert {"timestamp", "customer_id", "terminal_id", "amount"} <= set(joined.columns)
    everything = labelled_transactions(archive, unlabelled="genuine")
    assert everything["is_fraud"].tolist() == [1, 0, 0]
    early = labelled_transactions(archive, as_of=T0 + pd.Timedelta(days=1))
    assert early.empty  # no label was known yet


def test_bad_frames_and_kinds_are_refused(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    with pytest.raises(ArchiveError, match="unknown archive kind"):
        archive.append("orders", _transactions(["a"], [1]))
    with pytest.raises(ArchiveError, match="missing column"):
        archive.append("labels", pd.DataFrame({"transaction_id": ["a"], "label": [1]}))
    with pytest.raises(ArchiveError, match="time zone"):
        archive.read("labels", start="2026-01-01T00:00:00")
    assert archive.read("decisions").empty


def test_a_part_and_a_new_kind_directory_are_on_disk_before_append_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive commits offsets once ``append`` returned: the file, its rename into the
    kind's directory and that directory's entry in the root are each fsynced by then."""
    import os
    import stat

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    archive = Archive(tmp_path / "archive")
    archive.append("transactions", _transactions(["a"], [1]))
    assert synced == ["file", "dir", "dir"]  # the part, its directory, the root (new kind)
    synced.clear()
    archive.append("transactions", _transactions(["a"], [1]))
    assert synced == ["file", "dir"]
