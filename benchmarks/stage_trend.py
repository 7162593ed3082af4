"""The worker's stages per micro-batch, every 5 s, from its ``/metrics``: how they move
within a phase.

    .venv/bin/python benchmarks/stage_trend.py [--port 19731] [--every 5] [--seconds 600] &
    .venv/bin/python benchmarks/streaming_variants.py --variant cur --saturation 10000 \\
        --rates 1000 --warmup 5 --measure 40

Run beside a benchmark whose worker serves metrics (``streaming.py`` and
``streaming_variants.py`` use port 19731). Prints, per interval: messages, and per batch
(``benchmarks.streaming.per_batch``) messages, the batch's age at its start and each stage (ms).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.streaming import METRICS_PORT, per_batch, scrape_worker  # noqa: E402


def scrape(port: int) -> dict[str, float] | None:
    """The worker's histograms and messages consumed, or None when no worker answers."""
    try:
        return scrape_worker(port, timeout_s=2.0)
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=METRICS_PORT)
    parser.add_argument("--every", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=600.0)
    args = parser.parse_args()
    end = time.monotonic() + args.seconds
    previous, start = None, None
    while time.monotonic() < end:
        now = scrape(args.port)
        if now is None:  # no worker (yet, or any more)
            previous = None
            time.sleep(0.5)
            continue
        if previous is not None and start is not None:
            n = now.get("consumed", 0.0) - previous.get("consumed", 0.0)
            if means := per_batch(previous, now):
                print(
                    f"{time.monotonic() - start:6.1f} s  messages {n:6.0f}  per batch {means}",
                    flush=True,
                )
        else:
            start = time.monotonic()
        previous = now
        time.sleep(args.every)


if __name__ == "__main__":
    main()
