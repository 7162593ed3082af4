"""The paced publisher's own CPU: what ``fraudstream publish --rate`` (and every benchmark's
load generator) costs per event.

    .venv/bin/python benchmarks/publisher.py [--rate 1000] [--count 5000] [--rounds 2]

On a private local stack, sends ``--count`` 300-byte messages at ``--rate`` per second with
``fraudstream.publish.send_paced``, ``--rounds`` times, and reports the CPU time of this
process per event (all threads, librdkafka's included) and the achieved rate. Imports the
``fraudstream`` package of the directory it is run from, so the same file run from a
worktree of an older commit (``cd <worktree> && /work/main/.venv/bin/python
/work/main/benchmarks/publisher.py``) measures that commit side by side. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path.cwd()))  # the package of the tree it is run from
sys.path.append(str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from workspace import private_workspace

    import fraudstream
    from fraudstream.kafka import ensure_topics, producer_config
    from fraudstream.publish import send_paced

    runs = []
    with private_workspace("fraudstream-publisher-") as ws:
        bootstrap = ws.endpoints.kafka_bootstrap
        for _ in range(args.rounds):
            topic = f"publisher-{uuid.uuid4().hex[:6]}"
            ensure_topics(ws.settings.kafka, bootstrap, [topic])
            messages = [
                (lambda now_ms, i=i: (str(i).encode(), b"x" * 300)) for i in range(args.count)
            ]
            cpu = time.process_time()
            result = send_paced(
                messages,
                conf=producer_config(ws.settings.kafka, bootstrap),
                topic=topic,
                rate=args.rate,
            )
            cpu = time.process_time() - cpu
            assert result.delivered == args.count, result.errors
            runs.append(
                {"cpu_us_per_event": round(1e6 * cpu / args.count, 1), "ev_s": round(result.rate)}
            )
            print(runs[-1], file=sys.stderr)
    print(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "package": str(Path(fraudstream.__file__).parent),
                "rate": args.rate,
                "count": args.count,
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
