"""A private workspace for a benchmark: a temporary folder with a copy of the feature repo
and a local stack (Kafka + Redis) of its own, torn down afterwards.

With ``kafka_bootstrap`` the stack starts only Redis and the benchmark uses that Kafka
cluster instead of the local broker (say Apache Kafka from ``compose/``:
``docker compose -f compose/docker-compose.yml up -d kafka``, then ``localhost:29092``).
Every benchmark names its topics with a random tag, so a shared cluster is fine."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fraudstream import stack
from fraudstream.config import Settings

if TYPE_CHECKING:
    from benchmarks.small_world import SmallWorld

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Workspace:
    work: Path
    settings: Settings  # names the private stack's Kafka and Redis as external services
    endpoints: stack.Endpoints


def add_kafka_argument(parser: argparse.ArgumentParser) -> None:
    """``--kafka-bootstrap HOST:PORT``: run on that Kafka cluster, not the local broker."""
    parser.add_argument(
        "--kafka-bootstrap",
        metavar="HOST:PORT",
        help="a Kafka cluster to use instead of the local broker, e.g. compose's Apache Kafka "
        "at localhost:29092 (the broker's CPU is then not measured)",
    )


@contextlib.contextmanager
def private_workspace(
    prefix: str = "fraudstream-bench-", kafka_bootstrap: str | None = None
) -> Iterator[Workspace]:
    work = Path(tempfile.mkdtemp(prefix=prefix))
    repo = work / "feature_repo"
    repo.mkdir()
    for name in ("feature_store.yaml", "definitions.py", ".feastignore"):
        shutil.copy2(ROOT / "feature_repo" / name, repo / name)
    cluster = {"kafka": {"bootstrap_servers": kafka_bootstrap}} if kafka_bootstrap else {}
    base = Settings(stack={"dir": work / "stack"}, **cluster)
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


@contextlib.contextmanager
def private_small_world(*, seed: int, customers: int, held_out: int) -> Iterator[SmallWorld]:
    """A small world (``benchmarks/small_world.py``) on a private workspace's stack, with
    ``held_out`` simulated transactions kept out of it; everything is torn down afterwards."""
    from benchmarks.small_world import build_small_world

    with private_workspace() as ws:
        yield build_small_world(
            ws.work / "world",
            ws.endpoints.kafka_bootstrap,
            ws.endpoints.redis_url,
            seed=seed,
            customers=customers,
            held_out=held_out,
        )
