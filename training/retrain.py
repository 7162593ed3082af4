"""Retrain: a challenger on the latest labelled window, judged against the champion.

Window layout (UTC days, counted back from the last day that has labelled transactions)::

    |<- train_days ->|<- delay_days ->|<- eval_days ->|
                                       the most recent labelled days

* the challenger is trained by :func:`training.train.train` on ``train_days`` days that end
  ``delay_days`` before the evaluation window (the handbook's layout: 7 / 7 / 7 by default;
  the delay keeps the challenger's training labels as old as a model's are in production);
* the champion and the challenger are evaluated on the **same rows**: the evaluation window's
  transactions without cards already known as compromised
  (:func:`training.evaluate.train_test_split`), with one feature frame built once through
  Feast's historical retrieval (:func:`training.dataset.historical_features`) for the union
  of both models' features; each model reads its own columns of it;
* the features are computed over **every** known transaction, labelled or not (a
  transaction without a label counts as genuine in the terminals' fraud counts, as
  ``features refresh`` counts it), as the stream computed them; only the labelled ones
  (column :data:`LABELLED`) are trained and evaluated on. Computed over the labelled ones
  only, the customers' and terminals' windows missed every unlabelled transaction, so a
  model was trained and judged on values the stream never serves. The offline tables are
  built in a scratch copy of the repo (:func:`~fraudstream.feast_env.scratch_repo`): the
  live ones, with the terminal snapshots ``features refresh`` appended, are not written;
* a fraud label reported after the terminal features' label delay counts in them only at
  transactions after its report (:func:`training.backfill.terminal_table`): with the delay
  alone, the training set used it up to weeks before the stream could;
* the challenger is promoted only when it is better by the margin
  (:class:`Margin`, settings ``model.promote_min_ap_gain`` and ``model.promote_max_auc_loss``):
  Average Precision at least ``min_ap_gain`` higher **and** AUC ROC at most ``max_auc_loss``
  lower. Otherwise it is registered but not promoted.

The evaluation (both models' metrics, the margin, the verdict) is written as
``retrain.json`` into the challenger's version directory and returned.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from feast import FeatureStore

from fraudstream.feast_env import apply_scratch, scratch_repo
from fraudstream.features import ALL_FEATURES, Feature
from fraudstream.model import ModelArtifact, load_artifact
from fraudstream.registry import ModelRegistry
from fraudstream.schema import LABEL_COLUMN
from training.backfill import REPORTED_AT, backfill
from training.dataset import as_matrix, historical_features
from training.evaluate import Split, evaluate, train_test_split
from training.train import train

log = logging.getLogger(__name__)

EVALUATION_FILE = "retrain.json"
#: Optional boolean column of :func:`retrain`'s events: the transaction has a label (without
#: the column, every transaction has one).
LABELLED = "labelled"


@dataclass(frozen=True)
class Window:
    """Days of the challenger's training window, the delay, and the evaluation window."""

    train_days: int = 7
    delay_days: int = 7
    eval_days: int = 7

    def split(self, last_day: date) -> Split:
        """The layout ending with ``last_day`` (the last labelled day) as a :class:`Split`."""
        eval_start = last_day - timedelta(days=self.eval_days - 1)
        train_start = eval_start - timedelta(days=self.delay_days + self.train_days)
        return Split(train_start, self.train_days, self.delay_days, self.eval_days)


@dataclass(frozen=True)
class Margin:
    """How much better a challenger must be to be promoted."""

    min_ap_gain: float = 0.01
    max_auc_loss: float = 0.005

    def verdict(self, champion: dict[str, Any], challenger: dict[str, Any]) -> tuple[bool, str]:
        ap_gain = challenger["average_precision"] - champion["average_precision"]
        auc_change = challenger["auc_roc"] - champion["auc_roc"]
        if not np.isfinite(ap_gain) or not np.isfinite(auc_change):
            return False, "not comparable: the evaluation window has no fraud or no genuine row"
        if ap_gain < self.min_ap_gain:
            return False, f"AP gain {ap_gain:+.4f} < {self.min_ap_gain:+.4f}"
        if auc_change < -self.max_auc_loss:
            return False, f"AUC change {auc_change:+.4f} < -{self.max_auc_loss:.4f}"
        return True, (
            f"AP gain {ap_gain:+.4f} >= {self.min_ap_gain:+.4f} and "
            f"AUC change {auc_change:+.4f} >= -{self.max_auc_loss:.4f}"
        )


@dataclass(frozen=True)
class RetrainResult:
    champion: str
    challenger: str
    promoted: bool
    evaluation: dict[str, Any]


def last_labelled_day(events: pd.DataFrame) -> date:
    stamp: pd.Timestamp = events["timestamp"].max()
    return stamp.tz_convert("UTC").date()


def compare(
    store: FeatureStore, events: pd.DataFrame, split: Split, models: dict[str, ModelArtifact]
) -> dict[str, dict[str, Any]]:
    """Each model's AUC ROC, AP and CP@100 on the same rows of ``split``'s test window."""
    _, rows = train_test_split(events, split)
    if len(rows) == 0:
        raise ValueError(f"no labelled transactions in the evaluation window of {split}")
    names = list(dict.fromkeys(n for m in models.values() for n in m.feature_names))
    unknown = [n for n in names if n not in ALL_FEATURES]
    if unknown:
        raise ValueError(f"a model reads features fraudstream does not define: {unknown}")
    features: list[Feature] = [ALL_FEATURES[n] for n in names]
    frame = historical_features(store, rows, features)  # built once, for every model
    out = {}
    for role, model in models.items():
        scores = model.predict(as_matrix(frame[model.feature_names]))
        out[role] = {"model_version": model.version, **evaluate(rows, scores)}
    return out


@contextmanager
def training_store(events: pd.DataFrame, repo_path: Path) -> Iterator[FeatureStore]:
    """A scratch copy of the Feast repo at ``repo_path`` (its definitions) whose offline
    tables are the backfill of every transaction of ``events``, labelled or not: each
    transaction's windows as the stream had them. Removed on exit; the live tables are only
    read (their definitions)."""
    with scratch_repo(repo_path) as scratch:
        backfill(events, scratch)
        yield apply_scratch(scratch)


def retrain(
    events: pd.DataFrame,
    repo_path: Path,
    registry: ModelRegistry,
    *,
    fallback_dir: Path,
    window: Window = Window(),
    margin: Margin = Margin(),
    promote: bool = True,
) -> RetrainResult:
    """Train a challenger on the labelled rows of ``events``, evaluate it against the
    registry's champion, register it, and promote it if better.

    ``events``: every known transaction, canonical columns + ``is_fraud`` (the label as
    known; 0 without one), optionally :data:`LABELLED` and
    :data:`~training.backfill.REPORTED_AT` (a fraud reported after the label delay counts in
    the terminal features only from its report on); the features are computed over all of
    them, in a scratch copy of the Feast repo at ``repo_path``. Without a champion in
    the registry, the artifact in ``fallback_dir`` (what the worker serves without a
    registry) is registered first and is the champion.
    """
    if LABEL_COLUMN not in events.columns:
        raise ValueError(f"retrain needs labelled transactions (a {LABEL_COLUMN!r} column)")
    if len(events) == 0:
        raise ValueError("retrain needs labelled transactions (the table has no rows)")
    known = events.drop(columns=[LABELLED], errors="ignore")
    rows = known.drop(columns=[REPORTED_AT], errors="ignore")
    if LABELLED in events.columns:
        rows = rows[events[LABELLED].to_numpy(bool)]
    if len(rows) == 0:
        raise ValueError("retrain needs labelled transactions (none is labelled)")
    rows = rows.reset_index(drop=True)
    champion_version = registry.champion()
    if champion_version is None:
        champion_version = registry.register(fallback_dir, champion_if_none=True)
    champion = registry.load(champion_version)
    split = window.split(last_labelled_day(rows))
    log.info("retrain: %s; champion %s", split, champion_version)
    with (
        training_store(known, repo_path) as store,
        tempfile.TemporaryDirectory(prefix="challenger-") as tmp,
    ):
        staging = Path(tmp) / "challenger"
        result = train(rows, split, staging, store, backfill_first=False)
        challenger = load_artifact(staging)
        metrics = compare(store, rows, split, {"champion": champion, "challenger": challenger})
        better, reason = margin.verdict(metrics["champion"], metrics["challenger"])
        evaluation = {
            "evaluated_at": datetime.now(UTC).isoformat(),
            "window": {
                "train_start": split.train_start.isoformat(),
                "train_days": window.train_days,
                "delay_days": window.delay_days,
                "eval_start": split.test_start.isoformat(),
                "eval_days": window.eval_days,
                "transactions": len(known),
                "labelled_rows": len(rows),
                "training_rows": result.manifest["training_rows"],
            },
            "champion": metrics["champion"],
            "challenger": metrics["challenger"],
            "margin": {"min_ap_gain": margin.min_ap_gain, "max_auc_loss": margin.max_auc_loss},
            "better": better,
            "reason": reason,
            "promoted": better and promote,
        }
        (staging / EVALUATION_FILE).write_text(json.dumps(evaluation, indent=2, default=str))
        version = registry.register(staging, champion_if_none=False)
    if better and promote:
        registry.promote(version)
    log.info("retrain: challenger %s %s (%s)", version, "promoted" if better else "kept", reason)
    return RetrainResult(champion_version, version, bool(better and promote), evaluation)
