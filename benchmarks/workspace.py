"""A private workspace for a benchmark: a temporary folder with a copy of the feature repo
and a local stack (Kafka + Redis) of its own, torn down afterwards."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fraudstream import stack
from fraudstream.config import Settings

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Workspace:
    work: Path
    settings: Settings  # names the private stack's Kafka and Redis as external services
    endpoints: stack.Endpoints


@contextlib.contextmanager
def private_workspace(prefix: str = "fraudstream-bench-") -> Iterator[Workspace]:
    work = Path(tempfile.mkdtemp(prefix=prefix))
    repo = work / "feature_repo"
    repo.mkdir()
    for name in ("feature_store.yaml", "definitions.py", ".feastignore"):
        shutil.copy2(ROOT / "feature_repo" / name, repo / name)
    base = Settings(stack={"dir": work / "stack"})
    stack.up(base)
    try:
        endpoints = stack.resolve_endpoints(base)
        settings = Settings(
            kafka={"bootstrap_servers": endpoints.kafka_bootstrap},
            redis={"url": endpoints.redis_url},
            feast={"repo_path": repo},
            model={"dir": work / "model"},
            stack={"dir": work / "stack"},
        )
        yield Workspace(work, settings, endpoints)
    finally:
        stack.down(base)
        shutil.rmtree(work, ignore_errors=True)
