"""Score a micro-batch of transactions: the one code path of the worker and the REST API.

For a batch of validated events (:class:`Batch`, columns without a DataFrame):

1. in one Redis round trip, read the customers' versions (with the histories of those not
   cached yet) and the terminals' stored ``_ts`` (with the rows of those not cached yet);
   then get the customers' states (:class:`~fraudstream.history.CustomerHistory`:
   cached in process, re-read only when another writer changed them) and compute their
   real-time features with the backfill's kernel
   (:func:`~fraudstream.features.advance_customers`);
2. take the terminal features of the whole batch from the Feast online store
   (:class:`~fraudstream.online_store.CachedViewReader`: only terminals whose stored row
   changed are read again);
3. compute the request features, score with the model (one ``DMatrix`` per batch, one
   thread; batches of up to 8 rows through :mod:`~fraudstream.trees`, equal bit for bit),
   explain with ``pred_contribs`` (top 3 reasons): SHAP values for review and decline
   (XGBoost's TreeSHAP values, from the per-leaf tables of :mod:`~fraudstream.treeshap`),
   XGBoost's approximate contributions for approvals unless ``exact_reasons`` is ``all``;
   a shadow model, if any, scores the same rows and never acts;
4. when ``update`` is true (the worker; the API only on request), append the events to
   the history and write the customers' fresh features to the online store in Feast's
   format, so ``get_online_features`` and the API see them (two Lua scripts, one round
   trip). The writes are sent as soon as the features are known, before step 3, and their
   replies read after it (:func:`~fraudstream.redis_batch.send`): Redis runs them while
   the model scores. Should the model then fail, the writes stand; scoring those events
   again is a replay, which gives them the same features. The worker reads the replies
   later still, after its decisions are delivered (:meth:`Scorer.score_deferred`,
   :class:`PendingUpdate`), so Redis also runs them while the broker acknowledges.

Missing or stale features (documented policy):

* customer history unavailable (Redis unreachable): features from the batch alone,
  ``degraded`` with ``customer history unavailable``; with ``update``, the events are not
  added to their customers' histories, and the decision also says
  ``customer history not updated``;
* terminal features absent (a new terminal) or older than the terminal view's TTL at the
  transaction's time (the age Feast's point-in-time join also refuses, so online and
  offline agree; a row newer than the transaction, possible in a replay, counts as age 0
  and is used, being the freshest value the online store has): left missing
  (NaN, which the model was trained to handle), ``degraded`` with the reason;
  Redis unreachable: the same, reason ``online store unavailable``;
* an event more than :data:`~fraudstream.features.LATE_MARGIN_MS` (7 days) before its
  customer's latest stored transaction: scored on the history kept, whose oldest part its
  longest windows may miss (pruned), ``degraded`` with ``late event: customer history cut``;
* while degraded, a transaction above ``degraded_max_approve_amount`` is never approved:
  it goes to review.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
import redis

from fraudstream.config import ScoringSettings, Settings
from fraudstream.decision import DECISION_SCHEMA_VERSION, Decision
from fraudstream.features import (
    ALL_FEATURES,
    CUSTOMER_PREVIOUS_WINDOWS_DAYS,
    CUSTOMER_VIEW,
    LATE_MARGIN_MS,
    TERMINAL_VIEW,
    CustomerState,
    advance_customers,
    latest_ms,
    replaced_entries,
    request_feature_arrays,
    to_ms,
    transaction_digests,
)
from fraudstream.history import SCRIPTS as history_scripts
from fraudstream.history import CustomerHistory
from fraudstream.invalidation import KeyWatch
from fraudstream.model import ModelArtifact, ModelError, ModelInput
from fraudstream.online_store import SCRIPTS as online_scripts
from fraudstream.online_store import CachedViewReader, OnlineStore
from fraudstream.redis_batch import Sent, execute, send
from fraudstream.schema import TransactionEvent
from fraudstream.stack import Endpoints

log = logging.getLogger(__name__)

TOP_REASONS = 3
#: The degraded reason of an event too late for its customer's kept history.
LATE_EVENT = "late event: customer history cut"
#: The degraded reason of an event scored with ``update`` whose state could not be written.
NOT_UPDATED = "customer history not updated"
PREVIOUS_WINDOWS = CUSTOMER_PREVIOUS_WINDOWS_DAYS
Action = Literal["approve", "review", "decline"]


#: The Lua scripts the scorer's commands call (history and online store).
SCRIPTS = (*history_scripts, *online_scripts)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Scored:
    """A batch's decision records and the feature matrix that produced them.

    ``records`` are :class:`~fraudstream.decision.Decision` as plain dicts (the worker
    encodes them with :func:`~fraudstream.decision.encode_record`, no model objects built);
    :attr:`decisions` validates them into ``Decision`` objects.
    """

    records: list[dict[str, Any]]
    matrix: np.ndarray
    #: The batch's state writes, sent but not confirmed (only from ``settle=False``).
    pending: PendingUpdate | None = None

    @property
    def decisions(self) -> list[Decision]:
        return [Decision.model_validate(r) for r in self.records]


class PendingUpdate:
    """A batch's state writes (history append, customer view), sent to Redis and not
    confirmed yet: :meth:`settle` reads Redis's replies and caches the customers' next states.

    Both writes are idempotent (``ZADD NX``; a row no newer than the stored one is skipped),
    so :meth:`resend` may send them again after a failure whether or not they ran. The
    in-process cache needs no repair either way: a customer whose version in Redis is not the
    one cached is read again by the next batch.
    """

    def __init__(
        self,
        history: CustomerHistory,
        customers: list[str],
        states: list[CustomerState],
        commands: list[tuple[Any, ...]],
        events: int,
    ) -> None:
        self.history, self.customers, self.states = history, customers, states
        self.commands = commands
        self.events = events  # how many events' state these writes carry (for logs)
        self._sent: Sent | None = send(history.client, commands, SCRIPTS)

    def settle(self) -> None:
        """Wait for the writes' replies and cache the states; raises ``redis.RedisError``."""
        sent, self._sent = self._sent, None
        if sent is None:
            raise RuntimeError("this update was settled or abandoned already")
        versions = sent.replies()[0]  # gives the connection back, or drops it on failure
        self.history.saved(self.customers, self.states, versions)

    def resend(self) -> None:
        """Send the writes again and wait for them (after :meth:`settle` failed)."""
        self.abandon()
        versions = execute(self.history.client, self.commands, SCRIPTS)[0]
        self.history.saved(self.customers, self.states, versions)

    def abandon(self) -> None:
        """Stop waiting for the replies (the writes may have run)."""
        sent, self._sent = self._sent, None
        if sent is not None:
            sent.abandon()


@dataclass(frozen=True)
class _Modelled:
    """What the model says about a batch (:meth:`Scorer._model`)."""

    scores: np.ndarray
    actions: list[Action]
    contributions: np.ndarray
    top: np.ndarray
    exact: np.ndarray
    shadow_scores: list[float | None]
    shadow_version: str | None


@dataclass(frozen=True)
class Batch:
    """Validated transactions as columns: what the scorer reads (no DataFrame needed)."""

    transaction_id: list[str]
    customer_id: list[str]
    terminal_id: list[str]
    event_time: list[datetime]
    ms: np.ndarray  # epoch milliseconds, int64
    amount: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.transaction_id)

    @classmethod
    def from_events(cls, events: Sequence[TransactionEvent]) -> Batch:
        times = [e.timestamp for e in events]
        return cls(
            transaction_id=[e.transaction_id for e in events],
            customer_id=[e.customer_id for e in events],
            terminal_id=[e.terminal_id for e in events],
            event_time=times,
            ms=np.array([_epoch_ms(t) for t in times], dtype=np.int64),
            amount=np.array([e.amount for e in events], dtype=np.float64),
        )

    @classmethod
    def from_frame(cls, events: pd.DataFrame) -> Batch:
        """From a canonical table (:func:`~fraudstream.schema.validate_frame` columns)."""
        stamps = pd.DatetimeIndex(events["timestamp"])
        return cls(
            transaction_id=events["transaction_id"].astype(str).tolist(),
            customer_id=events["customer_id"].astype(str).tolist(),
            terminal_id=events["terminal_id"].astype(str).tolist(),
            event_time=list(stamps.to_pydatetime()),
            ms=to_ms(stamps),
            amount=events["amount"].to_numpy(dtype=np.float64),
        )

    def take(self, positions: Sequence[int]) -> Batch:
        idx = np.asarray(positions, dtype=np.int64)
        return Batch(
            transaction_id=[self.transaction_id[i] for i in positions],
            customer_id=[self.customer_id[i] for i in positions],
            terminal_id=[self.terminal_id[i] for i in positions],
            event_time=[self.event_time[i] for i in positions],
            ms=self.ms[idx],
            amount=self.amount[idx],
        )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _epoch_ms(t: datetime) -> int:
    """Epoch milliseconds of an aware datetime, floored (as :func:`to_ms` does)."""
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _codes(values: list[str]) -> tuple[list[str], np.ndarray]:
    """Distinct values in first-seen order and each value's position among them."""
    first: dict[str, int] = {}
    codes = [first.setdefault(v, len(first)) for v in values]
    return list(first), np.asarray(codes, dtype=np.int64)


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


def choose_actions(
    model: ModelArtifact,
    policy: ScoringSettings,
    scores: np.ndarray,
    amount: np.ndarray,
    degraded: Sequence[Sequence[str]],
) -> list[Action]:
    """The thresholds' action; while degraded, never approve above the policy's amount."""
    thresholds = model.thresholds
    limit = policy.degraded_max_approve_amount
    out: list[Action] = []
    for i, score in enumerate(scores.tolist()):
        action = thresholds.action(score)
        if degraded[i] and action == "approve" and amount[i] > limit:
            action = "review"
        out.append(action)
    return out


def explain(
    model: ModelArtifact,
    matrix: np.ndarray,
    actions: Sequence[Action],
    exact_reasons: str,
    inputs: ModelInput | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contributions per feature, the columns of the top reasons per row, and which rows
    got exact SHAP values (review and decline, or all with ``exact_reasons="all"``).
    ``inputs``: ``matrix`` already prepared for the model (:meth:`ModelArtifact.inputs`)."""
    n = len(actions)
    exact = (
        np.ones(n, dtype=bool)
        if exact_reasons == "all"
        else np.array([a != "approve" for a in actions], dtype=bool)
    )
    contributions = model.explain(inputs if inputs is not None else model.inputs(matrix), exact)
    top = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :TOP_REASONS]
    return contributions, top, exact


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
        shadow: ModelArtifact | None = None,
    ) -> None:
        if online.client is not history.client:
            raise ValueError("the customer history and the online store must share a Redis client")
        self.terminal_max_age_s = terminal_max_age_s
        self.online = online
        self.history = history
        self.policy = policy
        self.clock = clock
        #: Seconds spent per stage (features, model, update) since the last reset, for metrics.
        self.timings: dict[str, float] = {"features": 0.0, "model": 0.0, "update": 0.0}
        #: Called with each batch's feature matrix and scores (the drift monitor), or None.
        self.observer: Callable[[np.ndarray, np.ndarray], None] | None = None
        #: Redis's word on which cached rows changed (:func:`watch_keys`); None: every batch
        #: checks its cached rows against Redis.
        self.watch: KeyWatch | None = None
        self.use(model, shadow)

    def use(self, model: ModelArtifact, shadow: ModelArtifact | None = None) -> None:
        """Score with ``model`` (and ``shadow``, which never acts) from the next batch on.

        Everything is checked and built before anything changes: a model that reads a
        feature the store does not define raises :class:`ModelError` and the scorer keeps
        its models. Call it between batches (the worker's agent, the API's scoring queue).
        """
        self._check_features(model.feature_names)
        shadow_names = None if shadow is None else shadow.feature_names
        if shadow_names is not None:
            self._check_features(shadow_names)
        needed = [*model.feature_names, *(shadow_names or [])]
        terminal = [n for n in dict.fromkeys(needed) if ALL_FEATURES[n].source == "terminal"]
        self.model, self.names, self.terminal_features = model, model.feature_names, terminal
        reader: CachedViewReader | None = getattr(self, "terminals", None)
        if reader is None or reader.features != terminal:  # else keep its cache
            self.terminals = CachedViewReader(self.online, TERMINAL_VIEW, terminal)
        self.shadow = shadow
        #: The shadow's own columns (None: it reads the champion's matrix as is).
        self.shadow_names = None if shadow_names == self.names else shadow_names

    def _check_features(self, names: list[str]) -> None:
        """Refuse a model that reads a feature the online store does not define."""
        served = {f for view in self.online.views.values() for f in view.features}
        for name in names:
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

    def warm(
        self,
        seconds: float,
        clock: Callable[[], float] = time.monotonic,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> tuple[int, int]:
        """Fill the caches from Redis for at most about ``seconds``, or until ``cancelled()``
        (the round trip under way then finishes): the terminals' rows first, then customers'
        states (:meth:`CachedViewReader.warm`, :meth:`CustomerHistory.warm`). Returns how
        many terminals and customers were read; raises ``redis.RedisError``. What is cached
        is still checked against Redis (or its :attr:`watch`) on every call, so decisions are
        the same either way."""
        if seconds <= 0:
            return 0, 0
        deadline = clock() + seconds

        def stop() -> bool:
            return clock() >= deadline or cancelled()

        def read() -> tuple[int, int]:
            terminals = self.terminals.warm(stop) if self.terminal_features else 0
            return terminals, 0 if stop() else self.history.warm(stop)

        watch = self.watch
        if watch is None or not watch.enabled:
            return read()
        # what the warm-up reads (it skips what is cached) is current once it is done
        watch.poll()
        window = watch.open()
        had_terminals = set(self.terminals.cached_entities())
        had_customers = set(self.history.cached_ids())
        try:
            return read()
        finally:
            fresh = self.terminals.keys_of(
                [e for e in self.terminals.cached_entities() if e not in had_terminals]
            ) + self.history.version_keys(
                [c for c in self.history.cached_ids() if c not in had_customers]
            )
            watch.confirm(window, fresh)

    def score_events(
        self, events: Sequence[TransactionEvent], *, update: bool = True
    ) -> list[Decision]:
        """One decision per event, in order: the API's entry point (see :meth:`score_records`)."""
        return [Decision.model_validate(r) for r in self.score_records(events, update=update)]

    def score_records(
        self, events: Sequence[TransactionEvent], *, update: bool = True
    ) -> list[dict[str, Any]]:
        """One decision record per event, in order: the worker's entry point.

        A ``transaction_id`` that occurs more than once is scored once per occurrence, each
        copy as a replay (the first copies together, then the second copies, ...), so every
        copy gets the same score.
        """
        records, pending = self._score_rounds(events, update=update, settle=True)
        assert pending is None
        return records

    def score_deferred(
        self, events: Sequence[TransactionEvent]
    ) -> tuple[list[dict[str, Any]], PendingUpdate | None]:
        """:meth:`score_records` with ``update``, but the last round's state writes are
        left in flight: the caller settles them (:meth:`PendingUpdate.settle`) once it has
        done what it can meanwhile (the worker: deliver the decisions). Settle or abandon
        them before the next call, whose reads must follow these writes."""
        return self._score_rounds(events, update=True, settle=False)

    def _score_rounds(
        self, events: Sequence[TransactionEvent], *, update: bool, settle: bool
    ) -> tuple[list[dict[str, Any]], PendingUpdate | None]:
        batch = Batch.from_events(events)
        split = rounds(events)
        if len(split) == 1:  # no repeated id: one round, the batch as it is
            scored = self.score_batch(batch, update=update, settle=settle)
            return scored.records, scored.pending
        out: list[dict[str, Any] | None] = [None] * len(events)
        pending = None
        for number, positions in enumerate(split, start=1):
            last = number == len(split)
            scored = self.score_batch(
                batch.take(positions), update=update, settle=settle or not last
            )
            pending = scored.pending
            for i, record in zip(positions, scored.records, strict=True):
                out[i] = record
        return [r for r in out if r is not None], pending

    def score(self, events: pd.DataFrame, *, update: bool = True) -> Scored:
        """Decisions for ``events`` (canonical columns, distinct transaction ids), in order."""
        return self.score_batch(Batch.from_frame(events), update=update)

    def score_batch(self, batch: Batch, *, update: bool = True, settle: bool = True) -> Scored:
        """Decisions for ``batch`` (distinct transaction ids), in order. With ``settle``
        false the state writes are returned in flight (:attr:`Scored.pending`)."""
        now = self.clock()
        started = time.perf_counter()
        n = len(batch)
        degraded: list[list[str]] = [[] for _ in range(n)]

        customers, codes = _codes(batch.customer_id)
        states, terminal, ages = self._read(batch, customers, degraded)
        history_ok = states is not None
        if states is None:
            states = [CustomerState.empty() for _ in customers]
            if update:  # the writes below need the stored state: the caller must know
                for marks in degraded:
                    marks.append(NOT_UPDATED)
        latest = latest_ms(states)
        if history_ok:  # (an empty state's latest is the smallest int64: never late)
            for i in np.flatnonzero(batch.ms + LATE_MARGIN_MS < latest[codes]):
                degraded[i].append(LATE_EVENT)
        ids = transaction_digests(batch.transaction_id)
        customer, next_states = advance_customers(
            states, codes, batch.ms, batch.amount, ids, latest
        )
        prev = {w: customer[f"customer_prev_avg_amount_{w}d"] for w in PREVIOUS_WINDOWS}
        columns = {**customer, **request_feature_arrays(batch.ms, batch.amount, prev)}
        columns.update({c: terminal[:, j] for j, c in enumerate(self.terminal_features)})
        matrix = np.column_stack([np.asarray(columns[k], dtype=np.float64) for k in self.names])

        featured = time.perf_counter()
        # the writes go now; Redis runs them while the model scores, the replies come after
        pending = (
            self._send_update(batch, customers, codes, ids, customer, states, latest, next_states)
            if update and history_ok
            else None
        )
        sent_at = time.perf_counter()
        try:
            judged = self._model(batch, columns, matrix, degraded)
            modelled = time.perf_counter()
            if pending is not None and settle:
                pending.settle()
            updated = time.perf_counter()
            records = self._records(batch, judged, matrix, ages, degraded, now)
        except BaseException:  # no writes left in flight with nobody to settle them
            if pending is not None:
                pending.abandon()
            raise
        self.timings["features"] += featured - started
        self.timings["model"] += modelled - sent_at
        self.timings["update"] += (sent_at - featured) + (updated - modelled)
        return Scored(records=records, matrix=matrix, pending=None if settle else pending)

    def _records(
        self,
        batch: Batch,
        judged: _Modelled,
        matrix: np.ndarray,
        ages: np.ndarray,
        degraded: list[list[str]],
        now: datetime,
    ) -> list[dict[str, Any]]:
        """The decision records of a scored batch (:class:`~fraudstream.decision.Decision`
        as dicts)."""
        n = len(batch)
        scores, actions = judged.scores, judged.actions
        shadow_scores, shadow_version = judged.shadow_scores, judged.shadow_version
        contributions, top, exact = judged.contributions, judged.top, judged.exact
        version = self.model.version
        names = self.names
        # the top reasons' values and contributions only (NaN: null)
        top_values = np.take_along_axis(matrix, top, axis=1)
        cells = top_values.astype(object)
        cells[np.isnan(top_values)] = None
        values, tops = cells.tolist(), top.tolist()
        contrib = np.take_along_axis(contributions, top, axis=1).tolist()
        score_list, amount_list, age_list = scores.tolist(), batch.amount.tolist(), ages.tolist()
        records: list[dict[str, Any]] = []
        for i in range(n):
            row, crow = values[i], contrib[i]
            records.append(
                {
                    "schema_version": DECISION_SCHEMA_VERSION,
                    "transaction_id": batch.transaction_id[i],
                    "customer_id": batch.customer_id[i],
                    "terminal_id": batch.terminal_id[i],
                    "amount": amount_list[i],
                    "event_time": batch.event_time[i],
                    "score": score_list[i],
                    "action": actions[i],
                    "model_version": version,
                    "shadow_score": shadow_scores[i],
                    "shadow_model_version": shadow_version,
                    "reasons": [
                        {"feature": names[j], "value": value, "contribution": share}
                        for j, value, share in zip(tops[i], row, crow, strict=True)
                    ],
                    "reasons_method": "shap" if exact[i] else "approx",
                    "features_age_s": None if age_list[i] != age_list[i] else age_list[i],
                    "degraded": bool(degraded[i]),
                    "degraded_reasons": degraded[i],
                    "decided_at": now,
                    "latency_ms": None,
                }
            )
        return records

    def _model(
        self,
        batch: Batch,
        columns: dict[str, np.ndarray],
        matrix: np.ndarray,
        degraded: list[list[str]],
    ) -> _Modelled:
        """Scores (and the shadow model's), actions and reasons of ``matrix``."""
        n = len(batch)
        inputs = self.model.inputs(matrix)
        scores = self.model.predict_inputs(inputs)
        shadow_scores: list[float | None] = [None] * n
        shadow_version = None
        if self.shadow is not None:
            if self.shadow_names is None:  # the champion's columns: its inputs too
                shadow_scores = self.shadow.predict_inputs(inputs).tolist()
            else:
                shadow_matrix = np.column_stack(
                    [np.asarray(columns[k], dtype=np.float64) for k in self.shadow_names]
                )
                shadow_scores = self.shadow.predict(shadow_matrix).tolist()
            shadow_version = self.shadow.version
        if self.observer is not None:
            self.observer(matrix, scores)
        actions = choose_actions(self.model, self.policy, scores, batch.amount, degraded)
        contributions, top, exact = explain(
            self.model, matrix, actions, self.policy.exact_reasons, inputs
        )
        return _Modelled(scores, actions, contributions, top, exact, shadow_scores, shadow_version)

    # ------------------------------------------------------------ features

    def _read(
        self, batch: Batch, customers: list[str], degraded: list[list[str]]
    ) -> tuple[list[CustomerState] | None, np.ndarray, np.ndarray]:
        """The customers' states (``None`` when unavailable), the terminal features and their
        ages: the versions (with the histories not cached) and the terminals' stamps in one
        round trip, then only what changed since the last batch. With a :attr:`watch`, no
        round trip at all when every row is cached and Redis reported none changed."""
        n = len(batch)
        commands = self.history.read_commands(customers)
        history_replies = len(commands)
        plan = None
        if self.terminal_features:
            terminal_commands, plan = self.terminals.read_commands(batch.terminal_id)
            commands += terminal_commands
        missing = (np.full((n, len(self.terminal_features)), np.nan), np.full(n, np.nan))
        watch, window = self.watch, None
        customer_keys: list[bytes] = []
        terminal_keys: list[bytes] = []
        try:
            if watch is None or not watch.enabled:
                replies = self._execute(commands)
            else:
                watch.poll()
                customer_keys = self.history.version_keys(customers)
                terminal_keys = [] if plan is None else plan.keys
                cached = history_replies == 1 and (plan is None or not plan.prefetched)
                if cached and watch.current(customer_keys) and watch.current(terminal_keys):
                    watch.hits += 1
                    replies = [self.history.cached_versions(customers)]
                    if plan is not None:
                        replies.append(self.terminals.cached_stamps(plan))
                else:
                    watch.misses += 1
                    window = watch.open()
                    replies = self._execute(commands)
        except redis.RedisError as exc:
            if watch is not None and window is not None:
                watch.close(window)
            log.warning("Redis unavailable: %s", exc)
            for marks in degraded:
                marks += ("customer history unavailable", "online store unavailable")
            return None, *missing
        read: list[bytes] = []  # keys whose rows are now cached as Redis has them
        try:
            states: list[CustomerState] | None
            try:
                states = self.history.states_from(customers, replies[:history_replies])
                read += customer_keys
            except redis.RedisError as exc:
                log.warning("customer history unavailable: %s", exc)
                states = None
                for marks in degraded:
                    marks.append("customer history unavailable")
            if plan is None:
                return states, np.empty((n, 0)), np.full(n, np.nan)
            try:
                values, stamps = self.terminals.read_from(plan, replies[history_replies:])
                read += terminal_keys
            except redis.RedisError as exc:
                log.warning("online store unavailable: %s", exc)
                for marks in degraded:
                    marks.append("online store unavailable")
                return states, *missing
        finally:
            if watch is not None and window is not None:
                watch.confirm(window, read)
        found = stamps != np.iinfo(np.int64).min
        # age at the transaction's own time, as Feast's point-in-time join measures its TTL
        # (a live event's time is now; a replayed one keeps its own)
        event_ns = batch.ms * 1_000_000
        ages = np.where(found, np.maximum(event_ns - stamps, 0) / 1e9, np.nan)
        stale = found & (ages > self.terminal_max_age_s)
        values[stale] = np.nan
        for i in np.flatnonzero(~found):
            degraded[i].append("terminal features missing")
        for i in np.flatnonzero(stale):
            degraded[i].append("terminal features stale")
        return states, values, ages

    def _execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """``commands`` of the history and the online store in one round trip."""
        return execute(self.history.client, commands, SCRIPTS)

    def _send_update(
        self,
        batch: Batch,
        customers: list[str],
        codes: np.ndarray,
        ids: np.ndarray,
        customer: dict[str, np.ndarray],
        states: list[CustomerState],
        latest: np.ndarray,
        next_states: list[CustomerState],
    ) -> PendingUpdate:
        """Send the history append (going from ``states``, whose latest times are
        ``latest``, to ``next_states``) and each customer's latest features (Feast format)
        in one pipeline; settling it caches ``next_states``."""
        # each customer's latest transaction (by time, then arrival) carries its fresh values
        order = np.lexsort((np.arange(len(batch)), batch.ms, codes))
        last = order[np.r_[codes[order][1:] != codes[order][:-1], True]]
        write = self.online.write_array_commands(
            CUSTOMER_VIEW,
            [customers[c] for c in codes[last]],
            batch.ms[last] * 1000,
            {name: values[last] for name, values in customer.items()},
        )
        replaced = replaced_entries(states, codes, batch.ms, batch.amount, ids, latest)
        append = self.history.append_command(
            customers, codes, batch.ms, ids, batch.amount, replaced
        )
        return PendingUpdate(self.history, customers, next_states, [append, *write], len(batch))


def warm_caches(
    scorer: Scorer, seconds: float, cancelled: Callable[[], bool] = lambda: False
) -> None:
    """Fill ``scorer``'s caches at a process's start (:meth:`Scorer.warm`) and log what it
    read, so that a process just started scores a known customer as fast as a warm one.
    Never raises: on a Redis error (or any other) it logs why and returns; the caches then
    fill as the process scores, with the same decisions."""
    if seconds <= 0:
        return
    started = time.perf_counter()
    try:
        terminals, customers = scorer.warm(seconds, cancelled=cancelled)
    except redis.RedisError as exc:
        log.warning("caches not warmed, Redis: %s", exc)
        return
    except Exception as exc:  # a start must not fail for want of a warm cache
        log.warning("caches not warmed: %s: %s", type(exc).__name__, exc)
        return
    log.info(
        "caches warmed in %.1f s: %d terminals, %d customers",
        time.perf_counter() - started,
        terminals,
        customers,
    )


def watch_keys(scorer: Scorer, max_silence_s: float) -> KeyWatch:
    """Have ``scorer`` skip the round trip to Redis for rows Redis reports unchanged: a
    :class:`~fraudstream.invalidation.KeyWatch` over the customers' history versions and
    the terminal view's rows (all of them, whatever the model reads now: a model loaded
    later may read more), connected now (the API, before it warms its caches)."""
    prefixes = [scorer.history.version_prefix]
    if TERMINAL_VIEW in scorer.online.views:
        prefixes.append(scorer.online.key_prefix(TERMINAL_VIEW))
    watch = KeyWatch(scorer.history.client, prefixes, max_silence_s)
    watch.poll()
    scorer.watch = watch
    return watch


def build_scorer(settings: Settings, endpoints: Endpoints) -> Scorer:
    """The scorer of a worker or API process: the verified model, Redis, Feast's registry.

    The model is the model registry's champion (and its shadow, if any), or the artifact in
    ``model.dir`` when there is no registry (:func:`~fraudstream.registry.load_serving`).

    Refuses to start (raising a :class:`~fraudstream.errors.FraudstreamError`) when the model
    fails its SHA-256 check or reads a feature the store does not define. The terminal
    features' maximum age is the Feast view's TTL.
    """
    from fraudstream.feast_env import open_store
    from fraudstream.registry import ModelRegistry, load_serving
    from fraudstream.stack import redis_client

    models = load_serving(ModelRegistry(settings.model.registry_path), settings.model.dir)
    store = open_store(settings, endpoints)
    client = redis_client(endpoints.redis_url, settings)
    online = OnlineStore.from_feature_store(store, client)
    ttl = store.get_feature_view(TERMINAL_VIEW).ttl
    max_age = ttl.total_seconds() if ttl else float("inf")
    history = CustomerHistory(client, store.project, settings.scoring.customer_cache_rows)
    return Scorer(models.champion, online, history, settings.scoring, max_age, shadow=models.shadow)
