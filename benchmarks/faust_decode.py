"""Faust's per-message decode on the worker's input topic: the ``raw`` serializers against
:class:`streaming.worker.RawSchema`, in process (no broker needed).

    .venv/bin/python benchmarks/faust_decode.py [--messages 50000] [--rounds 5]

Decodes ``--messages`` transaction-sized messages into Faust events with each schema's
compiled decoder (what the conductor runs for every message), ``--rounds`` times in
alternation, and reports the median µs per message of each and their ratio. Prints one JSON
line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository's streaming package, not benchmarks/streaming.py

from faust.types import Message  # noqa: E402

from fraudstream.config import Settings  # noqa: E402
from streaming.app import create_app  # noqa: E402
from streaming.worker import RawSchema  # noqa: E402


async def _per_message_us(decode: Any, messages: list[Message]) -> float:
    started = time.perf_counter()
    for message in messages:
        await decode(message)
    return (time.perf_counter() - started) * 1e6 / len(messages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    app = create_app(Settings(), "127.0.0.1:9", app_id="faust-decode-bench")
    stock = app.topic("tx", key_serializer="raw", value_serializer="raw").schema
    value = json.dumps(
        {
            "transaction_id": "tx-000000123456",
            "timestamp": "2026-12-02T12:00:00.123456+00:00",
            "customer_id": "1234",
            "terminal_id": "5678",
            "amount": 57.16,
        }
    ).encode()
    messages = [
        Message("tx", i % 4, i, 0.0, 0, [], f"tx-{i:012d}".encode(), value, None)
        for i in range(args.messages)
    ]
    variants = {"raw serializers": stock.compile(app), "RawSchema": RawSchema().compile(app)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, decode in variants.items():
            times[name].append(asyncio.run(_per_message_us(decode, messages)))
    medians = {name: round(statistics.median(t), 3) for name, t in times.items()}
    print(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": f"{platform.machine()}, Python {platform.python_version()}",
                "messages": args.messages,
                "rounds": args.rounds,
                "us_per_message_median": medians,
                "runs_us": {name: [round(x, 3) for x in t] for name, t in times.items()},
                "raw_schema_over_stock": round(
                    medians["RawSchema"] / medians["raw serializers"], 3
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
