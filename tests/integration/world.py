"""A small, complete fraudstream world for integration tests: a private Feast project (its
own Redis keys), backfilled history, a trained model, terminal snapshots materialised into
Redis, the customers' history in Redis, and held-out "new" transactions timed after the
refresh, as a live stream would bring them."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from feast import FeatureStore

from fraudstream.config import Settings
from fraudstream.feast_env import open_store, run_feast
from fraudstream.model import ModelArtifact, load_artifact
from fraudstream.schema import validate_frame
from fraudstream.scoring import Scorer, build_scorer
from fraudstream.simulate import simulate
from fraudstream.stack import resolve_endpoints
from training.backfill import backfill, refresh_terminal_snapshot
from training.evaluate import Split
from training.train import train

REPO = Path(__file__).resolve().parents[2] / "feature_repo"


@dataclass
class World:
    settings: Settings
    past: pd.DataFrame
    new: pd.DataFrame
    store: FeatureStore
    model: ModelArtifact
    scorer: Scorer
    refreshed_at: pd.Timestamp


def build_world(
    root: Path, kafka_bootstrap: str, redis_url: str, *, seed: int = 21, held_out: int = 400
) -> World:
    repo = root / "feature_repo"
    repo.mkdir(parents=True)
    for name in ("definitions.py", ".feastignore"):
        shutil.copy2(REPO / name, repo / name)
    project = f"t{uuid.uuid4().hex[:10]}"
    yaml = (
        (REPO / "feature_store.yaml")
        .read_text()
        .replace("project: fraudstream", f"project: {project}")
    )
    (repo / "feature_store.yaml").write_text(yaml)
    settings = Settings(
        kafka={"bootstrap_servers": kafka_bootstrap},
        redis={"url": redis_url},
        feast={"repo_path": repo},
        model={"dir": root / "model"},
        stack={"dir": root / "stack"},
    )
    today = datetime.now(UTC).date()
    raw = simulate(
        customers=300, terminals=600, days=40, start=str(today - timedelta(days=40)), seed=seed
    )
    events = validate_frame(raw, keep=("is_fraud",))
    past = events.iloc[:-held_out].reset_index(drop=True)
    endpoints = resolve_endpoints(settings)
    backfill(past, repo)
    assert run_feast(settings, endpoints, ["apply"]) == 0
    store = open_store(settings, endpoints)
    train(past, Split(today - timedelta(days=22)), settings.model.dir, store, backfill_first=False)
    refreshed_at = pd.Timestamp.now(tz="UTC").floor("s")
    refresh_terminal_snapshot(past, repo, refreshed_at)
    end = (refreshed_at + pd.Timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    assert run_feast(settings, endpoints, ["materialize-incremental", end]) == 0
    scorer = build_scorer(settings, endpoints)
    scorer.history.append(past)
    new = events.iloc[-held_out:].reset_index(drop=True).copy()
    new["timestamp"] = (
        refreshed_at + pd.Timedelta(seconds=2) + pd.to_timedelta(range(held_out), unit="ms") * 50
    )
    new["transaction_id"] = pd.array([f"new-{i}" for i in range(held_out)], dtype="string[pyarrow]")
    return World(
        settings, past, new, store, load_artifact(settings.model.dir), scorer, refreshed_at
    )
