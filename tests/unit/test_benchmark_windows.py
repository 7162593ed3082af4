"""The streaming benchmark's per-window latency (``benchmarks.streaming.windows``), its
reading of the worker's ``/metrics``, and the variants script's worker / reference pairs."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.streaming import (
    action_shares,
    events_per_batch,
    parse_worker_metrics,
    per_batch,
    per_event_us,
    stage_delta,
    windows,
)
from fraudstream.metrics import WorkerMetrics

pytestmark = pytest.mark.unit


def test_windows_split_by_send_time_from_the_first_event() -> None:
    # 12 s at 100 events/s, sent from t=1,000 s; latency = 10 ms + 1 ms per second of phase
    sent_ms = 1_000_000 + np.arange(1200) * 10.0
    latency = 10.0 + (sent_ms - sent_ms[0]) / 1000.0
    out = windows(np.column_stack([sent_ms, latency])[::-1])  # any order
    assert [w["from_s"] for w in out] == [0.0, 5.0, 10.0]
    assert [w["n"] for w in out] == [500, 500, 200]
    # rounded to 0.1 ms: 10-14.99, 15-19.99 and 20-21.99 ms in the three windows
    assert out[0]["p50_ms"] == pytest.approx(12.5, abs=0.051)
    assert out[1]["p99_ms"] == pytest.approx(19.94, abs=0.051)
    assert out[2]["p99_ms"] == pytest.approx(21.97, abs=0.051)


def test_a_window_of_a_few_stragglers_is_left_out() -> None:
    timed = np.array([[0.0, 5.0]] * 30 + [[6_000.0, 900.0]] * 3)
    assert [w["from_s"] for w in windows(timed)] == [0.0]
    assert windows(np.empty((0, 2))) == []


def test_cpu_per_event_is_none_when_the_broker_is_not_measured() -> None:
    assert per_event_us(float("nan"), 1000) is None
    assert per_event_us(0.5, 1000) == pytest.approx(500.0)


def test_the_worker_metrics_are_read_as_the_worker_renders_them() -> None:
    metrics = WorkerMetrics(60.0)
    for stage, ms in [("batch", 12.5), ("batch", 7.5), ("model", 3.0)]:
        metrics.stage_ms.observe(ms, stage)
    metrics.batch_age_ms.observe(40.0)
    metrics.consumed.inc(amount=37)
    for action in ["approve"] * 33 + ["review"] * 3 + ["decline"]:
        metrics.decisions.inc(action)
    for _ in range(4):
        metrics.degraded.inc()
    metrics.history_reads.inc(amount=9)
    flat = parse_worker_metrics(metrics.render().decode())
    assert flat == {
        "consumed": 37.0,
        "history_reads": 9.0,
        "action:approve": 33.0,
        "action:review": 3.0,
        "action:decline": 1.0,
        "degraded": 4.0,
        "count:batch": 2.0,
        "sum:batch": 20.0,
        "count:model": 1.0,
        "sum:model": 3.0,
        "count:age": 1.0,
        "sum:age": 40.0,
    }
    assert events_per_batch({"consumed": 7.0, "count:batch": 1.0}, flat) == 30.0
    assert action_shares({"action:approve": 13.0, "degraded": 1.0}, flat) == {
        "approve": 0.8333,  # 20 of the 24 decisions since the first scrape
        "decline": 0.0417,
        "review": 0.125,
        "degraded": 0.125,
    }
    assert action_shares(flat, flat) == {}
    assert stage_delta({"consumed": 7.0, "sum:batch": 5.0}, flat) == {
        "batch": 500.0,  # (20 - 5) ms over 30 messages
        "model": 100.0,
    }
    assert per_batch({}, flat) == {
        "events_per_batch": 37.0,
        "age_ms": 40.0,
        "batch_ms": 20.0,
        "model_ms": 3.0,
    }


def test_each_worker_is_compared_with_the_nearest_reference_runs_around_it() -> None:
    from benchmarks.streaming_variants import REFERENCES, ratios_to

    results = [
        {"variant": "bare", "saturation_ev_s": 8000},
        {"variant": "naive", "naive_ev_s": 400.0},
        {"variant": "cur", "warm_ev_s": 6000},
        {"variant": "bare", "saturation_ev_s": 10000},
        {"variant": "cur2", "warm_ev_s": 4500},
        {"variant": "naive", "naive_ev_s": 600.0},
        {"variant": "bare", "saturation_ev_s": 9000},
        {"variant": "cur3", "warm_ev_s": 5000},  # no run of either after it
    ]
    bare = ratios_to(results, REFERENCES["bare"])
    assert [(r["variant"], r["reference_ev_s"], r["ratio"]) for r in bare] == [
        ("cur", [8000, 10000], round(6000 / 9000, 3)),
        ("cur2", [10000, 9000], round(4500 / 9500, 3)),
        ("cur3", [9000], round(5000 / 9000, 3)),
    ]
    naive = ratios_to(results, REFERENCES["naive"])
    assert [(r["variant"], r["reference_ev_s"], r["ratio"]) for r in naive] == [
        ("cur", [400.0, 600.0], 12.0),
        ("cur2", [400.0, 600.0], 9.0),
        ("cur3", [600.0], round(5000 / 600, 3)),
    ]
    assert ratios_to([{"variant": "cur", "warm_ev_s": 6000}], REFERENCES["bare"]) == []
