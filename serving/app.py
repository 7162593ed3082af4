"""The REST scoring API: FastAPI wiring over :class:`fraudstream.scoring.Scorer`.

The API scores with the worker's own entry point, :meth:`Scorer.score_records`, and encodes
its records as the worker does (:func:`~fraudstream.decision.encode_record`), so a
transaction gets the same score, action and reasons, in the same JSON, from both. The
scorer is synchronous, CPU-bound and not thread-safe: every call runs behind one queue, on
the event loop (:mod:`serving.batching`, which says why not on a thread); single-transaction
requests that wait together are scored in one call when that cannot change their result.

A model promoted in the registry takes over without a restart: the queue checks the
registry (at most every ``model.poll_interval_s``) before a call and switches between calls
(:class:`~fraudstream.registry.HotReload`).

Routes: ``POST /v1/score``, ``POST /v1/score/batch``, ``GET /v1/model`` (protected by the
API key when one is set), ``GET /health``, ``GET /ready``, ``GET /metrics`` and the OpenAPI
document (always open: probes and scrapers carry no secret; they expose no transaction data).

Requests pass one pure-ASGI middleware (:class:`Guard`) that checks the API key before the
body is read, refuses bodies over ``settings.api.max_body_bytes`` with 413 (a declared
``Content-Length`` before reading, the bytes actually read while reading), counts and times
every request, and turns any unhandled exception into a generic 500 JSON body (the traceback
goes to the log only).

The scoring routes validate the raw body with ``TransactionEvent.model_validate_json``, the
call the worker makes on a Kafka message, and refuse events timed too far ahead as the worker
does (:func:`~fraudstream.schema.ahead_of_clock`), so both accept and refuse exactly the same
bytes;
their OpenAPI request body and ``update`` parameter are declared with the route. Measured
with ``benchmarks/serving.py`` and py-spy: FastAPI's own body and parameter handling
(``json.loads``, then dependency solving and validation of the dict) was about 10 % of the
API's CPU per request, its native OpenTelemetry check (three environment lookups per request;
off here, the API has Prometheus metrics) and its body-limit middleware (three layers) a few
per cent more.
"""

# No ``from __future__ import annotations``: FastAPI resolves the annotations of the routes,
# and the batch request model is local to create_app (its size limit is a setting).
import asyncio
import gc
import hmac
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import orjson
import redis
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from redis.backoff import NoBackoff
from redis.retry import Retry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fraudstream.config import Settings
from fraudstream.decision import Decision, encode_record
from fraudstream.history import CorruptStateError
from fraudstream.metrics import CONTENT_TYPE, ApiMetrics, track_gc_pauses
from fraudstream.registry import HotReload, hot_reload
from fraudstream.schema import TransactionEvent, ahead_of_clock
from fraudstream.scoring import Scorer, warm_caches, watch_keys
from fraudstream.stack import redis_endpoints
from serving.batching import ScoringQueue

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
PROTECTED_PREFIX = "/v1/"
#: Longest wait for Redis's PING in ``/ready``.
READY_TIMEOUT_S = 2.0

UPDATE_DESCRIPTION = (
    "When true, the transaction is also appended to the customer's history and the "
    "customer's real-time features are written to the online store, as the worker does. "
    "Default false: scoring leaves the customer's state unchanged (a what-if query)."
)
LATENCY_NOTE = (
    "`latency_ms` is the API's own processing time, from the request's arrival in the "
    "application to the decision (queueing for the scorer included; network and "
    "serialisation of the response excluded). The worker sets it from the Kafka timestamp."
)


class ErrorBody(BaseModel):
    """An error answer: never a traceback."""

    detail: str


class ScoringErrorBody(ErrorBody):
    """A 500 of a scoring route. When the fault is the stored history of some of the
    request's customers, ``transaction_ids`` names the request's transactions they hold; then
    none of the request's transactions was scored or written (resend the others alone)."""

    transaction_ids: list[str] | None = Field(
        default=None,
        description="the transactions whose customer's stored history is corrupt (absent: "
        "another internal error)",
    )


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: body, then field names and positions")
    field: str = Field(description="the offending field's dotted path inside the body")
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    """A 422 answer: one entry per invalid field."""

    detail: list[FieldError]


class ScoreBatchResponse(BaseModel):
    """One decision per transaction, in the request's order."""

    decisions: list[Decision]


class ReadyBody(BaseModel):
    status: str = Field(description="ready | not ready")
    model_version: str | None = None
    reasons: list[str] = Field(default_factory=list, description="why not ready")


def _json(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code, headers, media_type="application/json")


def _too_large(limit: int) -> str:
    return f"body over the {limit:,}-byte limit"


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    """The first value of the header ``wanted`` (lower case), or None."""
    for name, value in scope.get("headers", ()):
        if name.lower() == wanted:
            return bytes(value)
    return None


def _content_length(scope: Scope) -> int | None:
    try:
        return int(_header(scope, b"content-length") or b"")
    except ValueError:
        return None


class Guard:
    """Pure-ASGI middleware: API key, body size limit, request metrics, and generic 500s."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str | None,
        metrics: ApiMetrics,
        routes: frozenset[str],
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.api_key = None if api_key is None else api_key.encode()
        self.metrics = metrics
        self.routes = routes
        self.max_body_bytes = max_body_bytes

    def _limited(self, receive: Receive) -> Receive:
        """``receive`` that raises a 413 :class:`HTTPException` once the body passes the
        limit (FastAPI's exception middleware answers it; the route never sees the body)."""
        limit, read = self.max_body_bytes, 0

        async def receive_limited() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit:
                    raise HTTPException(413, _too_large(limit))
            return message

        return receive_limited

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        path = getattr(route, "path", None) or scope.get("path", "")
        return path if path in self.routes else "unmatched"

    def _authorised(self, scope: Scope) -> bool:
        if self.api_key is None or not scope.get("path", "").startswith(PROTECTED_PREFIX):
            return True
        given = _header(scope, b"x-api-key") or b""
        return hmac.compare_digest(given, self.api_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        scope.setdefault("state", {})["started_at"] = start
        status = 500
        started = recorded = False

        def record() -> None:  # once, before the last byte leaves (the client may ask next)
            nonlocal recorded
            if not recorded:
                recorded = True
                route = self._route(scope)
                self.metrics.requests.inc(route, scope.get("method", ""), str(status))
                self.metrics.latency_ms.observe((time.perf_counter() - start) * 1e3, route)

        async def send_status(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                record()
            await send(message)

        try:
            if not self._authorised(scope):
                body = {"detail": f"missing or wrong {API_KEY_HEADER} header"}
                await _json(body, 401)(scope, receive, send_status)
            elif (_content_length(scope) or 0) > self.max_body_bytes:
                body = {"detail": _too_large(self.max_body_bytes)}
                await _json(body, 413)(scope, receive, send_status)
            else:
                await self.app(scope, self._limited(receive), send_status)
        except Exception:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            self.metrics.errors.inc(self._route(scope))
            if not started:
                await _json({"detail": "internal error"}, 500)(scope, receive, send_status)
        finally:
            record()


class RawRoute(APIRoute):
    """A route whose endpoint takes the :class:`Request` and returns the :class:`Response`.

    FastAPI declares it as usual (path, OpenAPI document, ``scope["route"]``), but does not
    wrap the endpoint in its request handler: no parameters or dependencies are solved, no
    response is serialised, and no per-request exit stacks are opened, since the scoring
    routes parse their own body (:func:`_inputs`) and encode their own answer. Exceptions
    reach the app's exception middleware as from any route (422, 413, and the Guard's 500).
    In process (``benchmarks/api_overhead.py``, beside the routes FastAPI handles) this cut
    what the API adds around the scorer's call by 84–94 µs per request, about a quarter
    (``benchmarks/RESULTS.md``, REST API).
    """

    def __init__(self, path: str, endpoint: Any, **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.app = _request_response(endpoint)


def _request_response(endpoint: Any) -> ASGIApp:
    """The ASGI app that calls ``endpoint(request)`` and sends the response it returns.

    Starlette's ``starlette.routing.request_response`` does the same inside a route-level
    exception wrapper, which the app's exception middleware makes redundant here; it measured
    3–26 µs more per request (``benchmarks/RESULTS.md``, REST API)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)

    return app


class ScoringService:
    """The scorer behind its queue, and the readiness probe."""

    def __init__(
        self,
        scorer: Scorer,
        probe: redis.Redis,
        metrics: ApiMetrics,
        max_coalesce: int,
        reload: HotReload | None = None,
    ):
        self.scorer = scorer
        self.probe = probe
        self.reload = reload
        self.queue: ScoringQueue[dict[str, Any]] = ScoringQueue(
            self._score, max_coalesce=max_coalesce, on_call=metrics.scoring_calls.observe
        )

    def _score(self, events: Sequence[TransactionEvent], update: bool) -> list[dict[str, Any]]:
        # between calls: a promoted model takes over here
        if self.reload is not None and self.reload.due():
            self.reload.check()
        return self.scorer.score_records(events, update=update)

    async def score(
        self, events: Sequence[TransactionEvent], update: bool, *, single: bool = False
    ) -> list[dict[str, Any]]:
        """Decision records (:class:`~fraudstream.decision.Decision` as dicts), in order."""
        return await self.queue.score(events, update, single=single)

    async def not_ready(self) -> list[str]:
        """Why the API cannot score normally now (empty when ready).

        The model is loaded and verified before the app exists (a process without a model
        refuses to start), so Redis answering PING is what remains to check.
        """
        reasons = []
        try:
            await asyncio.wait_for(asyncio.to_thread(self.probe.ping), READY_TIMEOUT_S)
        except (redis.RedisError, OSError, TimeoutError) as exc:
            reasons.append(f"redis not answering: {type(exc).__name__}: {exc}".rstrip(": "))
        return reasons


#: The ``update`` query parameter of the scoring routes, as OpenAPI declares it.
UPDATE_PARAMETER: dict[str, Any] = {
    "name": "update",
    "in": "query",
    "required": False,
    "schema": {"type": "boolean", "default": False, "title": "Update"},
    "description": UPDATE_DESCRIPTION,
}
_FLAG: TypeAdapter[bool] = TypeAdapter(bool)
M = TypeVar("M", bound=BaseModel)


def _located(exc: ValidationError, *where: str) -> list[dict[str, Any]]:
    """pydantic's errors located under ``where`` (``body``, ...), as FastAPI reports them."""
    return [{**err, "loc": (*where, *err["loc"])} for err in exc.errors(include_url=False)]


def _ahead(body: BaseModel, max_ahead_s: float) -> list[dict[str, Any]]:
    """Errors for the body's events timed more than ``max_ahead_s`` after the server's clock,
    which the worker refuses too (:func:`~fraudstream.schema.ahead_of_clock`)."""
    placed: list[tuple[tuple[str | int, ...], TransactionEvent]]
    if isinstance(body, TransactionEvent):
        placed = [((), body)]
    else:
        batch: list[TransactionEvent] = getattr(body, "transactions", [])
        placed = [(("transactions", i), event) for i, event in enumerate(batch)]
    now_s = time.time()
    errors = []
    for place, event in placed:
        why = ahead_of_clock(event, now_s, max_ahead_s, "the server's clock")
        if why is not None:
            errors.append({"loc": ("body", *place, "timestamp"), "msg": why, "type": "value_error"})
    return errors


async def _inputs(request: Request, model: type[M], max_ahead_s: float) -> tuple[M, bool]:
    """The body, validated from its bytes as the worker validates a message (events timed
    more than ``max_ahead_s`` after the clock included), and the ``update`` query parameter,
    read as FastAPI reads a bool (false when absent); else one 422 that names every invalid
    field of both."""
    errors: list[dict[str, Any]] = []
    update = False
    raw = request.query_params.get("update")
    if raw is not None:
        try:
            update = _FLAG.validate_python(raw)
        except ValidationError as exc:
            errors += _located(exc, "query", "update")
    body = None
    try:
        body = model.model_validate_json(await request.body())
    except ValidationError as exc:
        errors += _located(exc, "body")
    else:
        errors += _ahead(body, max_ahead_s)
    if errors or body is None:
        raise RequestValidationError(errors)
    return body, update


def readiness_client(redis_url: str, settings: Settings) -> redis.Redis:
    """A Redis client for ``/ready``: the scorer's Redis, but no retries (answers fast)."""
    from fraudstream.stack import redis_client

    client = redis_client(redis_url, settings)
    client.set_retry(Retry(NoBackoff(), 0))
    return client


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [p if isinstance(p, int) else str(p) for p in err.get("loc", ())]
        inner = loc[1:] if loc[:1] == ["body"] else loc
        out.append(
            {
                "loc": loc,
                "field": ".".join(str(p) for p in inner) or "body",
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
        )
    return out


def create_app(settings: Settings, scorer: Scorer, *, redis_url: str) -> FastAPI:
    """The API around an already built ``scorer`` (see :func:`app_from_environment`)."""
    metrics = ApiMetrics()
    max_batch = settings.api.max_batch
    max_ahead_s = settings.scoring.max_event_ahead_s
    reload = hot_reload(settings, scorer, metrics)
    probe = readiness_client(redis_url, settings)
    service = ScoringService(scorer, probe, metrics, max_batch, reload)
    auth = settings.api.api_key is not None
    silence = settings.api.watch_max_silence_s
    # before the caches are warmed, so that what they read counts as current
    watch = watch_keys(scorer, silence) if silence > 0 else None
    if watch is not None:
        metrics.watch_stats = lambda: (watch.hits, watch.misses, watch.healthy)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        warm_caches(scorer, settings.api.warm_cache_s)
        # The model, Feast's registry and the libraries are ~270k long-lived objects; a full
        # collection walks them all (~150 ms here), a pause every request would pay for.
        # Frozen, later full collections only walk what requests leave behind.
        gc.collect()
        gc.freeze()
        # what remains is on /metrics (fraudstream_api_gc_pause_ms), beside the latency
        pauses = track_gc_pauses(metrics.gc.pauses)
        service.queue.start()
        log.info("scoring API started: model %s", scorer.model.version)
        try:
            yield
        finally:
            await service.queue.stop()
            service.probe.close()
            if watch is not None:
                scorer.watch = None
                watch.stop()
            with suppress(ValueError):
                gc.callbacks.remove(pauses)
            gc.unfreeze()  # let the interpreter's exit clean up as usual

    app = FastAPI(
        title="fraudstream scoring API",
        version="1",
        summary="Card-fraud decisions on the same scoring path as the stream worker.",
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = service
    app.state.metrics = metrics
    # Documents the header in OpenAPI; the check itself is in Guard, before the body is read.
    secured = [Depends(APIKeyHeader(name=API_KEY_HEADER, auto_error=False))] if auth else []
    errors: dict[int | str, dict[str, Any]] = {
        413: {"model": ErrorBody, "description": "body over the configured size"},
        422: {"model": ValidationErrorBody, "description": "invalid body; names the field"},
        500: {"model": ErrorBody, "description": "internal error (no details)"},
    }
    if auth:
        errors[401] = {"model": ErrorBody, "description": f"missing or wrong {API_KEY_HEADER}"}
    scoring_errors = {
        **errors,
        503: {
            "model": ErrorBody,
            "description": "with `update=true`: Redis failed while saving the customer state "
            "(resend: it is idempotent)",
        },
        500: {
            "model": ScoringErrorBody,
            "description": "a customer's stored history is corrupt (names the transactions), "
            "or another internal error (no details)",
        },
    }

    class ScoreBatchRequest(BaseModel):
        """Transactions to score together, in order."""

        transactions: list[TransactionEvent] = Field(min_length=1, max_length=max_batch)

    def encoded(request: Request, records: list[dict[str, Any]]) -> list[bytes]:
        """Each record's JSON (the worker's encoding) with this request's ``latency_ms``."""
        ms = (time.perf_counter() - request.scope["state"]["started_at"]) * 1e3
        out = []
        for record in records:
            metrics.decisions.inc(record["action"])
            if record["degraded"]:
                metrics.degraded.inc()
            out.append(encode_record(record, ms))
        return out

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        return _json({"detail": _field_errors(exc)}, 422)

    def documented(body: str) -> dict[str, Any]:
        """The OpenAPI request body and parameters of a scoring route (parsed in the route)."""
        schema = {"$ref": f"#/components/schemas/{body}"}
        return {
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            "parameters": [UPDATE_PARAMETER],
        }

    def unscorable(
        route: str, events: Sequence[TransactionEvent], exc: CorruptStateError
    ) -> Response:
        """The 500 of a request that holds customers whose stored history is corrupt."""
        log.error("%s: %s", route, exc)  # names the Redis keys
        metrics.errors.inc(route)
        bad = set(exc.customer_ids)
        held = [e.transaction_id for e in events if e.customer_id in bad]
        who = ", ".join(repr(c) for c in exc.customer_ids)
        one = len(exc.customer_ids) == 1
        detail = (
            f"the stored history of customer{'' if one else 's'} {who} is corrupt: "
            f"{'its' if one else 'their'} transactions cannot be scored until it is repaired "
            "(the server log names the Redis key)"
        )
        return _json({"detail": detail, "transaction_ids": held}, 500)

    def unsaved(route: str, exc: redis.RedisError) -> Response:
        """The 503 of an ``update`` whose state writes Redis failed after it had answered the
        reads (an unreachable Redis at the reads scores ``degraded`` instead)."""
        log.warning("%s: the state writes failed: %s: %s", route, type(exc).__name__, exc)
        metrics.errors.inc(route)
        detail = (
            f"Redis failed while saving the customer state ({type(exc).__name__}); no decision "
            "is returned and the writes may or may not have been applied: resending the same "
            "request is safe (a transaction id already stored is a replay)"
        )
        return _json({"detail": detail}, 503, {"Retry-After": "1"})

    async def score(request: Request) -> Response:
        event, update = await _inputs(request, TransactionEvent, max_ahead_s)
        try:
            records = await service.score([event], update, single=True)
        except CorruptStateError as exc:
            return unscorable("/v1/score", [event], exc)
        except redis.RedisError as exc:
            return unsaved("/v1/score", exc)
        (decision,) = encoded(request, records)
        return Response(decision, media_type="application/json")

    async def score_batch(request: Request) -> Response:
        body, update = await _inputs(request, ScoreBatchRequest, max_ahead_s)
        try:
            records = await service.score(body.transactions, update)
        except CorruptStateError as exc:
            return unscorable("/v1/score/batch", body.transactions, exc)
        except redis.RedisError as exc:
            return unsaved("/v1/score/batch", exc)
        decisions = encoded(request, records)
        return Response(
            b'{"decisions":[' + b",".join(decisions) + b"]}", media_type="application/json"
        )

    # the scoring routes parse and answer themselves (RawRoute): FastAPI only declares them
    app.router.add_api_route(
        "/v1/score",
        score,
        methods=["POST"],
        route_class_override=RawRoute,
        response_model=Decision,
        responses=scoring_errors,
        tags=["scoring"],
        dependencies=secured,
        description="Score one transaction (canonical event schema). " + LATENCY_NOTE,
        openapi_extra=documented("TransactionEvent"),
    )
    app.router.add_api_route(
        "/v1/score/batch",
        score_batch,
        methods=["POST"],
        route_class_override=RawRoute,
        response_model=ScoreBatchResponse,
        responses=scoring_errors,
        tags=["scoring"],
        dependencies=secured,
        description=(
            f"Score 1 to {max_batch} transactions in one call (`FRAUDSTREAM_API__MAX_BATCH`); "
            "a transaction id that repeats is scored as a replay. " + LATENCY_NOTE
        ),
        openapi_extra=documented("ScoreBatchRequest"),
    )

    @app.get(
        "/v1/model",
        tags=["model"],
        responses={k: v for k, v in errors.items() if k in (401, 500)},
        dependencies=secured,
        description="The manifest of the model in use (version, features, thresholds, ...), "
        "with `serving`: the champion's and the shadow's versions and the hot reloads so far.",
    )
    async def model() -> dict[str, Any]:
        champion, shadow = scorer.model, scorer.shadow
        serving = {
            "champion": champion.version,
            "shadow": None if shadow is None else shadow.version,
            "reloads": reload.watcher.reloads,
            "reload_failures": reload.watcher.failures,
        }
        return {**champion.manifest, "serving": serving}

    @app.get("/health", tags=["operations"], description="Liveness: the process answers.")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        tags=["operations"],
        response_model=ReadyBody,
        responses={503: {"model": ReadyBody, "description": "not ready, with the reasons"}},
        description="Readiness: the model is loaded and Redis answers PING; else 503 and why.",
    )
    async def ready() -> Response:
        reasons = await service.not_ready()
        if reasons:
            return _json({"status": "not ready", "model_version": None, "reasons": reasons}, 503)
        return _json({"status": "ready", "model_version": scorer.model.version, "reasons": []})

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        description="Prometheus text format: requests, latency (ms), decisions, degraded, errors.",
    )
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    def openapi() -> dict[str, Any]:
        """FastAPI's document, with the two schemas pydantic cannot derive exactly."""
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = FastAPI.openapi(app)  # also caches it in app.openapi_schema
        components = schema["components"]["schemas"]
        # ids are strings or integers, amount > 0: the producers' schema says what the code does
        event = TransactionEvent.json_schema()
        components["TransactionEvent"] = {k: v for k, v in event.items() if k != "$schema"}
        batch = ScoreBatchRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components["ScoreBatchRequest"] = {k: v for k, v in batch.items() if k != "$defs"}
        components["Decision"]["properties"]["latency_ms"]["description"] = LATENCY_NOTE
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    routes = frozenset(getattr(r, "path", "") for r in app.routes)
    app.add_middleware(
        Guard,
        api_key=_secret(settings),
        metrics=metrics,
        routes=routes,
        max_body_bytes=settings.api.max_body_bytes,
    )
    return app


def _secret(settings: Settings) -> str | None:
    key = settings.api.api_key
    return None if key is None else key.get_secret_value()


def app_from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory`` (one call per worker process): settings read once
    here, the process's entry point; the model verified and the scorer built."""
    from fraudstream.config import load_settings
    from fraudstream.scoring import build_scorer

    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    endpoints = redis_endpoints(settings)  # the API needs no Kafka
    scorer = build_scorer(settings, endpoints)
    return create_app(settings, scorer, redis_url=endpoints.redis_url)
