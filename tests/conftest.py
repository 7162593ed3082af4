"""Shared fixtures: real Kafka and Redis for integration tests, never mocks.

``kafka_bootstrap`` and ``redis_url`` come from testcontainers when a Docker engine
answers, else from a local stack (Tansu broker + redis-server) that this session
starts in a temporary directory and stops at the end. Factory fixtures give each
test its own topics and consumer groups.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fraudstream import stack
from fraudstream.config import Settings, load_settings
from fraudstream.kafka import ensure_topics

REPO_ROOT = Path(__file__).resolve().parent.parent


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


@dataclass(frozen=True)
class Services:
    kafka_bootstrap: str
    redis_url: str
    how: str


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """Kafka and Redis for the whole test session."""
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.redis import RedisContainer

        with KafkaContainer("apache/kafka:3.9.1") as kafka, RedisContainer("redis:7") as rds:
            host, port = rds.get_container_host_ip(), rds.get_exposed_port(6379)
            yield Services(kafka.get_bootstrap_server(), f"redis://{host}:{port}/0", "docker")
        return
    settings = Settings(stack={"dir": tmp_path_factory.mktemp("stack")})
    stack.up(settings)
    try:
        state = stack.read_state(settings)
        assert state is not None and state.kafka_bootstrap and state.redis_url
        yield Services(state.kafka_bootstrap, state.redis_url, "local")
    finally:
        stack.down(settings)


@pytest.fixture(scope="session")
def kafka_bootstrap(services: Services) -> str:
    return services.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(services: Services) -> str:
    return services.redis_url


@pytest.fixture
def service_settings(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Settings:
    """Settings that name the session's Kafka and Redis as external services."""
    return Settings(
        kafka={"bootstrap_servers": kafka_bootstrap},
        redis={"url": redis_url},
        stack={"dir": tmp_path / "stack"},
    )


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """``unique_name("orders")`` → ``orders-test_x-1a2b3c4d``: unique per call."""
    test = request.node.name.replace("[", "-").replace("]", "")[:40]

    def make(prefix: str) -> str:
        return f"{prefix}-{test}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def topic_factory(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> Callable[..., str]:
    """Create a fresh topic for this test: ``topic_factory("in", partitions=2)``."""
    settings = Settings()

    def make(prefix: str = "topic", partitions: int = 1) -> str:
        name = unique_name(prefix)
        ensure_topics(settings.kafka, kafka_bootstrap, [name], partitions=partitions)
        return name

    return make


@pytest.fixture
def group_factory(unique_name: Callable[[str], str]) -> Callable[[str], str]:
    """A fresh consumer-group id for this test."""
    return lambda prefix="group": unique_name(prefix)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[], Settings]:
    """Run in an empty directory with no ``FRAUDSTREAM_*`` variables; returns a loader."""
    import os

    for key in list(os.environ):
        if key.upper().startswith("FRAUDSTREAM_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return lambda: load_settings()


@pytest.fixture
def feature_repo_copy(tmp_path: Path) -> Path:
    """A private copy of ``feature_repo/`` (definitions and yaml; data written per test)."""
    import shutil

    repo = tmp_path / "feature_repo"
    repo.mkdir()
    for name in ("feature_store.yaml", "definitions.py", ".feastignore"):
        shutil.copy2(REPO_ROOT / "feature_repo" / name, repo / name)
    return repo
