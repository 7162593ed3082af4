"""A small, complete fraudstream world, for the integration tests and the benchmarks.

A private Feast project (its own Redis keys), simulated history (backfill, ``feast apply``, a
trained model, terminal snapshots refreshed now and materialised into Redis, the customers'
history in Redis), and optionally the last ``held_out`` simulated transactions kept out of
all of it, for a test to stream.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from feast import FeatureStore

from fraudstream.config import Settings
from fraudstream.scoring import Scorer

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class SmallWorld:
    settings: Settings  # names Kafka and Redis as external services
    past: pd.DataFrame  # validated, with ``is_fraud``: backfilled, trained on, in Redis
    held_out: pd.DataFrame  # the simulation's last transactions, in none of the above
    refreshed_at: pd.Timestamp  # the terminal snapshot's time (UTC, whole seconds)
    store: FeatureStore
    scorer: Scorer


def process_env(
    settings: Settings, stack_dir: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a ``fraudstream`` subprocess for ``settings``: none of this
    process's ``FRAUDSTREAM_*`` variables; its Kafka, Redis, feature repo, model and stack
    directory; then ``extra``."""
    assert settings.kafka.bootstrap_servers and settings.redis.url, "external services only"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("FRAUDSTREAM_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "FRAUDSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "FRAUDSTREAM_REDIS__URL": settings.redis.url,
            "FRAUDSTREAM_FEAST__REPO_PATH": str(settings.feast.repo_path),
            "FRAUDSTREAM_MODEL__DIR": str(settings.model.dir),
            "FRAUDSTREAM_STACK__DIR": str(stack_dir),
            **(extra or {}),
        }
    )
    return env


def run_cli(args: Sequence[str], env: Mapping[str, str], cwd: Path, timeout_s: float = 300) -> str:
    """``python -m fraudstream ARGS`` in ``cwd`` with ``env`` (:func:`process_env`); its
    stdout, or an ``AssertionError`` with its exit code and output."""
    done = subprocess.run(
        [sys.executable, "-m", "fraudstream", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, (
        f"fraudstream {' '.join(args)}: exit {done.returncode}\n"
        f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


def private_feature_repo(root: Path, project_prefix: str) -> Path:
    """A copy of ``feature_repo`` under ``root`` with a project name of its own."""
    source = ROOT / "feature_repo"
    repo = root / "feature_repo"
    repo.mkdir(parents=True)
    for name in ("definitions.py", ".feastignore"):
        shutil.copy2(source / name, repo / name)
    project = f"{project_prefix}{uuid.uuid4().hex[:10]}"
    yaml = (source / "feature_store.yaml").read_text()
    (repo / "feature_store.yaml").write_text(
        yaml.replace("project: fraudstream", f"project: {project}")
    )
    return repo


def build_small_world(
    root: Path,
    kafka_bootstrap: str,
    redis_url: str,
    *,
    seed: int,
    customers: int = 300,
    held_out: int = 0,
    project_prefix: str = "w",
) -> SmallWorld:
    """Simulate 40 days of ``customers`` (and twice as many terminals) ending today and build
    everything the worker and the API need from all but the last ``held_out`` transactions."""
    from fraudstream.feast_env import open_store, run_feast
    from fraudstream.schema import validate_frame
    from fraudstream.scoring import build_scorer
    from fraudstream.simulate import simulate
    from fraudstream.stack import resolve_endpoints
    from training.backfill import backfill, refresh_terminal_snapshot
    from training.evaluate import Split
    from training.train import train

    repo = private_feature_repo(root, project_prefix)
    settings = Settings(
        kafka={"bootstrap_servers": kafka_bootstrap},
        redis={"url": redis_url},
        feast={"repo_path": repo},
        model={"dir": root / "model"},
        stack={"dir": root / "stack"},
    )
    today = datetime.now(UTC).date()
    raw = simulate(
        customers=customers,
        terminals=2 * customers,
        days=40,
        start=str(today - timedelta(days=40)),
        seed=seed,
    )
    events = validate_frame(raw, keep=("is_fraud",))
    past = events.iloc[: len(events) - held_out].reset_index(drop=True)
    rest = events.iloc[len(events) - held_out :].reset_index(drop=True)
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
    return SmallWorld(settings, past, rest, refreshed_at, store, scorer)
