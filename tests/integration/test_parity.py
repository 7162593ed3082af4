"""Training/serving parity end to end: the scoring path the worker and the API run gives the
same features and scores as batch scoring (:mod:`fraudstream.batch_scoring`) of the same
transactions through Feast's get_historical_features (point in time), to 1e-6."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudstream.batch_scoring import batch_features, score_matrix, scratch_store
from fraudstream.features import CUSTOMER_VIEW, OFFLINE_FILES

from .world import build_world

pytestmark = pytest.mark.integration


def test_online_scores_equal_offline_batch_scores(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    world = build_world(tmp_path, kafka_bootstrap, redis_url, seed=31, held_out=500)
    online = world.scorer.score(world.new, update=True)

    # offline: a scratch copy of the offline store whose customer table also holds the new
    # transactions (what a backfill over the same history computes); the live one is only read
    repo = Path(world.settings.feast.repo_path)
    live = repo / "data" / OFFLINE_FILES[CUSTOMER_VIEW]
    before = live.stat().st_mtime_ns, len(pd.read_parquet(live))
    with scratch_store(repo, world.new, world.past) as store:
        offline = batch_features(world.new, store, world.model)
    assert (live.stat().st_mtime_ns, len(pd.read_parquet(live))) == before

    np.testing.assert_allclose(online.matrix, offline, rtol=0, atol=1e-9, equal_nan=True)
    batch = score_matrix(world.new, offline, world.model)
    online_scores = np.array([d.score for d in online.decisions])
    np.testing.assert_allclose(online_scores, batch["score"].to_numpy(), rtol=0, atol=1e-6)
    assert online_scores.std() > 0
    assert batch["action"].tolist() == [d.action for d in online.decisions]
    assert batch["degraded"].tolist() == [d.degraded for d in online.decisions]
    # the refresh gave every known terminal a fresh row: few decisions are degraded
    assert sum(d.degraded for d in online.decisions) < 0.1 * len(online.decisions)
