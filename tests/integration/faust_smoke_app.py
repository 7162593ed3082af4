"""A tiny Faust worker for the smoke test and the start-up benchmark.

Run as ``python -m tests.integration.faust_smoke_app --bootstrap H:P --app-id ID
--source IN --sink OUT [--session-timeout-ms N] [--overrides JSON]``. It builds the
app with :func:`streaming.app.create_app`, forwards every event of ``IN`` to
``OUT`` unchanged (raw bytes), and prints one JSON line per milestone on stdout,
stamped with ``time.monotonic()`` (CLOCK_MONOTONIC: comparable across processes
on one machine):

* ``{"event": "assigned", "t": ..., "partitions": N}``: the ``on_partitions_assigned``
  signal, after Faust has finished its rebalance handling;
* ``{"event": "ready", "t": ...}``: Faust's worker start-up finished;
* ``{"event": "processed", "t": ..., "key": ...}``: the agent handled an event (sent
  before the forward to ``OUT`` is awaited).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import faust

from fraudstream.config import Settings
from streaming.app import create_app


def emit(event: str, **fields: Any) -> None:
    """Print a milestone as one JSON line, flushed at once."""
    sys.stdout.write(json.dumps({"event": event, "t": time.monotonic(), **fields}) + "\n")
    sys.stdout.flush()


def build(
    bootstrap: str,
    app_id: str,
    source: str,
    sink: str,
    session_timeout_ms: int = 6000,
    overrides: dict[str, Any] | None = None,
    datadir: str | None = None,
) -> faust.App:
    """The forwarding app: every event of ``source`` goes to ``sink`` unchanged.

    Faust's data directory goes under ``datadir`` (default: the system's temporary
    directory), never into the caller's working directory.
    """
    settings = Settings(
        kafka={"bootstrap_servers": bootstrap, "session_timeout_ms": session_timeout_ms}
    )
    datadir = datadir or tempfile.gettempdir()
    app = create_app(
        settings,
        bootstrap,
        app_id=app_id,
        datadir=str(Path(datadir) / f"{app_id}-data"),
        **(overrides or {}),
    )
    source_topic = app.topic(source, key_serializer="raw", value_serializer="raw")
    sink_topic = app.topic(sink, key_serializer="raw", value_serializer="raw")

    @app.agent(source_topic)
    async def forward(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for event in stream.events():
            key = event.key.decode() if isinstance(event.key, bytes) else None
            emit("processed", key=key)
            await sink_topic.send(key=event.key, value=event.value)
            yield None

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # mode types it too narrowly
    def on_assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
        assigned = args[0] if args else kwargs.get("assigned", ())
        emit("assigned", partitions=len(assigned))

    return app


class SmokeWorker(faust.Worker):
    """A worker that reports when Faust considers its start-up finished."""

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        emit("ready")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    parser.add_argument("--overrides", default="{}", help="JSON object of Faust settings")
    parser.add_argument("--loglevel", default="WARNING")
    parser.add_argument("--datadir", help="parent of Faust's data directory (default: tmp)")
    args = parser.parse_args(argv)
    app = build(
        args.bootstrap,
        args.app_id,
        args.source,
        args.sink,
        args.session_timeout_ms,
        json.loads(args.overrides),
        args.datadir,
    )
    worker = SmokeWorker(app, loglevel=args.loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
