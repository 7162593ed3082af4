"""Live quality: precision per action, recall and CP@100 per day from archived decisions and the
labels that arrived; the gauges the archive serves; the report's files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudstream.archive import Archive
from fraudstream.config import Settings
from fraudstream.metrics import QualityMetrics
from fraudstream.quality import format_table, live_quality, quality_by_day, records, write_report

pytestmark = pytest.mark.unit

DAY1 = pd.Timestamp("2026-03-02T00:00:00Z")


def _decisions() -> pd.DataFrame:
    # day 1: 2 declines (1 fraud), 2 reviews (1 fraud, 1 unlabelled), 4 approvals (1 missed fraud)
    # day 2: 1 decline (fraud), 3 approvals, none of them labelled but the decline
    actions = ["decline", "decline", "review", "review"] + ["approve"] * 4
    actions += ["decline"] + ["approve"] * 3
    n = len(actions)
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "customer_id": [f"c{i}" for i in range(n)],
            "event_time": [
                DAY1 + pd.Timedelta(hours=2 * i) if i < 8 else DAY1 + pd.Timedelta(days=1, hours=i)
                for i in range(n)
            ],
            "score": np.linspace(0.99, 0.01, n),
            "action": actions,
        }
    )


LABELS = pd.DataFrame(
    {
        "transaction_id": ["t0", "t1", "t2", "t4", "t5", "t6", "t7", "t8"],
        "label": [1, 0, 1, 0, 1, 0, 0, 1],
    }
)


def test_quality_per_day() -> None:
    table = quality_by_day(_decisions(), LABELS)
    day1, day2 = records(table)
    assert day1["day"] == "2026-03-02" and day2["day"] == "2026-03-03"
    assert (day1["decisions"], day1["labelled"], day1["unlabelled"]) == (8, 7, 1)
    assert day1["decline_precision"] == 0.5
    assert day1["review_precision"] == 1.0  # t3 is not labelled yet: not counted
    assert day1["recall"] == pytest.approx(2 / 3)  # t0, t2 caught; t5 approved
    assert (day2["labelled"], day2["decline_precision"], day2["recall"]) == (1, 1.0, 1.0)
    assert day2["review_precision"] is None  # no review that day
    # one card per transaction: day 1's labelled cards hold 3 frauds (t0, t2, t5), day 2's
    # one (t8); all of them are in the top 100, so CP@100 is 3 / 100 and 1 / 100
    assert day1["card_precision_at_100"] == pytest.approx(0.03)
    assert day2["card_precision_at_100"] == pytest.approx(0.01)
    assert quality_by_day(_decisions().iloc[:0], LABELS).empty


def test_gauges_and_report(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "archive")
    decisions = _decisions()
    archive.append("decisions", decisions.assign(decided_at=decisions["event_time"]))
    archive.append("labels", LABELS.assign(reported_at=DAY1 + pd.Timedelta(days=8)))
    metrics = QualityMetrics()
    on_batch = live_quality(archive, metrics, interval_s=60, days=3650)
    on_batch({"decisions": 12, "labels": 8})
    text = metrics.render().decode()
    assert 'fraudstream_quality_precision{action="decline",day="2026-03-02"} 0.5' in text
    assert 'fraudstream_quality_decisions{day="2026-03-02",state="unlabelled"} 1.0' in text
    assert 'fraudstream_archive_rows_total{kind="labels"} 8.0' in text

    settings = Settings(
        feast={"repo_path": tmp_path / "no-repo"}, model={"dir": tmp_path / "no-model"}
    )
    now = DAY1 + pd.Timedelta(days=2)
    report = write_report(settings, archive, tmp_path / "report", days=7, now=now)
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["quality"][0]["decline_precision"] == 0.5
    assert "unavailable" in saved["drift"]  # no model here: said, not hidden
    for name in ("quality.png", "drift.png"):
        assert (tmp_path / "report" / name).stat().st_size > 1000
    assert math.isclose(report["quality"][1]["recall"], 1.0)
    table = format_table(report["quality"]).splitlines()
    assert table[1].split()[:5] == ["2026-03-02", "8", "7", "3", "0.500"]
    assert table[2].split()[5] == "-"  # no review on day 2
