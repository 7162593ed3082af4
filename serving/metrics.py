"""The REST API's Prometheus metrics: every definition here, private to one app.

The values live in this module's own small counters, exposed through a private
:class:`~prometheus_client.CollectorRegistry` by a custom collector, rather than in
``prometheus_client.Counter`` objects: importing Feast switches prometheus-client to its
multiprocess mode for the whole process (``feast.metrics`` sets ``PROMETHEUS_MULTIPROC_DIR``),
where same-named metrics of two registries share one value. So two apps in one process
(tests) never mix their counts. All updates and reads happen on the app's event loop, so
no lock is needed.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

#: Histogram buckets in milliseconds (the scoring target is p99 <= 10 ms).
LATENCY_BUCKETS_MS = (0.5, 1, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 50, 100, 250, 500, 1000, 2500)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
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


class ApiMetrics(Collector):
    """Requests, latency, decisions, degraded decisions, scorer calls and errors of one app."""

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
            BATCH_BUCKETS,
        )
        self.errors = Counter(
            "fraudstream_api_errors",
            "Requests that failed inside the API (answered 500)",
            ["route"],
        )
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        for metric in (
            self.requests,
            self.latency_ms,
            self.decisions,
            self.degraded,
            self.scoring_calls,
            self.errors,
        ):
            yield metric.family()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
