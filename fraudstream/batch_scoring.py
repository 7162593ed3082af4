"""Batch inference: score a historical file with the features of the offline store and the
model the stream uses (``fraudstream score-batch``), for backtests, reports and retraining.

Features come from Feast's ``get_historical_features`` (point in time, the training path),
so a transaction gets the feature values the online path gave it (proven to 1e-6 by
``tests/integration/test_parity.py`` and ``tests/integration/test_score_batch.py``).
Scores, actions and top-3 reasons come from the scorer's own functions
(:func:`~fraudstream.scoring.choose_actions`, :func:`~fraudstream.scoring.explain`).

The customer view's offline table holds a row per transaction that was backfilled; a
streamed transaction has none. :func:`scratch_store` therefore scores on a **copy** of the
offline store, never writing the live one: a temporary Feast repo (this repo's definitions,
its own project and registry, a SQLite online store that is never used) whose customer
table is the live one plus a row for every transaction of the file that the live one lacks,
computed with the backfill's kernel (:func:`training.backfill.customer_table`) over the
customers' transactions known from the archive, an optional history file and the file
itself; the terminal table is the live one (what ``features refresh`` last wrote).

Offline, a decision is ``degraded`` when its terminal features are missing (no terminal
row within the view's TTL, as the online path decides), with the reason ``terminal
features missing or stale`` (offline the two cannot be told apart); ``features_age_s`` is
null (Feast's historical join does not return the rows' times).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson
import pandas as pd

from fraudstream.config import ScoringSettings
from fraudstream.errors import FraudstreamError
from fraudstream.feast_env import apply_scratch, scratch_repo
from fraudstream.features import (
    ALL_FEATURES,
    CUSTOMER_VIEW,
    OFFLINE_FILES,
    TERMINAL_FEATURES,
    TERMINAL_VIEW,
)
from fraudstream.model import ModelArtifact
from fraudstream.outputs import write_atomically
from fraudstream.scoring import choose_actions, explain

if TYPE_CHECKING:
    from feast import FeatureStore

    from fraudstream.config import Settings

log = logging.getLogger(__name__)

DEGRADED_OFFLINE = "terminal features missing or stale"
#: Decision columns of the output, in order (``reasons`` and ``degraded_reasons`` as JSON).
OUTPUT_COLUMNS = [
    "transaction_id",
    "customer_id",
    "terminal_id",
    "amount",
    "event_time",
    "score",
    "action",
    "model_version",
    "reasons",
    "reasons_method",
    "features_age_s",
    "degraded",
    "degraded_reasons",
    "decided_at",
]


class BatchScoringError(FraudstreamError):
    """Batch scoring cannot run (no offline tables, Feast failed)."""


def serving_model(settings: Settings) -> ModelArtifact:
    """The model the stream scores with: the registry's champion, else ``model.dir``."""
    from fraudstream.registry import ModelRegistry, load_serving

    return load_serving(ModelRegistry(settings.model.registry_path), settings.model.dir).champion


def batch_features(events: pd.DataFrame, store: FeatureStore, model: ModelArtifact) -> np.ndarray:
    """The model's feature matrix for ``events`` (columns in the model's order) through
    Feast's historical features: the training path."""
    from training.dataset import historical_features

    features = [ALL_FEATURES[name] for name in model.feature_names]
    frame = historical_features(store, events, features)
    return frame.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)


def _degraded(matrix: np.ndarray, names: list[str]) -> np.ndarray:
    """Rows whose terminal features are missing: the online path's ``degraded`` rule."""
    terminal = [j for j, n in enumerate(names) if n in {f.name for f in TERMINAL_FEATURES}]
    counts = [j for j in terminal if names[j].startswith("terminal_nb_tx_")]
    probe = counts or terminal
    if not probe:
        return np.zeros(len(matrix), dtype=bool)
    return np.asarray(np.isnan(matrix[:, probe]).all(axis=1))


def score_matrix(
    events: pd.DataFrame,
    matrix: np.ndarray,
    model: ModelArtifact,
    policy: ScoringSettings | None = None,
    decided_at: datetime | None = None,
) -> pd.DataFrame:
    """Decisions (:data:`OUTPUT_COLUMNS`) for ``events`` and their feature ``matrix``."""
    policy = policy or ScoringSettings()
    names = model.feature_names
    scores = model.predict(matrix)
    flags = _degraded(matrix, names)
    degraded = [[DEGRADED_OFFLINE] if flag else [] for flag in flags.tolist()]
    amount = events["amount"].to_numpy(dtype=np.float64)
    actions = choose_actions(model, policy, scores, amount, degraded)
    contributions, top, exact = explain(model, matrix, actions, policy.exact_reasons)
    reasons = [
        orjson.dumps(
            [
                {
                    "feature": names[j],
                    "value": None if np.isnan(matrix[i, j]) else float(matrix[i, j]),
                    "contribution": float(contributions[i, j]),
                }
                for j in top[i].tolist()
            ]
        ).decode()
        for i in range(len(matrix))
    ]
    return pd.DataFrame(
        {
            "transaction_id": events["transaction_id"].astype(str).to_numpy(),
            "customer_id": events["customer_id"].astype(str).to_numpy(),
            "terminal_id": events["terminal_id"].astype(str).to_numpy(),
            "amount": amount,
            "event_time": events["timestamp"].dt.tz_convert("UTC").to_numpy(),
            "score": scores,
            "action": actions,
            "model_version": model.version,
            "reasons": reasons,
            "reasons_method": np.where(exact, "shap", "approx"),
            "features_age_s": np.full(len(matrix), np.nan),
            "degraded": flags,
            "degraded_reasons": [orjson.dumps(d).decode() for d in degraded],
            "decided_at": pd.Timestamp(decided_at or datetime.now(UTC)),
        },
        columns=OUTPUT_COLUMNS,
    )


def score_frame(
    events: pd.DataFrame,
    store: FeatureStore,
    model: ModelArtifact,
    policy: ScoringSettings | None = None,
) -> pd.DataFrame:
    """Decisions for a historical table of ``events`` (canonical columns), in its order:
    features from ``store``'s offline tables (point in time), the scorer's functions."""
    if len(events) == 0:
        return pd.DataFrame(columns=OUTPUT_COLUMNS)
    return score_matrix(events, batch_features(events, store, model), model, policy)


# ------------------------------------------------------------------ the scratch store


def offline_table(repo_path: Path, view: str) -> Path:
    path = Path(repo_path) / "data" / OFFLINE_FILES[view]
    if not path.is_file():
        raise BatchScoringError(
            f"{path}: no offline table (run `fraudstream features backfill` or `train` first)"
        )
    return path


def customer_rows(
    live: pd.DataFrame, events: pd.DataFrame, history: pd.DataFrame | None
) -> pd.DataFrame:
    """The live customer table plus a row for each of ``events``' (customer, time) that it
    lacks, computed by the backfill's kernel over ``history`` and ``events``."""
    from training.backfill import customer_table

    columns = ["transaction_id", "timestamp", "customer_id", "terminal_id", "amount"]
    known = events[columns]
    if history is not None and len(history):
        known = pd.concat([history[columns], known], ignore_index=True)
        known = known.drop_duplicates("transaction_id", keep="last")
    customers = set(events["customer_id"].astype(str))
    known = known[known["customer_id"].astype(str).isin(customers)]
    known = known.sort_values("timestamp", kind="stable").reset_index(drop=True)
    computed = customer_table(known)
    computed["event_timestamp"] = computed["event_timestamp"].astype("datetime64[us, UTC]")
    wanted = pd.MultiIndex.from_arrays(
        [events["customer_id"].astype(str), events["timestamp"].astype("datetime64[us, UTC]")]
    )
    have = pd.MultiIndex.from_arrays(
        [live["customer_id"].astype(str), live["event_timestamp"].astype("datetime64[us, UTC]")]
    )
    index = pd.MultiIndex.from_arrays(
        [computed["customer_id"].astype(str), computed["event_timestamp"]]
    )
    new = computed[index.isin(wanted) & ~index.isin(have)]
    live = live.assign(event_timestamp=live["event_timestamp"].astype("datetime64[us, UTC]"))
    return pd.concat([live, new], ignore_index=True)


@contextmanager
def scratch_store(
    repo_path: Path, events: pd.DataFrame, history: pd.DataFrame | None = None
) -> Iterator[FeatureStore]:
    """A temporary copy of the offline store that holds customer rows for ``events`` (see
    the module docstring); removed on exit. The live repo is only read."""
    repo_path = Path(repo_path)
    live_customers = pd.read_parquet(offline_table(repo_path, CUSTOMER_VIEW))
    terminal_path = offline_table(repo_path, TERMINAL_VIEW)
    with scratch_repo(repo_path) as scratch:
        table = customer_rows(live_customers, events, history)
        table.to_parquet(scratch / "data" / OFFLINE_FILES[CUSTOMER_VIEW], index=False)
        shutil.copy2(terminal_path, scratch / "data" / OFFLINE_FILES[TERMINAL_VIEW])
        try:
            store = apply_scratch(scratch)
        except FraudstreamError as exc:
            raise BatchScoringError(str(exc)) from None
        yield store


def score_file(
    settings: Settings,
    events: pd.DataFrame,
    *,
    history: pd.DataFrame | None = None,
    model: ModelArtifact | None = None,
) -> pd.DataFrame:
    """``score-batch``: decisions for ``events`` with the serving model, on a scratch copy
    of the offline store; the archive's transactions count as history."""
    from fraudstream.archive import Archive, archive_root

    model = model or serving_model(settings)
    archived = Archive(archive_root(settings)).read("transactions")
    known = [h for h in (archived, history) if h is not None and len(h)]
    combined = pd.concat(known, ignore_index=True) if known else None
    with scratch_store(settings.feast.repo_path, events, combined) as store:
        return score_frame(events, store, model, settings.scoring)


def write_decisions(frame: pd.DataFrame, out: Path) -> Path:
    """Parquet, or CSV when ``out`` ends in ``.csv``; written to a temporary name first."""
    out = Path(out)
    if out.suffix.lower() == ".csv":
        return write_atomically(out, lambda tmp: frame.to_csv(tmp, index=False))
    return write_atomically(out, lambda tmp: frame.to_parquet(tmp, index=False))
