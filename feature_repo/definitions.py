"""Feast definitions of fraudstream: entities, sources, feature views, feature services.

Only definitions live here (``feast apply`` imports every Python file of this folder).
The feature names and types come from ``fraudstream.features``, where each feature is
defined and computed once; the offline files are written by ``fraudstream features
backfill`` into ``data/`` beside this file.
"""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float64, Int64

from fraudstream.features import (
    CUSTOMER_FEATURES,
    CUSTOMER_VIEW,
    MODEL_FEATURE_SERVICES,
    OFFLINE_FILES,
    TERMINAL_FEATURES,
    TERMINAL_VIEW,
    feature_dtype,
)

DATA = Path(__file__).resolve().parent / "data"

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="A card / customer.",
)
terminal = Entity(
    name="terminal",
    join_keys=["terminal_id"],
    value_type=ValueType.STRING,
    description="A merchant terminal.",
)

_TYPES = {"int64": Int64, "float64": Float64}

customer_batch = FileSource(
    name="customer_features_batch",
    path=str(DATA / OFFLINE_FILES[CUSTOMER_VIEW]),
    timestamp_field="event_timestamp",
    description="Backfilled customer window features, one row per transaction.",
)
customer_push = PushSource(
    name="customer_features_push",
    batch_source=customer_batch,
    description="The stream pushes each customer's fresh window features here.",
)
customer_features = FeatureView(
    name=CUSTOMER_VIEW,
    entities=[customer],
    ttl=timedelta(days=1),
    schema=[Field(name=f.name, dtype=_TYPES[feature_dtype(f)]) for f in CUSTOMER_FEATURES],
    source=customer_push,
    online=True,
    description="Real-time customer windows, current transaction included.",
)

terminal_batch = FileSource(
    name="terminal_features_batch",
    path=str(DATA / OFFLINE_FILES[TERMINAL_VIEW]),
    timestamp_field="event_timestamp",
    description="Terminal windows with the label delay, as of each terminal transaction.",
)
terminal_features = FeatureView(
    name=TERMINAL_VIEW,
    entities=[terminal],
    ttl=timedelta(days=2),
    schema=[Field(name=f.name, dtype=_TYPES[feature_dtype(f)]) for f in TERMINAL_FEATURES],
    source=terminal_batch,
    online=True,
    description="Terminal activity and risk over labels known a delay earlier.",
)

_VIEWS = {CUSTOMER_VIEW: customer_features, TERMINAL_VIEW: terminal_features}

# One feature service per model version: the Feast features that version reads.
feature_services = [
    FeatureService(
        name=service,
        features=[_VIEWS[view][names] for view, names in views.items()],
        description="Online features of one model version (request features aside).",
    )
    for service, views in MODEL_FEATURE_SERVICES.items()
]
for _service in feature_services:
    globals()[_service.name] = _service
