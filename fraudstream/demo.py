"""``fraudstream demo``: the whole batch pipeline on the local stack, with a readable summary."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pandas as pd

from fraudstream.config import Settings
from fraudstream.errors import FraudstreamError
from fraudstream.feast_env import open_store, run_feast
from fraudstream.features import MODEL_FEATURES, feast_references
from fraudstream.schema import validate_frame
from fraudstream.simulate import simulate, write_parquet
from fraudstream.stack import resolve_endpoints


def run_demo(settings: Settings, *, days: int, seed: int, echo: Callable[[str], None]) -> dict:
    """Simulate ``days`` of history ending today, train on it, load Redis; return the summary."""
    from training.evaluate import Split
    from training.train import train

    started = time.perf_counter()
    endpoints = resolve_endpoints(settings)
    today = datetime.now(UTC).date()
    first = today - timedelta(days=days)
    echo(f"simulating {days} days ({first} .. {today - timedelta(days=1)}) of card transactions")
    raw = simulate(customers=5000, terminals=10000, days=days, start=str(first), seed=seed)
    data = settings.stack.dir / "demo" / "transactions.parquet"
    write_parquet(raw, data)
    events = validate_frame(raw, keep=("is_fraud", "fraud_scenario"))
    echo(f"  {len(events):,} transactions, {events['is_fraud'].mean():.2%} fraud -> {data}")

    echo("feast apply")
    if run_feast(settings, endpoints, ["apply"]) != 0:
        raise FraudstreamError("feast apply failed (see above)")
    store = open_store(settings, endpoints)
    split = Split(today - timedelta(days=21))
    echo(f"training: train from {split.train_start}, delay 7 days, test 7 days")
    result = train(events, split, settings.model.dir, store)
    m = result.metrics

    end = datetime.now(UTC)
    from training.backfill import refresh_terminal_snapshot

    refresh_terminal_snapshot(events, settings.feast.repo_path, pd.Timestamp(end).floor("s"))
    echo("feast materialize-incremental (customer and terminal features into Redis)")
    if (
        run_feast(
            settings, endpoints, ["materialize-incremental", end.strftime("%Y-%m-%dT%H:%M:%S")]
        )
        != 0
    ):
        raise FraudstreamError("feast materialize-incremental failed (see above)")
    sample = events.tail(3)  # the latest transactions: their rows are in the online store
    online = store.get_online_features(
        features=feast_references(MODEL_FEATURES),
        entity_rows=[
            {"customer_id": c, "terminal_id": t}
            for c, t in zip(sample["customer_id"], sample["terminal_id"], strict=True)
        ],
    ).to_df()

    summary = {
        "transactions": len(events),
        "fraud_rate": round(float(events["is_fraud"].mean()), 5),
        "model_version": result.manifest["model_version"],
        "model_dir": str(result.out_dir),
        "auc_roc": round(m["auc_roc"], 4),
        "average_precision": round(m["average_precision"], 4),
        "card_precision_at_100": round(m["card_precision_at_100"], 4),
        "thresholds": {k: v for k, v in result.manifest["thresholds"].items() if k != "rule"},
        "seconds": round(time.perf_counter() - started, 1),
    }
    echo("")
    echo(
        f"model {summary['model_version']} on the test week "
        f"({m['n']:,} transactions, {m['n_fraud']} frauds):"
    )
    echo(
        f"  AUC ROC {m['auc_roc']:.3f}   average precision {m['average_precision']:.3f}   "
        f"card precision@100 {m['card_precision_at_100']:.3f}"
    )
    echo(f"  report: {result.out_dir}/pr_curve.png, {result.out_dir}/cp_at_k.png")
    echo("online features read back from Redis through Feast:")
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        echo(online.to_string(index=False, max_colwidth=12))
    echo(json.dumps(summary))
    return summary
