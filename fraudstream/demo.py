"""``fraudstream demo``: the whole batch pipeline on the local stack, with a readable summary."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pandas as pd

from fraudstream.config import Settings
from fraudstream.errors import FraudstreamError
from fraudstream.feast_env import open_store, run_feast
from fraudstream.features import MODEL_FEATURES, feast_references, served_features
from fraudstream.schema import validate_frame
from fraudstream.simulate import simulate, write_parquet
from fraudstream.stack import ProcessInfo, resolve_endpoints


def run_demo(
    settings: Settings,
    *,
    days: int,
    seed: int,
    echo: Callable[[str], None],
    stream_count: int = 20_000,
    stream_rate: float = 500.0,
    keep_running: bool = False,
) -> dict:
    """Simulate ``days`` of history ending today, train, load Redis, then stream ``stream_count``
    fresh transactions through the worker (0: skip the stream); return the summary."""
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
    everything = validate_frame(raw, keep=("is_fraud", "fraud_scenario"))
    # the last `stream_count` transactions are held out: the worker sees them first, live
    events = everything.iloc[: len(everything) - stream_count].reset_index(drop=True)
    fresh = everything.iloc[len(everything) - stream_count :].reset_index(drop=True)
    echo(
        f"  {len(everything):,} transactions, {everything['is_fraud'].mean():.2%} fraud -> {data}; "
        f"the last {len(fresh):,} are held out for the stream"
    )

    echo("feast apply")
    if run_feast(settings, endpoints, ["apply"]) != 0:
        raise FraudstreamError("feast apply failed (see above)")
    store = open_store(settings, endpoints)
    split = Split(events["timestamp"].max().date() - timedelta(days=20))
    echo(f"training: train from {split.train_start}, delay 7 days, test 7 days")
    result = train(events, split, settings.model.dir, store)
    m = result.metrics
    from fraudstream.registry import ModelRegistry

    # the worker serves the registry's champion: this run's model
    ModelRegistry(settings.model.registry_path).register_trained(result.out_dir)

    end = datetime.now(UTC)
    from training.backfill import refresh_terminal_snapshot

    # terminal values as of the first streamed transaction (labels usable by then only)
    as_of = fresh["timestamp"].min().floor("s") if len(fresh) else pd.Timestamp(end).floor("s")
    refresh_terminal_snapshot(events, settings.feast.repo_path, as_of)
    # An explicit window, not materialize-incremental: the registry remembers the last
    # incremental run, which would skip this freshly simulated history on a second demo.
    start = (events["timestamp"].max() - pd.Timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S")
    stop = (end + pd.Timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    echo(f"feast materialize {start} {stop} (customer and terminal features into Redis)")
    if run_feast(settings, endpoints, ["materialize", start, stop]) != 0:
        raise FraudstreamError("feast materialize failed (see above)")
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
    echo("online features read back from Redis through Feast, for the latest three transactions:")
    for line in feature_table(online, [f.name for f in served_features(MODEL_FEATURES)]):
        echo(f"  {line}")
    echo(json.dumps(summary))
    if stream_count > 0:
        summary["stream"] = run_stream_demo(
            settings,
            events=events,
            fresh=fresh,
            project=store.project,
            rate=stream_rate,
            keep_running=keep_running,
            echo=echo,
        )
    return summary


def run_stream_demo(
    settings: Settings,
    *,
    events: pd.DataFrame,
    fresh: pd.DataFrame,
    project: str,
    rate: float,
    keep_running: bool,
    echo: Callable[[str], None],
    timeout_s: float = 180.0,
) -> dict:
    """Start the worker, stream the held-out ``fresh`` transactions (their own timestamps,
    sent at ``rate``) through it, and summarise its decisions against their labels."""
    import sys

    from fraudstream.consume import parse_value, read_records
    from fraudstream.history import CustomerHistory
    from fraudstream.publish import publish_events
    from fraudstream.stack import (
        redis_client,
        register_process,
        start_process,
        stop_process,
    )

    endpoints = resolve_endpoints(settings)
    echo("loading the customers' recent history into Redis (the worker's real-time state)")
    CustomerHistory(redis_client(endpoints.redis_url, settings), project).append(events)
    log_path = settings.stack.dir / "logs" / "worker.log"
    log_start = log_path.stat().st_size if log_path.exists() else 0  # the log is appended to
    worker = start_process([sys.executable, "-m", "fraudstream", "worker"], log_path)
    register_process(settings, "worker", worker)
    echo(f"worker started (pid {worker.pid}, log {log_path})")
    try:
        wait_until_ready(log_path, worker, timeout_s=60, offset=log_start)
        started = datetime.now(UTC)
        echo(f"publishing the {len(fresh):,} held-out transactions at {rate:,.0f}/s")
        result = publish_events(
            fresh,
            kafka=settings.kafka,
            bootstrap=endpoints.kafka_bootstrap,
            topic=settings.topics.transactions,
            rate=rate,
        )
        labels = result.labels if result.labels is not None else pd.DataFrame()
        wanted = set(labels["transaction_id"].astype(str))
        decisions: dict[str, dict] = {}
        deadline = time.monotonic() + timeout_s
        for record in read_records(
            settings.kafka,
            endpoints.kafka_bootstrap,
            settings.topics.decisions,
            from_beginning=True,
            follow=True,
            stop=lambda: time.monotonic() > deadline or len(decisions) >= len(wanted),
        ):
            if record.timestamp_ms is None or record.timestamp_ms < started.timestamp() * 1000:
                continue  # an earlier run's decision (same simulated ids)
            value, _ = parse_value(record.value)
            if isinstance(value, dict) and value.get("transaction_id") in wanted:
                decisions.setdefault(value["transaction_id"], value)
        dead = [
            r
            for r in read_records(
                settings.kafka,
                endpoints.kafka_bootstrap,
                settings.topics.dead_letter,
                from_beginning=True,
            )
            if r.timestamp_ms is not None and r.timestamp_ms >= started.timestamp() * 1000
        ]
    finally:
        if not keep_running:
            stop_process(worker)
    return summarise(decisions, labels, len(dead), result.summary(), echo)


def wait_until_ready(
    log_path: Path, worker: ProcessInfo, timeout_s: float, offset: int = 0
) -> None:
    """Wait for the Faust worker's ``[^Worker]: Ready`` line (its partitions assigned),
    written after byte ``offset`` of its log (earlier runs' lines do not count)."""
    from fraudstream.stack import process_running

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with log_path.open("rb") as log:
            log.seek(offset)
            if b"[^Worker]: Ready" in log.read():
                return
        if not process_running(worker):
            tail = log_path.read_text(errors="replace")[-3000:]
            raise FraudstreamError(f"the worker exited during start-up; {log_path}:\n{tail}")
        time.sleep(0.2)
    raise FraudstreamError(f"the worker was not ready after {timeout_s:g}s; see {log_path}")


#: Entity columns of the demo's online-feature sample, which head its table's columns.
ENTITY_COLUMNS = ("customer_id", "terminal_id")


def feature_table(online: pd.DataFrame, order: Sequence[str]) -> list[str]:
    """``online`` (one row per entity pair, as Feast's ``to_df``) turned on its side: a header
    naming each pair, then one row per feature, in ``order`` (features not in it last), so
    that twenty-odd features fit a terminal and come in the same order every run. Absent
    values print as ``-``."""
    features = [c for c in order if c in online.columns]
    features += [c for c in online.columns if c not in features and c not in ENTITY_COLUMNS]
    keys = [online[c].tolist() for c in ENTITY_COLUMNS if c in online.columns]
    heads = [" / ".join(str(k[i]) for k in keys) or f"row {i + 1}" for i in range(len(online))]
    width = max([len(f) for f in features] + [len("customer / terminal")])
    cells = max([len(h) for h in heads] + [12])

    def shown(value: object) -> str:
        if value is None or (isinstance(value, float) and value != value):  # NaN
            return "-"
        if isinstance(value, float):  # 4 decimals at most: 0.0476, 25.9, 3
            return f"{value:.4f}".rstrip("0").rstrip(".")
        return str(value)

    lines = [f"{'customer / terminal':<{width}}  " + "  ".join(f"{h:>{cells}}" for h in heads)]
    for name in features:
        values = "  ".join(f"{shown(v):>{cells}}" for v in online[name].tolist())
        lines.append(f"{name:<{width}}  {values}")
    return lines


#: Score bands of the demo's chart (the last edge above 1 so that a score of 1 is counted).
SCORE_BANDS = (0.0, 0.01, 0.05, 0.2, 0.5, 0.8, 1.0001)
#: Width of a full bar (a share of 100 %) in the chart.
BAR_WIDTH = 30


def score_chart(
    scores: pd.Series, is_fraud: pd.Series, bands: Sequence[float] = SCORE_BANDS
) -> list[str]:
    """The chart of scores by label: a header, then one row per score band with, for the
    genuine and then the fraudulent transactions, a bar and the share of that label's
    transactions whose score falls in the band. Transactions without a label are left
    out. Rows stay under 100 characters, so a terminal does not wrap them."""
    import numpy as np

    columns = []
    for label, name in ((0, "genuine"), (1, "fraud")):
        chosen = scores[is_fraud == label].astype(float).to_numpy()
        counts, _ = np.histogram(chosen, bins=np.asarray(bands, dtype=float))
        columns.append((f"{name} (n={len(chosen):,})", counts / max(1, len(chosen))))
    width = BAR_WIDTH + 7  # the bar, a space, then the share ("100.0%")
    lines = ["score band  " + "  ".join(f"{title:<{width}}" for title, _ in columns).rstrip()]
    for i, (lo, hi) in enumerate(pairwise(bands)):
        cells = [
            f"{'#' * round(shares[i] * BAR_WIDTH):<{BAR_WIDTH}} {shares[i]:>6.1%}"
            for _, shares in columns
        ]
        lines.append(f"{lo:.2f}-{min(hi, 1.0):.2f}   " + "  ".join(cells))
    return lines


def summarise(
    decisions: dict[str, dict],
    labels: pd.DataFrame,
    dead_letters: int,
    published: dict,
    echo: Callable[[str], None],
) -> dict:
    """Print and return the stream's figures: actions, precision/recall, latency, scores."""
    import numpy as np

    frame = pd.DataFrame(list(decisions.values()))
    truth = labels.set_index(labels["transaction_id"].astype(str))["is_fraud"]
    frame["is_fraud"] = truth.reindex(frame["transaction_id"]).to_numpy()
    flagged = frame["action"].isin(["review", "decline"])
    fraud = frame["is_fraud"] == 1
    precision = float((flagged & fraud).sum() / max(1, flagged.sum()))
    recall = float((flagged & fraud).sum() / max(1, fraud.sum()))
    latency = frame["latency_ms"].astype(float)
    decided = pd.to_datetime(frame["decided_at"], utc=True)
    span = (decided.max() - decided.min()).total_seconds() or float("nan")
    out = {
        "events": published.get("sent"),
        "decisions": len(frame),
        "dead_letters": dead_letters,
        "actions": frame["action"].value_counts().to_dict(),
        "precision_review_decline": round(precision, 4),
        "recall_review_decline": round(recall, 4),
        "latency_ms_p50": round(float(np.nanpercentile(latency, 50)), 1),
        "latency_ms_p99": round(float(np.nanpercentile(latency, 99)), 1),
        "throughput_per_s": round(len(frame) / span, 1),
        "degraded": int(frame["degraded"].sum()),
    }
    echo("")
    echo(
        f"stream: {out['events']:,} published, {out['decisions']:,} decisions, {dead_letters} dead letters"
    )
    echo(f"  actions: {out['actions']}   degraded: {out['degraded']}")
    echo(f"  review+decline: precision {precision:.3f}, recall {recall:.3f} (against the labels)")
    echo(
        f"  latency p50 {out['latency_ms_p50']} ms, p99 {out['latency_ms_p99']} ms; {out['throughput_per_s']:,}/s"
    )
    echo("  score distribution by label (share of each label's transactions per score band):")
    for line in score_chart(frame["score"], frame["is_fraud"]):
        echo(f"    {line}")
    echo(json.dumps(out))
    return out
