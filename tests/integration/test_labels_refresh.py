"""Labels end to end on the real broker, Redis and Feast: ``publish-labels`` replays verdicts,
``archive --once`` stores them with the streamed transactions, ``features refresh`` recomputes
the terminal features as of a time and materialises them: the online store then serves
exactly what the backfill's kernel computes from the training history plus the streamed
transactions with the labels reported by then (a label reported later does not count)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import Producer

from benchmarks.small_world import build_small_world, process_env, run_cli
from fraudstream.features import TERMINAL_FEATURES, terminal_snapshots
from fraudstream.kafka import ensure_topics, producer_config
from fraudstream.labels import label_events, publish_labels
from fraudstream.publish import encode, event_payloads

pytestmark = pytest.mark.integration

NAMES = [f.name for f in TERMINAL_FEATURES]


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> dict[str, object]:
    summary: dict[str, object] = json.loads(run_cli(args, env, cwd).strip().splitlines()[-1])
    return summary


def test_published_labels_reach_the_online_terminal_features(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    world = build_small_world(tmp_path / "w", kafka_bootstrap, redis_url, seed=37)
    settings = world.settings
    tag = uuid.uuid4().hex[:8]
    topics = {
        "transactions": f"lb-tx-{tag}",
        "decisions": f"lb-dec-{tag}",
        "labels": f"lb-lab-{tag}",
    }
    ensure_topics(settings.kafka, kafka_bootstrap, list(topics.values()))
    env = process_env(
        settings,
        tmp_path / "stack",
        {f"FRAUDSTREAM_TOPICS__{k.upper()}": v for k, v in topics.items()}
        | {
            "FRAUDSTREAM_MONITORING__ARCHIVE_DIR": str(tmp_path / "archive"),
            "FRAUDSTREAM_MONITORING__ARCHIVE_GROUP_ID": f"archive-{tag}",
        },
    )
    now = pd.Timestamp.now(tz="UTC").floor("s")
    # streamed transactions 9 days ago on the world's busiest terminals, half of them fraud
    terminals = world.past["terminal_id"].value_counts().index[:10].tolist()
    n = 60
    streamed = pd.DataFrame(
        {
            "transaction_id": [f"lb-{tag}-{i}" for i in range(n)],
            "timestamp": [now - pd.Timedelta(days=9) + pd.Timedelta(minutes=i) for i in range(n)],
            "customer_id": world.past["customer_id"].iloc[:n].to_numpy(),
            "terminal_id": [terminals[i % len(terminals)] for i in range(n)],
            "amount": np.linspace(5, 200, n),
            "is_fraud": [int(i % 2 == 0) for i in range(n)],
        }
    )
    producer = Producer(producer_config(settings.kafka, kafka_bootstrap))
    for event in event_payloads(streamed):
        producer.produce(topics["transactions"], *reversed(encode(event)))
    assert producer.flush(15) == 0
    labelled_path = tmp_path / "streamed.parquet"
    streamed.to_parquet(labelled_path)
    past_path = tmp_path / "past.parquet"
    world.past.to_parquet(past_path)

    # verdicts a day after each transaction, through the CLI ...
    sent = _cli(
        ["publish-labels", "--transactions", str(labelled_path), "--delay-days", "1"], env, tmp_path
    )
    assert sent["sent"] == n and sent["frauds"] == n // 2
    # ... and corrections reported tomorrow: after the refresh's as-of, they must not count
    late = label_events(streamed.iloc[1:11:2].assign(is_fraud=1), timedelta(days=10))
    assert late["reported_at"].min() > now
    result = publish_labels(
        late, kafka=settings.kafka, bootstrap=kafka_bootstrap, topic=topics["labels"]
    )
    assert result.delivered == len(late)

    archived = _cli(["archive", "--once"], env, tmp_path)
    assert archived["rows"] == {"transactions": n, "labels": n + len(late)}

    refreshed = _cli(
        ["features", "refresh", "--as-of", now.isoformat(), "--history", str(past_path)],
        env,
        tmp_path,
    )
    assert refreshed["labels_known"] == n and refreshed["frauds_known"] >= n // 2

    history = pd.concat([world.past, streamed], ignore_index=True)
    expected = terminal_snapshots(history, [now]).set_index("terminal_id").loc[terminals, NAMES]
    without = terminal_snapshots(world.past, [now]).set_index("terminal_id").loc[terminals, NAMES]
    # the streamed transactions count, and their frauds raise the terminals' risk overall
    assert (expected["terminal_nb_tx_30d"] == without["terminal_nb_tx_30d"] + n // 10).all()
    assert expected["terminal_risk_30d"].sum() > without["terminal_risk_30d"].sum() + 0.1

    rows = world.scorer.online.read_arrays({"terminal_id": terminals}, NAMES)
    np.testing.assert_allclose(
        rows.values, expected.to_numpy(dtype=np.float64), atol=1e-9, equal_nan=True
    )
    served_at = rows.event_timestamps["terminal_features"]
    assert (served_at == now.value).all()  # the refresh's rows, at the as-of time

    # the report: drift of the archived window against the model's training baseline
    report_dir = tmp_path / "report"
    printed = run_cli(
        ["report", "--days", "14", "--out", str(report_dir), "--history", str(past_path)],
        env,
        tmp_path,
    )
    report = json.loads((report_dir / "report.json").read_text())
    drift = report["drift"]
    assert drift["events"] == n and set(drift["psi"]) >= {"amount", "score", *NAMES}
    assert all(np.isfinite(v) and v >= 0 for v in drift["psi"].values())
    assert "drift (60 events" in printed, printed
    assert (report_dir / "drift.png").is_file() and (report_dir / "quality.png").is_file()
