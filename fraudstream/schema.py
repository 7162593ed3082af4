"""The canonical transaction event, for one message and for a whole table.

One event (a Kafka message value, JSON) is validated by :class:`TransactionEvent`;
a table of events (Parquet, a DataFrame) by :func:`validate_frame`, with the same
rules, vectorised. Identifiers may arrive as strings or integers and are stored as
strings; timestamps must carry an offset and are stored in UTC, on or after
:data:`MIN_TIMESTAMP` (2000-01-01Z), for one event and for a table; the worker adds an upper
bound for live messages. A table's label column, when present, holds 0 or 1 in every row.
The JSON Schema in ``docs/transaction.schema.json`` is generated from :class:`TransactionEvent`.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from fraudstream.errors import FraudstreamError

log = logging.getLogger(__name__)

#: Columns of the canonical table, in order; ``currency`` is optional.
EVENT_COLUMNS = ["transaction_id", "timestamp", "customer_id", "terminal_id", "amount"]
OPTIONAL_COLUMNS = ["currency"]
LABEL_COLUMN = "is_fraud"
MAX_ID_LENGTH = 128
#: The earliest timestamp an event or a table's row may carry (simulated and handbook data
#: start in 2018; an epoch number read as nanoseconds lands in 1970).
MIN_TIMESTAMP = datetime(2000, 1, 1, tzinfo=UTC)


class InvalidEvents(FraudstreamError):
    """A table or message breaks the event schema; the message names rows and columns."""


def _identifier(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("must be a string or an integer")
    text = str(value)
    if not text or len(text) > MAX_ID_LENGTH or text != text.strip():
        raise ValueError(f"must be 1 to {MAX_ID_LENGTH} characters without surrounding spaces")
    return text


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("must be an ISO-8601 string with an offset, e.g. 2026-01-31T12:00:00Z")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{_short(value)} is not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"{_short(value)} has no UTC offset (add Z or +00:00)")
    try:
        utc = parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{_short(value)} is out of range in UTC") from None
    if utc < MIN_TIMESTAMP:
        raise ValueError(f"{_short(value)} is before {MIN_TIMESTAMP.isoformat()}")
    return utc


def _amount(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON number")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(
            "must be a finite number > 0, got an integer too large for a float"
        ) from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"must be a finite number > 0, got {_short(value)}")
    return number


Identifier = Annotated[str, BeforeValidator(_identifier)]
UtcTimestamp = Annotated[datetime, BeforeValidator(_timestamp)]
Amount = Annotated[float, BeforeValidator(_amount)]


class TransactionEvent(BaseModel):
    """One card transaction as it arrives on the ``transactions`` topic (keyed by customer)."""

    model_config = ConfigDict(frozen=True, extra="ignore", title="TransactionEvent")

    transaction_id: Identifier = Field(description="unique id (string or integer)")
    timestamp: UtcTimestamp = Field(description="ISO-8601 with offset; stored as UTC")
    customer_id: Identifier = Field(description="card / customer (string or integer)")
    terminal_id: Identifier = Field(description="merchant terminal (string or integer)")
    amount: Amount = Field(description="finite, > 0")
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$", description="ISO 4217")

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of the message as producers send it."""
        id_schema = {
            "anyOf": [{"type": "string", "minLength": 1, "maxLength": 128}, {"type": "integer"}]
        }
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "TransactionEvent",
            "description": cls.__doc__,
            "type": "object",
            "required": ["transaction_id", "timestamp", "customer_id", "terminal_id", "amount"],
            "properties": {
                "transaction_id": {**id_schema, "description": "unique id"},
                "timestamp": {
                    "type": "string",
                    "format": "date-time",
                    "description": "ISO-8601 with a UTC offset (Z or +hh:mm); stored as UTC",
                },
                "customer_id": {**id_schema, "description": "card / customer; the message key"},
                "terminal_id": {**id_schema, "description": "merchant terminal"},
                "amount": {"type": "number", "exclusiveMinimum": 0, "description": "finite"},
                "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            },
            "additionalProperties": True,
        }

    def to_json_dict(self) -> dict[str, Any]:
        data = self.model_dump(exclude_none=True)
        data["timestamp"] = self.timestamp.isoformat().replace("+00:00", "Z")
        return data


def ahead_of_clock(
    event: TransactionEvent, now_s: float, max_ahead_s: float, whose: str
) -> str | None:
    """Why ``event`` is refused for its time, or ``None``: timed more than ``max_ahead_s``
    after ``whose`` time (``"the worker's clock"``), which reads ``now_s``
    (``scoring.max_event_ahead_s``). The worker and the API both refuse such an event: stored,
    it would become the customer's latest transaction and prune the history before it."""
    if event.timestamp.timestamp() <= now_s + max_ahead_s:
        return None
    clock = datetime.fromtimestamp(now_s, UTC).isoformat()
    return (
        f"timestamp: {event.timestamp.isoformat()} is more than "
        f"{max_ahead_s / 3600:g} h after {whose} ({clock})"
    )


#: A message value over this size is refused unparsed (Kafka's default limit is ~1 MB).
MAX_MESSAGE_BYTES = 1_000_000
#: A live event may be timed at most this far after the reader's clock (clock skew); the
#: default of ``scoring.max_event_ahead_s``.
MAX_FUTURE_S = 86_400.0


def describe_validation_error(exc: ValidationError) -> str:
    """``field: message; ...`` from pydantic's errors, without URLs or input echoes."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def decode_event(
    value: bytes | None,
    now_s: float | None = None,
    max_ahead_s: float = MAX_FUTURE_S,
    whose: str = "the worker's clock",
) -> TransactionEvent | str:
    """The event in a Kafka message's ``value``, or a one-line description of what is wrong
    with it: the one rule the worker (which dead-letters what it refuses) and the archive
    (which keeps it apart as ``rejected``) apply to the transactions topic.

    Never raises. ``now_s`` (default: the clock), read as ``whose`` clock, bounds the event
    time from above (:func:`ahead_of_clock`).
    """
    if value is None:
        return "message: empty value (tombstone)"
    if len(value) > MAX_MESSAGE_BYTES:
        return f"message: {len(value):,} bytes, over the {MAX_MESSAGE_BYTES:,}-byte limit"
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"message: not UTF-8 ({exc})"
    try:
        event = TransactionEvent.model_validate_json(text)
    except ValidationError as exc:
        return _one_line(describe_validation_error(exc))
    except Exception as exc:  # a validator bug must not stop the reader
        return _one_line(f"message: {type(exc).__name__}: {exc}")
    now_s = time.time() if now_s is None else now_s
    return ahead_of_clock(event, now_s, max_ahead_s, whose) or event


def _rows(mask: np.ndarray | pd.Series, limit: int = 5) -> str:
    index = np.flatnonzero(np.asarray(mask))
    shown = ", ".join(str(i) for i in index[:limit])
    more = f" and {len(index) - limit} more" if len(index) > limit else ""
    return f"{len(index)} row(s) (positions {shown}{more})"


ID_DTYPE = "string[pyarrow]"
#: A timestamp's text ends in an offset (``Z``, ``+02:00``, ``-0530``).
OFFSET_PATTERN = r"(?:Z|[+-]\d{2}:?\d{2})$"


def _ids(series: pd.Series, column: str) -> pd.Series:
    if series.isna().any():
        raise InvalidEvents(f"column {column!r}: missing values in {_rows(series.isna())}")
    if pd.api.types.is_bool_dtype(series):
        raise InvalidEvents(f"column {column!r}: booleans are not identifiers")
    if pd.api.types.is_float_dtype(series):
        whole = np.mod(series.to_numpy(), 1) == 0
        if not whole.all():
            raise InvalidEvents(f"column {column!r}: non-integer numbers in {_rows(~whole)}")
        series = series.astype("int64")
    if pd.api.types.is_integer_dtype(series):
        text = pa.compute.cast(pa.array(series.to_numpy()), pa.string())
        return pd.Series(pd.array(text, dtype=ID_DTYPE), index=series.index)
    if series.map(type).isin([bool, float]).any():
        kinds = series.map(type).isin([bool, float])
        raise InvalidEvents(f"column {column!r}: booleans or floats among ids in {_rows(kinds)}")
    text = series.astype(str).astype(ID_DTYPE)
    bad = (text.str.len() == 0) | (text.str.len() > MAX_ID_LENGTH) | (text != text.str.strip())
    if bad.any():
        raise InvalidEvents(f"column {column!r}: empty, too long or padded ids in {_rows(bad)}")
    return text


def _utc(series: pd.Series) -> pd.Series:
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        missing = series.isna().to_numpy()
        if missing.any():
            raise InvalidEvents(f"column 'timestamp': missing values in {_rows(missing)}")
        return series.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    if pd.api.types.is_datetime64_dtype(series):
        raise InvalidEvents(
            "column 'timestamp': naive datetimes (no time zone); localise them to UTC first "
            "or use the handbook adapter, which documents that its times are UTC"
        )
    text = series.astype("string")
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    unparsable = parsed.isna().to_numpy()
    if unparsable.any():
        raise InvalidEvents(f"column 'timestamp': unparsable timestamps in {_rows(unparsable)}")
    naive = ~text.str.contains(OFFSET_PATTERN, regex=True).fillna(False).to_numpy()
    if naive.any():
        raise InvalidEvents(f"column 'timestamp': no UTC offset in {_rows(naive)}")
    return parsed.astype("datetime64[ns, UTC]")


def _not_early(stamps: pd.Series) -> None:
    early = (stamps < MIN_TIMESTAMP).to_numpy()
    if early.any():
        raise InvalidEvents(
            f"column 'timestamp': before {MIN_TIMESTAMP.isoformat()} in {_rows(early)}, "
            f"e.g. {stamps[early].iloc[0].isoformat()}"
        )


def _labels(series: pd.Series) -> np.ndarray:
    """The label column as int8, or :class:`InvalidEvents` naming rows not 0 or 1."""
    missing = series.isna().to_numpy()
    if missing.any():
        raise InvalidEvents(f"column {LABEL_COLUMN!r}: missing values in {_rows(missing)}")
    if pd.api.types.is_numeric_dtype(series):  # booleans included
        values = series.to_numpy(dtype="float64")
    else:  # text is not a label, even "1"
        text = series.map(lambda v: isinstance(v, str | bytes)).to_numpy(bool)
        numbers = pd.to_numeric(series.where(~text), errors="coerce")
        values = numbers.to_numpy(dtype="float64", na_value=np.nan)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        raise InvalidEvents(f"column {LABEL_COLUMN!r}: values other than 0 and 1 in {_rows(bad)}")
    return values.astype("int8")


def validate_frame(df: pd.DataFrame, *, keep: tuple[str, ...] = ()) -> pd.DataFrame:
    """Return the canonical table for ``df`` or raise :class:`InvalidEvents` naming what is wrong.

    Output columns: :data:`EVENT_COLUMNS`, ``currency`` when present, and the extra columns
    named in ``keep`` (for example the label, then checked: 0 or 1 in every row, as int8).
    Rows are sorted by timestamp (stable); errors name rows by their position in ``df``.
    """
    missing = [c for c in EVENT_COLUMNS if c not in df.columns]
    if missing:
        raise InvalidEvents(f"missing column(s) {missing}; found {list(df.columns)}")
    absent = [c for c in keep if c not in df.columns]
    if absent:
        raise InvalidEvents(f"missing column(s) {absent}")
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    for column in ("transaction_id", "customer_id", "terminal_id"):
        out[column] = _ids(df[column].reset_index(drop=True), column).array
    out["timestamp"] = _utc(df["timestamp"].reset_index(drop=True)).array
    _not_early(out["timestamp"])
    amount = pd.to_numeric(df["amount"].reset_index(drop=True), errors="coerce").astype("float64")
    bad_amount = ~np.isfinite(amount.to_numpy()) | (amount.to_numpy() <= 0)
    if bad_amount.any():
        raise InvalidEvents(
            f"column 'amount': NaN, infinite or non-positive in {_rows(bad_amount)}"
        )
    out["amount"] = amount.to_numpy()
    if "currency" in df.columns:
        out["currency"] = df["currency"].reset_index(drop=True).astype("string").to_numpy()
    for column in keep:
        kept = df[column].reset_index(drop=True)
        out[column] = _labels(kept) if column == LABEL_COLUMN else kept.to_numpy()
    duplicated = out["transaction_id"].duplicated(keep=False).to_numpy()
    if duplicated.any():
        raise InvalidEvents(f"column 'transaction_id': duplicate ids in {_rows(duplicated)}")
    out["timestamp"] = out["timestamp"].astype("datetime64[ns, UTC]")
    return out.sort_values("timestamp", kind="stable").reset_index(drop=True)


#: Handbook Parquet column → canonical column.
HANDBOOK_COLUMNS = {
    "TRANSACTION_ID": "transaction_id",
    "TX_DATETIME": "timestamp",
    "CUSTOMER_ID": "customer_id",
    "TERMINAL_ID": "terminal_id",
    "TX_AMOUNT": "amount",
    "TX_FRAUD": LABEL_COLUMN,
    "TX_FRAUD_SCENARIO": "fraud_scenario",
}


#: The handbook rounds its simulated amounts to cents, so a few are 0.00. The adapter
#: repairs those to the smallest positive amount; the count is in ``df.attrs["repairs"]``.
HANDBOOK_MIN_AMOUNT = 0.01


def _handbook_times(stamps: pd.Series) -> pd.Series:
    """``TX_DATETIME`` as UTC times: naive ones are UTC (the handbook's), ones with an offset
    are converted; unparsable or missing ones are refused, naming their rows."""
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        return stamps
    if pd.api.types.is_datetime64_dtype(stamps):
        return stamps.dt.tz_localize("UTC")
    if pd.api.types.is_numeric_dtype(stamps) and not pd.api.types.is_bool_dtype(stamps):
        # nanoseconds, as pandas reads numbers; epoch seconds land in 1970 and are refused
        parsed = pd.to_datetime(stamps, utc=True, errors="coerce")
    else:
        text = stamps.astype("string")
        # apart: pandas reads a naive time after one with an offset in that offset
        aware = text.str.contains(OFFSET_PATTERN, regex=True).fillna(False).to_numpy(bool)
        parsed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
        for part in (aware, ~aware):
            if part.any():
                parsed[part] = pd.to_datetime(
                    text[part], utc=True, errors="coerce", format="ISO8601"
                )
    unparsable = parsed.isna().to_numpy()
    if unparsable.any():
        raise InvalidEvents(
            f"column 'TX_DATETIME': unparsable or missing times in {_rows(unparsable)}"
        )
    return parsed


def from_handbook(df: pd.DataFrame) -> pd.DataFrame:
    """Canonical table from the handbook's columns (its naive ``TX_DATETIME`` is UTC; times
    with an offset are converted).

    Documented repair: amounts of exactly 0.00 become :data:`HANDBOOK_MIN_AMOUNT`; the count
    is logged and kept in ``attrs["repairs"]["zero_amount_to_0.01"]``. Anything else invalid
    is an error, as for any table.
    """
    missing = [c for c in HANDBOOK_COLUMNS if c not in df.columns and c != "TX_FRAUD_SCENARIO"]
    if missing:
        raise InvalidEvents(f"not a handbook table: missing column(s) {missing}")
    renamed = df.rename(columns=HANDBOOK_COLUMNS)
    renamed["timestamp"] = _handbook_times(renamed["timestamp"])
    zero = renamed["amount"] == 0
    if zero.any():
        renamed.loc[zero, "amount"] = HANDBOOK_MIN_AMOUNT
        log.warning(
            "handbook adapter: %d amount(s) of 0.00 set to %.2f", zero.sum(), HANDBOOK_MIN_AMOUNT
        )
    keep = tuple(c for c in (LABEL_COLUMN, "fraud_scenario") if c in renamed.columns)
    out = validate_frame(renamed, keep=keep)
    out.attrs["repairs"] = {"zero_amount_to_0.01": int(zero.sum())}
    return out


def is_handbook(columns: list[str]) -> bool:
    return "TX_DATETIME" in columns and "TX_AMOUNT" in columns


def _read_parquet(path: str | Any) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise InvalidEvents(f"{path}: no such file") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidEvents(f"{path}: not a Parquet file ({_one_line(str(exc))})") from None


def read_transactions(path: str | Any) -> pd.DataFrame:
    """Read a Parquet file in canonical or handbook columns into the canonical table.

    Raises :class:`InvalidEvents` naming ``path``: not a Parquet file, no rows, or a table
    that :func:`validate_frame` (or :func:`from_handbook`) refuses.
    """
    df = _read_parquet(path)
    if len(df) == 0:
        raise InvalidEvents(f"{path}: no rows")
    try:
        if is_handbook(list(df.columns)):
            return from_handbook(df)
        keep = tuple(c for c in (LABEL_COLUMN, "fraud_scenario") if c in df.columns)
        return validate_frame(df, keep=keep)
    except InvalidEvents as exc:
        raise InvalidEvents(f"{path}: {exc}") from None
