"""Training/serving parity end to end: the scoring path the worker and the API run gives the
same scores as offline batch scoring of the same transactions through Feast's
get_historical_features (point in time), to 1e-6."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudstream.features import CUSTOMER_VIEW, MODEL_FEATURES, OFFLINE_FILES
from training.backfill import customer_table
from training.dataset import historical_features

from .world import build_world

pytestmark = pytest.mark.integration


def test_online_scores_equal_offline_batch_scores(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    world = build_world(tmp_path, kafka_bootstrap, redis_url, seed=31, held_out=500)
    online = world.scorer.score(world.new, update=True)

    # offline: the customer view's offline table now also holds the new transactions (what a
    # backfill over the same history computes); the terminal view holds what was materialised
    both = pd.concat([world.past, world.new], ignore_index=True)
    path = Path(world.settings.feast.repo_path) / "data" / OFFLINE_FILES[CUSTOMER_VIEW]
    table = customer_table(both)
    table["event_timestamp"] = table["event_timestamp"].astype("datetime64[us, UTC]")
    table.to_parquet(path, index=False)
    offline = (
        historical_features(world.store, world.new, MODEL_FEATURES).astype("float64").to_numpy()
    )

    np.testing.assert_allclose(online.matrix, offline, rtol=0, atol=1e-9, equal_nan=True)
    offline_scores = world.model.predict(offline)
    online_scores = np.array([d.score for d in online.decisions])
    np.testing.assert_allclose(online_scores, offline_scores, rtol=0, atol=1e-6)
    assert online_scores.std() > 0
    # the refresh gave every known terminal a fresh row: few decisions are degraded
    assert sum(d.degraded for d in online.decisions) < 0.1 * len(online.decisions)
