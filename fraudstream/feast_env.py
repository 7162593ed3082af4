"""The bridge from fraudstream settings to Feast's ``feature_store.yaml``.

``feature_repo/feature_store.yaml`` reads its Redis connection from
``${FRAUDSTREAM_FEAST_REDIS_CONNECTION}``; this module derives that value from the
one Redis setting (``FRAUDSTREAM_REDIS__URL`` or the local stack), so the REST API,
the worker and the ``feast`` CLI all talk to the same Redis.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from fraudstream.config import FEAST_REDIS_ENV, Settings, feast_connection_string
from fraudstream.stack import Endpoints

if TYPE_CHECKING:
    from feast import FeatureStore


def feast_environment(settings: Settings, endpoints: Endpoints) -> dict[str, str]:
    """Variables that ``feature_store.yaml`` expands, for a subprocess or this process."""
    return {FEAST_REDIS_ENV: feast_connection_string(endpoints.redis_url, settings.redis)}


def export_feast_environment(env: Mapping[str, str]) -> None:
    """Put the Feast variables into this process's environment (before ``FeatureStore(...)``)."""
    os.environ.update(env)


def run_feast(settings: Settings, endpoints: Endpoints, args: list[str]) -> int:
    """Run the ``feast`` CLI on the configured repo with the Redis connection; return its code."""
    import subprocess
    import sys

    env = {**os.environ, **feast_environment(settings, endpoints)}
    argv = [sys.executable, "-m", "feast.cli.cli", "-c", str(settings.feast.repo_path), *args]
    return subprocess.call(argv, env=env)


def open_store(settings: Settings, endpoints: Endpoints) -> FeatureStore:
    """A Feast ``FeatureStore`` on the configured repo, its Redis taken from the settings."""
    from feast import FeatureStore

    export_feast_environment(feast_environment(settings, endpoints))
    return FeatureStore(repo_path=str(settings.feast.repo_path))
