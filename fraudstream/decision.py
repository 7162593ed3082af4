"""The decision record emitted to the ``decisions`` topic (and by the REST API), versioned.

Schema version 1 (``docs/decision.schema.json``): one JSON object per transaction, keyed by
``transaction_id`` on the topic.

``shadow_score`` and ``shadow_model_version`` (issue 7) were added as optional fields with a
null default and no other change, so the version stays 1: a record without them is still
valid, and readers that ignore unknown fields (the schema does not forbid them) read the new
records unchanged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

DECISION_SCHEMA_VERSION = 1


class Reason(BaseModel):
    """One of the features that moved the score most (XGBoost ``pred_contribs``)."""

    model_config = ConfigDict(frozen=True)

    feature: str
    value: float | None = Field(description="the feature's value; null when missing")
    contribution: float = Field(description="contribution to the log-odds of fraud")


class Decision(BaseModel):
    """What fraudstream decided for one transaction, and why."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = DECISION_SCHEMA_VERSION
    transaction_id: str
    customer_id: str
    terminal_id: str
    amount: float
    event_time: datetime = Field(description="the transaction's timestamp (UTC)")
    score: float = Field(ge=0, le=1, description="fraud probability from the model")
    action: Literal["approve", "review", "decline"]
    model_version: str = Field(description="the model that decided (the champion)")
    shadow_score: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="the shadow model's score, logged only: it never changes the action; "
        "null without a shadow",
    )
    shadow_model_version: str | None = Field(
        default=None, description="the shadow model's version; null without a shadow"
    )
    reasons: list[Reason] = Field(description="top 3 features by absolute contribution")
    reasons_method: Literal["shap", "approx"] = Field(
        default="shap",
        description="how the contributions were computed: exact SHAP values (TreeSHAP) or "
        "XGBoost's approximation (approx_contribs)",
    )
    features_age_s: float | None = Field(
        description="age at event_time of the oldest online (Feast) feature used; "
        "null when none was found"
    )
    degraded: bool
    degraded_reasons: list[str] = Field(default_factory=list)
    decided_at: datetime
    latency_ms: float | None = Field(
        default=None, description="from the input message's Kafka timestamp to emission"
    )

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def encode_record(record: dict[str, Any], latency_ms: float | None = None) -> bytes:
    """The JSON of a decision record (a :class:`Decision` as a dict, datetimes aware UTC),
    with ``latency_ms``: the bytes ``Decision.model_dump_json`` gives, without building it."""
    return orjson.dumps({**record, "latency_ms": latency_ms}, option=orjson.OPT_UTC_Z)
