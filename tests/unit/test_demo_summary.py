"""The demo's summary: its figures from the decisions and labels, and a chart and a feature
table a terminal shows without wrapping."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from fraudstream.demo import BAR_WIDTH, SCORE_BANDS, feature_table, score_chart, summarise
from fraudstream.features import MODEL_FEATURES, served_features

pytestmark = pytest.mark.unit

ROW = re.compile(r"^(\d\.\d\d)-(\d\.\d\d)   (#*) +(\d+\.\d)%  (#*) +(\d+\.\d)%$")


def _rows(lines: list[str]) -> list[tuple[float, float, int, float, int, float]]:
    out = []
    for line in lines[1:]:
        match = ROW.match(line)
        assert match, line
        lo, hi, bar0, share0, bar1, share1 = match.groups()
        out.append((float(lo), float(hi), len(bar0), float(share0), len(bar1), float(share1)))
    return out


def test_chart_rows_are_the_bands_with_each_labels_share() -> None:
    scores = pd.Series([0.001, 0.002, 0.03, 0.3, 0.9, 1.0, 0.6, 0.004, 0.5])
    labels = pd.Series([0, 0, 0, 0, 1, 1, 1, np.nan, 0])  # one without a label
    lines = score_chart(scores, labels)
    assert lines[0].split() == ["score", "band", "genuine", "(n=5)", "fraud", "(n=3)"]
    rows = _rows(lines)
    assert [(lo, hi) for lo, hi, *_ in rows] == [
        (0.0, 0.01),
        (0.01, 0.05),
        (0.05, 0.2),
        (0.2, 0.5),
        (0.5, 0.8),
        (0.8, 1.0),
    ]
    genuine = [r[3] for r in rows]
    fraud = [r[5] for r in rows]
    # genuine: 0.001, 0.002 | 0.03 | - | 0.3 | 0.5 (a band's lower edge is in it) | -
    assert genuine == [40.0, 20.0, 0.0, 20.0, 20.0, 0.0]
    # fraud: 0.6 | 0.9 and 1.0 (a score of 1 is in the last band)
    assert fraud == [0.0, 0.0, 0.0, 0.0, 33.3, 66.7]
    for _, _, bar0, share0, bar1, share1 in rows:
        assert bar0 == round(share0 / 100 * BAR_WIDTH)
        assert bar1 == round(share1 / 100 * BAR_WIDTH)


def test_chart_fits_a_terminal_and_sums_to_the_whole() -> None:
    rng = np.random.default_rng(7)
    scores = pd.Series(np.r_[rng.beta(0.3, 20, 19_000), rng.beta(3, 1, 200), [0.0, 1.0]])
    labels = pd.Series(np.r_[np.zeros(19_001), np.ones(201)])
    lines = score_chart(scores, labels)
    assert len(lines) == len(SCORE_BANDS)  # the header, then one row per band
    assert max(len("    " + line) for line in lines) < 100  # as the demo prints them
    rows = _rows(lines)
    assert sum(r[3] for r in rows) == pytest.approx(100.0, abs=0.35)
    assert sum(r[5] for r in rows) == pytest.approx(100.0, abs=0.35)
    assert "genuine (n=19,001)" in lines[0] and "fraud (n=201)" in lines[0]


def test_chart_of_a_label_with_no_transactions_is_empty_not_an_error() -> None:
    lines = score_chart(pd.Series([0.2, 0.3]), pd.Series([0, 0]))
    assert "fraud (n=0)" in lines[0]
    assert [r[5] for r in _rows(lines)] == [0.0] * 6


def _decision(tid: str, score: float, action: str, latency: float, second: int) -> dict:
    return {
        "transaction_id": tid,
        "score": score,
        "action": action,
        "latency_ms": latency,
        "degraded": tid == "t4",
        "decided_at": f"2026-12-03T10:00:{second:02d}+00:00",
    }


def test_summary_counts_against_the_labels() -> None:
    decisions = {
        d["transaction_id"]: d
        for d in (
            _decision("t1", 0.9, "decline", 10.0, 0),
            _decision("t2", 0.1, "review", 20.0, 1),
            _decision("t3", 0.01, "approve", 30.0, 2),
            _decision("t4", 0.02, "approve", 40.0, 3),
            _decision("t5", 0.7, "decline", 50.0, 4),
        )
    }
    # t3 is a missed fraud; t2 a false alarm; t1 and t5 caught
    labels = pd.DataFrame(
        {"transaction_id": ["t1", "t2", "t3", "t4", "t5"], "is_fraud": [1, 0, 1, 0, 1]}
    )
    printed: list[str] = []
    out = summarise(decisions, labels, 2, {"sent": 7}, printed.append)
    assert out["events"] == 7 and out["decisions"] == 5 and out["dead_letters"] == 2
    assert out["actions"] == {"decline": 2, "review": 1, "approve": 2}
    assert out["precision_review_decline"] == pytest.approx(2 / 3, abs=1e-4)
    assert out["recall_review_decline"] == pytest.approx(2 / 3, abs=1e-4)
    assert out["latency_ms_p50"] == 30.0
    assert out["degraded"] == 1
    assert out["throughput_per_s"] == round(5 / 4, 1)  # 5 decisions over 4 s, to 0.1/s
    chart = printed[printed.index(next(p for p in printed if "score distribution" in p)) + 1 :]
    assert "genuine (n=2)" in chart[0] and "fraud (n=3)" in chart[0]


def test_feature_table_is_one_row_per_feature_in_the_models_order() -> None:
    names = [f.name for f in served_features(MODEL_FEATURES)]
    rng = np.random.default_rng(3)
    online = pd.DataFrame(
        {
            "customer_id": [2402, 2175, 2496],
            "terminal_id": [9701, 3256, 4524],
            # Feast's column order is not the model's, and may change from run to run
            **{n: rng.uniform(0, 100, 3) for n in reversed(names)},
        }
    )
    online["customer_nb_tx_7d"] = [31, 14, 9]
    online["terminal_fraud_run_age_d"] = [None, float("nan"), 1.5]
    online["not_in_the_model"] = [1, 2, 3]
    lines = feature_table(online, names)
    assert lines[0].split() == [
        "customer",
        "/",
        "terminal",
        "2402",
        "/",
        "9701",
        "2175",
        "/",
        "3256",
        "2496",
        "/",
        "4524",
    ]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert [line.split()[0] for line in lines[1:]] == [*names, "not_in_the_model"]
    assert rows["customer_nb_tx_7d"] == ["31", "14", "9"]
    assert rows["terminal_fraud_run_age_d"] == ["-", "-", "1.5"]
    first = names[0]
    assert [float(v) for v in rows[first]] == pytest.approx(online[first].tolist(), abs=5e-5)
    assert max(len("  " + line) for line in lines) < 100  # as the demo prints it
