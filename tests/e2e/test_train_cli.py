"""`fraudstream simulate` then `fraudstream train` as a user runs them, on real Redis + Feast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fraudstream.model import MANIFEST_FILE, ModelError, load_artifact, sha256_file

pytestmark = pytest.mark.e2e


def cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")}
    return subprocess.run(
        [sys.executable, "-m", "fraudstream", *args],
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_simulate_then_train(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, feature_repo_copy: Path
) -> None:
    env = {
        "FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "FRAUDSTREAM_REDIS__URL": redis_url,
        "FRAUDSTREAM_FEAST__REPO_PATH": str(feature_repo_copy),
        "FRAUDSTREAM_MODEL__DIR": str(tmp_path / "models" / "current"),
    }
    data = tmp_path / "tx.parquet"
    sim = cli(
        [
            "simulate",
            "--customers",
            "800",
            "--terminals",
            "1600",
            "--days",
            "45",
            "--seed",
            "3",
            "--out",
            str(data),
        ],
        tmp_path,
        env,
    )
    assert sim.returncode == 0, sim.stderr
    assert data.is_file()

    run = cli(["train", "--transactions", str(data)], tmp_path, env)
    assert run.returncode == 0, run.stderr[-3000:]
    last = json.loads(run.stdout.strip().splitlines()[-1])
    for key in ("auc_roc", "average_precision", "card_precision_at_100"):
        assert 0 <= last[key] <= 1
    assert last["auc_roc"] > 0.7  # the model learned something real

    out = tmp_path / "models" / "current"
    for name in ("model.ubj", MANIFEST_FILE, "pr_curve.png", "cp_at_k.png", "evaluation.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.pkl")) and not list(out.glob("*.pickle"))
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["model_sha256"] == sha256_file(out / "model.ubj")
    assert [f["name"] for f in manifest["features"]][:3] == [
        "amount",
        "tx_during_weekend",
        "tx_during_night",
    ]
    assert all(":" in f["feast_reference"] for f in manifest["features"])
    assert manifest["thresholds"]["review"] <= manifest["thresholds"]["decline"]
    assert manifest["data"]["rows"] > 10_000

    # a run that cannot train (a split after the data) fails by name and leaves the offline
    # store the successful run wrote as it was
    tables = sorted((feature_repo_copy / "data").glob("*.parquet"))
    assert tables
    before = {p.name: sha256_file(p) for p in tables}
    failed = cli(
        ["train", "--transactions", str(data), "--train-start", "2030-01-01"], tmp_path, env
    )
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert "no transactions in the train period" in failed.stderr + failed.stdout
    assert "Traceback" not in failed.stderr
    after = {p.name: sha256_file(p) for p in sorted((feature_repo_copy / "data").glob("*.parquet"))}
    assert after == before
    artifact = load_artifact(out)
    assert artifact.version == last["model_version"]

    # the worker's state: every customer's recent history lands in Redis, once per transaction
    loaded = cli(["features", "load-history", "--transactions", str(data)], tmp_path, env)
    assert loaded.returncode == 0, loaded.stderr
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match="fraudstream:fraudstream:history:*", count=1000))
    assert len(keys) > 700
    stored = sum(client.zcard(k) for k in keys)
    assert 0 < stored <= manifest["data"]["rows"]  # once per transaction, pruned
    again = cli(["features", "load-history", "--transactions", str(data)], tmp_path, env)
    assert again.returncode == 0
    assert sum(client.zcard(k) for k in keys) == stored  # idempotent: the same entries
    assert len(list(client.scan_iter(match="fraudstream:fraudstream:history:*"))) == len(keys)

    # a tampered model is refused
    (out / "model.ubj").write_bytes((out / "model.ubj").read_bytes() + b"\0")
    with pytest.raises(ModelError, match="SHA-256"):
        load_artifact(out)


def test_bad_input_is_named(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, feature_repo_copy: Path
) -> None:
    import pandas as pd

    bad = tmp_path / "bad.parquet"
    pd.DataFrame(
        {
            "transaction_id": [1, 2, 2],
            "timestamp": ["2026-01-01T00:00:00Z"] * 3,
            "customer_id": [1, 2, 3],
            "terminal_id": [1, 2, 3],
            "amount": [1.0, 2.0, 3.0],
            "is_fraud": [0, 0, 1],
        }
    ).to_parquet(bad)
    env = {
        "FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "FRAUDSTREAM_REDIS__URL": redis_url,
        "FRAUDSTREAM_FEAST__REPO_PATH": str(feature_repo_copy),
    }
    run = cli(["train", "--transactions", str(bad), "--out", str(tmp_path / "m")], tmp_path, env)
    assert run.returncode == 2
    assert "transaction_id" in run.stderr and "duplicate" in run.stderr
    assert "Traceback" not in run.stderr
