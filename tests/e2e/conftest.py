"""The e2e reliability tests' world: one model, Feast project and Redis history, built once."""

from __future__ import annotations

import pytest

from benchmarks.chaos import World, build_world


@pytest.fixture(scope="session")
def chaos_world(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, redis_url: str
) -> World:
    """A small world (simulated history, trained model, private Feast project, history in
    the session's Redis) for the crash, shutdown and broker-restart tests."""
    return build_world(tmp_path_factory.mktemp("chaos-world"), kafka_bootstrap, redis_url, seed=61)
