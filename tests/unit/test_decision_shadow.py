"""The decision record's shadow fields: optional (schema version 1 unchanged), carried by the
worker's plain-dict encoding exactly as the Decision model reads them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from fraudstream.decision import DECISION_SCHEMA_VERSION, Decision, encode_record

pytestmark = pytest.mark.unit


def record(**extra: object) -> dict[str, object]:
    now = datetime(2026, 11, 21, 10, 15, tzinfo=UTC)
    return {
        "schema_version": DECISION_SCHEMA_VERSION,
        "transaction_id": "tx-1",
        "customer_id": "42",
        "terminal_id": "T-9",
        "amount": 12.5,
        "event_time": now,
        "score": 0.25,
        "action": "approve",
        "model_version": "champion-1",
        "reasons": [],
        "reasons_method": "approx",
        "features_age_s": 3.0,
        "degraded": False,
        "degraded_reasons": [],
        "decided_at": now,
        **extra,
    }


def test_shadow_fields_round_trip_and_default_to_null() -> None:
    shadowed = record(shadow_score=0.75, shadow_model_version="challenger-2")
    decision = Decision.model_validate_json(encode_record(shadowed, latency_ms=1.5))
    assert (decision.shadow_score, decision.shadow_model_version) == (0.75, "challenger-2")
    assert decision.model_version == "champion-1" and decision.action == "approve"
    assert orjson.loads(encode_record(shadowed, 1.5)) == orjson.loads(decision.model_dump_json())
    # a record written before the shadow fields existed is still a valid version-1 record
    old = Decision.model_validate_json(encode_record(record()))
    assert old.shadow_score is None and old.shadow_model_version is None
    with pytest.raises(ValidationError, match="shadow_score"):
        Decision.model_validate(record(shadow_score=1.5, shadow_model_version="x"))


def test_the_schema_file_lists_the_shadow_fields_as_optional() -> None:
    path = Path(__file__).resolve().parents[2] / "docs" / "decision.schema.json"
    schema = json.loads(path.read_text())
    assert {"shadow_score", "shadow_model_version"} <= set(schema["properties"])
    assert not {"shadow_score", "shadow_model_version"} & set(schema["required"])
    assert DECISION_SCHEMA_VERSION == 1
