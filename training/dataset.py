"""Point-in-time-correct training sets through Feast.

:func:`historical_features` asks Feast's ``get_historical_features`` for the Feast-served
features of each transaction as of its own timestamp, then adds the request features
with the same module the stream uses. :func:`asof_features` answers the same question
with one DuckDB ``ASOF JOIN`` generated from the Feast registry (sources, join keys,
timestamp fields, TTLs, feature names): Feast stays the only place where the views are
defined, and a test proves both give the same rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import duckdb
import numpy as np
import pandas as pd
from feast import FeatureStore

from fraudstream.features import Feature, feast_references, request_features, served_features
from fraudstream.model import model_matrix

log = logging.getLogger(__name__)

ENTITY_COLUMNS = ["transaction_id", "customer_id", "terminal_id", "event_timestamp"]


def entity_frame(events: pd.DataFrame) -> pd.DataFrame:
    """The entity rows Feast needs: ids, join keys and the as-of time of each transaction."""
    frame = events[["transaction_id", "customer_id", "terminal_id", "timestamp"]].rename(
        columns={"timestamp": "event_timestamp"}
    )
    return frame.reset_index(drop=True)


def _by_view(features: Sequence[Feature]) -> dict[str, list[str]]:
    views: dict[str, list[str]] = {}
    for ref in feast_references(features):
        view, name = ref.split(":")
        views.setdefault(view, []).append(name)
    return views


def _align(events: pd.DataFrame, joined: pd.DataFrame, features: Sequence[Feature]) -> pd.DataFrame:
    """Model matrix rows in ``events`` order: the served features joined by transaction id,
    then the request features computed from the transaction and the served ones."""
    served = [f.name for f in served_features(features)]
    joined = joined.drop_duplicates("transaction_id").set_index("transaction_id")
    ids = events["transaction_id"].to_numpy()
    missing = ~pd.Index(ids).isin(joined.index)
    if missing.any():
        raise RuntimeError(f"{int(missing.sum())} transactions came back without features")
    out = joined.loc[ids, served].reset_index(drop=True)
    request = request_features(
        events["timestamp"].reset_index(drop=True), events["amount"].reset_index(drop=True), out
    )
    for f in features:
        if f.source == "request":
            out[f.name] = request[f.name].to_numpy()
    return out[[f.name for f in features]]


def historical_features(
    store: FeatureStore, events: pd.DataFrame, features: Sequence[Feature]
) -> pd.DataFrame:
    """Model inputs for ``events`` via Feast ``get_historical_features`` (point in time)."""
    job = store.get_historical_features(
        entity_df=entity_frame(events), features=feast_references(features)
    )
    return _align(events, job.to_df(), features)


def asof_features(
    store: FeatureStore, events: pd.DataFrame, features: Sequence[Feature]
) -> pd.DataFrame:
    """The same rows as :func:`historical_features`, by a DuckDB ASOF join per view.

    For each view: the latest row with the same join key and ``timestamp <= as-of``,
    dropped (left as null) when older than the view's TTL, exactly Feast's semantics.
    """
    con = duckdb.connect()
    entities = entity_frame(events)
    con.register("entities_df", entities)
    select = ["e.transaction_id"]
    joins = []
    for i, (view_name, names) in enumerate(_by_view(features).items()):
        view = store.get_feature_view(view_name)
        source = view.batch_source
        path = getattr(source, "path", None)
        if source is None or path is None:
            raise RuntimeError(f"view {view_name} has no file source")
        keys = list(view.join_keys)
        ts = source.timestamp_field
        ttl_s = int(view.ttl.total_seconds()) if view.ttl else 0
        alias = f"v{i}"
        cols = ", ".join(f'"{n}"' for n in names)
        key_cols = ", ".join(f'"{k}"' for k in keys)
        on = " AND ".join(f'e."{k}" = {alias}."{k}"' for k in keys)
        # Identifiers come from the Feast registry (this repo's definitions), not from input.
        joins.append(
            f'ASOF LEFT JOIN (SELECT {key_cols}, CAST("{ts}" AS TIMESTAMPTZ) AS _ts, {cols} '  # noqa: S608
            f"FROM read_parquet('{path}')) {alias} ON {on} AND e.event_timestamp >= {alias}._ts"
        )
        # Feast keeps a row exactly TTL old (``ts + ttl >= entity ts``), as the online age check
        fresh = f"{alias}._ts >= e.event_timestamp - INTERVAL {ttl_s} SECOND" if ttl_s else "TRUE"
        select += [f'CASE WHEN {fresh} THEN {alias}."{n}" END AS "{n}"' for n in names]
    entity_sql = (
        "SELECT transaction_id, customer_id, terminal_id, "
        "CAST(event_timestamp AS TIMESTAMPTZ) AS event_timestamp FROM entities_df"
    )
    sql = f"SELECT {', '.join(select)} FROM ({entity_sql}) e {' '.join(joins)}"  # noqa: S608
    joined = con.execute(sql).df()
    con.close()
    return _align(events, joined, features)


def as_matrix(frame: pd.DataFrame) -> np.ndarray:
    """float32 matrix for XGBoost (nulls become NaN, XGBoost's missing value), as the
    scorer builds it (:func:`~fraudstream.model.model_matrix`)."""
    return model_matrix(frame.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan))
