"""Prometheus metrics of fraudstream's processes: every definition here.

The values live in small counters of this module, exposed through a private
:class:`~prometheus_client.CollectorRegistry` by a custom collector, rather than in
``prometheus_client.Counter`` objects: importing Feast switches prometheus-client to its
multiprocess mode for the whole process (``feast.metrics`` sets ``PROMETHEUS_MULTIPROC_DIR``),
where same-named metrics of two registries share one value.

:class:`WorkerMetrics` also holds the worker's liveness: a Faust agent can die while the
process stays up, so the worker is live only while every assigned partition that has
unread messages keeps committing (:meth:`WorkerMetrics.check_partitions`).
:func:`serve` exposes ``/metrics`` and ``/live`` over HTTP.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

#: Histogram buckets in milliseconds.
LATENCY_BUCKETS_MS = (0.5, 1, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 50, 100, 250, 500, 1000, 2500)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: ``when`` of ``fraudstream_worker_batch_failures_total``: a batch failed before every
#: output was delivered (dead-lettered whole), or after.
BEFORE_DELIVERY = "before_delivery"
AFTER_DELIVERY = "after_delivery"
CONTENT_TYPE = CONTENT_TYPE_LATEST

Labels = tuple[str, ...]


class Counter:
    """A counter family with fixed label names."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self.values: defaultdict[Labels, float] = defaultdict(float)
        if not self.labelnames:
            self.values[()] = 0.0

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.values[labels] += amount

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in sorted(self.values.items()):
            family.add_metric(list(labels), value)
        return family


class Gauge:
    """A gauge family with fixed label names (a label set can be removed)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self.values: dict[Labels, float] = {} if labelnames else {(): 0.0}

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = value

    def clear(self) -> None:
        self.values = {} if self.labelnames else {(): 0.0}

    def family(self) -> Metric:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in sorted(self.values.items()):
            family.add_metric(list(labels), value)
        return family


class Histogram:
    """A histogram family with fixed label names and buckets."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        labelnames: Sequence[str] = (),
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self.bounds = [float(b) for b in buckets]
        self.counts: dict[Labels, list[int]] = {}
        self.sums: defaultdict[Labels, float] = defaultdict(float)

    def observe(self, value: float, *labels: str) -> None:
        counts = self.counts.setdefault(labels, [0] * (len(self.bounds) + 1))
        counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sums[labels] += value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, counts in sorted(self.counts.items()):
            cumulative, buckets = 0, []
            for bound, count in zip([*self.bounds, float("inf")], counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            family.add_metric(list(labels), buckets, self.sums[labels])
        return family


class _Families(Collector):
    """A collector over a fixed set of families, with its own registry."""

    families: tuple[Counter | Gauge | Histogram, ...] = ()

    def __init__(self) -> None:
        self.lock = threading.Lock()  # updates on the event loop, reads on the HTTP thread
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            self.refresh()
            families = [f.family() for f in self.families]
        yield from families

    def refresh(self) -> None:
        """Bring values that are computed lazily up to date (called under :attr:`lock`)."""

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class ModelMetrics:
    """Which model versions serve and how hot reloads went (the worker's and the API's)."""

    def __init__(self, prefix: str) -> None:
        self.serving = Gauge(
            f"{prefix}_model_serving",
            "1 for each model version in use, by role (champion, shadow)",
            ["role", "version"],
        )
        self.reloads = Counter(
            f"{prefix}_model_reloads", "Switches to a promoted model or a new shadow, live"
        )
        self.reload_failures = Counter(
            f"{prefix}_model_reload_failures",
            "Promoted models refused (bad artifact or features); the old model kept scoring",
        )
        self.families = (self.serving, self.reloads, self.reload_failures)

    def set_serving(self, champion: str, shadow: str | None) -> None:
        self.serving.clear()
        self.serving.set(1.0, "champion", champion)
        if shadow is not None:
            self.serving.set(1.0, "shadow", shadow)


class GcMetrics:
    """Garbage-collector pauses of one process, by generation, fed by
    :func:`track_gc_pauses` and moved into the histogram when the metrics are read."""

    def __init__(self, prefix: str, process: str) -> None:
        #: Pauses reported by :func:`track_gc_pauses`, not yet in :attr:`pause_ms`.
        self.pauses: deque[tuple[int, float]] = deque(maxlen=100_000)
        self.pause_ms = Histogram(
            f"{prefix}_gc_pause_ms",
            f"Garbage-collector pauses of the {process} process, by generation",
            LATENCY_BUCKETS_MS,
            ["generation"],
        )
        self.families = (self.pause_ms,)

    def drain(self) -> None:
        """Move the recorded pauses into the histogram (hold the owner's lock)."""
        while self.pauses:
            generation, ms = self.pauses.popleft()
            self.pause_ms.observe(ms, str(generation))


class ApiMetrics(_Families):
    """Requests, latency, decisions, degraded decisions, scorer calls, errors and garbage-
    collector pauses of one app."""

    def __init__(self) -> None:
        self.requests = Counter(
            "fraudstream_api_requests",
            "HTTP requests answered, by route template, method and status code",
            ["route", "method", "status"],
        )
        self.latency_ms = Histogram(
            "fraudstream_api_request_duration_ms",
            "Time from request arrival to the end of the response, in milliseconds",
            LATENCY_BUCKETS_MS,
            ["route"],
        )
        self.decisions = Counter(
            "fraudstream_api_decisions", "Transactions scored, by action", ["action"]
        )
        self.degraded = Counter(
            "fraudstream_api_degraded_decisions",
            "Decisions made with missing or stale features (degraded: true)",
        )
        self.scoring_calls = Histogram(
            "fraudstream_api_scoring_call_transactions",
            "Transactions per scorer call (concurrent single requests are scored together)",
            BATCH_BUCKETS[:-1],
        )
        self.errors = Counter(
            "fraudstream_api_errors",
            "Requests that failed inside the API (answered 500)",
            ["route"],
        )
        self.cache_checks = Counter(
            "fraudstream_api_cache_checks",
            "Scorer calls by how their cached rows were checked: watch (Redis had reported "
            "none changed: no round trip) or redis (one round trip)",
            ["how"],
        )
        self.key_watch_healthy = Gauge(
            "fraudstream_api_key_watch_healthy",
            "1 while the key watch is connected and Redis answered it lately, else 0",
        )
        #: Reads (calls answered by the watch, calls that went to Redis, watch healthy);
        #: None: no watch.
        self.watch_stats: Callable[[], tuple[int, int, bool]] | None = None
        self.models = ModelMetrics("fraudstream_api")
        self.drift = DriftMetrics("fraudstream_api")
        self.gc = GcMetrics("fraudstream_api", "API")
        self.families = (
            *self.models.families,
            *self.drift.families,
            self.requests,
            self.latency_ms,
            self.decisions,
            self.degraded,
            self.scoring_calls,
            self.errors,
            self.cache_checks,
            self.key_watch_healthy,
            *self.gc.families,
        )
        super().__init__()

    def refresh(self) -> None:
        self.drift.refresh()
        self.gc.drain()
        if self.watch_stats is not None:
            hits, misses, healthy = self.watch_stats()
            self.cache_checks.values[("watch",)] = float(hits)
            self.cache_checks.values[("redis",)] = float(misses)
            self.key_watch_healthy.set(1.0 if healthy else 0.0)


@dataclass
class _Partition:
    committed: int | None = None
    moved_at: float = 0.0  # monotonic time the committed offset last changed


@dataclass(frozen=True)
class Liveness:
    live: bool
    stalled: list[str] = field(default_factory=list)  # "topic[partition]: why"


class WorkerMetrics(_Families):
    """What the scoring worker did, per stage, and whether its partitions keep moving."""

    STAGES = ("decode", "features", "model", "update", "produce", "batch")

    def __init__(self, stall_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_after_s = stall_after_s
        self.clock = clock
        self.consumed = Counter("fraudstream_worker_consumed", "Messages taken from the input")
        self.redriven = Counter(
            "fraudstream_worker_redriven",
            "Messages taken from the input that fraudstream redrive sent back from the "
            "dead-letter topic (header redriven_from)",
        )
        self.decisions = Counter(
            "fraudstream_worker_decisions", "Decisions produced, by action", ["action"]
        )
        self.dead_letters = Counter(
            "fraudstream_worker_dead_letters",
            "Messages sent to the dead-letter topic, by error type",
            ["error_type"],
        )
        self.degraded = Counter(
            "fraudstream_worker_degraded_decisions",
            "Decisions made with missing or stale features (degraded: true)",
        )
        self.history_reads = Counter(
            "fraudstream_worker_history_reads",
            "Customer states read from Redis (not in the worker's cache or changed elsewhere)",
        )
        self.batch_failures = Counter(
            "fraudstream_worker_batch_failures",
            "Micro-batches whose handling raised (a bug, logged with its traceback), by when: "
            "before_delivery (its messages went to the dead-letter topic, worker_error) or "
            "after_delivery (every output was out; confirming state writes or counting failed)",
            ["when"],
        )
        self.state_writes_lost = Counter(
            "fraudstream_worker_state_writes_lost",
            "Events whose customer-state writes Redis did not confirm, after retries (their "
            "decisions were delivered; the customers' next features miss them)",
        )
        self.stage_ms = Histogram(
            "fraudstream_worker_stage_duration_ms",
            "Time per micro-batch in each stage (decode, features, model, update: history and "
            "online-store writes, produce: until every output is delivered; batch: all)",
            LATENCY_BUCKETS_MS,
            ["stage"],
        )
        self.batch_events = Histogram(
            "fraudstream_worker_batch_messages", "Messages per micro-batch", BATCH_BUCKETS
        )
        self.gc = GcMetrics("fraudstream_worker", "worker")
        self.batch_age_ms = Histogram(
            "fraudstream_worker_batch_age_ms",
            "Age of a micro-batch's oldest message (from its Kafka timestamp) when the worker "
            "starts the batch: the part of the latency spent before the worker's own work",
            LATENCY_BUCKETS_MS,
        )
        self.lag = Gauge(
            "fraudstream_worker_consumer_lag",
            "Messages in the partition after the last committed offset",
            ["topic", "partition"],
        )
        self.commit_age = Gauge(
            "fraudstream_worker_commit_age_seconds",
            "Seconds since the partition's committed offset last moved",
            ["topic", "partition"],
        )
        self.live = Gauge(
            "fraudstream_worker_live",
            "1 while every partition with lag keeps committing, else 0",
        )
        self.live.set(1.0)
        self.models = ModelMetrics("fraudstream_worker")
        self.drift = DriftMetrics("fraudstream_worker")
        self.families = (
            *self.models.families,
            *self.drift.families,
            self.consumed,
            self.redriven,
            self.decisions,
            self.dead_letters,
            self.batch_failures,
            self.degraded,
            self.history_reads,
            self.state_writes_lost,
            self.stage_ms,
            self.batch_events,
            self.batch_age_ms,
            *self.gc.families,
            self.lag,
            self.commit_age,
            self.live,
        )
        self._partitions: dict[tuple[str, int], _Partition] = {}
        self._liveness = Liveness(True)
        super().__init__()

    def refresh(self) -> None:
        self.drift.refresh()
        self.gc.drain()

    def check_partitions(
        self,
        highwater: Mapping[tuple[str, int], int],
        committed: Mapping[tuple[str, int], int | None],
    ) -> Liveness:
        """Update lag and commit age of the assigned partitions; live unless a partition with
        lag has not committed for ``stall_after_s``."""
        now = self.clock()
        stalled = []
        with self.lock:
            self.lag.clear()
            self.commit_age.clear()
            known = {}
            for tp, high in highwater.items():
                state = self._partitions.get(tp) or _Partition(moved_at=now)
                offset = committed.get(tp)
                if offset != state.committed:
                    state = _Partition(offset, now)
                known[tp] = state
                lag = max(high - (offset or 0), 0)
                age = now - state.moved_at
                labels = (tp[0], str(tp[1]))
                self.lag.set(lag, *labels)
                self.commit_age.set(age, *labels)
                if lag > 0 and age > self.stall_after_s:
                    stalled.append(f"{tp[0]}[{tp[1]}]: lag {lag}, no commit for {age:.0f}s")
            self._partitions = known
            self._liveness = Liveness(not stalled, stalled)
            self.live.set(1.0 if not stalled else 0.0)
        return self._liveness

    @property
    def liveness(self) -> Liveness:
        with self.lock:
            return self._liveness


def track_gc_pauses(
    pauses: deque[tuple[int, float]], warn_ms: float = 100.0
) -> Callable[[str, dict[str, int]], None]:
    """Append every garbage-collector pause (generation, ms) to ``pauses``; log pauses over
    ``warn_ms``. No lock: a collection can start while this thread holds the metrics' lock
    (``deque.append`` is atomic); :meth:`GcMetrics.drain` moves them into the
    histogram. Returns the ``gc.callbacks`` entry it installed."""
    import gc

    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - started[0]) * 1000
        pauses.append((info["generation"], ms))
        if ms > warn_ms:
            log.warning("garbage collection of generation %d took %.0f ms", info["generation"], ms)

    gc.callbacks.append(callback)
    return callback


def serve(metrics: WorkerMetrics | QualityMetrics, host: str, port: int) -> ThreadingHTTPServer:
    """Serve ``/metrics`` (Prometheus text) and ``/live`` (200, or 503 with the stalled
    partitions) on a daemon thread; returns the server (``shutdown()`` stops it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, metrics.render(), CONTENT_TYPE)
            elif self.path == "/live":
                state = metrics.liveness
                body = orjson.dumps({"live": state.live, "stalled": state.stalled})
                self._answer(200 if state.live else 503, body, "application/json")
            else:
                self._answer(404, b'{"detail": "not found"}', "application/json")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("metrics http: " + format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    log.info("metrics on http://%s:%d/metrics (liveness: /live)", host, port)
    return server


# ------------------------------------------------------------- drift and live quality


class DriftMetrics:
    """PSI of the live window per model feature and for the score, and the drift flag.

    Families to add to a process's metrics (the worker's and the API's), fed by
    :class:`~fraudstream.drift.DriftMonitor`.
    """

    def __init__(self, prefix: str) -> None:
        self.psi = Gauge(
            f"{prefix}_drift_psi",
            "Population stability index of the live window against the training baseline, "
            "by model feature (and 'score')",
            ["feature"],
        )
        self.flag = Gauge(
            f"{prefix}_drift_flag", "1 while any feature's (or the score's) PSI is >= threshold"
        )
        self.drifted = Gauge(
            f"{prefix}_drift_features",
            "Features (and the score) whose PSI is at or above the threshold",
        )
        self.window = Gauge(f"{prefix}_drift_window_events", "Events in the live drift window")
        self.families = (self.psi, self.flag, self.drifted, self.window)
        #: Set by the monitor that feeds these gauges: bins its pending rows (and updates
        #: the gauges), so that a scrape never reads a stale window.
        self.flush: Callable[[], None] | None = None

    def refresh(self) -> None:
        if self.flush is not None:
            self.flush()

    def update(self, psi: Mapping[str, float], drifted: Sequence[str], events: int) -> None:
        for feature, value in psi.items():
            self.psi.set(value, feature)
        self.flag.set(1.0 if drifted else 0.0)
        self.drifted.set(float(len(drifted)))
        self.window.set(float(events))

    def clear(self) -> None:
        self.flush = None
        for gauge in self.families:
            gauge.clear()


class QualityMetrics(_Families):
    """Live quality from labelled decisions (``fraudstream archive --metrics-port``)."""

    def __init__(self) -> None:
        self.precision = Gauge(
            "fraudstream_quality_precision",
            "Share of labelled decisions with this action that were fraud, by event day",
            ["action", "day"],
        )
        self.recall = Gauge(
            "fraudstream_quality_recall",
            "Share of labelled frauds sent to review or decline, by event day",
            ["day"],
        )
        self.cp_at_100 = Gauge(
            "fraudstream_quality_card_precision_at_100",
            "Card precision@100 of the decisions' scores, by event day",
            ["day"],
        )
        self.decisions = Gauge(
            "fraudstream_quality_decisions",
            "Archived decisions by event day and label state (labelled, unlabelled)",
            ["day", "state"],
        )
        self.updated = Gauge(
            "fraudstream_quality_updated_timestamp_seconds", "When the gauges were last computed"
        )
        self.archive_rows = Counter(
            "fraudstream_archive_rows", "Rows appended to the archive, by kind", ["kind"]
        )
        self.families = (
            self.precision,
            self.recall,
            self.cp_at_100,
            self.decisions,
            self.updated,
            self.archive_rows,
        )
        super().__init__()

    @property
    def liveness(self) -> Liveness:
        return Liveness(True)
