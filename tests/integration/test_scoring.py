"""The scoring core on real Redis and real Feast: stream features equal the backfill, terminal
features are Feast's, writes are visible to Feast, replays are idempotent, degraded policy."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd
import pytest

from fraudstream.config import ScoringSettings
from fraudstream.features import (
    ALL_FEATURES,
    TERMINAL_VIEW,
    customer_features,
    feast_references,
    request_features,
    transaction_digests,
)
from fraudstream.history import CustomerHistory, unpack_entries
from fraudstream.model import ModelError
from fraudstream.publish import event_payloads
from fraudstream.scoring import LATE_EVENT, Scorer, watch_keys

from .world import build_world

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, redis_url: str):  # type: ignore[no-untyped-def]
    built = build_world(tmp_path_factory.mktemp("scoring"), kafka_bootstrap, redis_url, seed=21)
    events = pd.concat([built.past, built.new], ignore_index=True)
    return {
        "events": events,
        "past": built.past,
        "new": built.new.set_axis(range(len(built.past), len(events))),
        "store": built.store,
        "scorer": built.scorer,
        "model": built.model,
    }


def test_stream_features_equal_the_backfill_and_feast(world) -> None:  # type: ignore[no-untyped-def]
    scorer, new, events, store = world["scorer"], world["new"], world["events"], world["store"]
    scored = scorer.score(new, update=False)
    names = scorer.names
    matrix = pd.DataFrame(scored.matrix, columns=names)
    # customer features: the backfill kernel over everything, at the new events
    expected_c = customer_features(events).loc[new.index].reset_index(drop=True)
    for name in [n for n in names if ALL_FEATURES[n].source == "customer"]:
        np.testing.assert_allclose(matrix[name], expected_c[name], rtol=0, atol=1e-9)
    expected_r = request_features(
        new["timestamp"], new["amount"], customer_features(events).loc[new.index]
    ).reset_index(drop=True)
    for name in [n for n in names if ALL_FEATURES[n].source == "request"]:
        np.testing.assert_allclose(matrix[name], expected_r[name], rtol=0, atol=1e-9)
    # terminal features: what Feast's own online API returns (NaN where older than the TTL)
    online = store.get_online_features(
        features=[
            r
            for r in feast_references([ALL_FEATURES[n] for n in names])
            if r.startswith("terminal")
        ],
        entity_rows=[{"terminal_id": t} for t in new["terminal_id"]],
    ).to_df()
    served = ~np.isnan(matrix["terminal_nb_tx_30d"].to_numpy())
    assert served.sum() > 0.9 * len(served)  # every known terminal has a row from the refresh
    for name in scorer.terminal_features:
        got, want = matrix[name].to_numpy(), online[name].astype(float).to_numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)
    # scores are XGBoost's own on that matrix (not the scorer's model wrapper again)
    np.testing.assert_allclose(
        [d.score for d in scored.decisions],
        world["model"].booster.inplace_predict(scored.matrix.astype(np.float32)),
        atol=1e-6,
    )
    d = scored.decisions[0]
    assert d.model_version == world["model"].version and len(d.reasons) == 3
    assert d.action in ("approve", "review", "decline")


def test_update_is_visible_to_feast_and_replay_is_idempotent(world) -> None:  # type: ignore[no-untyped-def]
    scorer, new, store = world["scorer"], world["new"], world["store"]
    batch = new.iloc[:200]
    first = scorer.score(batch, update=True)
    again = scorer.score(batch, update=True)  # a replay after a crash: same decisions
    assert [d.score for d in first.decisions] == [d.score for d in again.decisions]
    assert [d.action for d in first.decisions] == [d.action for d in again.decisions]
    last = batch.drop_duplicates("customer_id", keep="last").head(5)
    online = store.get_online_features(
        features=[
            "customer_features:customer_nb_tx_30d",
            "customer_features:customer_avg_amount_7d",
        ],
        entity_rows=[{"customer_id": c} for c in last["customer_id"]],
    ).to_df()
    expected = customer_features(world["events"]).loc[last.index]
    np.testing.assert_allclose(
        online["customer_nb_tx_30d"].astype(float), expected["customer_nb_tx_30d"], atol=0
    )
    np.testing.assert_allclose(
        online["customer_avg_amount_7d"].astype(float),
        expected["customer_avg_amount_7d"],
        atol=1e-9,
    )


def _online_customer_features(store, customers: list[str]) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    names = ["customer_nb_tx_30d", "customer_avg_amount_7d", "customer_nb_big_prev_14d"]
    return store.get_online_features(
        features=[f"customer_features:{n}" for n in names],
        entity_rows=[{"customer_id": c} for c in customers],
    ).to_df()[names]


def test_deferred_writes_settle_to_what_inline_writes_give(world) -> None:  # type: ignore[no-untyped-def]
    """The worker's path (:meth:`Scorer.score_deferred`, settled after its produce): the same
    decisions as without update, Feast reads the backfill's values once settled, a re-send
    changes nothing, and the next batch's features follow from the settled state."""
    scorer, new, store = world["scorer"], world["new"], world["store"]
    scorer.score(new.iloc[:200], update=True)  # the history before the batch (or a replay)
    batch, following = new.iloc[200:400], new.iloc[400:600]
    preview = scorer.score(batch, update=False).decisions
    records, pending = scorer.score_deferred(list(event_payloads(batch)))
    assert pending is not None and pending.events == len(batch)
    assert [r["score"] for r in records] == [d.score for d in preview]
    assert [r["reasons"] for r in records] == [
        [reason.model_dump() for reason in d.reasons] for d in preview
    ]
    pending.settle()
    with pytest.raises(RuntimeError):
        pending.settle()  # once only

    last = batch.drop_duplicates("customer_id", keep="last")
    expected = customer_features(world["events"]).loc[last.index]
    online = _online_customer_features(store, last["customer_id"].tolist())
    for name in online.columns:
        np.testing.assert_allclose(
            online[name].astype(float), expected[name].astype(float), rtol=0, atol=1e-9
        )
    pending.resend()  # idempotent: the same writes again
    again = _online_customer_features(store, last["customer_id"].tolist())
    pd.testing.assert_frame_equal(again, online)

    # the next batch scores from the settled state: its customer features are the backfill's
    scored = scorer.score(following, update=False)
    matrix = pd.DataFrame(scored.matrix, columns=scorer.names, index=following.index)
    reference = customer_features(world["events"]).loc[following.index]
    for name in (n for n in scorer.names if ALL_FEATURES[n].source == "customer"):
        np.testing.assert_allclose(
            matrix[name], reference[name].astype(float), rtol=0, atol=1e-9, equal_nan=True
        )


def test_unknown_terminal_is_degraded_and_never_approved_above_the_limit(world) -> None:  # type: ignore[no-untyped-def]
    scorer = world["scorer"]
    row = world["new"].iloc[[0]].copy()
    row["terminal_id"] = pd.array(["never-seen-terminal"], dtype="string[pyarrow]")
    row["transaction_id"] = pd.array(["probe-1"], dtype="string[pyarrow]")
    row["amount"] = 150.0
    decision = scorer.score(row, update=False).decisions[0]
    assert decision.degraded and "terminal features missing" in decision.degraded_reasons
    assert decision.action != "approve"
    assert decision.features_age_s is None


def test_a_model_reading_an_undefined_feature_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    model = world["model"]
    manifest = {
        **model.manifest,
        "features": [*model.manifest["features"], {"name": "no_such_feature"}],
    }
    broken = dataclasses.replace(model, manifest=manifest)
    with pytest.raises(ModelError, match="no_such_feature"):
        Scorer(
            broken,
            world["scorer"].online,
            world["scorer"].history,
            ScoringSettings(),
            terminal_max_age_s=86400,
        )


def test_warmed_caches_read_nothing_more_and_change_no_decision(world) -> None:  # type: ignore[no-untyped-def]
    new = world["new"]
    cold, warm = _fresh(world), _fresh(world)
    terminals, customers = warm.warm(60.0)
    assert terminals == warm.terminals.reads > 0 and customers == warm.history.reads > 0
    assert set(new["terminal_id"]) & set(warm.terminals._cache)
    read_before = (warm.history.reads, warm.terminals.reads)
    cold_records = cold.score(new, update=False).records
    warm_records = warm.score(new, update=False).records
    # everything the new events need was cached (unknown terminals have no row to read)
    assert (warm.history.reads, warm.terminals.reads) == read_before
    assert cold.history.reads > 0 and cold.terminals.reads > 0
    assert [{k: v for k, v in r.items() if k != "decided_at"} for r in warm_records] == [
        {k: v for k, v in r.items() if k != "decided_at"} for r in cold_records
    ]
    # time is up after the terminals' first round trip: no customer is read
    ticks = iter([0.0, *[10.0] * 100])
    stopped = _fresh(world)
    assert stopped.warm(5.0, clock=lambda: next(ticks))[1] == 0 == stopped.history.reads
    off = _fresh(world)
    assert off.warm(0.0) == (0, 0) and off.terminals.reads == 0 == off.history.reads


def test_a_key_watch_skips_the_round_trip_and_still_sees_every_change(world) -> None:  # type: ignore[no-untyped-def]
    """The API's watch (issue 5's tail): calls whose cached rows Redis reported unchanged
    send nothing to Redis, and every decision equals that of a scorer that reads Redis on
    every call, through the stream's state writes and a new terminal row in between."""
    new = world["new"]
    api, plain, stream = _fresh(world), _fresh(world), _fresh(world)
    watch = watch_keys(api, max_silence_s=60.0)
    trips: list[int] = []
    execute = api._execute
    api._execute = lambda commands: trips.append(1) or execute(commands)  # type: ignore[method-assign]
    api.warm(60.0)
    events = new.iloc[300:340].reset_index(drop=True)

    def one_by_one(frame: pd.DataFrame) -> list[dict[str, object]]:
        """Score ``frame`` one transaction per call with both; assert they agree."""
        out = []
        for i in range(len(frame)):
            one = frame.iloc[[i]]
            got, want = api.score(one, update=False), plain.score(one, update=False)
            assert [_without_time(r) for r in got.records] == [
                _without_time(r) for r in want.records
            ]
            out += got.records
        return out

    def until_reported(keys: list[bytes]) -> None:
        deadline = time.monotonic() + 5
        while any(watch.current([k]) for k in keys) and time.monotonic() < deadline:
            watch.poll()
        assert not any(watch.current([k]) for k in keys)

    # nothing changed since the warm-up: only transactions at an unknown terminal (no row
    # to cache) go to Redis
    one_by_one(events)
    unknown = int((~events["terminal_id"].isin(list(api.terminals._cache))).sum())
    assert watch.hits == len(events) - unknown > 0.8 * len(events)
    assert watch.misses == unknown == len(trips)

    # the stream scores and stores these transactions: the customers' states change
    stream.score(events, update=True)
    customers = list(dict.fromkeys(events["customer_id"]))
    until_reported(api.history.version_keys(customers))
    later = events.assign(
        timestamp=events["timestamp"] + pd.Timedelta(minutes=5),
        transaction_id=[f"{t}-later" for t in events["transaction_id"]],
    )
    hits = watch.hits
    records = one_by_one(later)
    assert watch.hits - hits < len(later)  # each changed customer went to Redis once
    by_customer = {r["customer_id"]: r for r in records}
    assert len(by_customer) == len(customers)

    # a new terminal row (a `feast materialize`): the next calls read it
    spec = api.online.views[TERMINAL_VIEW]
    terminals = sorted(set(events["terminal_id"]) & set(api.terminals._cache))
    api.online.write(
        TERMINAL_VIEW,
        pd.DataFrame(
            {
                "terminal_id": terminals,
                "event_timestamp": pd.Timestamp.now(tz="UTC"),
                **{f: 3.0 for f in spec.features},
            }
        ),
    )
    until_reported([api.online.key(TERMINAL_VIEW, t) for t in terminals])
    latest = later.assign(transaction_id=[f"{t}-latest" for t in later["transaction_id"]])
    one_by_one(latest)
    matrix = api.score(latest, update=False).matrix
    column = api.names.index(api.terminal_features[0])
    known = latest["terminal_id"].isin(terminals).to_numpy()
    assert (matrix[known, column] == 3.0).all()
    watch.stop()


def _without_time(record: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in record.items() if k != "decided_at"}


def test_a_warm_up_vouches_only_for_what_it_read(world) -> None:  # type: ignore[no-untyped-def]
    api = _fresh(world)
    early = world["new"].iloc[340:350]
    api.score(early, update=False)  # cached before the watch: read at some time before it
    watch = watch_keys(api, max_silence_s=60.0)
    api.warm(60.0)
    early_customers = set(early["customer_id"])
    assert not any(watch.current([k]) for k in api.history.version_keys(list(early_customers)))
    warmed = [c for c in api.history.cached_ids() if c not in early_customers]
    assert len(warmed) > 100 and watch.current(api.history.version_keys(warmed))
    watch.stop()


def _fresh(world) -> Scorer:  # type: ignore[no-untyped-def]
    """A scorer of the world's model and store with caches of its own."""
    scorer = world["scorer"]
    history = CustomerHistory(scorer.history.client, world["store"].project)
    return Scorer(
        scorer.model,
        scorer.online,
        history,
        scorer.policy,
        scorer.terminal_max_age_s,
        clock=scorer.clock,
    )


def test_an_event_later_than_the_margin_is_degraded(world) -> None:  # type: ignore[no-untyped-def]
    """Its customer's state keeps 7 days more than the longest window: an event up to that
    late is scored on its whole history; a later one may miss pruned history, and says so."""
    past, scorer = world["past"], world["scorer"]
    customer = past["customer_id"].value_counts().index[0]
    mine = past[past["customer_id"] == customer]
    # the latest stored transaction, which the check compares with: the tests before this one
    # may have written later ones of this customer (update=True), so not the past's latest
    key = scorer.history._key(str(customer))
    stored = unpack_entries(scorer.history.client.zrange(key, 0, -1))
    latest = pd.Timestamp(int(stored.ms.max()), unit="ms", tz="UTC")
    assert latest >= mine["timestamp"].max()
    probe = mine.iloc[[-1, -1]].copy()
    probe["transaction_id"] = pd.array(["late-6d", "late-8d"], dtype="string[pyarrow]")
    probe["timestamp"] = [latest - pd.Timedelta(days=6), latest - pd.Timedelta(days=8)]
    within, beyond = scorer.score(probe.drop(columns=["is_fraud"]), update=False).decisions
    assert LATE_EVENT not in within.degraded_reasons
    assert beyond.degraded and LATE_EVENT in beyond.degraded_reasons
    # a customer without history (its state's latest time is the smallest int64) is never late
    newcomer = probe.iloc[[0]].assign(
        customer_id=pd.array(["never-seen-customer"], dtype="string[pyarrow]"),
        transaction_id=pd.array(["first-ever"], dtype="string[pyarrow]"),
    )
    (first,) = world["scorer"].score(newcomer.drop(columns=["is_fraud"]), update=False).decisions
    assert LATE_EVENT not in first.degraded_reasons


def test_a_replay_with_another_amount_replaces_the_stored_entry(world) -> None:  # type: ignore[no-untyped-def]
    """A transaction sent again with a corrected amount is one transaction in the scorer's
    state and in Redis alike, so a process that reads Redis scores as the writer does."""
    scorer = world["scorer"]
    new = world["new"]
    customer = new["customer_id"].iloc[-1]
    mine = new[new["customer_id"] == customer]
    event = mine.iloc[[0]].copy()
    event["transaction_id"] = pd.array(["corrected-1"], dtype="string[pyarrow]")
    scorer.score(event, update=True)
    event["amount"] = event["amount"] * 3 + 1
    scorer.score(event, update=True)  # the same id at the same time: a replay, another amount
    key = scorer.history._key(str(customer))
    stored = unpack_entries(scorer.history.client.zrange(key, 0, -1))
    (digest,) = transaction_digests(["corrected-1"])
    assert stored.amount[stored.ids == digest].tolist() == [float(event["amount"].iloc[0])]
    probe = mine.iloc[[-1]].copy()
    probe["transaction_id"] = pd.array(["after-correction"], dtype="string[pyarrow]")
    probe["timestamp"] = event["timestamp"].iloc[0] + pd.Timedelta(minutes=1)
    warm = scorer.score(probe, update=False).decisions[0]
    cold = _fresh(world).score(probe, update=False).decisions[0]
    assert cold.score == pytest.approx(warm.score, abs=1e-9)
