"""Live quality: the archived decisions joined with the labels that have arrived, per day.

Per UTC day of the transactions' event time (:func:`quality_by_day`):

* ``decisions``, ``labelled``, ``unlabelled``: decisions of the day, and how many have a
  label yet (labels arrive days later: recent days are mostly unlabelled);
* ``frauds``: labelled decisions whose label is fraud;
* ``decline_precision`` / ``review_precision``: among labelled ``decline`` (``review``)
  decisions, the share that were fraud (NaN when there is none);
* ``recall``: among labelled frauds, the share sent to ``review`` or ``decline``;
* ``card_precision_at_100``: the handbook's CP@100 of the decisions' scores over the
  labelled decisions (cards = customers; :func:`training.evaluate.card_precision_at_k`:
  the 100 highest-scored cards of the day, cards caught on an earlier day left out).

Precision and recall count labelled decisions only; an unlabelled decision is unknown, not
genuine.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from fraudstream.archive import Archive
from fraudstream.metrics import QualityMetrics
from fraudstream.schema import LABEL_COLUMN

if TYPE_CHECKING:
    from fraudstream.config import Settings

log = logging.getLogger(__name__)

K = 100
COLUMNS = [
    "day",
    "decisions",
    "labelled",
    "unlabelled",
    "frauds",
    "declines",
    "reviews",
    "decline_precision",
    "review_precision",
    "recall",
    "card_precision_at_100",
]


def _share(hits: int, total: int) -> float:
    return hits / total if total else math.nan


def quality_by_day(decisions: pd.DataFrame, labels: pd.DataFrame, k: int = K) -> pd.DataFrame:
    """The module docstring's figures per event day (:data:`COLUMNS`), oldest day first.

    ``decisions``: archive rows (``transaction_id``, ``customer_id``, ``event_time``,
    ``score``, ``action``); ``labels``: ``transaction_id``, ``label``.
    """
    from training.evaluate import card_precision_at_k

    if decisions.empty:
        return pd.DataFrame(columns=COLUMNS)
    frame = decisions[["transaction_id", "customer_id", "event_time", "score", "action"]].merge(
        labels[["transaction_id", "label"]], on="transaction_id", how="left"
    )
    frame["day"] = frame["event_time"].dt.tz_convert("UTC").dt.floor("D")
    labelled = frame[frame["label"].notna()].copy()
    labelled[LABEL_COLUMN] = labelled["label"].astype(int)
    cp: dict[pd.Timestamp, float] = {}
    if len(labelled):
        days = sorted(labelled["day"].unique())
        _, per_day = card_precision_at_k(
            labelled.rename(columns={"event_time": "timestamp"}), labelled["score"], k, days[0]
        )
        cp = dict(zip(days, per_day, strict=True))
    rows = []
    for day, group in frame.groupby("day", sort=True):
        known = group[group["label"].notna()]
        fraud = known["label"] == 1
        declines = known["action"] == "decline"
        reviews = known["action"] == "review"
        rows.append(
            {
                "day": day,
                "decisions": len(group),
                "labelled": len(known),
                "unlabelled": len(group) - len(known),
                "frauds": int(fraud.sum()),
                "declines": int((group["action"] == "decline").sum()),
                "reviews": int((group["action"] == "review").sum()),
                "decline_precision": _share(int((declines & fraud).sum()), int(declines.sum())),
                "review_precision": _share(int((reviews & fraud).sum()), int(reviews.sum())),
                "recall": _share(int(((declines | reviews) & fraud).sum()), int(fraud.sum())),
                "card_precision_at_100": cp.get(day, math.nan),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def archive_quality(
    archive: Archive, days: int | None = None, now: pd.Timestamp | None = None
) -> pd.DataFrame:
    """:func:`quality_by_day` of the archive's decisions of the last ``days`` event days
    (all with None), with every label archived so far."""
    start = None
    if days is not None:
        now = now if now is not None else pd.Timestamp.now(tz="UTC")
        start = now.floor("D") - pd.Timedelta(days=days - 1)
    return quality_by_day(archive.read("decisions", start=start), archive.read("labels"))


def records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-able rows (days as ``YYYY-MM-DD``, NaN as null)."""
    out = []
    for row in table.to_dict("records"):
        row["day"] = pd.Timestamp(row["day"]).strftime("%Y-%m-%d")
        out.append(
            {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        )
    return out


def update_gauges(metrics: QualityMetrics, table: pd.DataFrame) -> None:
    """Set the quality gauges from a :func:`quality_by_day` table (replacing the old days)."""
    with metrics.lock:
        for gauge in (metrics.precision, metrics.recall, metrics.cp_at_100, metrics.decisions):
            gauge.clear()
        for row in records(table):
            day = row["day"]
            for action in ("decline", "review"):
                value = row[f"{action}_precision"]
                if value is not None:
                    metrics.precision.set(value, action, day)
            if row["recall"] is not None:
                metrics.recall.set(row["recall"], day)
            if row["card_precision_at_100"] is not None:
                metrics.cp_at_100.set(row["card_precision_at_100"], day)
            metrics.decisions.set(row["labelled"], day, "labelled")
            metrics.decisions.set(row["unlabelled"], day, "unlabelled")
        metrics.updated.set(time.time())


def live_quality(
    archive: Archive,
    metrics: QualityMetrics,
    interval_s: float,
    days: int = 30,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[dict[str, int]], None]:
    """The archive consumer's ``on_batch``: counts rows, and recomputes the gauges of the
    last ``days`` days at most every ``interval_s`` (and after the first batch)."""
    last: list[float] = []

    def on_batch(written: dict[str, int]) -> None:
        with metrics.lock:
            for kind, count in written.items():
                metrics.archive_rows.inc(kind, amount=count)
        if last and clock() - last[0] < interval_s:
            return
        last[:] = [clock()]
        try:
            update_gauges(metrics, archive_quality(archive, days))
        except Exception:  # the gauges are a view; archiving goes on
            log.exception("live quality: recomputing the gauges failed")

    return on_batch


# ------------------------------------------------------------------ the report


def window_drift(
    settings: Settings,
    archive: Archive,
    start: pd.Timestamp,
    history: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """PSI of the archived transactions since ``start`` against the serving model's baseline:
    their features by batch scoring (offline store, scratch copy), scored by the model."""
    from fraudstream.batch_scoring import batch_features, scratch_store, serving_model
    from fraudstream.drift import drift_monitor

    model = serving_model(settings)
    events = archive.read("transactions", start=start)
    if events.empty:
        return {"model_version": model.version, "unavailable": "no archived transactions"}
    monitor = drift_monitor(
        model.manifest, max(len(events), 1), settings.monitoring.drift_threshold
    )
    if monitor is None:
        return {"model_version": model.version, "unavailable": "the model has no baseline"}
    archived = archive.read("transactions")
    known = pd.concat([h for h in (history, archived) if h is not None], ignore_index=True)
    with scratch_store(settings.feast.repo_path, events, known) as store:
        matrix = batch_features(events, store, model)
    monitor.observe(matrix, model.predict(matrix))
    return {
        "model_version": model.version,
        "events": monitor.events,
        "threshold": monitor.threshold,
        "psi": monitor.psi(),
        "drifted": monitor.drifted(),
    }


def _charts(out: Path, quality: pd.DataFrame, drift: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, ax = plt.subplots(figsize=(7, 4))
    days = pd.to_datetime(quality["day"]) if len(quality) else []
    for column, label in (
        ("decline_precision", "precision of decline"),
        ("review_precision", "precision of review"),
        ("recall", "recall (review + decline)"),
        ("card_precision_at_100", "card precision@100"),
    ):
        if len(quality):
            ax.plot(days, quality[column].astype(float), marker="o", label=label)
    ax.set(title="Live quality per event day (labelled decisions)", ylim=(0, 1.02))
    ax.legend(loc="best", fontsize="small")
    fig.autofmt_xdate()
    fig.tight_layout()
    files.append(out / "quality.png")
    fig.savefig(files[-1], dpi=100)
    plt.close(fig)

    psi = drift.get("psi") or {}
    fig, ax = plt.subplots(figsize=(7, max(3, 0.28 * len(psi) + 1)))
    names = list(psi)
    values = [psi[n] for n in names]
    threshold = drift.get("threshold")
    colors = ["tab:red" if threshold and v >= threshold else "tab:blue" for v in values]
    ax.barh(names, values, color=colors)
    if threshold:
        ax.axvline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:g}")
        ax.legend(loc="lower right")
    ax.set(title="PSI per feature, archived window vs training", xlabel="PSI")
    ax.invert_yaxis()
    fig.tight_layout()
    files.append(out / "drift.png")
    fig.savefig(files[-1], dpi=100)
    plt.close(fig)
    return files


def format_table(rows: list[dict[str, Any]]) -> str:
    """The quality table (:func:`records` rows) as aligned text (missing as ``-``)."""
    head = f"{'day':<10} {'decisions':>9} {'labelled':>8} {'frauds':>6} {'P(decl)':>7} "
    head += f"{'P(rev)':>7} {'recall':>6} {'CP@100':>6}"
    lines = [head]

    def cell(value: Any, width: int) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:>{width}.3f}"

    for row in rows:
        lines.append(
            f"{row['day']:<10} {row['decisions']:>9} {row['labelled']:>8} {row['frauds']:>6} "
            f"{cell(row['decline_precision'], 7)} {cell(row['review_precision'], 7)} "
            f"{cell(row['recall'], 6)} {cell(row['card_precision_at_100'], 6)}"
        )
    return "\n".join(lines)


def write_report(
    settings: Settings,
    archive: Archive,
    out: Path,
    days: int,
    history: pd.DataFrame | None = None,
    now: pd.Timestamp | None = None,
) -> dict[str, Any]:
    """``fraudstream report``: quality per day and drift of the last ``days`` days into
    ``out`` (``report.json``, ``quality.png``, ``drift.png``); returns the report."""
    from fraudstream.errors import FraudstreamError
    from fraudstream.outputs import check_output_dir

    check_output_dir(out, "report directory")
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    start = now.floor("D") - pd.Timedelta(days=days - 1)
    quality = archive_quality(archive, days, now)
    try:
        drift = window_drift(settings, archive, start, history)
    except FraudstreamError as exc:
        drift = {"unavailable": str(exc)}
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "generated_at": now.isoformat(),
        "days": days,
        "window_start": start.isoformat(),
        "quality": records(quality),
        "drift": drift,
        "files": [str(p) for p in _charts(out, quality, drift)],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    return report
