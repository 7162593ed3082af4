"""What the REST API adds around one scoring call, in process, optionally beside another version.

    .venv/bin/python benchmarks/api_overhead.py [--compare PATH] [--requests 1000] [--rounds 5]

Builds a small world (``benchmarks/small_world.py``) on a private local stack and the API
(``serving.app.create_app``) around its scorer, then sends ``POST /v1/score`` with one
held-out transaction straight to the app's ASGI interface (no socket, no HTTP parsing:
what uvicorn hands over and takes back) and times each request from the call to the last
byte sent. Beside it, per request, the same transaction parsed as the API parses it
(``TransactionEvent.model_validate_json``) and scored by the scorer's own call
(``Scorer.score_records``, ``update=False``): what the API adds is the difference.

``--compare PATH`` also builds the app of another ``serving/app.py`` (for example
``git show <commit>:serving/app.py > /tmp/app_old.py``) around the same scorer, and each
request goes to both apps, in alternating order, so that the host's drift hits both alike.
Prints the median µs per request of each, per round, and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "benchmarks"))

PATH = b"/v1/score"


def load_app_module(path: Path) -> Any:
    """``path`` (a version of ``serving/app.py``) imported as a module of its own."""
    spec = importlib.util.spec_from_file_location(f"compared_app_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def call(app: Any, body: bytes) -> None:
    """One ``POST /v1/score`` through ``app``'s ASGI interface; fails unless answered 200."""
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:  # the app asks again only to watch for a disconnect
            await asyncio.Event().wait()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH.decode(),
        "raw_path": PATH,
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    if sent[0].get("status") != 200:
        raise SystemExit(f"unexpected answer: {sent}")


async def measure(
    apps: dict[str, Any], score: Callable[[bytes], None], bodies: list[bytes], rounds: int
) -> dict[str, list[float]]:
    """Median µs per request of each app and of the scorer alone, per round."""
    medians: dict[str, list[float]] = {name: [] for name in [*apps, "scorer"]}
    async with AsyncExitStack() as stack:
        for app in apps.values():  # lifespan: the scoring queue runs
            await stack.enter_async_context(app.router.lifespan_context(app))
        for body in bodies[:200]:  # warm-up
            for app in apps.values():
                await call(app, body)
        order = list(apps.items())
        for _ in range(rounds):
            times: dict[str, list[float]] = {name: [] for name in medians}
            for i, body in enumerate(bodies[200:]):
                for name, app in order if i % 2 else order[::-1]:
                    started = time.perf_counter()
                    await call(app, body)
                    times[name].append(time.perf_counter() - started)
                started = time.perf_counter()
                score(body)
                times["scorer"].append(time.perf_counter() - started)
            line = []
            for name, values in times.items():
                medians[name].append(statistics.median(values) * 1e6)
                line.append(f"{name} {medians[name][-1]:.0f}")
            print("round: median µs per request:", ", ".join(line), flush=True)
    return medians


def main() -> None:
    from workspace import private_small_world

    from fraudstream.publish import event_payloads
    from fraudstream.schema import TransactionEvent
    from serving.app import create_app

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compare", type=Path, help="another version of serving/app.py")
    parser.add_argument("--requests", type=int, default=1000, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--customers", type=int, default=300)
    args = parser.parse_args()
    other = load_app_module(args.compare) if args.compare else None
    held_out = 200 + args.requests
    with private_small_world(seed=3, customers=args.customers, held_out=held_out) as world:
        bodies = [e.model_dump_json().encode() for e in event_payloads(world.held_out)]
        redis_url = world.settings.redis.url
        assert redis_url is not None
        apps = {"api": create_app(world.settings, world.scorer, redis_url=redis_url)}
        if other is not None:
            apps["compared"] = other.create_app(world.settings, world.scorer, redis_url=redis_url)

        def score(body: bytes) -> None:
            event = TransactionEvent.model_validate_json(body)
            world.scorer.score_records([event], update=False)

        medians = asyncio.run(measure(apps, score, bodies, args.rounds))
    summary = {name: statistics.median(values) for name, values in medians.items()}
    print("\n| | median of the rounds' medians, µs per request |\n|---|---|")
    for name, us in summary.items():
        print(f"| {name} | {us:.0f} |")
    result = {"requests": args.requests, "rounds": args.rounds, "compare": str(args.compare)}
    print(json.dumps({**result, "median_us": medians, "summary_us": summary}))


if __name__ == "__main__":
    main()
