"""The worker's stages per micro-batch, every 5 s, from its ``/metrics``: how they move
within a phase.

    .venv/bin/python benchmarks/stage_trend.py [--port 19731] [--every 5] [--seconds 600] &
    .venv/bin/python benchmarks/streaming_variants.py --variant cur --saturation 10000 \\
        --rates 1000 --warmup 5 --measure 40

Run beside a benchmark whose worker serves metrics (``streaming.py`` and
``streaming_variants.py`` use port 19731). Prints, per interval: messages, batches, messages
per batch, and the mean per batch of the batch's age at its start and of each stage (ms).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.streaming import METRICS_PORT, scrape_worker  # noqa: E402

STAGES = ("age", "decode", "features", "model", "update", "produce", "batch")


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
            batches = now.get("count:batch", 0.0) - previous.get("count:batch", 0.0)
            if batches > 0:
                means = {
                    s: round(
                        (now.get(f"sum:{s}", 0.0) - previous.get(f"sum:{s}", 0.0)) / batches, 2
                    )
                    for s in STAGES
                }
                print(
                    f"{time.monotonic() - start:6.1f} s  messages {n:6.0f}  batches {batches:4.0f}"
                    f"  per batch {n / batches:6.1f}  ms per batch {means}",
                    flush=True,
                )
        else:
            start = time.monotonic()
        previous = now
        time.sleep(args.every)


if __name__ == "__main__":
    main()
