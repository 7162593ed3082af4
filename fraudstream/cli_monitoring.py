"""Console commands for data and monitoring: ``archive``, ``publish-labels``,
``features refresh``, ``report`` and ``score-batch`` (registered on the main Typer app)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from fraudstream import stack as local_stack
from fraudstream.cli import _events, _kafka_bootstrap, _settings, fail
from fraudstream.errors import FraudstreamError


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
    settings: object, archive: object, port: int | None
) -> Callable[[dict[str, int]], None] | None:
    """Live quality gauges served on ``port`` (filled in by the quality module)."""
    return None


def score_batch_cmd(
    ctx: typer.Context,
    transactions: Annotated[Path, typer.Option(help="Parquet of events (canonical or handbook)")],
    out: Annotated[Path, typer.Option(help="decisions file: Parquet, or CSV if it ends in .csv")],
    history: Annotated[
        Path | None,
        typer.Option(help="earlier transactions of the same customers (besides the archive's)"),
    ] = None,
) -> None:
    """Score a historical file as the stream would: features from the offline store (Feast
    historical features, on a scratch copy: the live store is only read), the serving model
    (registry champion, else the model dir), the scorer's actions and reasons.

    Prints a JSON summary (rows, actions, model version, seconds).
    """
    import time

    from fraudstream.batch_scoring import score_file, write_decisions

    settings = _settings(ctx)
    events = _events(transactions)
    past = _events(history) if history is not None else None
    started = time.perf_counter()
    try:
        decisions = score_file(settings, events, history=past)
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    write_decisions(decisions, out)
    summary = {
        "rows": len(decisions),
        "actions": decisions["action"].value_counts().to_dict(),
        "degraded": int(decisions["degraded"].sum()),
        "model_version": decisions["model_version"].iloc[0] if len(decisions) else None,
        "out": str(out),
        "seconds": round(time.perf_counter() - started, 2),
    }
    typer.echo(json.dumps(summary))


def register(app: typer.Typer, features_app: typer.Typer) -> None:
    """Add this module's commands to the main app and its ``features`` group."""
    app.command("archive")(archive_cmd)
    app.command("score-batch")(score_batch_cmd)
    _ = (features_app, local_stack)
