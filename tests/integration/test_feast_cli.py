"""The user-facing Feast commands on the real repo definitions: plain `feast -c REPO apply` and
`feast -c REPO materialize-incremental <now>` after a backfill, with the Redis connection from
`fraudstream env`; then Feast's own online API reads back what the backfill computed."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudstream.features import (
    MODEL_FEATURES,
    customer_features,
    feast_references,
    terminal_features,
)
from fraudstream.schema import validate_frame
from fraudstream.simulate import simulate
from training.backfill import backfill

pytestmark = pytest.mark.integration


def test_plain_feast_cli_apply_and_materialize(
    tmp_path: Path,
    kafka_bootstrap: str,
    redis_url: str,
    feature_repo_copy: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = datetime.now(UTC)
    start = (now - pd.Timedelta(days=20)).date().isoformat()
    # 21 simulated days up to tomorrow's midnight, cut at now: the latest rows are minutes
    # old, inside the customer view's 1-day TTL whatever the time of day (with 20 days the
    # simulation ended at today's midnight, and after about 20:00 UTC the tail's rows were
    # more than a day old when materialised)
    simulated = simulate(customers=200, terminals=400, days=21, start=start, seed=9)
    simulated = simulated[pd.to_datetime(simulated["timestamp"], utc=True) < now]
    events = validate_frame(simulated.reset_index(drop=True), keep=("is_fraud",))
    backfill(events, feature_repo_copy)

    base = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")}
    settings_env = {
        **base,
        "FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "FRAUDSTREAM_REDIS__URL": redis_url,
    }
    exports = subprocess.run(
        [sys.executable, "-m", "fraudstream", "env"],
        env=settings_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    feast_env = dict(base)
    for line in exports.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        feast_env[key] = shlex.split(value)[0]
    feast = [sys.executable, "-m", "feast.cli.cli", "-c", str(feature_repo_copy)]
    for args in (["apply"], ["materialize-incremental", now.strftime("%Y-%m-%dT%H:%M:%S")]):
        done = subprocess.run(
            [*feast, *args], env=feast_env, cwd=tmp_path, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr

    for key, value in feast_env.items():  # for this test only (FeatureStore reads them)
        if key.startswith("FRAUDSTREAM_FEAST"):
            monkeypatch.setenv(key, value)
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(feature_repo_copy))
    latest = events.tail(20)  # within the views' TTL of the materialisation window
    online = store.get_online_features(
        features=feast_references(MODEL_FEATURES),
        entity_rows=[
            {"customer_id": c, "terminal_id": t}
            for c, t in zip(latest["customer_id"], latest["terminal_id"], strict=True)
        ],
    ).to_df()
    # each entity's value is its latest backfilled row
    cust = pd.concat([events[["customer_id", "timestamp"]], customer_features(events)], axis=1)
    cust = cust.sort_values("timestamp", kind="stable").groupby("customer_id").last()
    term = pd.concat([events[["terminal_id", "timestamp"]], terminal_features(events)], axis=1)
    term = term.sort_values("timestamp", kind="stable").groupby("terminal_id").last()
    for _, row in online.iterrows():
        for name in ("customer_nb_tx_7d", "customer_avg_amount_30d", "customer_nb_big_prev_14d"):
            assert row[name] == pytest.approx(cust.loc[row["customer_id"], name], abs=1e-9)
        for name in ("terminal_nb_tx_30d", "terminal_risk_30d", "terminal_fraud_run_len"):
            assert row[name] == pytest.approx(term.loc[row["terminal_id"], name], abs=1e-9)
    assert np.isfinite(online["customer_nb_tx_1d"].astype(float)).all()
