"""Streaming worker throughput, latency and memory, side by side with its references.

    .venv/bin/python benchmarks/streaming.py [--data PATH] [--saturation 30000]
        [--kafka-bootstrap HOST:PORT]   # a Kafka cluster instead of the local broker

Starts ONE private local stack (Tansu + Redis on loopback, temporary directory; only Redis
with ``--kafka-bootstrap``, see ``benchmarks/workspace.py``) and builds
ONE world from the handbook replay (``../shared/datasets/fraud-handbook/transactions.parquet``):
every timestamp is shifted by a whole number of days so that 2018-08-17 falls on today (UTC);
the transactions up to 12 hours ago are the past (backfill, ``feast apply``, the handbook-protocol
model trained through Feast, terminal snapshot refreshed now and materialised, the
customers' 120-day history in Redis), the later ones (about two weeks of the handbook,
original event times, 4,990 customers, 10,000 terminals) are the stream. Once the model is
trained, the terminal view's TTL in the world's registry is widened to the replay's span
(:func:`widen_terminal_ttl`; ``--terminal-ttl repo`` keeps 2 days, and with it most decisions
are degraded). Then, in order:

1. reference (b), in this process, no Kafka: the naive tutorial loop, per event one Feast
   ``get_online_features`` (customer + terminal features) and ``predict`` on one row, for
   ``--naive`` events (no history update, no explanation: flattering for the naive loop);
   its ``predict`` is the model artifact's, which for one row walks the trees in numpy, faster
   than XGBoost's call; then, for context, (b'): the same loop with a one-row ``DMatrix`` and
   ``Booster.predict``, as a tutorial writes it (the targets are read against (b));
2. reference (a): a bare Faust agent (``create_app``, same settings, same batch size,
   ``take_events``), forwarding each message's bytes unchanged to an output topic and
   awaiting each delivery like the worker, as a subprocess of this script; saturation:
   ``--saturation`` events are in its input topic before it starts; then, for context, the
   same with the worker's output producer (a'), with Faust's own consumer drain loop
   instead of ``streaming.app``'s (a0), the per-event agent of Faust's documentation
   (a1: ``async for`` over the events, ``await Topic.send`` each, no micro-batches), and (a)
   with the worker's own intake (a2: ``streaming.intake`` instead of ``take_events``);
3. the worker (``python -m fraudstream worker``, one process): twice ``--saturation`` events
   pre-loaded the same way; "cold" saturation over the first half of its decisions (a worker
   just started: since its warm start, the states it cached while joining the group; before
   it, every customer's state read from Redis once; the customer states its batches read are
   reported), "warm" over the second half (the figure compared
   with the references; per-stage µs per event from the worker's own /metrics), then paced
   publishing at 1,000 and 3,000 events/s
   and, first, 200/s, below its capacity (``--warmup`` s, then ``--measure`` s each;
   each rate's decisions all received before the next starts) with p50/p99 of the decisions'
   ``latency_ms`` (input message's Kafka timestamp to emission) over the measured events,
   and per 5 s of send time over the whole phase (:func:`windows`);
   peak RSS of the worker (psutil, every 0.2 s, process and children) over all its phases;
4. reference (c), the transport's floor: a topic given the worker's input history (the same
   pre-loaded events, then the same paced phases in the same order), read by a bare
   confluent-kafka consumer in a process of its own (librdkafka, the leanest client here; the
   worker's ``fetch_max_wait_ms``; no processing), with p50/p99 of Kafka timestamp to receipt per
   rate. No worker runs meanwhile. An event's latency in the worker includes this path, on
   the same broker and machine. (On the local broker a fetch slows as the partition's record
   batches add up, so the history matters.) The broker's CPU time per event is recorded in
   each paced phase, the worker's and the floor's;
5. where the time goes: the worker's stages timed in this process (decode, frame, score
   with history update, decision record) on held-out events no phase used.

Saturation throughput = (outputs − 1) / (last − first output's Kafka timestamp).
Prints a Markdown table and, last, one JSON line. Everything it starts is stopped.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import re
import signal
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import psutil
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
HANDBOOK = ROOT.parent / "shared" / "datasets" / "fraud-handbook" / "transactions.parquet"
STREAM_FROM = pd.Timestamp("2018-08-17", tz="UTC")
METRICS_PORT = 19_731  # the worker's /metrics during the run
TARGETS = {"vs_bare": 0.70, "vs_naive": 10.0, "p99_1k_ms": 100.0, "rss_mb": 600.0}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the bare agent


def bare_agent_main(app_id: str, mode: str = "topic") -> None:
    """Reference (a): forward every message unchanged (run as a subprocess).

    ``mode`` "topic": micro-batches (``take_events``), each message forwarded with Faust's
    ``Topic.send`` and every delivery awaited, as the worker awaits its own (reference (a),
    against which the issue's target is read);
    "producer": the worker's own output producer (``streaming.delivery``), as the worker
    sends its decisions (a'); "stock": as "topic", with Faust's own consumer drain loop
    (a race per message) instead of ``streaming.app``'s (a race per fetch), for context (a0);
    "each": the per-event agent of Faust's documentation, ``async for`` over the stream's
    events and ``await Topic.send`` for each, without micro-batches or waiting for delivery
    (Faust's producer sends in the background), for context (a1); "bulk": as "topic", with
    the worker's intake (:func:`streaming.intake.intake`) instead of ``take_events``, for
    context (a2).
    """
    import asyncio

    import faust

    from fraudstream.config import load_settings
    from fraudstream.stack import resolve_endpoints
    from streaming.app import create_app

    settings = load_settings()
    endpoints = resolve_endpoints(settings)
    datadir = settings.stack.dir / f"{app_id}-data"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    if mode == "stock":
        from faust.transport.drivers import aiokafka as aiokafka_driver

        from streaming import app as app_module

        stock = aiokafka_driver.Consumer._drain_messages
        app_module._Consumer._drain_messages = stock  # type: ignore[method-assign]
    app = create_app(settings, endpoints.kafka_bootstrap, app_id=app_id, datadir=datadir)
    source = app.topic(settings.topics.transactions, key_serializer="raw", value_serializer="raw")
    out = app.topic(settings.topics.decisions, key_serializer="raw", value_serializer="raw")
    size, within = settings.scoring.batch_size, settings.scoring.batch_timeout_s

    async def send(event: Any) -> Any:
        delivery = await out.send(key=event.message.key, value=event.message.value, force=True)
        return await delivery

    delivering = None
    if mode == "producer":  # the worker's own output path (streaming/delivery.py)
        from streaming.delivery import DeliveringProducer

        delivering = DeliveringProducer(settings.kafka, endpoints.kafka_bootstrap)
    from streaming.worker import Outgoing

    async def forward_each(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await out.send(key=event.message.key, value=event.message.value, force=True)

    async def forward(stream: faust.StreamT[bytes]) -> Any:
        assert isinstance(stream, faust.Stream)
        async for events in stream.take_events(size, within=within):
            if delivering is not None:
                outs = [
                    Outgoing(out.get_topic_name(), e.message.key, e.message.value, [])
                    for e in events
                ]
                errors = await delivering.deliver(outs)
                assert not any(errors), errors
            else:
                await asyncio.gather(*(send(e) for e in events))
            yield None

    async def forward_bulk(stream: faust.StreamT[bytes]) -> Any:
        from streaming.intake import intake

        assert isinstance(stream, faust.Stream)
        batches = intake(stream, size, within)
        try:
            while not batches.ended:
                events = await batches.take()
                if events:
                    await asyncio.gather(*(send(e) for e in events))
                    batches.ack(events)
                    yield None
        finally:
            await batches.close()

    agent = {"each": forward_each, "bulk": forward_bulk}.get(mode, forward)
    app.agent(source, name="bare-forward", concurrency=1)(agent)
    faust.Worker(
        app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False
    ).execute_from_commandline()


# ------------------------------------------------------------------ the world


def add_world_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of :func:`build_world` besides ``--data``."""
    parser.add_argument(
        "--terminal-ttl",
        choices=("replay", "repo"),
        default="replay",
        help="replay: widen the terminal view's TTL to the replay's span once the model is "
        "trained (the worker runs the normal path); repo: keep the repository's 2 days (most "
        "decisions degraded: terminal features stale)",
    )


def build_world(args: argparse.Namespace, settings: Any, endpoints: Any) -> dict[str, Any]:
    from fraudstream.feast_env import open_store, run_feast
    from fraudstream.features import CUSTOMER_HISTORY_MS, TERMINAL_VIEW, to_ms
    from fraudstream.model import load_artifact
    from fraudstream.schema import read_transactions
    from fraudstream.scoring import build_scorer
    from training.backfill import backfill, refresh_terminal_snapshot
    from training.evaluate import Split
    from training.train import train

    t0 = time.perf_counter()
    events = read_transactions(args.data)
    today = pd.Timestamp(datetime.now(UTC).date(), tz="UTC")
    shift = today - STREAM_FROM  # whole days: night flags kept
    events["timestamp"] = events["timestamp"] + shift
    cut = pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=12)  # half a day more to stream
    past = events[events["timestamp"] <= cut].reset_index(drop=True)
    new = events[events["timestamp"] > cut].reset_index(drop=True)
    log(f"handbook: {len(past):,} past, {len(new):,} stream events (shift {shift.days} d)")
    repo = settings.feast.repo_path
    backfill(past, repo)
    assert run_feast(settings, endpoints, ["apply"]) == 0
    store = open_store(settings, endpoints)
    train_start = (pd.Timestamp("2018-07-25", tz="UTC") + shift).date()
    train(past, Split(train_start), settings.model.dir, store, backfill_first=False)
    refreshed_at = pd.Timestamp.now(tz="UTC").floor("s")
    if args.terminal_ttl == "replay":
        widen_terminal_ttl(store, new["timestamp"].max() - refreshed_at)
    terminal_ttl = str(store.get_feature_view(TERMINAL_VIEW).ttl)  # as the worker will read it
    log(f"terminal view's TTL in this world's registry: {terminal_ttl} ({args.terminal_ttl})")
    refresh_terminal_snapshot(past, repo, refreshed_at)
    end = (refreshed_at + pd.Timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    assert run_feast(settings, endpoints, ["materialize-incremental", end]) == 0
    scorer = build_scorer(settings, endpoints)
    since = to_ms(new["timestamp"]).min() - CUSTOMER_HISTORY_MS
    recent = past[to_ms(past["timestamp"]) >= since]
    for start in range(0, len(recent), 100_000):
        scorer.history.append(recent.iloc[start : start + 100_000])
    setup_s = time.perf_counter() - t0
    log(f"world ready in {setup_s:.0f} s ({len(recent):,} history entries in Redis)")
    return {
        "past": past,
        "new": new.drop(columns=[c for c in ("is_fraud", "fraud_scenario") if c in new.columns]),
        "store": store,
        "model": load_artifact(settings.model.dir),
        "scorer": scorer,
        "setup_s": setup_s,
        "terminal_ttl": terminal_ttl,
        "customers": int(events["customer_id"].nunique()),
        "terminals": int(events["terminal_id"].nunique()),
    }


def widen_terminal_ttl(store: Any, span: pd.Timedelta) -> None:
    """Widen the terminal view's TTL in the world's registry to at least ``span`` plus a day.

    The replay streams about two weeks of event times in minutes from one terminal snapshot,
    taken when the world is built. With the repository's TTL (2 days) every decision past
    two days of event time would be degraded (terminal features stale). Measured on
    2026-12-03: none of the replay's events 10,000-20,000, all of its events 30,000-40,000
    and of the later slices, 13 % of those sent to review by the degraded policy and so
    explained with exact SHAP values. A deployment refreshes the snapshot as time passes and
    runs the normal path; so does the worker here with the wider TTL. The model is trained
    before, with the repository's TTL, and reference (b) reads the same values (Feast's
    online read does not check the TTL). ``--terminal-ttl repo`` keeps the repository's TTL.
    """
    from fraudstream.features import TERMINAL_VIEW

    view = store.get_feature_view(TERMINAL_VIEW)
    wanted = pd.Timedelta(span).ceil("D") + pd.Timedelta(days=1)
    if view.ttl is None or pd.Timedelta(view.ttl) < wanted:
        view.ttl = wanted.to_pytimedelta()
        store.apply([view])


# ------------------------------------------------------------------ reference (b)


def naive_throughput(
    world: dict[str, Any], events: pd.DataFrame, predict: str = "artifact"
) -> dict[str, float]:
    """Reference (b): the naive loop over ``events``, per event one ``get_online_features``
    and one prediction. ``predict`` "artifact": :meth:`ModelArtifact.predict` (one row goes
    through the product's tree walk, faster than XGBoost's own call: the reference the target
    is read against); "xgboost": what a tutorial writes, a one-row ``DMatrix`` and
    ``Booster.predict`` (b'), for context; it checks on its warm-up rows that it gives the
    artifact's scores."""
    import xgboost as xgb

    from fraudstream.features import ALL_FEATURES, request_features

    model, store = world["model"], world["store"]
    names = model.feature_names
    served = [n for n in names if ALL_FEATURES[n].source != "request"]
    needed = {
        m for n in names if ALL_FEATURES[n].source == "request" for m in ALL_FEATURES[n].needs
    }
    fetch = sorted(set(served) | needed)
    refs = [
        f"{'customer_features' if ALL_FEATURES[n].source == 'customer' else 'terminal_features'}:{n}"
        for n in fetch
    ]

    def one(row: Any, how: str = predict) -> float:
        got = store.get_online_features(
            features=refs,
            entity_rows=[{"customer_id": row.customer_id, "terminal_id": row.terminal_id}],
        ).to_dict()
        values = {n: np.nan if got[n][0] is None else float(got[n][0]) for n in fetch}
        req = request_features(
            pd.Series([row.timestamp]),
            pd.Series([row.amount]),
            pd.DataFrame({n: [values[n]] for n in needed}),
        )
        values.update({c: float(req[c].iloc[0]) for c in req.columns})
        matrix = np.array([[values[n] for n in names]], dtype=np.float64)
        if how == "xgboost":
            dmatrix = xgb.DMatrix(matrix, missing=np.nan, feature_names=names)
            return float(model.booster.predict(dmatrix)[0])
        return float(model.predict(matrix)[0])

    rows = list(events.itertuples(index=False))
    for row in rows[:20]:  # warm-up; (b') also checks it scores as (b)
        got = one(row)
        if predict != "artifact" and abs(got - (expected := one(row, "artifact"))) > 1e-6:
            raise RuntimeError(f"the naive loop's two predictions differ: {got} != {expected}")
    start = time.perf_counter()
    for row in rows:
        one(row)
    seconds = time.perf_counter() - start
    return {"events": len(rows), "seconds": seconds, "ev_s": len(rows) / seconds}


# ------------------------------------------------------------------ Kafka helpers


class Reader:
    """Reads a topic from the beginning (assigned partitions, no group)."""

    def __init__(self, settings: Any, bootstrap: str, topic: str) -> None:
        from fraudstream.kafka import confluent_config

        conf = confluent_config(settings.kafka, bootstrap)
        conf.update({"group.id": f"bench-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False})
        self.consumer = Consumer(conf)
        self.consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.kafka.partitions)]
        )
        self.stamps: list[int] = []
        self.values: list[bytes] = []

    def drain(self, until: int, timeout_s: float, alive: Any = None) -> int:
        deadline = time.monotonic() + timeout_s
        while len(self.stamps) < until and time.monotonic() < deadline:
            if alive is not None and not alive():
                raise RuntimeError("the process under test exited")
            for msg in self.consumer.consume(2000, 0.5):
                if msg.error() is None:
                    self.stamps.append(msg.timestamp()[1])
                    self.values.append(msg.value())
        return len(self.stamps)

    def close(self) -> None:
        self.consumer.close()


def paced_latency(
    reader: Reader,
    events: pd.DataFrame,
    n_warm: int,
    rate: float,
    kafka: Any,
    bootstrap: str,
    topic: str,
    alive: Any,
) -> tuple[np.ndarray, Any, int, np.ndarray]:
    """Publish ``events`` to ``topic`` at ``rate`` and wait for their decisions; the
    ``latency_ms`` of the decisions of all but the first ``n_warm`` events, the publish
    result, the reader's output count, and the Kafka timestamp (epoch ms) and latency of
    every event's decision, warm-up included, as an (n, 2) array (for :func:`windows`).

    One producer for warm-up and measured events: a new producer's first messages wait for
    its connection and producer id while already carrying their send time (about 0.4 s
    here), which showed as the worker's p99 when the measured events had a producer of
    their own.
    """
    from fraudstream.publish import publish_events

    first = len(reader.stamps)
    pub = publish_events(events, kafka=kafka, bootstrap=bootstrap, topic=topic, rate=rate)
    got = reader.drain(first + len(events), 120, alive)
    ids = events["transaction_id"].astype(str)
    measured, phase = set(ids.iloc[n_warm:]), set(ids)
    latency, timed = [], []
    # the decision's own Kafka timestamp is its emission: less the latency, the input's
    for stamp, value in zip(reader.stamps[first:], reader.values[first:], strict=True):
        record = orjson.loads(value)
        if record["transaction_id"] in phase:
            timed.append((stamp - record["latency_ms"], record["latency_ms"]))
            if record["transaction_id"] in measured:
                latency.append(record["latency_ms"])
    return np.asarray(latency, dtype=np.float64), pub, got, np.asarray(timed, dtype=np.float64)


def windows(timed: np.ndarray, width_s: float = 5.0) -> list[dict[str, float]]:
    """p50/p99 latency per ``width_s`` window of send time (Kafka timestamp) from the first
    event of a phase; ``timed`` holds (Kafka timestamp ms, latency ms) rows. On the local
    broker the latency grows with the partition's history within a phase: this shows it."""
    if not len(timed):
        return []
    since = (timed[:, 0] - timed[:, 0].min()) / 1000.0
    out = []
    for k in range(int(since.max() // width_s) + 1):
        mask = (since >= k * width_s) & (since < (k + 1) * width_s)
        if mask.sum() >= 20:  # a last window of a few stragglers says nothing
            lat = timed[mask, 1]
            out.append(
                {
                    "from_s": k * width_s,
                    "n": int(mask.sum()),
                    "p50_ms": round(float(np.percentile(lat, 50)), 1),
                    "p99_ms": round(float(np.percentile(lat, 99)), 1),
                }
            )
    return out


def saturation(reader: Reader, n: int, started: float, alive: Any, timeout_s: float) -> dict:
    got = reader.drain(n, timeout_s, alive)
    stamps = np.sort(np.asarray(reader.stamps[:got], dtype=np.int64))
    span = (stamps[-1] - stamps[0]) / 1000.0 if got > 1 else float("nan")
    return {
        "events": n,
        "outputs": got,
        "first_output_after_start_s": stamps[0] / 1000.0 - started if got else None,
        "span_s": span,
        "ev_s": (got - 1) / span if got > 1 and span > 0 else float("nan"),
    }


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.every_s = every_s
        self.peak = 0
        self.samples: list[int] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in procs)
            except psutil.Error:
                return
            self.samples.append(rss)
            self.peak = max(self.peak, rss)
            self.halt.wait(self.every_s)


def env_for(settings: Any, topics: dict[str, str], stack_dir: Path) -> dict[str, str]:
    from benchmarks.small_world import process_env

    extra = {
        "FRAUDSTREAM_TOPICS__TRANSACTIONS": topics["in"],
        "FRAUDSTREAM_TOPICS__DECISIONS": topics["out"],
        "FRAUDSTREAM_TOPICS__DEAD_LETTER": topics["dlq"],
        "FRAUDSTREAM_SCORING__BATCH_SIZE": str(settings.scoring.batch_size),
        # the replay's stream runs up to two weeks ahead of the clock (original times)
        "FRAUDSTREAM_SCORING__MAX_EVENT_AHEAD_S": str(30 * 86_400),
        "FRAUDSTREAM_LOG_LEVEL": "INFO",
        "FRAUDSTREAM_WORKER__METRICS_PORT": str(METRICS_PORT),
    }
    return process_env(settings, stack_dir, extra)


_WORKER_HISTOGRAM = re.compile(
    r'fraudstream_worker_(?:stage_duration_ms_(sum|count)\{stage="(\w+)"\}|batch_age_ms_(sum|count)) (\S+)'
)
_WORKER_DECISIONS = re.compile(r'fraudstream_worker_decisions_total\{action="(\w+)"\} (\S+)')
#: The worker's unlabelled counters read, and their keys in :func:`parse_worker_metrics`.
_WORKER_COUNTERS = {
    "fraudstream_worker_consumed_total": "consumed",
    "fraudstream_worker_degraded_decisions_total": "degraded",
    "fraudstream_worker_history_reads_total": "history_reads",
}


def parse_worker_metrics(text: str) -> dict[str, float]:
    """The worker's ``/metrics`` as flat numbers: ``sum:<stage>`` and ``count:<stage>`` of
    the stage histograms (ms), ``sum:age`` and ``count:age`` of the batch-age one, and
    ``consumed`` (messages), ``action:<action>`` (decisions by action), ``degraded``
    (degraded decisions) and ``history_reads`` (customer states read from Redis in batches)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if m := _WORKER_HISTOGRAM.match(line):
            kind, stage = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), "age")
            out[f"{kind}:{stage}"] = float(m.group(4))
        elif (name := line.partition(" ")[0]) in _WORKER_COUNTERS:
            out[_WORKER_COUNTERS[name]] = float(line.rsplit(" ", 1)[1])
        elif m := _WORKER_DECISIONS.match(line):
            out[f"action:{m.group(1)}"] = float(m.group(2))
    return out


def scrape_worker(port: int = METRICS_PORT, timeout_s: float = 5.0) -> dict[str, float]:
    """:func:`parse_worker_metrics` of the worker serving ``/metrics`` on ``port``."""
    import urllib.request

    url = f"http://127.0.0.1:{port}/metrics"
    return parse_worker_metrics(urllib.request.urlopen(url, timeout=timeout_s).read().decode())


def _delta(before: dict[str, float], after: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def _stage_sums(scrape: dict[str, float]) -> list[str]:
    """The stages whose time ``scrape`` sums (the batch age is not a stage)."""
    return [k.split(":", 1)[1] for k in scrape if k.startswith("sum:") and k != "sum:age"]


def stage_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """µs per consumed message of each stage between two :func:`scrape_worker` scrapes."""
    n = _delta(before, after, "consumed")
    if n <= 0:
        return {}
    return {s: _delta(before, after, f"sum:{s}") * 1000 / n for s in _stage_sums(after)}


def action_shares(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Share of each action among the decisions between two :func:`scrape_worker` scrapes,
    and of the degraded ones (review and decline rows get exact SHAP reasons: the model
    stage's costliest rows; a degraded one above the policy's amount is never approved)."""
    counts = {
        k.split(":", 1)[1]: _delta(before, after, k) for k in after if k.startswith("action:")
    }
    total = sum(counts.values())
    if total <= 0:
        return {}
    shares = {a: c / total for a, c in sorted(counts.items())}
    shares["degraded"] = _delta(before, after, "degraded") / total
    return {k: round(v, 4) for k, v in shares.items()}


def events_per_batch(before: dict[str, float], after: dict[str, float]) -> float | None:
    """Mean messages per micro-batch between two :func:`scrape_worker` scrapes."""
    batches = _delta(before, after, "count:batch")
    return round(_delta(before, after, "consumed") / batches, 1) if batches > 0 else None


def per_batch(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Between two :func:`scrape_worker` scrapes, per micro-batch: messages, the oldest
    message's age at the batch's start and each stage (ms); empty when no batch ran."""
    batches = _delta(before, after, "count:age")
    if not batches:
        return {}
    out = {
        "events_per_batch": _delta(before, after, "consumed") / batches,
        "age_ms": _delta(before, after, "sum:age") / batches,
    }
    out |= {f"{s}_ms": _delta(before, after, f"sum:{s}") / batches for s in _stage_sums(after)}
    return {k: round(v, 1) for k, v in out.items()}


# ------------------------------------------------------------------ the transport's floor


def bare_consumer(settings: Any, bootstrap: str, assignment: list[TopicPartition]) -> Consumer:
    """A confluent-kafka consumer with no processing, the worker's ``fetch_max_wait_ms``
    and ``assignment`` (no group join, no commits): what the floors read with."""
    from fraudstream.kafka import confluent_config

    conf = confluent_config(settings.kafka, bootstrap)
    conf.update(
        {
            "group.id": f"floor-{uuid.uuid4().hex[:6]}",  # assigned below: never joins
            "enable.auto.commit": False,
            "fetch.wait.max.ms": settings.kafka.fetch_max_wait_ms,
        }
    )
    consumer = Consumer(conf)
    consumer.assign(assignment)
    return consumer


def floor_consumer_main(topic: str, skip: int, count: int, out_path: str) -> None:
    """Reference (c): read ``skip`` messages of ``topic`` from its start, say ``caught-up``,
    then read ``count`` more with a bare confluent-kafka consumer (run as a subprocess);
    write each of those one's Kafka timestamp and receipt time (epoch ms) as JSON."""
    from fraudstream.config import load_settings
    from fraudstream.stack import resolve_endpoints

    settings = load_settings()
    partitions = range(settings.kafka.partitions)
    consumer = bare_consumer(
        settings,
        resolve_endpoints(settings).kafka_bootstrap,
        [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions],
    )
    got: list[tuple[int, float]] = []
    seen, said = 0, False
    try:
        while seen < skip + count:
            # poll returns at the first message; consume(n, timeout) would wait for n or timeout
            first = consumer.poll(1.0)
            batch = [] if first is None else [first, *consumer.consume(2000, 0)]
            now_ms = time.time() * 1000
            for msg in batch:
                if msg.error() is not None:
                    raise RuntimeError(f"floor consumer: {msg.error()}")
                seen += 1
                if seen > skip:
                    got.append((msg.timestamp()[1], now_ms))
            if seen >= skip and not said:
                print("caught-up", flush=True)
                said = True
    finally:
        consumer.close()
    Path(out_path).write_text(json.dumps(got))


def broker_process(settings: Any) -> psutil.Process | None:
    """The local stack's broker process (for its CPU time); None when Kafka is a cluster
    named in the settings (``--kafka-bootstrap``), whose CPU time is not measured here."""
    from fraudstream.stack import read_state

    state = read_state(settings)
    info = None if state is None else state.processes.get("kafka")
    return None if info is None else psutil.Process(info.pid)


def cpu_seconds(proc: psutil.Process | None) -> float:
    """User + system CPU seconds of ``proc`` so far (its own threads, not its children);
    NaN for no process."""
    return float("nan") if proc is None else float(sum(proc.cpu_times()[:2]))


def per_event_us(cpu_s: float, events: int) -> float | None:
    """CPU µs per event, or None when not measured (NaN: a broker not on this machine)."""
    return None if np.isnan(cpu_s) else 1e6 * cpu_s / events


def run_floor_consumer(
    settings: Any, topic: str, skip: int, count: int, work: Path, publish: Any
) -> list[tuple[int, float]]:
    """Start :func:`floor_consumer_main` on ``topic``, wait until it has read ``skip``
    messages, call ``publish()``, and return the Kafka timestamp and receipt time (epoch ms)
    of the ``count`` messages it read after those."""
    import subprocess

    out = work / f"{topic}.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "--floor-consumer", topic]
    argv += ["--floor-skip", str(skip), "--floor-count", str(count), "--floor-out", str(out)]
    env = env_for(settings, {"in": topic, "out": topic, "dlq": topic}, work / "floor-stack")
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "caught-up":
            raise RuntimeError(f"the floor consumer of {topic} did not start")
        publish()
        code = proc.wait(timeout=300)
    if code != 0:
        raise RuntimeError(f"the floor consumer of {topic} exited with {code}")
    return [(stamp, received) for stamp, received in json.loads(out.read_text())]


def transport_floor(
    preload: pd.DataFrame,
    phases: list[tuple[float, pd.DataFrame, int]],
    settings: Any,
    bootstrap: str,
    work: Path,
) -> dict[str, dict[str, Any]]:
    """Reference (c): a topic with the worker's input history (``preload`` published at
    once, then each ``(rate, events, n_warm)`` of ``phases`` paced, in order), read by
    :func:`floor_consumer_main`. Per rate: p50/p99/max of Kafka timestamp to receipt over
    all but the ``n_warm`` earliest events, and the broker's CPU time per event meanwhile.

    The history matters: on the local broker (Tansu 0.6) a fetch takes longer the more
    record batches the partition holds, so a fresh topic would understate the floor.
    """
    from fraudstream.kafka import ensure_topics
    from fraudstream.publish import publish_events

    kafka = settings.kafka
    topic = f"floor-{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka, bootstrap, [topic])
    res = publish_events(preload, kafka=kafka, bootstrap=bootstrap, topic=topic)
    assert res.delivered == len(preload), res.summary()
    broker = broker_process(settings)
    spans: list[tuple[int, int, float]] = []  # first and last send ms, broker CPU s

    def publish() -> None:
        for rate, events, _ in phases:
            cpu0 = cpu_seconds(broker)
            first = int(time.time() * 1000)
            pub = publish_events(events, kafka=kafka, bootstrap=bootstrap, topic=topic, rate=rate)
            if pub.delivered != len(events):
                raise RuntimeError(f"floor at {rate:g} ev/s: {pub.summary()}")
            spans.append((first, int(time.time() * 1000), cpu_seconds(broker) - cpu0))

    count = sum(len(events) for _, events, _ in phases)
    pairs = run_floor_consumer(settings, topic, len(preload), count, work, publish)
    result = {}
    for (first, last, cpu), (rate, events, n_warm) in zip(spans, phases, strict=True):
        phase = sorted(p for p in pairs if first <= p[0] <= last)  # by Kafka timestamp
        timed = np.asarray([(stamp, received - stamp) for stamp, received in phase])
        ages = timed[n_warm:, 1]
        result[f"{int(rate)}"] = {
            "rate": rate,
            "measured_events": len(ages),
            "p50_ms": float(np.percentile(ages, 50)),
            "p99_ms": float(np.percentile(ages, 99)),
            "max_ms": float(ages.max()),
            "broker_cpu_us_per_event": per_event_us(cpu, len(events)),
            "windows": windows(timed),
        }
    return result


# ------------------------------------------------------------------ stages


def stage_profile(world: dict[str, Any], events: pd.DataFrame, batch: int) -> dict[str, Any]:
    """The worker's per-batch work, in this process, timed by stage (µs per event)."""
    from fraudstream.publish import encode, event_payloads
    from fraudstream.schema import decode_event as decode
    from fraudstream.scoring import Batch
    from streaming.worker import Incoming, decision_message

    scorer = world["scorer"]
    values = [encode(e) for e in event_payloads(events)]
    t = {"decode": 0.0, "columns": 0.0, "score_update": 0.0, "decision_json": 0.0}
    profile = cProfile.Profile()
    n = 0
    for start in range(0, len(values), batch):
        chunk = values[start : start + batch]
        msgs = [Incoming("t", 0, start + i, time.time(), k, v) for i, (k, v) in enumerate(chunk)]
        a = time.perf_counter()
        decoded = [decode(m.value, max_ahead_s=float("inf")) for m in msgs]
        b = time.perf_counter()
        columns = Batch.from_events(decoded)  # type: ignore[arg-type]
        c = time.perf_counter()
        profile.enable()
        records = scorer.score_batch(columns, update=True).records
        profile.disable()
        d = time.perf_counter()
        for record, m in zip(records, msgs, strict=True):
            decision_message(record, m, "decisions")
        e = time.perf_counter()
        t["decode"] += b - a
        t["columns"] += c - b
        t["score_update"] += d - c
        t["decision_json"] += e - d
        n += len(chunk)
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(r"fraudstream/", 14)
    return {
        "events": n,
        "us_per_event": {k: v / n * 1e6 for k, v in t.items()},
        "profile_top": out.getvalue(),
    }


# ------------------------------------------------------------------ main


def main() -> None:
    from workspace import add_kafka_argument, private_workspace

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=HANDBOOK)
    parser.add_argument("--saturation", type=int, default=30_000)
    parser.add_argument("--naive", type=int, default=2_000)
    parser.add_argument("--rates", default="200,1000,3000")
    add_world_arguments(parser)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--measure", type=float, default=10.0)
    parser.add_argument("--profile-events", type=int, default=5_000)
    parser.add_argument("--bare-agent", metavar="APP_ID", help=argparse.SUPPRESS)
    parser.add_argument("--bare-mode", default="topic", help=argparse.SUPPRESS)
    parser.add_argument("--floor-consumer", metavar="TOPIC", help=argparse.SUPPRESS)
    parser.add_argument("--floor-skip", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--floor-count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--floor-out", help=argparse.SUPPRESS)
    add_kafka_argument(parser)
    args = parser.parse_args()
    if args.bare_agent:
        bare_agent_main(args.bare_agent, args.bare_mode)
        return
    if args.floor_consumer:
        floor_consumer_main(args.floor_consumer, args.floor_skip, args.floor_count, args.floor_out)
        return

    t_start = time.perf_counter()
    with private_workspace("fraudstream-stream-bench-", args.kafka_bootstrap) as ws:
        results = run(args, ws.settings, ws.endpoints, ws.work)
    results["total_s"] = time.perf_counter() - t_start
    print_table(results)
    print(json.dumps(results, default=float))


def run(args: argparse.Namespace, settings: Any, endpoints: Any, work: Path) -> dict[str, Any]:
    from fraudstream.kafka import ensure_topics
    from fraudstream.publish import publish_events
    from fraudstream.stack import running

    world = build_world(args, settings, endpoints)
    new: pd.DataFrame = world["new"]
    rates = [float(r) for r in args.rates.split(",") if r]
    n_sat = args.saturation
    paced = [int(r * (args.warmup + args.measure)) for r in rates]
    need = 2 * n_sat + sum(paced) + args.profile_events  # the worker gets 2 x n_sat at first
    if len(new) < need:
        raise SystemExit(f"only {len(new):,} stream events, {need:,} needed")
    sat_events = new.iloc[:n_sat]
    bootstrap = endpoints.kafka_bootstrap
    kafka = settings.kafka

    # (b) naive, in-process, before anything else runs
    log(f"reference (b): naive loop on {args.naive:,} events")
    naive = naive_throughput(world, sat_events.iloc[: args.naive])
    log(f"naive: {naive['ev_s']:.0f} ev/s")
    naive_xgb = naive_throughput(world, sat_events.iloc[: args.naive], predict="xgboost")
    log(f"naive with XGBoost's predict (b'): {naive_xgb['ev_s']:.0f} ev/s")

    tag = uuid.uuid4().hex[:6]
    work_topics = {"in": f"tx-{tag}", "out": f"decisions-{tag}", "dlq": f"tx-{tag}.dlq"}
    # each bare agent's topics: (a) "topic", (a') "producer", (a0) "stock", (a1) "each",
    # (a2) "bulk"
    prefixes = {
        "topic": "bare",
        "producer": "barep",
        "stock": "bares",
        "each": "baree",
        "bulk": "bareb",
    }
    bare_modes = [
        (mode, {role: f"{prefix}-{role}-{tag}" for role in ("in", "out", "dlq")})
        for mode, prefix in prefixes.items()
    ]
    everything = [t for _, topics in bare_modes for t in topics.values()]
    everything += work_topics.values()
    ensure_topics(kafka, bootstrap, everything)
    for topic in (topics["in"] for _, topics in bare_modes):
        res = publish_events(sat_events, kafka=kafka, bootstrap=bootstrap, topic=topic)
        assert res.delivered == n_sat, res.summary()
    res = publish_events(
        new.iloc[: 2 * n_sat], kafka=kafka, bootstrap=bootstrap, topic=work_topics["in"]
    )
    assert res.delivered == 2 * n_sat, res.summary()
    log(f"pre-loaded {n_sat:,} events for each bare agent, {2 * n_sat:,} for the worker")

    # (a) bare agent, saturation: Faust's Topic.send, then (a') the worker's producer path,
    # then (a0) Faust's own drain loop, then (a1) the per-event agent, then (a2) the
    # worker's intake
    script = [sys.executable, str(Path(__file__).resolve())]
    bares: dict[str, dict[str, Any]] = {}
    for mode, topics in bare_modes:
        reader = Reader(settings, bootstrap, topics["out"])
        env = env_for(settings, topics, work / f"bare-{mode}-stack")
        started = time.time()
        argv = [*script, "--bare-agent", f"bare-{mode}-{tag}", "--bare-mode", mode]
        with running(argv, work / f"bare-{mode}.log", env=env) as proc:
            bares[mode] = saturation(reader, n_sat, started, lambda: proc.poll() is None, 240)
        reader.close()
        log(f"bare ({mode}): {bares[mode]}")
    bare, bare_producer, bare_stock = bares["topic"], bares["producer"], bares["stock"]
    bare_each, bare_bulk = bares["each"], bares["bulk"]

    # the paced phases, (rate, events, warm-up events), for the floor and then the worker
    offset, phases = 2 * n_sat, []
    for rate, count in zip(rates, paced, strict=True):
        phases.append((rate, new.iloc[offset : offset + count], int(rate * args.warmup)))
        offset += count
    # (c) the transport's floor: the worker's input history and paced phases, no worker
    floor = transport_floor(new.iloc[: 2 * n_sat], phases, settings, bootstrap, work)
    log(f"transport floor: {floor}")

    # the worker: saturation, then paced latency runs
    reader = Reader(settings, bootstrap, work_topics["out"])
    env = env_for(settings, work_topics, work / "worker-stack")
    argv = [sys.executable, "-m", "fraudstream", "worker", "--app-id", f"worker-{tag}"]
    latency: dict[str, Any] = {}
    broker = broker_process(settings)
    started = time.time()
    with running(argv, work / "worker.log", env=env) as proc:
        sampler = RssSampler(proc.pid)
        sampler.start()
        alive = lambda: proc.poll() is None  # noqa: E731
        worker = saturation(reader, n_sat, started, alive, 300)
        worker["rss_after_saturation_mb"] = (sampler.samples[-1] / 2**20) if sampler.samples else 0
        scrape_before = scrape_worker()  # the first half's end, the second half's start
        worker["history_reads"] = scrape_before.get("history_reads")
        log(f"worker saturation (just started: caches as its warm start left them): {worker}")
        # warm: the next n_sat pre-loaded events, every customer's state already in memory
        reader.drain(2 * n_sat, 300, alive)
        scrape_after = scrape_worker()
        stamps = np.sort(np.asarray(reader.stamps[n_sat : 2 * n_sat], dtype=np.int64))
        warm_sat = {
            "events": n_sat,
            "span_s": (stamps[-1] - stamps[0]) / 1000.0,
            "ev_s": (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1000.0),
            "stages_us_per_event": stage_delta(scrape_before, scrape_after),
            "events_per_batch": events_per_batch(scrape_before, scrape_after),
            "action_shares": action_shares(scrape_before, scrape_after),
        }
        log(f"worker saturation (warm): {warm_sat}")
        # As in benchmarks/serving.py, whose generator's full collections of a like heap (the
        # world) took 200-255 ms: here one would stall the publisher and the reader, and the
        # publisher would then catch up in a burst. Frozen, later collections skip the world.
        gc.collect()
        gc.freeze()
        for rate, events, n_warm in phases:
            count = len(events)
            cpu0 = cpu_seconds(broker)
            arr, pub, got, timed = paced_latency(
                reader, events, n_warm, rate, kafka, bootstrap, work_topics["in"], alive
            )
            cpu1 = cpu_seconds(broker)
            latency[f"{int(rate)}"] = {
                "rate": rate,
                "published_ev_s": pub.rate,
                "publish_s": pub.seconds,
                "warmup_events": n_warm,
                "measured_events": count - n_warm,
                "decisions_received": len(arr),
                "p50_ms": float(np.percentile(arr, 50)) if len(arr) else None,
                "p99_ms": float(np.percentile(arr, 99)) if len(arr) else None,
                "max_ms": float(arr.max()) if len(arr) else None,
                "all_outputs": got,
                "broker_cpu_us_per_event": per_event_us(cpu1 - cpu0, count),
                "windows": windows(timed),
            }
            log(f"latency at {rate:.0f} ev/s: {latency[str(int(rate))]}")
        gc.unfreeze()
        sampler.halt.set()
        sampler.join()
        peak_mb = sampler.peak / 2**20
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=30)
    reader.close()
    log(f"worker exit code {code}, peak RSS {peak_mb:.0f} MB")

    log(f"stage profile on {args.profile_events:,} unused events")
    stages = stage_profile(
        world, new.iloc[offset : offset + args.profile_events], settings.scoring.batch_size
    )
    w, b, nv, nx = warm_sat["ev_s"], bare["ev_s"], naive["ev_s"], naive_xgb["ev_s"]
    bp, bs, be = bare_producer["ev_s"], bare_stock["ev_s"], bare_each["ev_s"]
    bb = bare_bulk["ev_s"]
    p99_1k = latency.get("1000", {}).get("p99_ms")
    met = {
        "worker_vs_bare_>=0.70": bool(w / b >= TARGETS["vs_bare"]),
        "worker_vs_naive_>=10": bool(w / nv >= TARGETS["vs_naive"]),
        "p99_at_1k_<=100ms": bool(p99_1k is not None and p99_1k <= TARGETS["p99_1k_ms"]),
        "rss_<=600MB": bool(peak_mb <= TARGETS["rss_mb"]),
    }
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.system()} {platform.release()}, "
        f"{len(os.sched_getaffinity(0))} cores, load {os.getloadavg()[0]:.1f}",
        "world": {
            "source": "handbook replay",
            "past_events": len(world["past"]),
            "stream_events": len(new),
            "customers": world["customers"],
            "terminals": world["terminals"],
            "setup_s": world["setup_s"],
            "terminal_ttl": world["terminal_ttl"],
        },
        "batch_size": settings.scoring.batch_size,
        "partitions": settings.kafka.partitions,
        "worker_saturation_ev_s": w,
        "worker_cold_saturation_ev_s": worker["ev_s"],
        "worker_cold_history_reads": worker["history_reads"],
        "worker_first_output_after_start_s": worker["first_output_after_start_s"],
        "worker_cold_over_bare": worker["ev_s"] / b,
        "bare_ev_s": b,
        "bare_producer_ev_s": bp,
        "worker_over_bare_producer": w / bp,
        "bare_stock_ev_s": bs,
        "worker_over_bare_stock": w / bs,
        "bare_each_ev_s": be,
        "worker_over_bare_each": w / be,
        "bare_bulk_ev_s": bb,
        "worker_over_bare_bulk": w / bb,
        "naive_ev_s": nv,
        "worker_over_bare": w / b,
        "worker_over_naive": w / nv,
        "naive_xgboost_ev_s": nx,
        "worker_over_naive_xgboost": w / nx,
        "latency": latency,
        "transport_floor": floor,
        "p50_1k_ms": latency.get("1000", {}).get("p50_ms"),
        "p99_1k_ms": p99_1k,
        "p50_3k_ms": latency.get("3000", {}).get("p50_ms"),
        "p99_3k_ms": latency.get("3000", {}).get("p99_ms"),
        "worker_peak_rss_mb": peak_mb,
        "worker": worker,
        "worker_warm": warm_sat,
        "bare": bare,
        "naive": naive,
        "naive_xgboost": naive_xgb,
        "stages_us_per_event": stages["us_per_event"],
        "profile_top": stages["profile_top"],
        "targets_met": met,
    }


def print_table(r: dict[str, Any]) -> None:
    def f(x: Any, fmt: str = ".0f") -> str:
        return "n/a" if x is None else format(x, fmt)

    print("\n| measure | value | target | met |\n|---|---|---|---|")
    m = r["targets_met"]
    print(f"| worker saturation, warm (ev/s) | {f(r['worker_saturation_ev_s'])} | | |")
    print(f"| worker saturation, cold start (ev/s) | {f(r['worker_cold_saturation_ev_s'])} | | |")
    stages = r["worker_warm"]["stages_us_per_event"]
    print(
        "| worker stages, warm (µs/event) | "
        + ", ".join(f"{k} {v:.0f}" for k, v in stages.items())
        + " | | |"
    )
    print(f"| (a) bare Faust agent saturation (ev/s) | {f(r['bare_ev_s'])} | | |")
    print(f"| (a') bare agent, worker's producer path (ev/s) | {f(r['bare_producer_ev_s'])} | | |")
    print(f"| (a0) bare agent, Faust's own drain loop (ev/s) | {f(r['bare_stock_ev_s'])} | | |")
    print(f"| (a1) per-event Faust agent (ev/s) | {f(r['bare_each_ev_s'])} | | |")
    print(f"| (a2) bare agent, worker's intake (ev/s) | {f(r['bare_bulk_ev_s'])} | | |")
    print(f"| (b) naive Feast + predict per event (ev/s) | {f(r['naive_ev_s'])} | | |")
    print(
        f"| (b') the same with XGBoost's DMatrix + predict (ev/s) "
        f"| {f(r['naive_xgboost_ev_s'])} | | |"
    )
    print(
        f"| worker / bare | {r['worker_over_bare']:.2f} | >= 0.70 | {m['worker_vs_bare_>=0.70']} |"
    )
    print(f"| worker / (a') | {r['worker_over_bare_producer']:.2f} | | |")
    print(f"| worker / (a0) | {r['worker_over_bare_stock']:.2f} | | |")
    print(f"| worker / (a1) | {r['worker_over_bare_each']:.2f} | | |")
    print(f"| worker / (a2) | {r['worker_over_bare_bulk']:.2f} | | |")
    print(
        f"| worker / naive | {r['worker_over_naive']:.1f}× | >= 10× | {m['worker_vs_naive_>=10']} |"
    )
    print(f"| worker / (b') | {r['worker_over_naive_xgboost']:.1f}× | | |")
    for rate, v in r["latency"].items():  # 200 ev/s: below the worker's capacity
        print(
            f"| latency at {rate} ev/s, p50 / p99 (ms) | {f(v['p50_ms'], '.1f')} / "
            f"{f(v['p99_ms'], '.1f')} ({v['decisions_received']:,} of {v['measured_events']:,}) "
            f"| {'p99 <= 100' if rate == '1000' else ''} | "
            f"{m['p99_at_1k_<=100ms'] if rate == '1000' else ''} |"
        )
    for rate, v in r["latency"].items():  # the growth within a phase (local broker)
        floor = r["transport_floor"].get(rate, {}).get("windows", [])
        cells = [
            f"{w['from_s']:g} s: {w['p99_ms']:.0f} / {f(floor[i]['p99_ms'] if i < len(floor) else None)}"
            for i, w in enumerate(v.get("windows", []))
        ]
        print(
            f"| p99 per 5 s of the {rate} ev/s phase (warm-up first), worker / (c) (ms) | "
            f"{'; '.join(cells)} | | |"
        )
    for rate, v in r["transport_floor"].items():
        print(
            f"| (c) transport floor at {rate} ev/s, p50 / p99 (ms) | {f(v['p50_ms'], '.1f')} / "
            f"{f(v['p99_ms'], '.1f')} | | |"
        )
    for rate in r["latency"]:
        worker_cpu = r["latency"][rate]["broker_cpu_us_per_event"]
        floor_cpu = r["transport_floor"].get(rate, {}).get("broker_cpu_us_per_event")
        print(
            f"| broker CPU at {rate} ev/s, worker / (c) (µs/event) | {f(worker_cpu)} / "
            f"{f(floor_cpu)} | | |"
        )
    print(f"| worker peak RSS (MB) | {f(r['worker_peak_rss_mb'])} | <= 600 | {m['rss_<=600MB']} |")
    print("\nworker stages in-process (µs per event):", end=" ")
    print(", ".join(f"{k} {v:.0f}" for k, v in r["stages_us_per_event"].items()))
    print(r["profile_top"])


if __name__ == "__main__":
    main()
