"""``fraudstream retrain --transactions``: a challenger that does not clear the margin is
registered, with its evaluation, but not promoted (real Redis and Feast, nothing mocked).

The small world's model is served from ``model.dir`` (no registry yet): retrain registers it
first, as the champion, then trains a challenger on the latest labelled window and evaluates
both on the same rows. With a margin no model can clear (AP + 1.0), the verdict is "keep".
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.small_world import process_env, run_cli
from fraudstream.archive import Archive, archive_root
from fraudstream.features import (
    MODEL_FEATURES,
    customer_features,
    terminal_features,
)
from fraudstream.labels import label_events
from fraudstream.model import load_artifact
from fraudstream.registry import ModelRegistry
from fraudstream.schema import validate_frame
from fraudstream.simulate import simulate
from training.dataset import historical_features
from training.retrain import training_store

from .world import build_world

pytestmark = pytest.mark.integration


def test_a_challenger_below_the_margin_is_registered_not_promoted(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    world = build_world(tmp_path, kafka_bootstrap, redis_url, seed=71, held_out=0)
    data = tmp_path / "labelled.parquet"
    world.past.to_parquet(data, index=False)
    served = load_artifact(world.settings.model.dir).version
    env = process_env(world.settings, tmp_path / "stack")
    args = ["retrain", "--transactions", str(data), "--min-ap-gain", "1.0"]
    printed = run_cli(args, env, tmp_path)
    evaluation = json.loads(printed.strip().splitlines()[-1])
    assert "registered, not promoted" in printed

    registry = ModelRegistry(world.settings.model.registry_path)
    challenger = evaluation["challenger_version"]
    assert registry.champion() == served == evaluation["champion"]["model_version"]
    assert registry.versions() == sorted([served, challenger])
    assert evaluation["better"] is False and evaluation["promoted"] is False
    assert evaluation["reason"].startswith("AP gain")
    assert evaluation["margin"] == {"min_ap_gain": 1.0, "max_auc_loss": 0.005}
    old, new = evaluation["champion"], evaluation["challenger"]
    assert old["n"] == new["n"] > 0 and old["n_fraud"] == new["n_fraud"] > 0
    window = evaluation["window"]
    assert (window["train_days"], window["delay_days"], window["eval_days"]) == (7, 7, 7)
    assert json.loads((registry.path(challenger) / "retrain.json").read_text()) == {
        k: v for k, v in evaluation.items() if k != "challenger_version"
    }
    assert [h["action"] for h in registry.history()] == ["register", "promote", "register"]


def test_retrain_from_the_archive_computes_features_over_unlabelled_transactions_too(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    """Half the genuine transactions never get a label: they still count in every window
    (the stream counted them), only the labelled ones are trained and evaluated on, and the
    live offline tables are not written."""
    world = build_world(tmp_path, kafka_bootstrap, redis_url, seed=72, held_out=0)
    past = world.past
    rng = np.random.default_rng(0)
    labelled = (past["is_fraud"] == 1).to_numpy() | (rng.random(len(past)) < 0.5)
    archive = Archive(archive_root(world.settings))
    archive.append("transactions", past.drop(columns=["is_fraud"]))
    labels = label_events(past[labelled], timedelta(0))
    # frauds reported 20 days after the transaction (past the terminal features' 7-day
    # delay: they count there only once reported), none after the start of the test
    fraud = labels["label"] == 1
    cap = pd.Timestamp.now(tz="UTC") - pd.Timedelta(minutes=1)
    labels.loc[fraud, "reported_at"] = (
        labels.loc[fraud, "reported_at"] + pd.Timedelta(days=20)
    ).clip(upper=cap)
    archive.append("labels", labels)
    data = world.settings.feast.repo_path / "data"
    live = {p.name: p.read_bytes() for p in data.glob("*.parquet")}

    env = process_env(world.settings, tmp_path / "stack")
    printed = run_cli(["retrain", "--min-ap-gain", "1.0"], env, tmp_path)
    evaluation = json.loads(printed.strip().splitlines()[-1])
    assert evaluation["window"]["transactions"] == len(past)
    assert evaluation["window"]["labelled_rows"] == int(labelled.sum()) < len(past)
    assert f"{len(past):,} transactions, {int(labelled.sum()):,} of them labelled" in printed
    assert {p.name: p.read_bytes() for p in data.glob("*.parquet")} == live


def test_the_training_store_holds_every_transaction_s_windows(
    tmp_path: Path, feature_repo_copy: Path
) -> None:
    events = validate_frame(
        simulate(customers=150, terminals=300, days=40, seed=9), keep=("is_fraud",)
    )
    labelled = events.sample(frac=0.5, random_state=3).sort_values("timestamp")
    late = labelled[labelled["timestamp"] >= labelled["timestamp"].min() + pd.Timedelta(days=30)]
    with training_store(events, feature_repo_copy) as store:
        got = historical_features(store, late, MODEL_FEATURES)
    direct = pd.concat([customer_features(events), terminal_features(events)], axis=1).loc[
        late.index
    ]
    names = [c for c in direct.columns if c in got.columns]
    assert len(names) > 10
    np.testing.assert_allclose(
        got[names].to_numpy(float), direct[names].to_numpy(float), rtol=0, atol=1e-9
    )
    only_labelled = customer_features(labelled).loc[late.index]
    assert (only_labelled["customer_nb_tx_7d"] < direct["customer_nb_tx_7d"]).mean() > 0.5
