"""Drift: the population stability index (PSI) of each model feature and of the score.

Baseline (:func:`training_baseline`, stored by ``train()`` in the manifest under
``"baseline"``): per model feature, the training week's deciles as bin edges (the distinct
values among the 10 %, ..., 90 % quantiles of the non-missing values) plus one bin for
missing values, and the training proportions of every bin. The score's baseline uses the
out-of-fold training scores (the scores the model gives data it has not seen), not
in-sample scores, which are more extreme and would make live scores look drifted.

Bins: with edges ``e_0 < ... < e_{k-1}``, bin ``i`` holds ``e_{i-1} <= x < e_i`` (bin 0:
``x < e_0``, bin ``k``: ``x >= e_{k-1}``) and bin ``k + 1`` holds missing values (NaN).

PSI: ``sum_i (a_i - b_i) * ln(a_i / b_i)`` over the bins, ``a`` the live proportions and
``b`` the baseline's. An empty bin (on either side) counts as :data:`PSI_EPSILON`
(1e-4), so the PSI stays finite. The usual reading: below 0.1 stable, 0.1 to 0.2 a
moderate shift, 0.2 and above (:data:`DEFAULT_THRESHOLD`) a significant shift, flagged.

:class:`DriftMonitor` keeps the bin counts of the last ``window`` events (blocks of
``window / 10`` events in a ring, so the window holds between ``window`` and
``1.1 * window`` events) and costs one ``searchsorted`` and one ``bincount`` per column
per batch.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fraudstream.metrics import DriftMetrics

log = logging.getLogger(__name__)

PSI_EPSILON = 1e-4
DEFAULT_THRESHOLD = 0.2
DECILES = np.linspace(0.1, 0.9, 9)
SCORE = "score"
BASELINE_VERSION = 1
#: ``drifted()`` flags nothing before the window holds this many events (PSI is noisy).
MIN_EVENTS = 500
BLOCKS = 10
#: ``observe`` bins its input once this many rows are pending (or ``FLUSH_S`` passed):
#: binning costs tens of µs per call whatever its size, and the API observes one
#: transaction per call.
FLUSH_ROWS = 256
FLUSH_S = 1.0


def bin_edges(values: np.ndarray) -> np.ndarray:
    """The distinct deciles of the non-missing ``values`` (empty when all are missing)."""
    finite = values[~np.isnan(values)]
    if len(finite) == 0:
        return np.empty(0)
    return np.unique(np.quantile(finite, DECILES))


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value: ``searchsorted(edges, x, "right")``; NaN in the last bin."""
    index = np.searchsorted(edges, values, side="right")
    index[np.isnan(values)] = len(edges) + 1
    return index


def proportions(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.zeros(len(counts))


def psi(actual: np.ndarray, expected: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """PSI of two proportion vectors over the same bins; empty bins count as ``epsilon``."""
    a = np.maximum(np.asarray(actual, dtype=np.float64), epsilon)
    b = np.maximum(np.asarray(expected, dtype=np.float64), epsilon)
    return float(np.sum((a - b) * np.log(a / b)))


def _column_baseline(values: np.ndarray) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64)
    edges = bin_edges(values)
    counts = np.bincount(bin_index(values, edges), minlength=len(edges) + 2)
    return {"edges": edges.tolist(), "proportions": proportions(counts).tolist()}


def training_baseline(
    matrix: np.ndarray, names: Sequence[str], scores: np.ndarray
) -> dict[str, Any]:
    """The manifest's ``baseline``: edges and proportions per feature (columns of ``matrix``
    in ``names`` order) and for ``scores`` (out-of-fold training scores)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != len(names) or len(scores) != len(matrix):
        raise ValueError(f"matrix {matrix.shape}, {len(names)} names, {len(scores)} scores")
    return {
        "version": BASELINE_VERSION,
        "rows": len(matrix),
        "bins": "training deciles (distinct) + a missing-value bin",
        "features": {n: _column_baseline(matrix[:, j]) for j, n in enumerate(names)},
        SCORE: _column_baseline(np.asarray(scores, dtype=np.float64)),
    }


def psi_table(
    baseline: Mapping[str, Any], matrix: np.ndarray, names: Sequence[str], scores: np.ndarray
) -> dict[str, float]:
    """PSI of every feature (``matrix`` columns in ``names`` order) and of the score against
    ``baseline``, for a whole window at once (the report's archived window)."""
    monitor = DriftMonitor(baseline, window=max(len(matrix), 1), names=names)
    monitor.observe(matrix, scores)
    return monitor.psi()


class DriftMonitor:
    """PSI of the last ``window`` events against a training baseline; not thread-safe.

    ``observe(matrix, scores)`` after each scored batch (``matrix`` columns in the model's
    feature order, which must be the baseline's); ``psi()`` and ``drifted()`` read the
    window. Rows are binned in chunks of at least :data:`FLUSH_ROWS` rows or every
    :data:`FLUSH_S` seconds (``clock``), and ``psi()``, ``drifted()`` and ``events`` bin what
    is pending first; with ``metrics``, the gauges are updated at each binning.
    """

    def __init__(
        self,
        baseline: Mapping[str, Any],
        window: int = 10_000,
        threshold: float = DEFAULT_THRESHOLD,
        *,
        names: Sequence[str] | None = None,
        metrics: DriftMetrics | None = None,
        min_events: int = MIN_EVENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        features: Mapping[str, Any] = baseline["features"]
        self.names = list(names) if names is not None else list(features)
        unknown = [n for n in self.names if n not in features]
        if unknown:
            raise ValueError(f"the baseline has no bins for {unknown}")
        columns = [features[n] for n in self.names] + [baseline[SCORE]]
        self.labels = [*self.names, SCORE]
        self.edges = [np.asarray(c["edges"], dtype=np.float64) for c in columns]
        self.expected = [np.asarray(c["proportions"], dtype=np.float64) for c in columns]
        self.width = max(len(e) for e in self.expected)
        # column j's bins live at j * width + bin in one flat count vector
        self.offsets = np.arange(len(columns), dtype=np.int64) * self.width
        self.window = window
        self.block_size = max(1, window // BLOCKS)
        self.threshold = threshold
        self.min_events = min(min_events, window)
        self.metrics = metrics
        self._blocks: deque[tuple[int, np.ndarray]] = deque()
        self._current = np.zeros(len(columns) * self.width, dtype=np.int64)
        self._current_n = 0
        self._total = np.zeros_like(self._current)
        self._total_n = 0
        self._clock = clock
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_n = 0
        self._flushed_at = clock()
        if metrics is not None:
            metrics.flush = self._flush  # a scrape bins what is pending first

    @property
    def events(self) -> int:
        """Events in the window."""
        self._flush()
        return self._total_n

    def observe(self, matrix: np.ndarray, scores: np.ndarray) -> None:
        """Add a scored batch to the window (``matrix``: one row per event)."""
        n = len(scores)
        if n == 0:
            return
        self._pending.append(
            (np.asarray(matrix, dtype=np.float64), np.asarray(scores, dtype=np.float64))
        )
        self._pending_n += n
        if self._pending_n >= FLUSH_ROWS or self._clock() - self._flushed_at >= FLUSH_S:
            self._flush()

    def _flush(self) -> None:
        """Bin the pending rows into the window (and update the gauges)."""
        self._flushed_at = self._clock()
        if not self._pending:
            return
        if len(self._pending) == 1:
            matrix, scores = self._pending[0]
        else:
            matrix = np.concatenate([m for m, _ in self._pending])
            scores = np.concatenate([s for _, s in self._pending])
        n = self._pending_n
        self._pending, self._pending_n = [], 0
        counts = np.zeros_like(self._current)
        k = len(self.names)
        for j in range(k + 1):
            values = matrix[:, j] if j < k else scores
            index = bin_index(values, self.edges[j]) + self.offsets[j]
            counts += np.bincount(index, minlength=len(counts))
        self._current += counts
        self._current_n += n
        self._total += counts
        self._total_n += n
        if self._current_n >= self.block_size:
            self._blocks.append((self._current_n, self._current))
            self._current = np.zeros_like(self._total)
            self._current_n = 0
        while self._blocks and self._total_n - self._blocks[0][0] >= self.window:
            old_n, old = self._blocks.popleft()
            self._total -= old
            self._total_n -= old_n
        if self.metrics is not None:
            table = self._psi()
            self.metrics.update(table, self._flagged(table), self._total_n)

    def psi(self) -> dict[str, float]:
        """PSI per feature and for ``score`` over the window ({} before any event)."""
        self._flush()
        return self._psi()

    def _psi(self) -> dict[str, float]:
        if self._total_n == 0:
            return {}
        out = {}
        for j, label in enumerate(self.labels):
            expected = self.expected[j]
            start = self.offsets[j]
            actual = proportions(self._total[start : start + len(expected)])
            out[label] = psi(actual, expected)
        return out

    def drifted(self) -> list[str]:
        """Features (and ``score``) whose PSI is at or above the threshold; none before the
        window holds ``min_events`` events."""
        return self._flagged(self.psi())

    def _flagged(self, values: Mapping[str, float]) -> list[str]:
        if self._total_n < self.min_events:
            return []
        return [label for label, value in values.items() if value >= self.threshold]


def drift_monitor(
    manifest: Mapping[str, Any],
    window: int,
    threshold: float,
    metrics: DriftMetrics | None = None,
) -> DriftMonitor | None:
    """The monitor for a model's manifest, or None (logged once) when it has no baseline."""
    baseline = manifest.get("baseline")
    version = manifest.get("model_version")
    if not baseline:
        log.info("model %s has no training baseline: no drift monitoring", version)
        if metrics is not None:
            metrics.clear()
        return None
    names = [f["name"] for f in manifest["features"]]
    return DriftMonitor(baseline, window, threshold, names=names, metrics=metrics)
