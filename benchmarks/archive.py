"""Archive throughput: how fast ``fraudstream archive`` drains the transactions topic.

    .venv/bin/python benchmarks/archive.py [--count 50000] [--partitions 4]

A private local stack (``benchmarks/workspace.py``); ``--count`` simulated transactions are
published unpaced to a fresh topic, then :func:`fraudstream.archive.run_archive` (``--once``,
a new consumer group) reads, validates and appends them as Parquet parts and commits. The
time includes the group join (about half the session timeout on the local broker) and the
final idle check; the rate without it is printed too. Then one deduplicated read of the
archive. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.workspace import private_workspace  # noqa: E402
from fraudstream.archive import Archive, run_archive  # noqa: E402
from fraudstream.kafka import ensure_topics  # noqa: E402
from fraudstream.publish import publish_events, simulated_events  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    with private_workspace("fraudstream-archive-") as ws:
        tag = uuid.uuid4().hex[:8]
        topics = {"transactions": f"tx-{tag}", "decisions": f"dec-{tag}", "labels": f"lab-{tag}"}
        settings = ws.settings.model_copy(
            update={
                "topics": ws.settings.topics.model_copy(update=topics),
                "monitoring": ws.settings.monitoring.model_copy(
                    update={"archive_dir": ws.work / "archive", "archive_group_id": f"g-{tag}"}
                ),
            }
        )
        bootstrap = ws.endpoints.kafka_bootstrap
        ensure_topics(settings.kafka, bootstrap, list(topics.values()), args.partitions)
        events = simulated_events(args.count, customers=5000, terminals=10000)
        published = publish_events(
            events, kafka=settings.kafka, bootstrap=bootstrap, topic=topics["transactions"]
        )
        archive = Archive(ws.work / "archive")
        first: list[float] = []
        started = time.monotonic()
        stats = run_archive(
            settings,
            bootstrap,
            archive,
            once=True,
            on_batch=lambda _w: first.append(time.monotonic()) if not first else None,
        )
        took = time.monotonic() - started
        read_started = time.monotonic()
        rows = len(archive.read("transactions"))
        read_s = time.monotonic() - read_started
        streaming_s = stats.seconds - (first[0] - started) if first else float("nan")
        print(
            json.dumps(
                {
                    "count": args.count,
                    "published_per_s": round(published.rate),
                    "archived": stats.messages,
                    "batches": stats.batches,
                    "files": stats.files,
                    "seconds": round(took, 2),
                    "messages_per_s": round(stats.messages / took),
                    "messages_per_s_after_join": round(stats.messages / streaming_s)
                    if streaming_s > 0
                    else None,
                    "read_rows": rows,
                    "read_s": round(read_s, 2),
                }
            )
        )


if __name__ == "__main__":
    main()
