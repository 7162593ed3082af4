"""Labels: the verdicts (chargebacks, analyst reviews) that arrive days after a transaction.

A label is a JSON message on the ``labels`` topic, keyed by ``transaction_id``::

    {"transaction_id": "tx-1", "label": 1, "reported_at": "2026-11-28T10:15:00Z"}

``label`` is 1 for fraud and 0 for a transaction confirmed genuine; a transaction without a
label is unknown (not yet reported), not genuine. ``reported_at`` is when the verdict became
known (UTC): label-based features and quality figures use a label only from then on. A
later label for the same transaction replaces an earlier one (a corrected verdict).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from fraudstream.schema import Identifier, UtcTimestamp


def _label(value: Any) -> int:
    if isinstance(value, bool) or value not in (0, 1):
        raise ValueError("must be 0 (genuine) or 1 (fraud)")
    return int(value)


Label = Annotated[Literal[0, 1], BeforeValidator(_label)]


class LabelEvent(BaseModel):
    """One verdict on one transaction, as it arrives on the ``labels`` topic."""

    model_config = ConfigDict(frozen=True, extra="ignore", title="LabelEvent")

    transaction_id: Identifier = Field(description="the labelled transaction")
    label: Label = Field(description="1: fraud, 0: confirmed genuine")
    reported_at: UtcTimestamp = Field(description="when the verdict became known (UTC)")

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "transaction_id": self.transaction_id,
            "label": self.label,
            "reported_at": _iso(self.reported_at),
        }


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")
