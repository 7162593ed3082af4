"""A small, complete fraudstream world for integration tests (:mod:`benchmarks.small_world`),
with held-out "new" transactions timed after the refresh, as a live stream would bring them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from feast import FeatureStore

from benchmarks.small_world import build_small_world
from fraudstream.config import Settings
from fraudstream.model import ModelArtifact
from fraudstream.scoring import Scorer


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
    built = build_small_world(
        root, kafka_bootstrap, redis_url, seed=seed, held_out=held_out, project_prefix="t"
    )
    refreshed_at = built.refreshed_at
    new = built.held_out.copy()
    new["timestamp"] = (
        refreshed_at + pd.Timedelta(seconds=2) + pd.to_timedelta(range(held_out), unit="ms") * 50
    )
    new["transaction_id"] = pd.array([f"new-{i}" for i in range(held_out)], dtype="string[pyarrow]")
    scorer = built.scorer
    return World(built.settings, built.past, new, built.store, scorer.model, scorer, refreshed_at)
