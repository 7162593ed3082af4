"""The ``fraudstream`` command line. Settings are read once, here, and passed down."""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
from typing import Annotated

import typer

from fraudstream import stack as local_stack
from fraudstream.config import Settings, load_settings, masked
from fraudstream.errors import FraudstreamError
from fraudstream.feast_env import feast_environment

app = typer.Typer(
    help="fraudstream: real-time card-fraud scoring on Kafka, Feast/Redis and XGBoost.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the effective settings.", no_args_is_help=True)
stack_app = typer.Typer(help="The embedded local Kafka + Redis stack.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(stack_app, name="stack")


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
def env(ctx: typer.Context) -> None:
    """Print ``export`` lines for the ``feast`` CLI: ``eval "$(fraudstream env)"``."""
    settings = _settings(ctx)
    try:
        endpoints = local_stack.resolve_endpoints(settings)
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
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
        endpoints = local_stack.resolve_endpoints(settings)
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    child_env = {**os.environ, **feast_environment(settings, endpoints)}
    argv = [sys.executable, "-m", "feast.cli.cli", "-c", str(settings.feast.repo_path), *ctx.args]
    raise typer.Exit(subprocess.call(argv, env=child_env))


@app.command("demo")
def demo(ctx: typer.Context) -> None:
    """Bring the local stack up and show its status (the whole pipeline follows)."""
    settings = _settings(ctx)
    try:
        for line in local_stack.up(settings):
            typer.echo(line)
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    typer.echo(json.dumps(local_stack.status(settings), indent=2))


if __name__ == "__main__":
    app()
