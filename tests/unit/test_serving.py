"""The REST API's own logic, without services: request validation (422 naming the field),
body limit (413), API key (401), generic 500s, metrics, the OpenAPI document, and the
scoring queue's coalescing rules.

The scorer here is a stand-in (the real one needs Redis and Feast; see
``tests/integration/test_serving.py`` for the API on the real scoring path). It records what
reaches it, so the tests also prove that refused requests never reach the scorer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, cast

import orjson
import pytest
import redis
from fastapi.testclient import TestClient

from fraudstream.config import Settings
from fraudstream.decision import Decision, Reason
from fraudstream.history import CorruptStateError
from fraudstream.schema import TransactionEvent
from fraudstream.schema import decode_event as decode
from fraudstream.scoring import Scorer
from fraudstream.stack import free_port
from serving.app import API_KEY_HEADER, create_app
from serving.batching import ScoringQueue

pytestmark = pytest.mark.unit

EVENT = {
    "transaction_id": "tx-1",
    "timestamp": "2026-11-21T10:15:00Z",
    "customer_id": 42,
    "terminal_id": "T-9",
    "amount": 12.5,
    "currency": "EUR",
}


def decision_for(event: TransactionEvent, *, degraded: bool = False) -> Decision:
    return Decision(
        transaction_id=event.transaction_id,
        customer_id=event.customer_id,
        terminal_id=event.terminal_id,
        amount=event.amount,
        event_time=event.timestamp,
        score=0.25,
        action="review" if degraded else "approve",
        model_version="stub-1",
        reasons=[Reason(feature="amount", value=event.amount, contribution=0.1)],
        features_age_s=1.0,
        degraded=degraded,
        degraded_reasons=["terminal features missing"] if degraded else [],
        decided_at=datetime.now(UTC),
    )


class StubModel:
    version = "stub-1"
    manifest: ClassVar[dict[str, Any]] = {
        "model_version": "stub-1",
        "features": [{"name": "amount"}],
    }


class StubScorer:
    """Stands in for :class:`Scorer`: records calls; degrades customer "new"; may fail; a
    call holding customer "corrupt" or "broken" fails as one with a corrupt stored history."""

    def __init__(self, fail: bool = False, warm_error: Exception | None = None) -> None:
        self.model = StubModel()
        self.shadow = None
        self.calls: list[tuple[list[str], bool]] = []
        self.fail = fail
        self.warmed: list[tuple[float, int]] = []  # (seconds, scoring calls made before)
        self.warm_error = warm_error

    def warm(self, seconds: float, cancelled: Any = None) -> tuple[int, int]:
        self.warmed.append((seconds, len(self.calls)))
        if self.warm_error is not None:
            raise self.warm_error
        return 3, 4

    def score_records(
        self, events: Sequence[TransactionEvent], *, update: bool
    ) -> list[dict[str, Any]]:
        self.calls.append(([e.transaction_id for e in events], update))
        if self.fail:
            raise RuntimeError("secret internals /etc/passwd")
        corrupt = sorted({e.customer_id for e in events} & {"corrupt", "broken"})
        if corrupt:
            raise CorruptStateError(corrupt, [f"fs:history:{c}".encode() for c in corrupt])
        return [decision_for(e, degraded=e.customer_id == "new").model_dump() for e in events]


def settings(**api: Any) -> Settings:
    # Redis on a free port where nothing listens: /ready must say so (a refused connection)
    return Settings(
        redis={"url": f"redis://127.0.0.1:{free_port()}/0", "socket_timeout_s": 0.5},
        # the stub scorer has no cached rows for a key watch to vouch for
        api={"max_batch": 3, "max_body_bytes": 2048, "watch_max_silence_s": 0, **api},
    )


@pytest.fixture
def stub() -> StubScorer:
    return StubScorer()


def client_for(scorer: StubScorer, config: Settings) -> TestClient:
    assert config.redis.url is not None
    app = create_app(config, cast(Scorer, scorer), redis_url=config.redis.url)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client(stub: StubScorer) -> Iterator[TestClient]:
    with client_for(stub, settings()) as c:
        yield c


def test_score_returns_the_decision_record(client: TestClient, stub: StubScorer) -> None:
    r = client.post("/v1/score", json=EVENT)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["transaction_id"] == "tx-1" and body["customer_id"] == "42"
    assert body["model_version"] == "stub-1" and body["schema_version"] == 1
    assert body["latency_ms"] is not None and body["latency_ms"] >= 0
    assert stub.calls == [(["tx-1"], False)]  # no state update unless asked
    assert client.post("/v1/score?update=true", json=EVENT).status_code == 200
    assert stub.calls[-1] == (["tx-1"], True)


def test_batch_keeps_order_and_is_one_call(client: TestClient, stub: StubScorer) -> None:
    events = [{**EVENT, "transaction_id": f"b{i}", "customer_id": "same"} for i in range(3)]
    r = client.post("/v1/score/batch", json={"transactions": events})
    assert r.status_code == 200, r.text
    assert [d["transaction_id"] for d in r.json()["decisions"]] == ["b0", "b1", "b2"]
    assert stub.calls == [(["b0", "b1", "b2"], False)]


def _without(key: str) -> dict[str, Any]:
    return {k: v for k, v in EVENT.items() if k != key}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/score", {**EVENT, "amount": -1}, "amount"),
        ("/v1/score", {**EVENT, "amount": "12.5"}, "amount"),
        ("/v1/score", _without("terminal_id"), "terminal_id"),
        ("/v1/score", {**EVENT, "timestamp": "2026-11-21T10:15:00"}, "timestamp"),
        ("/v1/score", {**EVENT, "customer_id": True}, "customer_id"),
        ("/v1/score", {**EVENT, "currency": "euro"}, "currency"),
        # timed years ahead: the worker refuses it too (stored, it would prune the history)
        ("/v1/score", {**EVENT, "timestamp": "2126-01-01T00:00:00Z"}, "timestamp"),
        (
            "/v1/score/batch",
            {"transactions": [EVENT, {**EVENT, "timestamp": "9999-12-31T23:59:59Z"}]},
            "transactions.1.timestamp",
        ),
        (
            "/v1/score/batch",
            {"transactions": [EVENT, {**EVENT, "amount": 0}]},
            "transactions.1.amount",
        ),
        ("/v1/score/batch", {"transactions": [EVENT] * 4}, "transactions"),
        ("/v1/score/batch", {"transactions": []}, "transactions"),
        ("/v1/score/batch", [EVENT], "body"),
    ],
)
def test_bad_bodies_are_422_naming_the_field(
    client: TestClient, stub: StubScorer, path: str, body: Any, field: str
) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    fields = [d["field"] for d in r.json()["detail"]]
    assert field in fields, r.json()
    assert all(d["loc"][0] == "body" for d in r.json()["detail"])
    assert stub.calls == []


def test_invalid_json_is_422(client: TestClient, stub: StubScorer) -> None:
    r = client.post(
        "/v1/score", content=b'{"transaction_id": ', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "json_invalid"
    assert stub.calls == []


@pytest.mark.parametrize(
    "value",
    [
        orjson.dumps(EVENT),
        orjson.dumps({**EVENT, "extra": [1, 2]}),
        orjson.dumps({**EVENT, "amount": "12.5"}),
        orjson.dumps(EVENT).replace(b"12.5", b"1" + b"0" * 400),
        b'{"transaction_id": "tx-1", "amount": NaN}',
        b'{"transaction_id": ',
        b"",
        b"[]",
        b'{"transaction_id": "t\xe9"}',
        orjson.dumps({**EVENT, "timestamp": "2026-11-21 10:15"}),
        orjson.dumps({**EVENT, "customer_id": 1.5}),
        orjson.dumps({**EVENT, "timestamp": "2126-01-01T00:00:00Z"}),
    ],
)
def test_the_api_accepts_exactly_the_bytes_the_worker_accepts(
    client: TestClient, stub: StubScorer, value: bytes
) -> None:
    """One validation for both entry points: the worker's ``decode`` of a Kafka message and
    the API's body give the same verdict on the same bytes."""
    verdict = decode(value)
    r = client.post("/v1/score", content=value, headers={"content-type": "application/json"})
    if isinstance(verdict, str):
        assert r.status_code == 422, (verdict, r.text)
        assert stub.calls == []
    else:
        assert r.status_code == 200, r.text
        assert r.json()["transaction_id"] == verdict.transaction_id


@pytest.mark.parametrize("raw", ["true", "1", "yes", "on", "false", "0", "no", "off", "maybe"])
def test_update_is_read_as_a_bool(client: TestClient, stub: StubScorer, raw: str) -> None:
    r = client.post(f"/v1/score?update={raw}", json=EVENT)
    if raw == "maybe":
        assert r.status_code == 422, r.text
        (error,) = r.json()["detail"]
        assert error["loc"] == ["query", "update"] and error["field"] == "query.update"
        assert stub.calls == []
    else:
        assert r.status_code == 200, r.text
        assert stub.calls == [(["tx-1"], raw in ("true", "1", "yes", "on"))]


def test_a_bad_flag_and_a_bad_body_are_both_named(client: TestClient, stub: StubScorer) -> None:
    r = client.post("/v1/score?update=maybe", json={**EVENT, "amount": -1})
    assert r.status_code == 422, r.text
    assert {d["field"] for d in r.json()["detail"]} == {"query.update", "amount"}
    assert stub.calls == []


def test_bodies_over_the_limit_are_413(client: TestClient, stub: StubScorer) -> None:
    padded = {**EVENT, "note": "x" * 4000}  # extra fields are ignored, but not their size
    r = client.post("/v1/score", json=padded)  # Content-Length over the limit
    assert r.status_code == 413, r.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: the bytes read are counted
        yield b'{"transaction_id": "tx-1", "note": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    r = client.post("/v1/score", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert stub.calls == []
    assert client.post("/v1/score", json=EVENT).status_code == 200  # still serving


def test_api_key_is_required_when_set(stub: StubScorer) -> None:
    with client_for(stub, settings(api_key="s3cret-key")) as c:
        for headers in ({}, {API_KEY_HEADER: "wrong"}, {API_KEY_HEADER: ""}):
            r = c.post("/v1/score", json=EVENT, headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert "s3cret" not in r.text
            assert c.get("/v1/model", headers=headers).status_code == 401
        # the key is checked before the body: a bad body without a key is 401, not 422
        assert c.post("/v1/score", json={"amount": -1}).status_code == 401
        assert stub.calls == []
        good = {API_KEY_HEADER: "s3cret-key"}
        assert c.post("/v1/score", json=EVENT, headers=good).status_code == 200
        assert c.get("/v1/model", headers=good).json()["model_version"] == "stub-1"
        # probes, scrapers and the API description stay open
        assert c.get("/health").status_code == 200
        assert c.get("/metrics").status_code == 200
        assert c.get("/openapi.json").status_code == 200
        assert c.get("/ready").status_code == 503  # nothing listens on its Redis port


def test_no_key_needed_when_unset(client: TestClient) -> None:
    assert client.get("/v1/model").json()["model_version"] == "stub-1"


def test_errors_are_generic_500_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with client_for(StubScorer(fail=True), settings()) as c, caplog.at_level(logging.ERROR):
        r = c.post("/v1/score", json=EVENT)
        assert r.status_code == 500
        assert r.json() == {"detail": "internal error"}
        assert "secret" not in r.text and "Traceback" not in r.text
        assert any(
            rec.name == "serving.app"
            and rec.exc_info
            and "secret internals" in str(rec.exc_info[1])
            for rec in caplog.records
        )
        metrics = c.get("/metrics").text
        assert 'fraudstream_api_errors_total{route="/v1/score"} 1.0' in metrics
        assert c.get("/health").status_code == 200  # still alive


def test_a_corrupt_customer_history_is_a_500_naming_its_transactions(
    client: TestClient, stub: StubScorer, caplog: pytest.LogCaptureFixture
) -> None:
    bad = {**EVENT, "transaction_id": "bad-1", "customer_id": "corrupt"}
    with caplog.at_level(logging.ERROR):
        r = client.post("/v1/score", json=bad)
    assert r.status_code == 500
    assert r.json()["transaction_ids"] == ["bad-1"]
    assert "'corrupt'" in r.json()["detail"] and "repaired" in r.json()["detail"]
    assert "fs:history:corrupt" in caplog.text and "fs:history" not in r.text  # key: log only
    events = [
        {**EVENT, "transaction_id": "ok-1", "customer_id": "A"},
        {**EVENT, "transaction_id": "bad-2", "customer_id": "broken"},
        {**EVENT, "transaction_id": "bad-3", "customer_id": "corrupt"},
    ]
    r = client.post("/v1/score/batch", json={"transactions": events})
    assert r.status_code == 500
    assert r.json()["transaction_ids"] == ["bad-2", "bad-3"]
    assert "customers 'broken', 'corrupt'" in r.json()["detail"]
    assert client.post("/v1/score", json=EVENT).status_code == 200
    metrics = client.get("/metrics").text
    assert 'fraudstream_api_errors_total{route="/v1/score"} 1.0' in metrics
    assert 'fraudstream_api_errors_total{route="/v1/score/batch"} 1.0' in metrics


def test_the_caches_are_warmed_once_before_the_first_request(
    stub: StubScorer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO), client_for(stub, settings(warm_cache_s=2.5)) as c:
        assert stub.warmed == [(2.5, 0)]
        assert c.post("/v1/score", json=EVENT).status_code == 200
    assert stub.warmed == [(2.5, 0)]
    assert "caches warmed" in caplog.text and "3 terminals, 4 customers" in caplog.text
    off = StubScorer()
    with client_for(off, settings(warm_cache_s=0)) as c:
        assert c.get("/health").status_code == 200
    assert off.warmed == []


@pytest.mark.parametrize(
    ("error", "logged"),
    [
        (redis.ConnectionError("refused"), "caches not warmed, Redis: refused"),
        (ValueError("bad entry"), "caches not warmed: ValueError: bad entry"),
    ],
)
def test_the_api_starts_unwarmed_when_the_warm_up_fails(
    caplog: pytest.LogCaptureFixture, error: Exception, logged: str
) -> None:
    stub = StubScorer(warm_error=error)
    with caplog.at_level(logging.WARNING), client_for(stub, settings()) as c:
        assert c.get("/health").status_code == 200
        assert c.post("/v1/score", json=EVENT).status_code == 200
    assert len(stub.warmed) == 1 and logged in caplog.text


def test_ready_is_503_with_the_reason_when_redis_refuses(client: TestClient) -> None:
    r = client.get("/ready")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "not ready"
    assert body["reasons"] and body["reasons"][0].startswith("redis not answering")
    assert client.get("/health").json() == {"status": "ok"}


def test_metrics_count_requests_latency_decisions_and_degraded(client: TestClient) -> None:
    assert client.post("/v1/score", json=EVENT).status_code == 200
    assert client.post("/v1/score", json={**EVENT, "customer_id": "new"}).status_code == 200
    assert client.post("/v1/score", json={**EVENT, "amount": -1}).status_code == 422
    client.get("/no-such-route")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert (
        'fraudstream_api_requests_total{method="POST",route="/v1/score",status="200"} 2.0' in text
    )
    assert (
        'fraudstream_api_requests_total{method="POST",route="/v1/score",status="422"} 1.0' in text
    )
    assert 'route="unmatched",status="404"' in text  # no label per unknown path
    assert 'fraudstream_api_request_duration_ms_bucket{le="10.0",route="/v1/score"}' in text
    assert 'fraudstream_api_decisions_total{action="approve"} 1.0' in text
    assert "fraudstream_api_degraded_decisions_total 1.0" in text
    assert "fraudstream_api_scoring_call_transactions_count 2.0" in text


def test_metrics_show_garbage_collector_pauses_while_the_app_runs(stub: StubScorer) -> None:
    import gc

    callbacks = list(gc.callbacks)
    with client_for(stub, settings()) as c:
        assert len(gc.callbacks) == len(callbacks) + 1  # installed after the start-up freeze
        gc.collect(2)
        text = c.get("/metrics").text
        count = re.search(r'fraudstream_api_gc_pause_ms_count\{generation="2"\} (\S+)', text)
        assert count is not None and float(count.group(1)) >= 1
    assert gc.callbacks == callbacks  # and taken out at shutdown


def test_each_app_has_its_own_metrics(stub: StubScorer) -> None:
    with client_for(stub, settings()) as a, client_for(stub, settings()) as b:
        a.post("/v1/score", json=EVENT)
        assert 'route="/v1/score"' in a.get("/metrics").text
        assert 'route="/v1/score"' not in b.get("/metrics").text


def test_openapi_lists_the_routes_and_the_request_schema(stub: StubScorer) -> None:
    with client_for(stub, settings(api_key="k")) as c:
        doc = c.get("/openapi.json").json()
    paths = doc["paths"]
    assert set(paths) == {
        "/v1/score",
        "/v1/score/batch",
        "/v1/model",
        "/health",
        "/ready",
        "/metrics",
    }
    assert set(paths["/v1/score"]) == {"post"} and set(paths["/ready"]) == {"get"}
    score = paths["/v1/score"]["post"]
    ref = score["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/TransactionEvent"
    assert {"200", "401", "413", "422", "500"} <= set(score["responses"])
    for route in ("/v1/score", "/v1/score/batch"):
        failed = paths[route]["post"]["responses"]["500"]["content"]["application/json"]
        assert failed["schema"]["$ref"].endswith("/ScoringErrorBody")
    assert score["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/Decision"
    )
    (update,) = [p for p in score["parameters"] if p["name"] == "update"]
    assert update["in"] == "query" and update["schema"]["default"] is False
    assert "unchanged" in update["description"]
    assert "latency_ms" in score["description"]
    schemas = doc["components"]["schemas"]
    event = schemas["TransactionEvent"]
    assert event["required"] == [
        "transaction_id",
        "timestamp",
        "customer_id",
        "terminal_id",
        "amount",
    ]
    # ids are strings or integers, as the code accepts; amount > 0
    assert {"type": "integer"} in event["properties"]["customer_id"]["anyOf"]
    assert event["properties"]["amount"]["exclusiveMinimum"] == 0
    batch = schemas["ScoreBatchRequest"]["properties"]["transactions"]
    assert batch["maxItems"] == 3 and batch["minItems"] == 1
    assert set(schemas["Decision"]["required"]) >= {"score", "action", "reasons", "degraded"}
    assert doc["components"]["securitySchemes"]["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": API_KEY_HEADER,
    }
    assert score["security"] == [{"APIKeyHeader": []}]
    assert "security" not in paths["/health"]["get"]


# ------------------------------------------------------------------ the scoring queue


def event(tx: str, customer: str) -> TransactionEvent:
    return TransactionEvent.model_validate({**EVENT, "transaction_id": tx, "customer_id": customer})


def run_queue(jobs: list[tuple[list[TransactionEvent], bool, bool]]) -> tuple[list[Any], list[Any]]:
    """Submit ``jobs`` (events, update, single) at once; returns (calls, results)."""
    calls: list[tuple[list[str], bool]] = []
    first = threading.Event()

    def score(events: Sequence[TransactionEvent], update: bool) -> list[Decision]:
        calls.append(([e.transaction_id for e in events], update))
        first.wait(5)  # hold the first call until everything is queued
        return [decision_for(e) for e in events]

    async def main() -> list[Any]:
        queue = ScoringQueue(score, max_coalesce=3)
        queue.start()
        tasks = [asyncio.create_task(queue.score(ev, up, single=s)) for ev, up, s in jobs]
        await asyncio.sleep(0.05)
        first.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await queue.stop()
        return results

    results = asyncio.run(main())
    return calls, results


def test_queue_coalesces_distinct_customers_and_keeps_order() -> None:
    jobs = [
        ([event("a1", "A")], False, True),
        ([event("b1", "B")], False, True),
        ([event("a2", "A")], False, True),  # same customer as a1: a later call
        ([event("c1", "C")], False, True),
        ([event("d1", "D")], False, True),  # over max_coalesce=3
        ([event("e1", "E")], True, True),  # other update flag: its own call, not earlier
        ([event("f1", "F"), event("g1", "G")], False, False),  # a batch: alone
        ([event("h1", "H")], False, True),
    ]
    calls, results = run_queue(jobs)
    assert calls == [
        (["a1", "b1", "c1"], False),  # a2 skipped: customer A is in this call
        (["a2", "d1"], False),  # a2 first: it keeps its place in line
        (["e1"], True),
        (["f1", "g1"], False),
        (["h1"], False),
    ]
    for (events, _, _), result in zip(jobs, results, strict=True):
        assert [d.transaction_id for d in result] == [e.transaction_id for e in events]


def test_queue_never_coalesces_one_customer() -> None:
    jobs = [([event(f"x{i}", "X")], False, True) for i in range(4)]
    calls, _ = run_queue(jobs)
    assert [ids for ids, _ in calls] == [["x0"], ["x1"], ["x2"], ["x3"]]


def test_every_request_that_fails_gets_the_error_and_the_queue_goes_on() -> None:
    def score(events: Sequence[TransactionEvent], update: bool) -> list[Decision]:
        raise ValueError("boom")

    async def main() -> list[Any]:
        queue = ScoringQueue(score, max_coalesce=10)
        queue.start()
        tasks = [
            asyncio.create_task(queue.score([event(f"t{i}", str(i))], False, single=True))
            for i in range(3)
        ]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        # the queue keeps serving after a failure
        more = await asyncio.gather(
            queue.score([event("t9", "9")], False, single=True), return_exceptions=True
        )
        await queue.stop()
        return [*results, *more]

    results = asyncio.run(main())
    assert all(isinstance(r, ValueError) for r in results)


def test_a_request_that_fails_a_coalesced_call_fails_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[list[str]] = []
    first = threading.Event()

    def score(events: Sequence[TransactionEvent], update: bool) -> list[Decision]:
        calls.append([e.transaction_id for e in events])
        first.wait(5)  # hold the first call until everything is queued
        if any(e.customer_id == "corrupt" for e in events):
            raise CorruptStateError(["corrupt"], [b"fs:history:corrupt"])
        return [decision_for(e) for e in events]

    async def main() -> list[Any]:
        queue = ScoringQueue(score, max_coalesce=10)
        queue.start()
        tasks = [
            asyncio.create_task(queue.score([event(tx, customer)], False, single=True))
            for tx, customer in [("t0", "A"), ("t1", "B"), ("t2", "corrupt"), ("t3", "C")]
        ]
        await asyncio.sleep(0.05)
        first.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await queue.stop()
        return results

    with caplog.at_level(logging.WARNING):
        results = asyncio.run(main())
    assert calls == [["t0", "t1", "t2", "t3"], ["t0"], ["t1"], ["t2"], ["t3"]]
    assert [r[0].transaction_id for r in results if not isinstance(r, BaseException)] == [
        "t0",
        "t1",
        "t3",
    ]
    assert isinstance(results[2], CorruptStateError)
    assert "a call of 4 coalesced requests failed (CorruptStateError" in caplog.text


def test_queue_refuses_work_when_not_started() -> None:
    async def main() -> None:
        queue = ScoringQueue(lambda events, update: [], max_coalesce=1)
        with pytest.raises(RuntimeError, match="not running"):
            await queue.score([event("t", "c")], False, single=True)

    asyncio.run(main())


def test_serve_needs_redis_not_kafka(clean_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from fraudstream.cli import app

    clean_env()
    handler = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2  # no stack, nothing configured
    assert signal.getsignal(signal.SIGTERM) == handler  # its start-up handler is gone
    # with a Redis URL and no Kafka at all, what stops it is Redis not answering
    monkeypatch.setenv("FRAUDSTREAM_REDIS__URL", f"redis://127.0.0.1:{free_port()}/0")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "FRAUDSTREAM_REDIS__URL" in result.output and "PING" in result.output
