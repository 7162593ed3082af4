"""Model lifecycle commands: ``retrain`` and ``models list|promote|rollback|shadow``.

Registered on the main Typer app by :func:`register` (see :mod:`fraudstream.cli`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from fraudstream.cli import _settings, fail
from fraudstream.errors import FraudstreamError

models_app = typer.Typer(
    help="The model registry: versions, champion, shadow.", no_args_is_help=True
)


def _registry(ctx: typer.Context) -> Any:
    from fraudstream.registry import ModelRegistry

    return ModelRegistry(_settings(ctx).model.registry_path)


def _fmt(value: Any) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


@models_app.command("list")
def models_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON: versions and history")] = False,
) -> None:
    """Every registered version with its role and test metrics (newest last)."""
    registry = _registry(ctx)
    try:
        rows = registry.list()
        state = registry.state()
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps({**state, "versions": rows}, indent=2, default=str))
        return
    if not rows:
        typer.echo(f"no model registered in {registry.root}")
        return
    columns = ["version", "role", "created_at", "auc_roc", "average_precision"]
    widths = [max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in columns]
    typer.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        cells = [_fmt(row[c]).ljust(w) for c, w in zip(columns, widths, strict=True)]
        typer.echo("  ".join(cells).rstrip())


@models_app.command("promote")
def models_promote(ctx: typer.Context, version: str) -> None:
    """Make VERSION the champion: the worker and the API switch to it without a restart."""
    registry = _registry(ctx)
    try:
        previous = registry.champion()
        registry.promote(version)
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"champion: {version} (was {previous})")


@models_app.command("rollback")
def models_rollback(ctx: typer.Context) -> None:
    """Make the previous champion the champion again."""
    registry = _registry(ctx)
    try:
        current = registry.champion()
        version = registry.rollback()
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"champion: {version} (rolled back from {current})")


@models_app.command("shadow")
def models_shadow(
    ctx: typer.Context,
    version: Annotated[str | None, typer.Argument(help="version to score in shadow")] = None,
    off: Annotated[bool, typer.Option("--off", help="no shadow model")] = False,
) -> None:
    """Score VERSION beside the champion (logged in each decision, never acting), or --off."""
    if (version is None) == (not off):
        raise fail("give a VERSION or --off")
    registry = _registry(ctx)
    try:
        registry.set_shadow(None if off else version)
    except FraudstreamError as exc:
        raise fail(str(exc)) from None
    typer.echo("shadow: off" if off else f"shadow: {version}")


def retrain_cmd(
    ctx: typer.Context,
    transactions: Annotated[
        Path | None,
        typer.Option(help="labelled Parquet; default: the archive's transactions and labels"),
    ] = None,
    history: Annotated[
        Path | None,
        typer.Option(
            help="labelled transactions before the archive began (the customers' "
            "and terminals' windows; its labels count as known)"
        ),
    ] = None,
    train_days: Annotated[int, typer.Option(min=1)] = 7,
    delay_days: Annotated[int, typer.Option(min=0)] = 7,
    eval_days: Annotated[int, typer.Option(min=1)] = 7,
    min_ap_gain: Annotated[
        float | None, typer.Option(help="default: setting model.promote_min_ap_gain")
    ] = None,
    max_auc_loss: Annotated[
        float | None, typer.Option(min=0, help="default: setting model.promote_max_auc_loss")
    ] = None,
    promote: Annotated[
        bool, typer.Option(help="promote a better challenger (else only register it)")
    ] = True,
) -> None:
    """Train a challenger on the latest labelled window, evaluate it and the champion on the
    same most recent labelled days, promote it if better by the margin.

    From the archive, the features are computed over every archived transaction (and
    --history), labelled or not, as the stream computed them; only labelled ones are
    trained and evaluated on. The live offline tables are not written (a scratch copy).
    The last line on stdout is the evaluation as JSON (both models' metrics, the margin,
    the verdict); it is also kept as retrain.json in the challenger's version directory.
    """
    from fraudstream.cli import _events
    from fraudstream.registry import ModelRegistry
    from fraudstream.schema import LABEL_COLUMN
    from training.retrain import LABELLED, Margin, Window, retrain

    settings = _settings(ctx)
    if transactions is not None:
        if history is not None:
            raise fail("--history goes with the archive, not with --transactions")
        events = _events(transactions)
        if LABEL_COLUMN not in events.columns:
            raise fail("the transactions carry no labels (is_fraud)")
    else:
        past = None if history is None else _events(history)
        if past is not None and LABEL_COLUMN not in past.columns:
            raise fail(f"{history}: no labels (is_fraud)")
        events = _known(settings, past)
    model = settings.model
    margin = Margin(
        min_ap_gain=model.promote_min_ap_gain if min_ap_gain is None else min_ap_gain,
        max_auc_loss=model.promote_max_auc_loss if max_auc_loss is None else max_auc_loss,
    )
    if LABELLED in events.columns:
        labelled = int(events[LABELLED].sum())
        typer.echo(f"{len(events):,} transactions, {labelled:,} of them labelled")
    try:
        result = retrain(
            events,
            settings.feast.repo_path,
            ModelRegistry(model.registry_path),
            fallback_dir=model.dir,
            window=Window(train_days, delay_days, eval_days),
            margin=margin,
            promote=promote,
        )
    except (FraudstreamError, ValueError) as exc:
        raise fail(str(exc)) from None
    e = result.evaluation
    for role in ("champion", "challenger"):
        m = e[role]
        typer.echo(
            f"{role:<10} {m['model_version']}: AUC {m['auc_roc']:.4f}  "
            f"AP {m['average_precision']:.4f}  CP@100 {m['card_precision_at_100']:.4f}  "
            f"({m['n']:,} rows, {m['n_fraud']:,} frauds)"
        )
    verdict = "promoted" if result.promoted else "registered, not promoted"
    typer.echo(f"challenger {result.challenger} {verdict}: {e['reason']}")
    typer.echo(json.dumps({"challenger_version": result.challenger, **e}, default=str))


def _known(settings: Any, history: Any) -> Any:
    """Every archived transaction (plus ``history``) with its label as known now, unlabelled
    ones counted genuine, the column ``labelled`` (:data:`training.retrain.LABELLED`) and
    when each archived label was reported (:data:`training.backfill.REPORTED_AT`)."""
    import pandas as pd

    from fraudstream.archive import Archive, archive_root
    from fraudstream.labels import known_history
    from fraudstream.schema import LABEL_COLUMN, validate_frame
    from training.backfill import REPORTED_AT
    from training.retrain import LABELLED

    archive = Archive(archive_root(settings))
    now = pd.Timestamp.now(tz="UTC")
    labels = archive.read("labels", end=now)
    if labels.empty:
        raise fail(f"no labelled transactions in the archive {archive.root}")
    reported = dict(zip(labels["transaction_id"].astype(str), labels["reported_at"], strict=True))
    try:
        events, _ = known_history(archive, now, history)
        ids = events["transaction_id"].astype(str)
        # a label of --history counts as known from the transaction's time + the delay on
        events[REPORTED_AT] = pd.to_datetime(ids.map(reported), utc=True)
        labelled = ids.isin(reported.keys())
        if history is not None:
            labelled |= ids.isin(set(history["transaction_id"].astype(str)))
        events[LABELLED] = labelled
        return validate_frame(events, keep=(LABEL_COLUMN, LABELLED, REPORTED_AT))
    except FraudstreamError as exc:
        raise fail(str(exc)) from None


def register(app: typer.Typer, features_app: typer.Typer) -> None:
    """Add ``retrain`` and the ``models`` group to the main app."""
    del features_app  # the model commands add no feature command
    app.command("retrain")(retrain_cmd)
    app.add_typer(models_app, name="models")
