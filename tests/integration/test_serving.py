"""The REST API on the real scoring path: real Kafka, Redis and Feast, nothing mocked.

A small world (``world.build_world``: private Feast project, trained model, terminal snapshot
materialised, customer history in Redis) is scored three ways: through ``fraudstream serve``
(a uvicorn subprocess: one batch request, and concurrent single requests), and through
``fraudstream worker`` (a subprocess on its own topics). Scores agree to 1e-6. Then, in
process with FastAPI's TestClient: ``?update=true`` is the only way a request changes a
customer's state; the API key; and ``/ready`` following a private ``redis-server`` that the
test stops and starts again on the same port (the session's shared Redis is never touched).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pandas as pd
import psutil
import pytest
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from fastapi.testclient import TestClient
from pydantic import SecretStr

from benchmarks.small_world import process_env
from fraudstream import stack
from fraudstream.config import Settings
from fraudstream.decision import Decision
from fraudstream.kafka import confluent_config, ensure_topics, producer_config
from fraudstream.publish import encode, event_payloads
from fraudstream.schema import TransactionEvent
from fraudstream.scoring import build_scorer
from fraudstream.stack import Endpoints, resolve_endpoints
from serving.app import API_KEY_HEADER, create_app

from .private_redis import start_redis
from .world import World, build_world

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
N_EVENTS = 200
START_TIMEOUT_S = 90.0
ARRIVAL_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, redis_url: str) -> World:
    return build_world(
        tmp_path_factory.mktemp("serving"), kafka_bootstrap, redis_url, seed=44, held_out=N_EVENTS
    )


def payloads(events: pd.DataFrame) -> list[dict[str, Any]]:
    return [event.to_json_dict() for event in event_payloads(events)]


@contextlib.contextmanager
def subprocess_running(
    argv: list[str], env: dict[str, str], log: Path, pids: list[int] | None = None
) -> Iterator[Callable[[], str]]:
    """Run ``python -m fraudstream ARGV``; yields a function returning the log's tail. Its
    process id is appended to ``pids``, if given."""
    with stack.running([sys.executable, "-m", "fraudstream", *argv], log, env=env) as proc:

        def tail() -> str:
            return f"exit code {proc.poll()}; log:\n{log.read_text()[-4000:]}"

        if pids is not None:
            pids.append(proc.pid)
        yield tail
        os.killpg(proc.pid, signal.SIGTERM)
        # a clean stop, exit code 0 (the SIGTERM uvicorn re-raises once it has shut down
        # reaches serve's start-up handler, which only records it: serving/server.py)
        assert proc.wait(timeout=30) == 0, tail()


def wait_ready(client: httpx2.Client, tail: Callable[[], str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx2.TransportError):
            if client.get("/ready").status_code == 200:
                return
        time.sleep(0.2)
    pytest.fail(f"the API was not ready within {START_TIMEOUT_S:g}s: {tail()}")


def worker_decisions(
    settings: Settings, endpoints: Endpoints, events: pd.DataFrame, tmp_path: Path
) -> dict[str, dict[str, Any]]:
    """Publish ``events`` to fresh topics, run ``fraudstream worker`` until every decision is
    in, and return them by transaction id."""
    tag = f"s{uuid.uuid4().hex[:8]}"
    topics = {"transactions": f"tx-{tag}", "decisions": f"decisions-{tag}", "dlq": f"dlq-{tag}"}
    ensure_topics(settings.kafka, endpoints.kafka_bootstrap, list(topics.values()))
    env = process_env(settings, tmp_path / "worker-stack")
    env.update(
        {
            "FRAUDSTREAM_TOPICS__TRANSACTIONS": topics["transactions"],
            "FRAUDSTREAM_TOPICS__DECISIONS": topics["decisions"],
            "FRAUDSTREAM_TOPICS__DEAD_LETTER": topics["dlq"],
            "FRAUDSTREAM_SCORING__BATCH_SIZE": "64",
        }
    )
    conf = confluent_config(settings.kafka, endpoints.kafka_bootstrap)
    conf.update({"group.id": "unused", "enable.auto.commit": False})
    consumer = Consumer(conf)
    consumer.assign(
        [
            TopicPartition(topics["decisions"], p, OFFSET_BEGINNING)
            for p in range(settings.kafka.partitions)
        ]
    )
    decisions: dict[str, dict[str, Any]] = {}
    argv = ["worker", "--app-id", f"worker-{tag}"]
    with subprocess_running(argv, env, tmp_path / "worker.log") as tail:
        producer = Producer(producer_config(settings.kafka, endpoints.kafka_bootstrap))
        for event in event_payloads(events):
            key, value = encode(event)
            producer.produce(topics["transactions"], key=key, value=value)
        assert producer.flush(15) == 0
        deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
        try:
            while len(decisions) < len(events) and time.monotonic() < deadline:
                msg = consumer.poll(0.2)
                if msg is not None and msg.error() is None:
                    decision = orjson.loads(msg.value())
                    decisions[decision["transaction_id"]] = decision
        finally:
            consumer.close()
        assert len(decisions) == len(events), f"{len(decisions)} decision(s): {tail()}"
    return decisions


def test_api_scores_equal_the_worker(world: World, tmp_path: Path) -> None:
    settings = world.settings
    endpoints = resolve_endpoints(settings)
    new = world.new.drop(columns=["is_fraud"]).reset_index(drop=True)
    bodies = payloads(new)
    first_of_customer = new.drop_duplicates("customer_id").index.tolist()
    assert len(first_of_customer) < len(new)  # some customers pay more than once

    port = stack.free_port()
    env = process_env(settings, tmp_path / "api-stack")
    env["FRAUDSTREAM_API__MAX_BATCH"] = str(N_EVENTS)
    argv = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    with (
        subprocess_running(argv, env, tmp_path / "api.log") as tail,
        httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        wait_ready(client, tail)
        assert client.get("/health").json() == {"status": "ok"}
        manifest = client.get("/v1/model").json()
        assert manifest["model_version"] == world.model.version

        # one batch: the events scored together, as the worker's micro-batches do
        r = client.post("/v1/score/batch", json={"transactions": bodies})
        assert r.status_code == 200, tail()
        batch = {d["transaction_id"]: d for d in r.json()["decisions"]}
        assert list(batch) == new["transaction_id"].tolist()

        # concurrent single requests (the API may coalesce them: the result must not change)
        def one(i: int) -> dict[str, Any]:
            response = client.post("/v1/score", json=bodies[i])
            assert response.status_code == 200, response.text
            decision: dict[str, Any] = response.json()
            return decision

        with ThreadPoolExecutor(8) as pool:
            singles = {d["transaction_id"]: d for d in pool.map(one, first_of_customer)}

        for answer in (*batch.values(), *singles.values()):  # the documented record
            assert Decision.model_validate(answer).latency_ms is not None

        # update=false changed nothing: the same batch scores the same
        again = client.post("/v1/score/batch", json={"transactions": bodies}).json()["decisions"]
        assert [d["score"] for d in again] == [batch[d["transaction_id"]]["score"] for d in again]
        metrics = client.get("/metrics").text
        assert 'fraudstream_api_requests_total{method="POST",route="/v1/score",status="200"}' in (
            metrics
        )
        # the key watch is on by default: calls whose rows Redis reported unchanged (all,
        # the second time) skipped the round trip
        assert "fraudstream_api_key_watch_healthy 1.0" in metrics
        watched = re.search(r'fraudstream_api_cache_checks_total\{how="watch"\} (\S+)', metrics)
        assert watched is not None and float(watched.group(1)) >= 1

    streamed = worker_decisions(settings, endpoints, new, tmp_path)
    for tx, want in streamed.items():
        for got in (batch[tx], singles.get(tx)):
            if got is None:
                continue
            assert got["score"] == pytest.approx(want["score"], abs=1e-6), tx
            assert got["action"] == want["action"], tx
            assert [r["feature"] for r in got["reasons"]] == [r["feature"] for r in want["reasons"]]
            assert got["model_version"] == want["model_version"]
            assert got["degraded"] == want["degraded"]
            assert got["event_time"] == want["event_time"]
    for tx in singles:  # a customer's first event: alone or in a batch, the same features
        # and the same score to the bit (small calls: the tree walk; the batch: XGBoost)
        assert singles[tx]["score"] == batch[tx]["score"]


def served_by(supervisor: psutil.Process) -> list[psutil.Process]:
    """uvicorn's worker processes under ``supervisor`` (not multiprocessing's helpers)."""
    out = []
    for child in supervisor.children():
        with contextlib.suppress(psutil.Error):
            if "--multiprocessing-fork" in child.cmdline() and "from multiprocessing.spawn" in (
                " ".join(child.cmdline())
            ):
                out.append(child)
    return out


def test_serve_with_two_worker_processes(world: World, tmp_path: Path) -> None:
    """``--workers 2``: each process builds the app from the environment
    (``serving.app:app_from_environment``) and scores as one process does; SIGTERM stops
    the supervisor and its workers, exit code 0 (``subprocess_running``)."""
    settings = world.settings
    endpoints = resolve_endpoints(settings)
    firsts = world.new.drop(columns=["is_fraud"]).drop_duplicates("customer_id").iloc[:40]
    bodies = payloads(firsts)
    events = [TransactionEvent.model_validate(b) for b in bodies]
    expected = build_scorer(settings, endpoints).score_events(events, update=False)

    port = stack.free_port()
    env = process_env(settings, tmp_path / "api-stack")
    argv = ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    pids: list[int] = []
    with subprocess_running(argv, env, tmp_path / "api.log", pids) as tail:
        supervisor = psutil.Process(pids[0])
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(served_by(supervisor)) < 2:  # uvicorn's workers, each with its own scorer
            assert time.monotonic() < deadline, tail()
            time.sleep(0.2)
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            wait_ready(client, tail)
            assert client.get("/v1/model").json()["model_version"] == world.model.version

        def one(body: dict[str, Any]) -> float:
            # a connection each: either worker may accept it
            with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as fresh:
                response = fresh.post("/v1/score", json=body)
            assert response.status_code == 200, response.text
            score: float = response.json()["score"]
            return score

        with ThreadPoolExecutor(4) as pool:
            scores = list(pool.map(one, bodies))
        workers = served_by(supervisor)
        assert len(workers) == 2, tail()
    assert scores == pytest.approx([d.score for d in expected], abs=1e-6)
    _, left = psutil.wait_procs(workers, timeout=10)  # the workers went with it
    assert not left, left


def test_only_update_true_changes_the_customers_state(world: World) -> None:
    settings = world.settings
    customer = str(world.new["customer_id"].iloc[0])
    terminal = str(world.new["terminal_id"].iloc[0])
    at = pd.Timestamp(world.new["timestamp"].max()) + timedelta(minutes=1)
    first = {
        "transaction_id": f"upd-{uuid.uuid4().hex[:8]}",
        "timestamp": at.isoformat(),
        "customer_id": customer,
        "terminal_id": terminal,
        "amount": 250.0,
    }
    second = {**first, "transaction_id": f"upd-{uuid.uuid4().hex[:8]}", "amount": 40.0}
    second["timestamp"] = (at + timedelta(seconds=30)).isoformat()
    endpoints = resolve_endpoints(settings)
    reference = build_scorer(settings, endpoints)
    app = create_app(settings, build_scorer(settings, endpoints), redis_url=endpoints.redis_url)
    with TestClient(app) as client:

        def score(body: dict[str, Any], update: bool = False) -> float:
            r = client.post("/v1/score", json=body, params={"update": str(update).lower()})
            assert r.status_code == 200, r.text
            value: float = r.json()["score"]
            return value

        before = score(second)
        score(first)  # update defaults to false
        assert score(second) == before
        first_score = score(first, update=True)
        after = score(second)
        assert after != pytest.approx(before, abs=1e-9)  # the history now holds `first`
        expected = reference.score_events([TransactionEvent.model_validate(second)], update=False)
        assert after == pytest.approx(expected[0].score, abs=1e-6)
        assert score(first, update=True) == pytest.approx(first_score, abs=1e-6)  # a replay


def test_api_key_on_the_real_path(world: World) -> None:
    settings = world.settings.model_copy(
        update={
            "api": world.settings.api.model_copy(update={"api_key": SecretStr("k-" + "x" * 30)})
        }
    )
    assert settings.api.api_key is not None
    key = settings.api.api_key
    endpoints = resolve_endpoints(settings)
    body = payloads(world.new.drop(columns=["is_fraud"]).iloc[:1])[0]
    app = create_app(settings, build_scorer(settings, endpoints), redis_url=endpoints.redis_url)
    with TestClient(app) as client:
        assert client.post("/v1/score", json=body).status_code == 401
        assert (
            client.post("/v1/score", json=body, headers={API_KEY_HEADER: "nope"}).status_code == 401
        )
        assert client.post("/v1/score/batch", json={"transactions": [body]}).status_code == 401
        good = {API_KEY_HEADER: key.get_secret_value()}
        r = client.post("/v1/score", json=body, headers=good)
        assert r.status_code == 200 and r.json()["transaction_id"] == body["transaction_id"]
        r = client.post("/v1/score", json={**body, "amount": "NaN"}, headers=good)
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "amount"
        assert client.get("/ready").status_code == 200


# ------------------------------------------------------------------ /ready and a Redis outage


def poll_ready(client: TestClient, want: int, timeout_s: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        r = client.get("/ready")
        if r.status_code == want or time.monotonic() > deadline:
            assert r.status_code == want, r.text
            body: dict[str, Any] = r.json()
            return body
        time.sleep(0.2)


def test_ready_follows_a_private_redis_without_restart(world: World, tmp_path: Path) -> None:
    port = stack.free_port()
    info = start_redis(port, tmp_path / "redis")
    try:
        settings = world.settings.model_copy(
            update={
                "redis": world.settings.redis.model_copy(
                    update={"url": f"redis://127.0.0.1:{port}/0", "socket_timeout_s": 1.0}
                )
            }
        )
        endpoints = resolve_endpoints(settings)
        assert endpoints.redis_url.endswith(f":{port}/0")
        app = create_app(settings, build_scorer(settings, endpoints), redis_url=endpoints.redis_url)
        with TestClient(app) as client:
            assert poll_ready(client, 200)["status"] == "ready"
            stack.stop_process(info)
            body = poll_ready(client, 503)
            assert body["status"] == "not ready"
            assert body["reasons"][0].startswith("redis not answering")
            assert client.get("/health").status_code == 200  # alive, just not ready
            info = start_redis(port, tmp_path / "redis")  # same port, same app
            body = poll_ready(client, 200)
            assert body["model_version"] == world.model.version
    finally:
        stack.stop_process(info)


def test_update_says_when_redis_did_not_save_the_state(world: World, tmp_path: Path) -> None:
    """``?update=true`` against a private Redis: a write Redis refuses after it answered the
    reads is a 503 that says a resend is safe, and the resend is then saved; with Redis down,
    the degraded decision says that the history was not updated."""
    port = stack.free_port()
    info = start_redis(port, tmp_path / "redis")
    url = f"redis://127.0.0.1:{port}/0"
    try:
        settings = world.settings.model_copy(
            update={
                "redis": world.settings.redis.model_copy(
                    update={"url": url, "socket_timeout_s": 1.0}
                )
            }
        )
        at = pd.Timestamp(world.new["timestamp"].max()) + timedelta(minutes=1)
        body = {
            "transaction_id": f"unsaved-{uuid.uuid4().hex[:8]}",
            "timestamp": at.isoformat(),
            "customer_id": str(world.new["customer_id"].iloc[0]),
            "terminal_id": str(world.new["terminal_id"].iloc[0]),
            "amount": 80.0,
        }
        probe = redis.Redis.from_url(url)
        scorer = build_scorer(settings, resolve_endpoints(settings))
        app = create_app(settings, scorer, redis_url=url)
        with TestClient(app) as client:
            # reads answered, writes refused (NOREPLICAS): a real Redis failing mid-request
            probe.config_set("min-replicas-to-write", 1)
            r = client.post("/v1/score", json=body, params={"update": "true"})
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            assert "resending the same request is safe" in r.json()["detail"]
            assert "Traceback" not in r.text
            r = client.post(
                "/v1/score/batch", json={"transactions": [body]}, params={"update": "true"}
            )
            assert r.status_code == 503, r.text
            probe.config_set("min-replicas-to-write", 0)
            r = client.post("/v1/score", json=body, params={"update": "true"})
            assert r.status_code == 200, r.text
            # (degraded: this Redis holds no terminal features, the history is read)
            assert "customer history unavailable" not in r.json()["degraded_reasons"]
            # the resend stored it, once
            assert probe.zcard(scorer.history._key(body["customer_id"])) == 1
            stack.stop_process(info)
            later = {**body, "transaction_id": f"down-{uuid.uuid4().hex[:8]}"}
            r = client.post("/v1/score", json=later, params={"update": "true"})
            assert r.status_code == 200, r.text
            reasons = r.json()["degraded_reasons"]
            assert "customer history unavailable" in reasons
            assert "customer history not updated" in reasons
            r = client.post("/v1/score", json=later)  # a what-if writes nothing anyway
            assert "customer history not updated" not in r.json()["degraded_reasons"]
    finally:
        stack.stop_process(info)


def test_serve_refuses_a_tampered_model(world: World, tmp_path: Path) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(world.settings.model.dir, model)
    with (model / "model.ubj").open("ab") as handle:
        handle.write(b"\0")
    env = process_env(world.settings, tmp_path / "stack")
    env["FRAUDSTREAM_MODEL__DIR"] = str(model)
    port = str(stack.free_port())
    done = subprocess.run(
        [sys.executable, "-m", "fraudstream", "serve", "--port", port],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "refusing to start" in done.stderr and "SHA-256" in done.stderr


def test_a_corrupt_customer_state_fails_only_its_own_requests(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    settings = world.settings
    endpoints = resolve_endpoints(settings)
    scorer = build_scorer(settings, endpoints)
    corrupt = f"corrupt-{uuid.uuid4().hex[:8]}"
    key = scorer.history.prefix + corrupt.encode()
    redis_client = scorer.history.client
    redis_client.zadd(key, {b"short": 1})  # not a 24-byte entry
    first = world.new.drop_duplicates("customer_id").iloc[:2]
    good = payloads(first)
    bad = {**good[0], "transaction_id": f"bad-{uuid.uuid4().hex[:8]}", "customer_id": corrupt}
    versions = [scorer.history.version_prefix + str(c).encode() for c in first["customer_id"]]
    try:
        app = create_app(settings, scorer, redis_url=endpoints.redis_url)
        # the warm-up meets the corrupt state: the API starts all the same (it once did not)
        with caplog.at_level(logging.WARNING), TestClient(app) as client:
            answer = client.post("/v1/score", json=bad)
            assert answer.status_code == 500, answer.text
            assert answer.json()["transaction_ids"] == [bad["transaction_id"]]
            detail = answer.json()["detail"]
            assert repr(corrupt) in detail and "corrupt" in detail
            assert "Traceback" not in answer.text and key.decode() not in answer.text
            # a batch holding it fails whole, names only its transaction, and writes nothing
            before = redis_client.mget(versions)
            batch = {"transactions": [good[0], bad, good[1]]}
            answer = client.post("/v1/score/batch", json=batch, params={"update": "true"})
            assert answer.status_code == 500, answer.text
            assert answer.json()["transaction_ids"] == [bad["transaction_id"]]
            assert redis_client.mget(versions) == before
            # the others, resent without it, are scored; as is a single request
            answer = client.post("/v1/score/batch", json={"transactions": good})
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["decisions"]) == 2
            assert client.post("/v1/score", json=good[0]).status_code == 200
            assert client.get("/ready").status_code == 200
            metrics = client.get("/metrics").text
            assert 'fraudstream_api_errors_total{route="/v1/score"} 1.0' in metrics
            assert 'fraudstream_api_errors_total{route="/v1/score/batch"} 1.0' in metrics
        assert "customer state(s) not warmed" in caplog.text and corrupt in caplog.text
        assert key.decode() in caplog.text  # the log names the key to repair
    finally:
        redis_client.delete(key)
