"""The ``fraudstream`` command line. Settings are read once, here, and passed down."""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fraudstream import stack as local_stack
from fraudstream.config import Settings, load_settings, masked
from fraudstream.errors import FraudstreamError
from fraudstream.feast_env import feast_environment, run_feast
from fraudstream.startup import StartupSignals, StoppedBeforeStart

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import pandas as pd
    from fastapi import FastAPI

    from fraudstream.consume import Record
    from fraudstream.publish import PublishResult
    from streaming.worker import Worker

app = typer.Typer(
    help="fraudstream: real-time card-fraud scoring on Kafka, Feast/Redis and XGBoost.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
features_app = typer.Typer(help="Compute and load features.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect the effective settings.", no_args_is_help=True)
stack_app = typer.Typer(help="The embedded local Kafka + Redis stack.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(stack_app, name="stack")
app.add_typer(features_app, name="features")


def _settings(ctx: typer.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


@app.callback()
def main(ctx: typer.Context) -> None:
    """Read the settings once for every command."""
    try:
        settings = load_settings()
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    ctx.obj = settings


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Print the effective settings as JSON, secrets masked."""
    typer.echo(json.dumps(masked(_settings(ctx)), indent=2))


@stack_app.command("up")
def stack_up(ctx: typer.Context) -> None:
    """Start Redis and a Kafka-protocol broker on loopback (idempotent)."""
    try:
        for line in local_stack.up(_settings(ctx)):
            typer.echo(line)
    except FraudstreamError as exc:
        raise fail(str(exc)) from None


@stack_app.command("down")
def stack_down(ctx: typer.Context) -> None:
    """Stop the processes the local stack started (and a worker it recorded)."""
    stopped = local_stack.down(_settings(ctx))
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@stack_app.command("status")
def stack_status(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """Show the endpoints and processes of the local stack."""
    info = local_stack.status(_settings(ctx))
    if as_json:
        typer.echo(json.dumps(info))
        return
    typer.echo(f"running:         {info['running']}")
    typer.echo(f"kafka bootstrap: {info['kafka_bootstrap']}")
    typer.echo(f"redis url:       {info['redis_url']}")
    for name, proc in info["processes"].items():
        state = "running" if proc["running"] else "stopped"
        typer.echo(f"  {name:<8} pid {proc['pid']:<8} port {proc['port']}  {state}")


@app.command("check")
def check(ctx: typer.Context) -> None:
    """Check that Kafka and Redis (from settings or the local stack) answer."""
    settings = _settings(ctx)
    try:
        endpoints = local_stack.resolve_endpoints(settings)
        local_stack.check_endpoints(settings, endpoints)
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"kafka: {endpoints.kafka_bootstrap} answers")
    typer.echo(f"redis: {endpoints.redis_url} answers")


@app.command("env")
def env(
    ctx: typer.Context,
    reveal_secrets: Annotated[
        bool, typer.Option("--reveal-secrets", help="print the Redis password too")
    ] = False,
) -> None:
    """Print ``export`` lines for the ``feast`` CLI: ``eval "$(fraudstream env)"``.

    A Redis password is never printed unless asked for with ``--reveal-secrets``;
    ``fraudstream feast ...`` hands it to Feast without printing it.
    """
    settings = _settings(ctx)
    try:
        endpoints = local_stack.redis_endpoints(settings)  # Feast needs no Kafka
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    if settings.redis.password is not None and not reveal_secrets:
        raise fail(
            "the Redis connection for Feast carries FRAUDSTREAM_REDIS__PASSWORD, which is "
            "never printed unless asked: run `fraudstream feast ...` (it passes the password "
            "to Feast without printing it) or `fraudstream env --reveal-secrets`"
        )
    for key, value in feast_environment(settings, endpoints).items():
        typer.echo(f"export {key}={shlex.quote(value)}")


@app.command(
    "feast",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def feast_cli(ctx: typer.Context) -> None:
    """Run the ``feast`` CLI on the feature repo with the Redis connection from settings."""
    settings = _settings(ctx)
    try:
        endpoints = local_stack.redis_endpoints(settings)  # Feast needs no Kafka
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(run_feast(settings, endpoints, list(ctx.args)))


@app.command("demo")
def demo(
    ctx: typer.Context,
    days: Annotated[int, typer.Option(min=22, help="days of history to simulate")] = 60,
    count: Annotated[
        int, typer.Option(min=0, help="fresh transactions to stream (0: none)")
    ] = 20_000,
    rate: Annotated[float, typer.Option(min=1, help="publishing rate, events/s")] = 500.0,
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="leave the stack, worker and model running")
    ] = False,
    seed: int = 0,
) -> None:
    """Stack up, simulate, backfill, train, materialise, stream transactions through the
    worker, and summarise its decisions."""
    from fraudstream.demo import run_demo

    settings = _settings(ctx)
    try:
        for line in local_stack.up(settings):
            typer.echo(line)
        run_demo(
            settings,
            days=days,
            seed=seed,
            echo=typer.echo,
            stream_count=count,
            stream_rate=rate,
            keep_running=keep_running,
        )
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    if keep_running:
        typer.echo(
            "still running: the stack and the worker (`fraudstream stack status --json`); "
            "publish with `fraudstream publish ...`, read `fraudstream decisions --follow`, "
            "stop with `fraudstream stack down`"
        )


def _events(path: Path) -> pd.DataFrame:
    """The canonical table of the user's Parquet file at ``path``; bad input exits 2."""
    from fraudstream.schema import read_transactions

    if path.is_dir():
        raise fail(f"{path}: a directory, not a Parquet file")
    if not path.is_file():
        raise fail(f"{path}: no such file")
    try:
        events = read_transactions(path)  # its errors name the path
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    for kind, count in events.attrs.get("repairs", {}).items():
        if count:
            typer.echo(f"repaired {count} row(s): {kind}", err=True)
    return events


def output_file(
    path: Path, option: str, *, inputs: Sequence[Path | None] = (), force: bool = False
) -> Path:
    """``path``, refused (exit code 2) before any work when it is a directory, one of
    ``inputs``, or exists without ``--force`` (:func:`fraudstream.outputs.check_output_file`)."""
    from fraudstream.outputs import check_output_file

    try:
        return check_output_file(path, option, inputs=inputs, force=force)
    except FraudstreamError as exc:
        raise fail(str(exc)) from None


_FORCE = typer.Option("--force", help="replace an existing output file")


@app.command("simulate")
def simulate_cmd(
    out: Annotated[Path, typer.Option(help="Parquet file to write (.parquet)")],
    customers: Annotated[int, typer.Option(min=1)] = 5000,
    terminals: Annotated[int, typer.Option(min=1)] = 10000,
    days: Annotated[int, typer.Option(min=1)] = 183,
    start: Annotated[str, typer.Option(help="first day, YYYY-MM-DD (UTC)")] = "2018-04-01",
    seed: int = 0,
    pattern_change_day: Annotated[
        int | None,
        typer.Option(min=0, help="from this day on, a new fraud pattern (scenario 4); off unset"),
    ] = None,
    force: Annotated[bool, _FORCE] = False,
) -> None:
    """Simulate labelled card transactions (the handbook's generative process)."""
    from fraudstream.simulate import simulate, write_parquet

    output_file(out, "--out", force=force)
    if out.suffix.lower() != ".parquet":
        raise fail(f"--out {out}: simulate writes Parquet; give a name ending in .parquet")
    try:
        df = simulate(
            customers=customers,
            terminals=terminals,
            days=days,
            start=start,
            seed=seed,
            pattern_change_day=pattern_change_day,
        )
        write_parquet(df, out)
    except (FraudstreamError, ValueError) as exc:
        raise fail(str(exc)) from None
    typer.echo(
        f"wrote {len(df):,} transactions ({df['is_fraud'].mean():.3%} fraud, "
        f"{len(df) / days:,.0f}/day) to {out}"
    )


@features_app.command("backfill")
def features_backfill(
    ctx: typer.Context,
    transactions: Annotated[Path, typer.Option(help="labelled Parquet (canonical or handbook)")],
) -> None:
    """Compute the offline tables of every feature view from a history of transactions."""
    from training.backfill import backfill

    settings = _settings(ctx)
    events = _events(transactions)
    try:
        result = backfill(events, settings.feast.repo_path)
    except (FraudstreamError, ValueError) as exc:
        raise fail(f"{transactions}: {exc}") from None
    typer.echo(
        f"customer_features: {result.customer_rows:,} rows -> {result.customer_path}\n"
        f"terminal_features: {result.terminal_rows:,} rows -> {result.terminal_path}\n"
        f"took {result.seconds:.1f}s"
    )


@features_app.command("load-history")
def features_load_history(
    ctx: typer.Context,
    transactions: Annotated[Path, typer.Option(help="Parquet (canonical or handbook columns)")],
) -> None:
    """Load customers' recent transactions into Redis: the state the worker and API start from."""
    from fraudstream.feast_env import open_store
    from fraudstream.history import CustomerHistory

    settings = _settings(ctx)
    try:
        endpoints = local_stack.redis_endpoints(settings)  # Redis only
        local_stack.check_redis(endpoints.redis_url, settings)
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    events = _events(transactions)
    project = open_store(settings, endpoints).project
    client = local_stack.redis_client(endpoints.redis_url, settings)
    CustomerHistory(client, project).append(events)
    typer.echo(
        f"loaded {len(events):,} transactions of {events['customer_id'].nunique():,} customers"
    )


def _artifact_out(out: Path | None, settings: Settings, transactions: Path | None) -> Path:
    """``train``'s artifact directory, refused (exit code 2) before any work unless it is
    missing, empty or a model artifact, and does not hold the input."""
    from fraudstream.model import check_artifact_dir

    option = "--out" if out is not None else "FRAUDSTREAM_MODEL__DIR"
    target = out or settings.model.dir
    registry = settings.model.registry_path.resolve()
    if target.resolve() == registry or registry in target.resolve().parents:
        raise fail(
            f"{option} {target} is inside the model registry ({registry}), whose versions are "
            "never overwritten: train into another directory (train registers its model)"
        )
    try:
        return check_artifact_dir(target, option, inputs=[transactions])
    except FraudstreamError as exc:
        raise fail(str(exc)) from None


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    out: Annotated[
        Path | None, typer.Option(help="artifact directory (default: model dir setting)")
    ] = None,
    transactions: Annotated[
        Path | None, typer.Option(help="labelled Parquet; default: freshly simulated data")
    ] = None,
    train_start: Annotated[
        str | None,
        typer.Option(help="first training day YYYY-MM-DD; default: the latest that fits"),
    ] = None,
    train_days: Annotated[int, typer.Option(min=1)] = 7,
    delay_days: Annotated[int, typer.Option(min=0)] = 7,
    test_days: Annotated[int, typer.Option(min=1)] = 7,
    retrieval: Annotated[str, typer.Option(help="feast | asof")] = "feast",
    seed: Annotated[int, typer.Option(help="simulation seed when no --transactions")] = 0,
    promote: Annotated[
        bool,
        typer.Option(help="make the new model the registry's champion (else only register it)"),
    ] = True,
) -> None:
    """Backfill, build the training set through Feast, train, evaluate, write the artifact.

    The artifact is also registered in the model registry (every version kept) and, unless
    --no-promote, made the champion: the worker and the API switch to it without a restart.
    """
    from datetime import date, timedelta

    from fraudstream.feast_env import open_store
    from fraudstream.schema import validate_frame
    from fraudstream.simulate import simulate
    from training.evaluate import Split
    from training.train import train

    settings = _settings(ctx)
    if retrieval not in ("feast", "asof"):
        raise fail("--retrieval must be feast or asof")
    out_dir = _artifact_out(out, settings, transactions)
    try:
        endpoints = local_stack.redis_endpoints(settings)  # Feast and Redis only
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    if transactions is not None:
        events = _events(transactions)
    else:
        typer.echo(
            "no --transactions: simulating 5,000 customers, 10,000 terminals, 90 days", err=True
        )
        events = validate_frame(simulate(days=90, seed=seed), keep=("is_fraud", "fraud_scenario"))
    span = train_days + delay_days + test_days
    if train_start is None:
        last_day = events["timestamp"].max().date()
        start_day = last_day - timedelta(days=span - 1)
    else:
        try:
            start_day = date.fromisoformat(train_start)
        except ValueError:
            raise fail(f"--train-start {train_start!r} is not YYYY-MM-DD") from None
    split = Split(start_day, train_days, delay_days, test_days)
    if run_feast(settings, endpoints, ["apply"]) != 0:
        raise fail("feast apply failed (see above)")
    store = open_store(settings, endpoints)
    try:
        result = train(events, split, out_dir, store, retrieval=retrieval)
    except (FraudstreamError, ValueError) as exc:
        raise fail(str(exc)) from None
    m = result.metrics
    typer.echo(f"model {result.manifest['model_version']} -> {result.out_dir}")
    from fraudstream.registry import ModelRegistry

    registry = ModelRegistry(settings.model.registry_path)
    try:
        version = registry.register_trained(result.out_dir, promote=promote)
    except FraudstreamError as exc:
        raise fail(f"registering the model: {exc}") from None
    typer.echo(f"registered {version} in {registry.root}; champion: {registry.champion()}")
    typer.echo("timings: " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items()))
    summary = {
        "model_version": result.manifest["model_version"],
        "auc_roc": round(m["auc_roc"], 4),
        "average_precision": round(m["average_precision"], 4),
        "card_precision_at_100": round(m["card_precision_at_100"], 4),
        "test_rows": m["n"],
        "out": str(result.out_dir),
    }
    typer.echo(json.dumps(summary))


def with_progress(
    length: int,
    label: str,
    send: Callable[[Callable[[int], None], Callable[[], bool]], PublishResult],
) -> PublishResult:
    """Run ``send(progress, stop)`` under a progress bar on stderr; Ctrl-C sets ``stop``."""
    import sys
    import threading

    from fraudstream.consume import sigint_sets

    stop = threading.Event()
    with (
        sigint_sets(stop),
        typer.progressbar(length=length, label=label, file=sys.stderr) as bar,
    ):
        done = 0

        def progress(sent: int) -> None:
            nonlocal done
            bar.update(sent - done)
            done = sent

        return send(progress, stop.is_set)


def _kafka_bootstrap(settings: Settings) -> str:
    """Kafka from settings, else the local stack's (Redis is not needed here)."""
    if settings.kafka.bootstrap_servers is not None:
        return settings.kafka.bootstrap_servers
    try:
        return local_stack.resolve_endpoints(settings).kafka_bootstrap
    except FraudstreamError as exc:
        raise fail(str(exc)) from None


@app.command("publish")
def publish_cmd(
    ctx: typer.Context,
    transactions: Annotated[
        Path | None, typer.Option(help="Parquet of events (canonical or handbook columns)")
    ] = None,
    simulate_events: Annotated[
        bool, typer.Option("--simulate", help="stream freshly simulated events (needs --count)")
    ] = False,
    rate: Annotated[
        float | None, typer.Option(min=0.001, help="events per second (default: unpaced)")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=0, help="publish the first N rows only")] = None,
    count: Annotated[int | None, typer.Option(min=1, help="with --simulate: events")] = None,
    seed: Annotated[int, typer.Option(min=0, help="with --simulate: simulation seed")] = 0,
    customers: Annotated[int, typer.Option(min=1, help="with --simulate")] = 5000,
    terminals: Annotated[int, typer.Option(min=1, help="with --simulate")] = 10000,
    retime: Annotated[
        bool,
        typer.Option(help="with --transactions: stamp each event with its send time"),
    ] = False,
    labels_out: Annotated[
        Path | None, typer.Option(help="write transaction_id -> is_fraud of the sent events")
    ] = None,
    force: Annotated[bool, _FORCE] = False,
) -> None:
    """Publish transactions to the transactions topic (labels are never sent).

    Prints a JSON summary (sent, delivered, failed, seconds, rate) on stdout.
    """

    from fraudstream.kafka import check_kafka, ensure_topics
    from fraudstream.publish import publish_events, simulated_events

    settings = _settings(ctx)
    if (transactions is None) == (not simulate_events):
        raise fail("give exactly one of --transactions PATH and --simulate")
    if simulate_events and count is None:
        raise fail("--simulate needs --count N")
    if simulate_events and limit is not None:
        raise fail("--limit is for --transactions; use --count with --simulate")
    if transactions is not None and count is not None:
        raise fail("--count is for --simulate; use --limit with --transactions")
    if labels_out is not None:
        output_file(labels_out, "--labels-out", inputs=[transactions], force=force)
    bootstrap = _kafka_bootstrap(settings)
    topic = settings.topics.transactions
    try:
        if simulate_events:
            assert count is not None
            typer.echo(f"simulating {count:,} events (seed {seed})", err=True)
            events = simulated_events(count, seed=seed, customers=customers, terminals=terminals)
            retime = True
        else:
            assert transactions is not None
            events = _events(transactions)
            if limit is not None:
                events = events.iloc[:limit]
        check_kafka(settings.kafka, bootstrap)
        if ensure_topics(settings.kafka, bootstrap, [topic]):
            typer.echo(f"created topic {topic}", err=True)
        paced = f" at {rate:g}/s" if rate else ""
        typer.echo(f"publishing {len(events):,} events to {topic}{paced}", err=True)
        result = with_progress(
            len(events),
            "publish",
            lambda progress, stop: publish_events(
                events,
                kafka=settings.kafka,
                bootstrap=bootstrap,
                topic=topic,
                rate=rate,
                retime=retime,
                labels_out=labels_out,
                progress=progress,
                stop=stop,
            ),
        )
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:  # before sending began (after, publish_events handles it)
        raise fail("interrupted", code=130) from None
    typer.echo(json.dumps(result.summary()))
    if result.failed:
        raise fail(f"{result.failed} message(s) not delivered: {result.errors[:1]}", code=1)


def _print_records(
    ctx: typer.Context,
    topic: str,
    *,
    follow: bool,
    limit: int | None,
    from_beginning: bool,
    wait: float | None,
    metadata: bool,
    keep: Callable[[Record], bool] | None = None,
) -> None:
    """Print ``topic``'s records as JSON lines; with ``keep``, only those it keeps (and
    ``limit`` counts those)."""
    import threading

    from fraudstream.consume import dumps_line, format_record, read_records, sigint_sets

    settings = _settings(ctx)
    bootstrap = _kafka_bootstrap(settings)
    if wait is None:
        wait = 0.0 if from_beginning else 5.0
    stop = threading.Event()
    printed = 0
    if limit == 0:
        return
    try:
        with sigint_sets(stop):
            for record in read_records(
                settings.kafka,
                bootstrap,
                topic,
                from_beginning=from_beginning,
                limit=limit if keep is None else None,
                follow=follow,
                idle_timeout=wait,
                stop=stop.is_set,
            ):
                if keep is not None and not keep(record):
                    continue
                typer.echo(dumps_line(format_record(record, metadata=metadata)))
                printed += 1
                if limit is not None and printed >= limit:
                    break
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `| head`: the reader went away
        import os
        import sys

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


_FOLLOW = typer.Option(help="keep reading until Ctrl-C (or --limit)")
_LIMIT = typer.Option(min=0, help="stop after N records")
_FROM_BEGINNING = typer.Option(help="start at the oldest record (default: only new ones)")
_WAIT = typer.Option(
    min=0,
    help="without --follow: stop after this many idle seconds at the end "
    "(default 0 with --from-beginning, else 5)",
)


@app.command("decisions")
def decisions_cmd(
    ctx: typer.Context,
    follow: Annotated[bool, _FOLLOW] = False,
    limit: Annotated[int | None, _LIMIT] = None,
    from_beginning: Annotated[bool, _FROM_BEGINNING] = False,
    wait: Annotated[float | None, _WAIT] = None,
    metadata: Annotated[
        bool, typer.Option(help="wrap each value with topic, partition, offset, key, headers")
    ] = False,
) -> None:
    """Print the decisions topic as JSON lines (one decision per line)."""
    _print_records(
        ctx,
        _settings(ctx).topics.decisions,
        follow=follow,
        limit=limit,
        from_beginning=from_beginning,
        wait=wait,
        metadata=metadata,
    )


@app.command("dlq")
def dlq_cmd(
    ctx: typer.Context,
    follow: Annotated[bool, _FOLLOW] = False,
    limit: Annotated[int | None, _LIMIT] = None,
    from_beginning: Annotated[bool, _FROM_BEGINNING] = False,
    wait: Annotated[float | None, _WAIT] = None,
    error_type: Annotated[
        list[str] | None,
        typer.Option(
            "--error-type",
            help="only dead letters of this error_type (repeat for more): invalid_event, "
            "scoring_failed, worker_error",
        ),
    ] = None,
) -> None:
    """Print the dead-letter topic as JSON lines: value (or value_base64 + error), key, headers."""
    keep = _of_error_types(_error_types(error_type)) if error_type else None
    _print_records(
        ctx,
        _settings(ctx).topics.dead_letter,
        follow=follow,
        limit=limit,
        from_beginning=from_beginning,
        wait=wait,
        metadata=True,
        keep=keep,
    )


def _of_error_types(types: list[str]) -> Callable[[Record], bool]:
    """Whether a dead letter's ``error_type`` header is one of ``types``."""
    from fraudstream.dead_letters import error_type_of

    wanted = set(types)

    def keep(record: Record) -> bool:
        return error_type_of(dict(record.headers)) in wanted

    return keep


def _error_types(given: list[str]) -> list[str]:
    """``--error-type`` values, refused (exit code 2) unless each is a worker's error type."""
    from fraudstream.dead_letters import ERROR_TYPES

    unknown = sorted(set(given) - set(ERROR_TYPES))
    if unknown:
        raise fail(f"--error-type: unknown {', '.join(unknown)} (one of {', '.join(ERROR_TYPES)})")
    return given


@app.command("redrive")
def redrive_cmd(
    ctx: typer.Context,
    error_type: Annotated[
        list[str] | None,
        typer.Option(
            "--error-type",
            help="dead letters of this error_type (repeat for more; default: scoring_failed "
            "and worker_error, the failures a repair undoes)",
        ),
    ] = None,
    from_beginning: Annotated[
        bool, typer.Option(help="read the whole topic, not only what the group has not read")
    ] = False,
    group: Annotated[
        str, typer.Option(help="consumer group that records how far redrives have read")
    ] = "fraudstream-redrive",
    dry_run: Annotated[
        bool, typer.Option(help="read and count only: send and commit nothing")
    ] = False,
) -> None:
    """Send dead letters back to the transactions topic once their cause is fixed.

    Their original key and bytes, with a ``redriven_from`` header; the worker scores them
    as any event. Offsets are committed (every 100,000 and at the end) once all sent before
    are delivered, so the next run sends only newer dead letters. Prints a JSON summary
    (read, redriven, passed over by reason).
    """
    import threading

    from fraudstream.consume import sigint_sets
    from fraudstream.redrive import RECOVERABLE, RedriveError, redrive

    chosen = tuple(_error_types(error_type) if error_type else RECOVERABLE)
    settings = _settings(ctx)
    bootstrap = _kafka_bootstrap(settings)
    stop = threading.Event()
    try:
        with sigint_sets(stop):
            result = redrive(
                settings.kafka,
                bootstrap,
                settings.topics.dead_letter,
                settings.topics.transactions,
                error_types=chosen,
                group_id=group,
                from_beginning=from_beginning,
                dry_run=dry_run,
                stop=stop.is_set,
            )
    except RedriveError as exc:  # reading, sending or committing failed once under way
        raise fail(str(exc), code=1) from None
    except FraudstreamError as exc:  # a topic missing, Kafka not answering
        raise fail(str(exc)) from None
    except KeyboardInterrupt:  # a second Ctrl-C, while it waits for deliveries
        raise fail("interrupted: nothing committed since the last commit", code=130) from None
    typer.echo(json.dumps(result.summary()))


@app.command("worker")
def worker_cmd(
    ctx: typer.Context,
    app_id: Annotated[
        str, typer.Option(help="Faust app id: the consumer group and internal-topic prefix")
    ] = "fraudstream-worker",
) -> None:
    """Run the scoring worker: transactions -> decisions, bad input -> the dead-letter topic.

    Checks Kafka and Redis, creates missing topics, loads and verifies the model (refuses a
    SHA-256 mismatch or a feature the online store does not define, exit code 2), then runs
    the Faust worker in this process until SIGTERM or Ctrl-C. With the local stack, the
    worker's pid is recorded so that `fraudstream stack down` stops it.
    """
    startup = StartupSignals()
    startup.install()
    try:
        worker = _prepare_worker(_settings(ctx), app_id, startup)
    except StoppedBeforeStart:
        typer.echo("worker: SIGTERM during start-up; stopped before consuming anything", err=True)
        raise typer.Exit(0) from None
    worker.execute_from_commandline()


def _prepare_worker(settings: Settings, app_id: str, startup: StartupSignals) -> Worker:
    """Everything ``worker`` does before Faust runs; a SIGTERM in here raises
    :class:`~fraudstream.startup.StoppedBeforeStart`."""
    import os
    import sys

    from fraudstream.model import ModelError
    from streaming.worker import Worker, build_worker_app

    try:
        settings.topics.require_distinct("transactions", "decisions", "dead_letter")
        endpoints = local_stack.resolve_endpoints(settings)
        local_stack.check_endpoints(settings, endpoints)
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    try:
        faust_app = build_worker_app(settings, endpoints, app_id=app_id)
    except ModelError as exc:
        raise fail(f"refusing to start: {exc}") from None
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    if not (endpoints.kafka_external and endpoints.redis_external):
        if os.getpgrp() == os.getpid():  # `stack down` signals the worker's process group
            info = local_stack.ProcessInfo(pid=os.getpid(), program=sys.executable)
            try:
                local_stack.register_process(settings, "worker", info)
            except FraudstreamError as exc:
                typer.echo(f"warning: worker not recorded in the stack: {exc}", err=True)
        else:
            typer.echo(
                "note: not a process-group leader; `stack down` will not stop this worker",
                err=True,
            )
    startup.defer()  # from here Faust's handler takes over: a SIGTERM now is sent again then
    return Worker(
        faust_app,
        startup=startup,
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
    )


@app.command("serve")
def serve_cmd(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="bind address (default: api host setting)")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="port (default: api port setting)")
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="uvicorn worker processes (each loads the model)")
    ] = 1,
    access_log: Annotated[bool, typer.Option(help="log every request (uvicorn)")] = False,
) -> None:
    """Run the REST scoring API (FastAPI on uvicorn) until SIGTERM or Ctrl-C.

    Checks Redis, loads and verifies the model (refuses a SHA-256 mismatch or a feature the
    online store does not define, exit code 2) before it listens. With --workers N, each
    worker process reads the same settings and builds its own scorer.
    """
    settings = _settings(ctx)
    startup = StartupSignals()
    startup.install()
    try:
        from serving.server import STARTUP_FAILURE, run_api

        target = _prepare_api(settings, workers)
        # uvicorn's handlers take over as it starts: a SIGTERM until then is recorded and
        # replayed to them (serving.server)
        startup.defer()
    except StoppedBeforeStart:
        startup.uninstall()
        typer.echo("serve: SIGTERM during start-up; stopped before listening", err=True)
        raise typer.Exit(0) from None
    except BaseException:  # refused to start: leave the signal as it was
        startup.uninstall()
        raise
    options: dict[str, Any] = {
        "host": host or settings.api.host,
        "port": port or settings.api.port,
        "log_config": None,  # keep the logging set up in main()
        "access_log": access_log,
        "log_level": settings.log_level.lower(),
        "proxy_headers": False,  # nothing reads the client address; saves a layer per request
    }
    if not run_api(target, workers, startup, options):
        raise typer.Exit(STARTUP_FAILURE)  # could not bind, or the app did not start (logged)


def _prepare_api(settings: Settings, workers: int) -> FastAPI | str:
    """Everything ``serve`` does before uvicorn runs; the app, or with several workers the
    factory each worker process calls. A SIGTERM in here raises
    :class:`~fraudstream.startup.StoppedBeforeStart`."""
    from fraudstream.model import ModelError
    from fraudstream.scoring import build_scorer
    from serving.app import create_app

    try:
        endpoints = local_stack.redis_endpoints(settings)  # the API needs no Kafka
        local_stack.check_redis(endpoints.redis_url, settings)
        scorer = build_scorer(settings, endpoints)
    except ModelError as exc:
        raise fail(f"refusing to start: {exc}") from None
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    if workers > 1:  # each worker process imports and builds the app itself
        return "serving.app:app_from_environment"
    return create_app(settings, scorer, redis_url=endpoints.redis_url)


# Commands of other modules register themselves last: they import this module's helpers.
from fraudstream import cli_monitoring  # noqa: E402

cli_monitoring.register(app, features_app)

from fraudstream import cli_models  # noqa: E402

cli_models.register(app, features_app)


if __name__ == "__main__":
    app()
