"""Console commands for data and monitoring: ``archive``, ``publish-labels``,
``features refresh``, ``report`` and ``score-batch`` (registered on the main Typer app)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fraudstream.cli import (
    _FORCE,
    _events,
    _kafka_bootstrap,
    _settings,
    fail,
    output_file,
    with_progress,
)
from fraudstream.errors import FraudstreamError

if TYPE_CHECKING:
    import pandas as pd

    from fraudstream.archive import Archive
    from fraudstream.config import Settings


def archive_cmd(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="archive what is there, then exit (tests, cron)")
    ] = False,
    follow: Annotated[
        bool, typer.Option("--follow", help="keep archiving until SIGTERM (the default)")
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="serve /metrics (live quality) on this port"),
    ] = None,
) -> None:
    """Append the transactions, decisions and labels topics to the archive (Parquet).

    A consumer group that commits offsets only after each batch's part files are written
    (nothing lost; reads deduplicate). Messages it cannot read go to the archive's
    ``rejected`` kind with the reason and the original bytes. Prints a JSON summary.
    """
    from fraudstream.archive import Archive, archive_root, run_archive, stop_on_signals

    if once and follow:
        raise fail("give --once or --follow, not both")
    settings = _settings(ctx)
    bootstrap = _kafka_bootstrap(settings)
    archive = Archive(archive_root(settings))
    monitor = _quality_monitor(settings, archive, metrics_port)
    stop = threading.Event()
    try:
        with stop_on_signals(stop):
            stats = run_archive(
                settings,
                bootstrap,
                archive,
                once=once,
                stop=stop.is_set,
                on_batch=monitor,
            )
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    typer.echo(json.dumps({"archive": str(archive.root), **stats.summary()}))


def _quality_monitor(
    settings: Settings, archive: Archive, port: int | None
) -> Callable[[dict[str, int]], None] | None:
    """With a metrics port (option or setting): serve the live quality gauges on
    ``/metrics`` and return the archive's ``on_batch`` that keeps them current."""
    port = port or settings.monitoring.metrics_port
    if port is None:
        return None
    from fraudstream.metrics import QualityMetrics, serve
    from fraudstream.quality import live_quality

    metrics = QualityMetrics()
    serve(metrics, settings.monitoring.metrics_host, port)
    monitoring = settings.monitoring
    return live_quality(archive, metrics, monitoring.quality_interval_s, monitoring.quality_days)


def report_cmd(
    ctx: typer.Context,
    days: Annotated[int, typer.Option(min=1, help="the last N days of event time")] = 14,
    out: Annotated[Path, typer.Option(help="directory for report.json and the charts")] = Path(
        "report"
    ),
    history: Annotated[
        Path | None,
        typer.Option(help="transactions before the archive began (customer windows for drift)"),
    ] = None,
) -> None:
    """Live quality per day (precision of decline and review, recall, CP@100, labelled and
    unlabelled decisions) and drift (PSI per feature and of the score, the archived window
    against the training baseline), from the archive: a table on stdout, report.json,
    quality.png and drift.png."""
    from fraudstream.archive import Archive, archive_root
    from fraudstream.outputs import check_output_dir
    from fraudstream.quality import format_table, write_report

    settings = _settings(ctx)
    try:
        check_output_dir(out, "--out")
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    root = archive_root(settings)
    if not root.is_dir():  # a wrong path, or no archive yet: not an empty report
        raise fail(
            f"no archive at {root} (FRAUDSTREAM_MONITORING__ARCHIVE_DIR; `fraudstream archive` "
            "writes it)"
        )
    archive = Archive(root)
    past = _events(history) if history is not None else None
    try:
        report = write_report(settings, archive, out, days, past)
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    typer.echo(format_table(report["quality"]))
    drift = report["drift"]
    if "psi" in drift:
        worst = sorted(drift["psi"].items(), key=lambda kv: -kv[1])[:5]
        typer.echo(
            f"drift ({drift['events']:,} events, model {drift['model_version']}): "
            + ", ".join(f"{k} {v:.3f}" for k, v in worst)
            + f"; drifted (PSI >= {drift['threshold']:g}): {', '.join(drift['drifted']) or 'none'}"
        )
    else:
        typer.echo(f"drift: unavailable ({drift.get('unavailable')})")
    typer.echo(f"report: {out / 'report.json'}")


def score_batch_cmd(
    ctx: typer.Context,
    transactions: Annotated[Path, typer.Option(help="Parquet of events (canonical or handbook)")],
    out: Annotated[Path, typer.Option(help="decisions file: Parquet, or CSV if it ends in .csv")],
    history: Annotated[
        Path | None,
        typer.Option(help="earlier transactions of the same customers (besides the archive's)"),
    ] = None,
    force: Annotated[bool, _FORCE] = False,
) -> None:
    """Score a historical file as the stream would: features from the offline store (Feast
    historical features, on a scratch copy: the live store is only read), the serving model
    (registry champion, else the model dir), the scorer's actions and reasons.

    Prints a JSON summary (rows, actions, model version, seconds).
    """
    import time

    from fraudstream.batch_scoring import score_file, write_decisions

    settings = _settings(ctx)
    output_file(out, "--out", inputs=[transactions, history], force=force)
    events = _events(transactions)
    past = _events(history) if history is not None else None
    started = time.perf_counter()
    try:
        decisions = score_file(settings, events, history=past)
        write_decisions(decisions, out)
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    summary = {
        "rows": len(decisions),
        "actions": decisions["action"].value_counts().to_dict(),
        "degraded": int(decisions["degraded"].sum()),
        "model_version": decisions["model_version"].iloc[0] if len(decisions) else None,
        "out": str(out),
        "seconds": round(time.perf_counter() - started, 2),
    }
    typer.echo(json.dumps(summary))


def _utc_option(value: str | None, name: str) -> pd.Timestamp | None:
    """An ISO-8601 time with an offset (``Z``), as UTC; ``now`` is the current time."""
    import pandas as pd

    if value is None:
        return None
    if value == "now":
        return pd.Timestamp.now(tz="UTC")
    try:
        stamp = pd.Timestamp(value)
    except ValueError:
        raise fail(f"{name} {value!r} is not an ISO-8601 time") from None
    if stamp.tzinfo is None:
        raise fail(f"{name} {value!r} has no UTC offset (add Z)")
    return stamp.tz_convert("UTC")


def publish_labels_cmd(
    ctx: typer.Context,
    transactions: Annotated[
        Path, typer.Option(help="labelled Parquet (canonical is_fraud or handbook TX_FRAUD)")
    ],
    delay_days: Annotated[
        float, typer.Option(min=0, help="each label is reported this long after its transaction")
    ] = 7.0,
    rate: Annotated[
        float | None, typer.Option(min=0.001, help="labels per second (default: unpaced)")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=0, help="publish the first N labels only")
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="only labels reported before this time (ISO-8601 with Z, or 'now')"),
    ] = None,
) -> None:
    """Replay the labels of a labelled dataset on the labels topic, as they would arrive.

    One label per transaction (1: fraud, 0: confirmed genuine), ``reported_at`` = the
    transaction's time + the delay, published in ``reported_at`` order, keyed by
    ``transaction_id`` (idempotent producer). Prints a JSON summary.
    """
    from datetime import timedelta

    from fraudstream.kafka import check_kafka, ensure_topics
    from fraudstream.labels import label_events, publish_labels

    settings = _settings(ctx)
    bootstrap = _kafka_bootstrap(settings)
    topic = settings.topics.labels
    cutoff = _utc_option(until, "--until")
    try:
        labels = label_events(_events(transactions), timedelta(days=delay_days))
        if cutoff is not None:
            labels = labels[labels["reported_at"] < cutoff]
        if limit is not None:
            labels = labels.iloc[:limit]
        check_kafka(settings.kafka, bootstrap)
        ensure_topics(settings.kafka, bootstrap, [topic])
        result = with_progress(
            len(labels),
            "labels",
            lambda progress, stop: publish_labels(
                labels,
                kafka=settings.kafka,
                bootstrap=bootstrap,
                topic=topic,
                rate=rate,
                progress=progress,
                stop=stop,
            ),
        )
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    summary = result.summary()
    sent = labels.iloc[: result.sent]
    summary["frauds"] = int(sent["label"].sum())
    if len(sent):
        summary["reported_from"] = sent["reported_at"].min().isoformat()
        summary["reported_to"] = sent["reported_at"].max().isoformat()
    typer.echo(json.dumps(summary))
    if result.failed:
        raise fail(f"{result.failed} label(s) not delivered: {result.errors[:1]}", code=1)


def features_refresh_cmd(
    ctx: typer.Context,
    as_of: Annotated[
        str, typer.Option(help="labels known at this time (ISO-8601 with Z, or 'now')")
    ] = "now",
    history: Annotated[
        Path | None,
        typer.Option(help="labelled transactions not in the archive (e.g. the training data)"),
    ] = None,
    materialize: Annotated[
        bool, typer.Option(help="run feast materialize-incremental for the terminal view")
    ] = True,
) -> None:
    """Recompute the label-based terminal features from the archive's transactions and the
    labels reported by --as-of, add them to the offline store and materialise them.

    A label counts from its ``reported_at`` on, and the terminal features keep their own
    7-day delay. The offline table's earlier rows (the training backfill) are kept.
    """
    from fraudstream.archive import Archive, archive_root
    from fraudstream.labels import refresh_features

    settings = _settings(ctx)
    stamp = _utc_option(as_of, "--as-of")
    assert stamp is not None
    past = _events(history) if history is not None else None
    try:
        result = refresh_features(
            settings,
            Archive(archive_root(settings)),
            stamp.floor("s"),
            history=past,
            materialize=materialize,
        )
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    typer.echo(json.dumps(result.summary()))


def register(app: typer.Typer, features_app: typer.Typer) -> None:
    """Add this module's commands to the main app and its ``features`` group."""
    app.command("archive")(archive_cmd)
    app.command("score-batch")(score_batch_cmd)
    app.command("publish-labels")(publish_labels_cmd)
    app.command("report")(report_cmd)
    features_app.command("refresh")(features_refresh_cmd)
