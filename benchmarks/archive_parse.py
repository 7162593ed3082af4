"""What the worker's rule costs the archive per transaction message, in process.

    .venv/bin/python benchmarks/archive_parse.py [--rounds 6]

Simulated transactions encoded as ``fraudstream publish`` sends them; each round parses every
message twice, in turns: (a) ``TransactionEvent.model_validate_json`` alone (what the archive
did before 2026-12-05) and (b) ``fraudstream.schema.decode_event`` (the worker's rule, which the
archive applies since: size limit, UTF-8, schema, time ahead of the clock), each followed by
``model_dump`` as the archive does. Prints µs per message per round and the medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fraudstream.publish import encode, event_payloads  # noqa: E402
from fraudstream.schema import TransactionEvent, decode_event, validate_frame  # noqa: E402
from fraudstream.simulate import simulate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    events = validate_frame(simulate(customers=500, terminals=1000, days=10, seed=1))
    values = [encode(e)[1] for e in event_payloads(events)]
    now = time.time()

    def schema_only(value: bytes) -> None:
        TransactionEvent.model_validate_json(value).model_dump()

    def worker_rule(value: bytes) -> None:
        event = decode_event(value, now, 86_400.0, "its Kafka timestamp")
        assert not isinstance(event, str), event
        event.model_dump()

    timed: dict[str, list[float]] = {"schema only": [], "worker's rule": []}
    pairs = [("schema only", schema_only), ("worker's rule", worker_rule)]
    for i in range(args.rounds):
        for name, parse in pairs if i % 2 == 0 else pairs[::-1]:
            started = time.perf_counter()
            for value in values:
                parse(value)
            timed[name].append((time.perf_counter() - started) / len(values) * 1e6)
    print(f"{len(values):,} messages, µs per message per round:")
    for name, rounds in timed.items():
        print(f"  {name}: {', '.join(f'{t:.2f}' for t in rounds)}")
    a, b = (statistics.median(timed[k]) for k in ("schema only", "worker's rule"))
    print(f"medians: schema only {a:.2f}, worker's rule {b:.2f} (ratio {b / a:.2f})")


if __name__ == "__main__":
    main()
