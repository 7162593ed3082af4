"""The worker's metrics and liveness rule, with a clock the test moves."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from fraudstream.metrics import WorkerMetrics, serve

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_partition_with_lag_and_no_commit_makes_the_worker_not_live() -> None:
    clock = Clock()
    metrics = WorkerMetrics(stall_after_s=60, clock=clock)
    tp = ("transactions", 0)
    assert metrics.check_partitions({tp: 100}, {tp: 40}).live
    clock.now += 30
    assert metrics.check_partitions({tp: 150}, {tp: 90}).live  # committing: fine
    clock.now += 61
    state = metrics.check_partitions({tp: 200}, {tp: 90})  # lag 110, no commit for 61 s
    assert not state.live and "transactions[0]" in state.stalled[0]
    assert b"fraudstream_worker_live 0.0" in metrics.render()
    assert metrics.check_partitions({tp: 200}, {tp: 200}).live  # caught up: live again


def test_an_idle_partition_without_lag_stays_live() -> None:
    clock = Clock()
    metrics = WorkerMetrics(stall_after_s=10, clock=clock)
    tp = ("transactions", 3)
    metrics.check_partitions({tp: 50}, {tp: 50})
    clock.now += 3600
    assert metrics.check_partitions({tp: 50}, {tp: 50}).live


def test_http_endpoints_answer_metrics_and_liveness() -> None:
    clock = Clock()
    metrics = WorkerMetrics(stall_after_s=5, clock=clock)
    with metrics.lock:
        metrics.consumed.inc(amount=7)
        metrics.stage_ms.observe(12.5, "features")
    server = serve(metrics, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        text = urllib.request.urlopen(f"{base}/metrics").read().decode()
        assert "fraudstream_worker_consumed_total 7.0" in text
        assert 'fraudstream_worker_stage_duration_ms_count{stage="features"} 1.0' in text
        assert json.loads(urllib.request.urlopen(f"{base}/live").read()) == {
            "live": True,
            "stalled": [],
        }
        tp = ("transactions", 1)
        metrics.check_partitions({tp: 10}, {tp: None})
        clock.now += 6
        metrics.check_partitions({tp: 10}, {tp: None})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/live")
        assert err.value.code == 503
        assert "transactions[1]" in json.loads(err.value.read())["stalled"][0]
    finally:
        server.shutdown()


def test_garbage_collector_pauses_are_measured_by_generation() -> None:
    import gc

    from fraudstream.metrics import track_gc_pauses

    metrics = WorkerMetrics(stall_after_s=60)
    callback = track_gc_pauses(metrics.gc.pauses)
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        gc.callbacks.remove(callback)
    text = metrics.render().decode()  # reading the metrics moves the pauses in
    assert not metrics.gc.pauses
    counts = metrics.gc.pause_ms.counts
    assert sum(counts[("0",)]) >= 1 and sum(counts[("2",)]) >= 1
    assert metrics.gc.pause_ms.sums[("2",)] > 0
    assert 'fraudstream_worker_gc_pause_ms_count{generation="2"}' in text
