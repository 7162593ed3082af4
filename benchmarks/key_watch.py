"""What the API's key watch pays per invalidation message it reads (``KeyWatch.poll``).

    .venv/bin/python benchmarks/key_watch.py [--messages 5000] [--repeats 5]

Starts a private redis-server (the local stack's binary), connects a
:class:`~fraudstream.invalidation.KeyWatch` with no backlog limit, then ``--repeats`` times:
``--messages`` writes under the watched prefix, one command each (so one message each: the
keys of one command come in one message), a pause for them to arrive, and one timed
``poll`` that reads them all. Prints µs per message read and one JSON line. This sizes
``max_backlog``: the most messages one call may read before the watch drops its
connection instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    import redis

    from fraudstream import stack
    from fraudstream.config import Settings
    from fraudstream.invalidation import KeyWatch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fraudstream-key-watch-") as work:
        port = stack.free_port()
        argv = [stack.redis_binary(), "--port", str(port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", work]  # fmt: skip
        info = stack.start_process(argv, Path(work) / "redis.log")
        try:
            url = f"redis://127.0.0.1:{port}/0"
            client = stack.redis_client(url, Settings(redis={"url": url}))
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            watch = KeyWatch(client, [b"bench:"], 60.0, max_backlog=10**9)
            watch.poll()
            per_message_us = []
            for _ in range(args.repeats):
                for i in range(args.messages):
                    client.set(f"bench:{i}", i)
                time.sleep(0.3)
                before = watch.invalidations
                started = time.perf_counter()
                watch.poll()
                took = time.perf_counter() - started
                assert watch.invalidations - before == args.messages, "messages missing"
                per_message_us.append(took / args.messages * 1e6)
            watch.stop()
            client.close()
        finally:
            stack.stop_process(info)
    print("µs per message read, per repeat:", ", ".join(f"{x:.2f}" for x in per_message_us))
    print(json.dumps({"messages": args.messages, "per_message_us": per_message_us}))


if __name__ == "__main__":
    main()
