"""Score a micro-batch of transactions: the one code path of the worker and the REST API.

For a batch of validated events (:func:`fraudstream.schema.validate_frame` columns):

1. load the customers' recent history from Redis (one round trip) and compute their
   real-time features with the backfill's kernel (:func:`customer_features_given_history`);
2. read the terminal features of the whole batch from the Feast online store (one round
   trip, :class:`~fraudstream.online_store.OnlineStore`);
3. compute the request features, score with the model (``inplace_predict``, one thread),
   explain with ``pred_contribs`` (top 3 reasons);
4. when ``update`` is true (the worker; the API only on request), append the events to
   the history and write the customers' fresh features to the online store in Feast's
   format, so ``get_online_features`` and the API see them.

Missing or stale features (documented policy):

* customer history unavailable (Redis unreachable): features from the batch alone,
  ``degraded`` with ``customer history unavailable``;
* terminal features absent (a new terminal) or older than the terminal view's TTL at the
  transaction's time (the age Feast's point-in-time join also refuses, so online and
  offline agree; a row newer than the transaction, possible in a replay, counts as age 0
  and is used, being the freshest value the online store has): left missing
  (NaN, which the model was trained to handle), ``degraded`` with the reason;
  Redis unreachable: the same, reason ``online store unavailable``;
* while degraded, a transaction above ``degraded_max_approve_amount`` is never approved:
  it goes to review.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import redis

from fraudstream.config import ScoringSettings, Settings
from fraudstream.decision import Decision, Reason
from fraudstream.features import (
    ALL_FEATURES,
    CUSTOMER_HISTORY_MS,
    CUSTOMER_VIEW,
    TERMINAL_VIEW,
    customer_features_given_history,
    request_features,
    to_ms,
)
from fraudstream.history import CustomerHistory, empty_history
from fraudstream.model import ModelArtifact, ModelError
from fraudstream.online_store import OnlineStore
from fraudstream.schema import EVENT_COLUMNS, TransactionEvent, validate_frame
from fraudstream.stack import Endpoints

log = logging.getLogger(__name__)

TOP_REASONS = 3


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Scored:
    """A batch's decisions and the feature matrix that produced them (for tests and audit)."""

    decisions: list[Decision]
    matrix: np.ndarray


def rounds(events: Sequence[TransactionEvent]) -> list[list[int]]:
    """Positions of ``events`` split so that no transaction id repeats within a round."""
    out: list[list[int]] = []
    seen: dict[str, int] = {}
    for i, event in enumerate(events):
        n = seen.get(event.transaction_id, 0)
        seen[event.transaction_id] = n + 1
        if n == len(out):
            out.append([])
        out[n].append(i)
    return out


def events_frame(events: Sequence[TransactionEvent]) -> pd.DataFrame:
    """The canonical table (:func:`validate_frame`) of events with distinct ids."""
    rows = [event.model_dump(include=set(EVENT_COLUMNS)) for event in events]
    return validate_frame(pd.DataFrame(rows, columns=EVENT_COLUMNS))


class Scorer:
    """Scores batches with one model; checks at start that the store serves its features."""

    def __init__(
        self,
        model: ModelArtifact,
        online: OnlineStore,
        history: CustomerHistory,
        policy: ScoringSettings,
        terminal_max_age_s: float,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.terminal_max_age_s = terminal_max_age_s
        self.model = model
        self.online = online
        self.history = history
        self.policy = policy
        self.clock = clock
        self.names = model.feature_names
        self._check_features()
        self.terminal_features = [n for n in self.names if ALL_FEATURES[n].source == "terminal"]

    def _check_features(self) -> None:
        """Refuse a model that reads a feature the online store does not define."""
        served = {f for view in self.online.views.values() for f in view.features}
        for name in self.names:
            feature = ALL_FEATURES.get(name)
            if feature is None:
                raise ModelError(f"the model reads {name!r}, which fraudstream does not define")
            needed = feature.needs if feature.source == "request" else (name,)
            missing = [n for n in needed if n not in served]
            if missing:
                raise ModelError(
                    f"the model reads {name!r} but the online store does not define {missing} "
                    "(run `fraudstream feast apply` with this model's feature repo)"
                )

    def score_events(
        self, events: Sequence[TransactionEvent], *, update: bool = True
    ) -> list[Decision]:
        """One decision per event, in order: the worker's and the API's entry point.

        A ``transaction_id`` that occurs more than once is scored once per occurrence, each
        copy as a replay (the first copies together, then the second copies, ...), so every
        copy gets the same score.
        """
        decisions: list[Decision | None] = [None] * len(events)
        for positions in rounds(events):
            scored = self.score(events_frame([events[i] for i in positions]), update=update)
            by_id = {d.transaction_id: d for d in scored.decisions}
            for i in positions:
                decisions[i] = by_id[events[i].transaction_id]
        return [d for d in decisions if d is not None]

    def score(self, events: pd.DataFrame, *, update: bool = True) -> Scored:
        """Decisions for ``events`` (canonical columns), in order."""
        now = self.clock()
        degraded: list[list[str]] = [[] for _ in range(len(events))]

        customer, history_ok = self._customer_features(events)
        if not history_ok:
            for marks in degraded:
                marks.append("customer history unavailable")

        terminal, ages = self._terminal_features(events, degraded)
        request = request_features(events["timestamp"], events["amount"], customer)
        columns = {**{c: customer[c].to_numpy() for c in customer.columns}}
        columns.update({c: request[c].to_numpy() for c in request.columns})
        columns.update({c: terminal[:, j] for j, c in enumerate(self.terminal_features)})
        matrix = np.column_stack([np.asarray(columns[n], dtype=np.float64) for n in self.names])

        scores = self.model.predict(matrix)
        contributions = self.model.contributions(matrix)[:, :-1]

        if update and history_ok:
            self._update(events, customer)

        thresholds = self.model.thresholds
        decisions = []
        for i, row in enumerate(events.itertuples(index=False)):
            score = float(scores[i])
            action = thresholds.action(score)
            if (
                degraded[i]
                and action == "approve"
                and row.amount > self.policy.degraded_max_approve_amount
            ):
                action = "review"
            top = np.argsort(-np.abs(contributions[i]), kind="stable")[:TOP_REASONS]
            reasons = [
                Reason(
                    feature=self.names[j],
                    value=None if np.isnan(matrix[i, j]) else float(matrix[i, j]),
                    contribution=float(contributions[i, j]),
                )
                for j in top
            ]
            decisions.append(
                Decision(
                    transaction_id=str(row.transaction_id),
                    customer_id=str(row.customer_id),
                    terminal_id=str(row.terminal_id),
                    amount=float(row.amount),
                    event_time=row.timestamp.to_pydatetime(),
                    score=score,
                    action=action,
                    model_version=self.model.version,
                    reasons=reasons,
                    features_age_s=None if np.isnan(ages[i]) else float(ages[i]),
                    degraded=bool(degraded[i]),
                    degraded_reasons=degraded[i],
                    decided_at=now,
                )
            )
        return Scored(decisions=decisions, matrix=matrix)

    # ------------------------------------------------------------ features

    def _customer_features(self, events: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
        since = int(to_ms(events["timestamp"]).min()) - CUSTOMER_HISTORY_MS
        try:
            history = self.history.load(events["customer_id"].astype(str).tolist(), since)
            ok = True
        except redis.RedisError as exc:
            log.warning("customer history unavailable: %s", exc)
            history, ok = empty_history(), False
        # a replayed transaction is left out of its own history: it scores as the first time
        history = history[~history["transaction_id"].isin(events["transaction_id"])]
        # the history is kept in Redis (CustomerHistory prunes it there): no in-memory copy
        return customer_features_given_history(history, events), ok

    def _terminal_features(
        self, events: pd.DataFrame, degraded: list[list[str]]
    ) -> tuple[np.ndarray, np.ndarray]:
        n = len(events)
        if not self.terminal_features:
            return np.empty((n, 0)), np.full(n, np.nan)
        try:
            rows = self.online.read_arrays(
                {"terminal_id": events["terminal_id"].astype(str).tolist()},
                self.terminal_features,
            )
        except redis.RedisError as exc:
            log.warning("online store unavailable: %s", exc)
            for marks in degraded:
                marks.append("online store unavailable")
            return np.full((n, len(self.terminal_features)), np.nan), np.full(n, np.nan)
        values = rows.values.copy()
        stamps = rows.event_timestamps[TERMINAL_VIEW]
        found = stamps != np.iinfo(np.int64).min
        # age at the transaction's own time, as Feast's point-in-time join measures its TTL
        # (a live event's time is now; a replayed one keeps its own)
        event_ns = to_ms(events["timestamp"]) * 1_000_000
        ages = np.where(found, np.maximum(event_ns - stamps, 0) / 1e9, np.nan)
        stale = found & (ages > self.terminal_max_age_s)
        values[stale] = np.nan
        for i in np.flatnonzero(~found):
            degraded[i].append("terminal features missing")
        for i in np.flatnonzero(stale):
            degraded[i].append("terminal features stale")
        return values, ages

    def _update(self, events: pd.DataFrame, customer: pd.DataFrame) -> None:
        """Append to the history and push each customer's latest features (Feast format)."""
        self.history.append(events)
        latest = (
            pd.concat([events[["customer_id", "timestamp"]], customer], axis=1)
            .sort_values("timestamp", kind="stable")
            .drop_duplicates("customer_id", keep="last")
            .rename(columns={"timestamp": "event_timestamp"})
        )
        self.online.write(CUSTOMER_VIEW, latest)


def build_scorer(settings: Settings, endpoints: Endpoints) -> Scorer:
    """The scorer of a worker or API process: the verified model, Redis, Feast's registry.

    Refuses to start (raising a :class:`~fraudstream.errors.FraudstreamError`) when the model
    fails its SHA-256 check or reads a feature the store does not define. The terminal
    features' maximum age is the Feast view's TTL.
    """
    from fraudstream.feast_env import open_store
    from fraudstream.model import load_artifact
    from fraudstream.stack import redis_client

    model = load_artifact(settings.model.dir)
    store = open_store(settings, endpoints)
    client = redis_client(endpoints.redis_url, settings)
    online = OnlineStore.from_feature_store(store, client)
    ttl = store.get_feature_view(TERMINAL_VIEW).ttl
    max_age = ttl.total_seconds() if ttl else float("inf")
    return Scorer(model, online, CustomerHistory(client, store.project), settings.scoring, max_age)
