"""Cost of the hot-reload check and of shadow scoring per micro-batch.

    .venv/bin/python benchmarks/model_lifecycle.py

A model of the production shape (the 22 model features, ``XGB_PARAMS``, 300 trees of depth 4)
trained on random data and registered in a temporary registry; a batch of 500 rows (the
worker's default micro-batch). Prints the reload check when not due (what every batch pays),
when due with the registry unchanged (one ``stat``), the champion's predict (what a shadow
adds), a shadow's own columns when its feature list differs, and loading + verifying an
artifact (paid once per promotion, before the switch).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fraudstream.features import MODEL_FEATURES  # noqa: E402
from fraudstream.model import load_artifact, save_artifact  # noqa: E402
from fraudstream.registry import ModelRegistry, ModelWatcher, load_serving  # noqa: E402
from training.train import NUM_BOOST_ROUND, XGB_PARAMS  # noqa: E402

BATCH = 500


def per_call(fn: Callable[[], Any], n: int) -> float:
    """Mean seconds per call of ``fn`` over ``n`` calls (after one warm-up call)."""
    fn()
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n


def main() -> None:
    names = [f.name for f in MODEL_FEATURES]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, len(names)))
    y = (x[:, 0] + rng.normal(size=len(x)) > 2).astype(int)
    params = {**XGB_PARAMS, "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(x, label=y, feature_names=names), NUM_BOOST_ROUND)
    tmp = Path(tempfile.mkdtemp(prefix="model-lifecycle-"))
    manifest = {
        "model_version": "bench",
        "features": [{"name": n} for n in names],
        "thresholds": {"review": 0.5, "decline": 0.9},
    }
    artifact = save_artifact(tmp / "artifact", booster, manifest)
    registry = ModelRegistry(tmp / "registry")
    registry.register(artifact)
    model = load_artifact(artifact)
    batch = rng.normal(size=(BATCH, len(names)))
    columns = {n: batch[:, j] for j, n in enumerate(names)}
    other = names[::-1]

    watcher = ModelWatcher(registry, load_serving(registry, artifact), interval_s=5.0)
    print(f"reload check, not due: {per_call(watcher.due, 100_000) * 1e9:.0f} ns per batch")
    watcher.interval_s, watcher.next_check = 0.0, 0.0
    print(f"reload check, due, registry unchanged: {per_call(watcher.poll, 20_000) * 1e6:.2f} us")
    predict = per_call(lambda: model.predict(batch), 200)
    print(f"shadow predict ({BATCH} rows, same features): {predict * 1e3:.2f} ms per batch")
    own = per_call(lambda: np.column_stack([columns[k] for k in other]), 2_000)
    print(f"shadow's own columns (another feature list): +{own * 1e3:.3f} ms per batch")
    load = per_call(lambda: load_artifact(artifact), 20)
    print(f"load + verify an artifact: {load * 1e3:.1f} ms per promotion")


if __name__ == "__main__":
    main()
