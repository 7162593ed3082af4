"""Training sets through real Feast (DuckDB offline store, Redis online store): no leakage,
and the DuckDB ASOF path returns exactly what Feast's get_historical_features returns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feast import FeatureStore

from fraudstream.config import Settings
from fraudstream.feast_env import open_store, run_feast
from fraudstream.features import (
    MODEL_FEATURES,
    customer_features,
    request_features,
    terminal_features,
)
from fraudstream.schema import validate_frame
from fraudstream.simulate import simulate
from fraudstream.stack import resolve_endpoints
from training.backfill import backfill
from training.dataset import asof_features, historical_features

pytestmark = pytest.mark.integration


@pytest.fixture
def repo_settings(
    kafka_bootstrap: str, redis_url: str, feature_repo_copy: Path, tmp_path: Path
) -> Settings:
    return Settings(
        kafka={"bootstrap_servers": kafka_bootstrap},
        redis={"url": redis_url},
        feast={"repo_path": feature_repo_copy},
        stack={"dir": tmp_path / "stack"},
    )


def applied_store(settings: Settings, events: pd.DataFrame) -> FeatureStore:
    """Backfill ``events`` into the repo, ``feast apply`` it, and open the store."""
    backfill(events, settings.feast.repo_path)
    endpoints = resolve_endpoints(settings)
    assert run_feast(settings, endpoints, ["apply"]) == 0
    return open_store(settings, endpoints)


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return validate_frame(
        simulate(customers=300, terminals=600, days=50, seed=5), keep=("is_fraud",)
    )


def test_feast_rows_are_point_in_time_and_equal_the_kernel(
    repo_settings: Settings, events: pd.DataFrame
) -> None:
    store = applied_store(repo_settings, events)
    probe = events[events["timestamp"] >= events["timestamp"].min() + pd.Timedelta(days=40)]
    got = historical_features(store, probe, MODEL_FEATURES)
    customers = customer_features(events)
    direct = pd.concat(
        [
            request_features(events["timestamp"], events["amount"], customers),
            customers,
            terminal_features(events),
        ],
        axis=1,
    ).loc[probe.index, [f.name for f in MODEL_FEATURES]]
    np.testing.assert_allclose(got.to_numpy(float), direct.to_numpy(float), rtol=0, atol=1e-9)


def test_feast_training_set_ignores_the_future(
    repo_settings: Settings, events: pd.DataFrame, tmp_path: Path
) -> None:
    cut = events["timestamp"].min() + pd.Timedelta(days=35)
    past = events[events["timestamp"] <= cut]
    sample = past.sample(2000, random_state=0).sort_values("timestamp")
    later = events[events["timestamp"] > cut + pd.Timedelta(days=2)]
    control = later.sample(500, random_state=0).sort_values("timestamp")
    store = applied_store(repo_settings, events)
    before = historical_features(store, sample, MODEL_FEATURES)
    control_before = historical_features(store, control, MODEL_FEATURES)
    changed = events.copy()
    future = changed["timestamp"] > cut
    changed.loc[future, "amount"] = changed.loc[future, "amount"] * 7
    changed.loc[future, "is_fraud"] = 1 - changed.loc[future, "is_fraud"]
    store = applied_store(repo_settings, changed)
    after = historical_features(store, sample, MODEL_FEATURES)
    pd.testing.assert_frame_equal(before, after)
    # the control: the changed rows did reach the store (rows after the cut see them)
    control_after = historical_features(store, control, MODEL_FEATURES)
    moved = ~np.isclose(
        control_before.to_numpy(float), control_after.to_numpy(float), equal_nan=True
    ).all(axis=1)
    assert moved.mean() > 0.9, moved.mean()


def test_asof_path_equals_feast(repo_settings: Settings, events: pd.DataFrame) -> None:
    store = applied_store(repo_settings, events)
    rows = events.sample(5000, random_state=1).sort_values("timestamp")
    # and some as-of times that fall between transactions and past the TTL
    later = rows.head(300).assign(
        timestamp=lambda d: d["timestamp"] + pd.to_timedelta(np.arange(300) * 600, "s"),
        transaction_id=lambda d: "probe-" + d["transaction_id"].astype(str),
    )
    rows = pd.concat([rows, later], ignore_index=True)
    feast_rows = historical_features(store, rows, MODEL_FEATURES)
    asof_rows = asof_features(store, rows, MODEL_FEATURES)
    pd.testing.assert_frame_equal(
        feast_rows.astype(float), asof_rows.astype(float), rtol=0, atol=1e-12
    )
    assert feast_rows.isna().any(axis=1).sum() > 0  # the TTL case was exercised


def test_asof_path_keeps_a_row_exactly_ttl_old_as_feast_does(
    repo_settings: Settings, events: pd.DataFrame
) -> None:
    """Each entity's last row, probed exactly the view's TTL later (kept) and 1 ms after
    that (dropped), by both paths."""
    store = applied_store(repo_settings, events)
    probes, checks = [], []
    for entity, view in (
        ("customer_id", "customer_features"),
        ("terminal_id", "terminal_features"),
    ):
        ttl = store.get_feature_view(view).ttl
        assert ttl  # the views have one
        last = events.sort_values("timestamp").drop_duplicates(entity, keep="last").head(100)
        for kept, offset in ((True, ttl), (False, ttl + pd.Timedelta(milliseconds=1))):
            probes.append(
                last.assign(
                    timestamp=last["timestamp"] + offset,
                    transaction_id=f"{entity}-{kept}-" + last["transaction_id"].astype(str),
                )
            )
            checks += [(view, kept)] * len(last)
    rows = pd.concat(probes, ignore_index=True)
    feast_rows = historical_features(store, rows, MODEL_FEATURES)
    asof_rows = asof_features(store, rows, MODEL_FEATURES)
    pd.testing.assert_frame_equal(
        feast_rows.astype(float), asof_rows.astype(float), rtol=0, atol=1e-12
    )
    column = {"customer_features": "customer_nb_tx_1d", "terminal_features": "terminal_nb_tx_1d"}
    for i, (view, kept) in enumerate(checks):
        assert feast_rows[column[view]].notna().iloc[i] == kept, (view, kept, rows.iloc[i])
