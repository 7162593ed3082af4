"""The bridge from fraudstream settings to Feast's ``feature_store.yaml``.

``feature_repo/feature_store.yaml`` reads its Redis connection from
``${FRAUDSTREAM_FEAST_REDIS_CONNECTION}``; this module derives that value from the
one Redis setting (``FRAUDSTREAM_REDIS__URL`` or the local stack), so the REST API,
the worker and the ``feast`` CLI all talk to the same Redis.

:func:`scratch_repo` is a temporary copy of the repo's definitions with offline tables of
its own, for offline work that must not write the live tables (batch scoring, retraining).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fraudstream.config import FEAST_REDIS_ENV, Settings, feast_connection_string
from fraudstream.errors import FraudstreamError
from fraudstream.stack import Endpoints

if TYPE_CHECKING:
    from feast import FeatureStore


def feast_environment(settings: Settings, endpoints: Endpoints) -> dict[str, str]:
    """Variables that ``feature_store.yaml`` expands, for a subprocess or this process.

    Feast expands them into the YAML text before parsing it, so each value is a YAML
    double-quoted scalar (JSON's string syntax, which YAML reads): a password holding
    ``: `` or `` #`` would otherwise break the YAML or be cut short there."""
    value = feast_connection_string(endpoints.redis_url, settings.redis)
    return {FEAST_REDIS_ENV: json.dumps(value)}


def export_feast_environment(env: Mapping[str, str]) -> None:
    """Put the Feast variables into this process's environment (before ``FeatureStore(...)``)."""
    os.environ.update(env)


def run_feast(settings: Settings, endpoints: Endpoints, args: list[str]) -> int:
    """Run the ``feast`` CLI on the configured repo with the Redis connection; return its code."""
    env = {**os.environ, **feast_environment(settings, endpoints)}
    argv = [sys.executable, "-m", "feast.cli.cli", "-c", str(settings.feast.repo_path), *args]
    return subprocess.call(argv, env=env)


def open_store(settings: Settings, endpoints: Endpoints) -> FeatureStore:
    """A Feast ``FeatureStore`` on the configured repo, its Redis taken from the settings."""
    from feast import FeatureStore

    export_feast_environment(feast_environment(settings, endpoints))
    return FeatureStore(repo_path=str(settings.feast.repo_path))


#: A scratch repo's ``feature_store.yaml``: its own project and registry, DuckDB offline, and a
#: SQLite online store that is never used (nothing is materialised from a scratch repo).
_SCRATCH_YAML = """project: {project}
provider: local
registry: data/registry.db
online_store:
  type: sqlite
  path: data/online.db
offline_store:
  type: duckdb
entity_key_serialization_version: 3
"""


@contextmanager
def scratch_repo(repo_path: Path) -> Iterator[Path]:
    """A temporary Feast repo with ``repo_path``'s definitions and an empty ``data/`` for its
    offline tables; removed on exit. Fill the tables, then :func:`apply_scratch` it."""
    repo_path = Path(repo_path)
    with tempfile.TemporaryDirectory(prefix="fraudstream-scratch-") as tmp:
        scratch = Path(tmp) / "feature_repo"
        (scratch / "data").mkdir(parents=True)
        for name in ("definitions.py", ".feastignore"):
            shutil.copy2(repo_path / name, scratch / name)
        project = f"scratch{uuid.uuid4().hex[:10]}"
        (scratch / "feature_store.yaml").write_text(_SCRATCH_YAML.format(project=project))
        yield scratch


def apply_scratch(scratch: Path) -> FeatureStore:
    """``feast apply`` on a :func:`scratch_repo` (its tables written), and its store."""
    from feast import FeatureStore

    argv = [sys.executable, "-m", "feast.cli.cli", "-c", str(scratch), "apply"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise FraudstreamError(f"feast apply on the scratch repo failed: {done.stderr[-2000:]}")
    return FeatureStore(repo_path=str(scratch))
