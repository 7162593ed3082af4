"""Fuzzed bad input for the worker's :func:`streaming.worker.decode` (issue 6, point 5).

Whatever the bytes, ``decode`` returns a valid event or a one-line reason (no traceback),
and the reason names the field when exactly one field is wrong. See the rules in the
docstring of :mod:`streaming.worker`.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fraudstream.schema import MAX_FUTURE_S, MAX_MESSAGE_BYTES, MIN_TIMESTAMP, TransactionEvent
from fraudstream.schema import decode_event as decode
from streaming.worker import DEAD_LETTER_MAX_VALUE_BYTES, Incoming, dead_letter

pytestmark = pytest.mark.unit

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
NOW_S = NOW.timestamp()
FIELDS = ["transaction_id", "timestamp", "customer_id", "terminal_id", "amount", "currency"]
GOOD: dict[str, Any] = {
    "transaction_id": "t-1",
    "timestamp": "2026-05-31T10:00:00Z",
    "customer_id": 17,
    "terminal_id": "term-9",
    "amount": 12.5,
}
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(value: bytes | None) -> TransactionEvent | str:
    result = decode(value, now_s=NOW_S)
    if isinstance(result, str):
        assert result, "empty reason"
        assert "\n" not in result and "\r" not in result, result
        assert "Traceback" not in result
    else:
        assert isinstance(result, TransactionEvent)
    return result


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(st.binary(max_size=300))
@example(b"\xff\xfe\x00")
@example(b"")
@example(b"[" * 10_000)
@example(b'{"a":' * 5_000)
def test_arbitrary_bytes_never_raise(value: bytes) -> None:
    run(value)


@FUZZ
@given(json_values)
@example([1, 2])
@example(3)
@example("x")
@example(None)
def test_arbitrary_json_never_raises(value: Any) -> None:
    result = run(dumps(value))
    assert isinstance(result, str)  # never an event: the required fields are missing


@FUZZ
@given(st.sampled_from(FIELDS), json_values)
def test_one_field_wrong_names_the_field(field: str, value: Any) -> None:
    result = run(dumps({**GOOD, field: value}))
    if isinstance(result, str):
        assert result.startswith(f"{field}:"), result


@FUZZ
@given(st.sampled_from(FIELDS[:-1]))  # currency is optional
def test_missing_field_is_named(field: str) -> None:
    event = {k: v for k, v in GOOD.items() if k != field}
    result = run(dumps(event))
    assert isinstance(result, str) and result.startswith(f"{field}:"), result


@FUZZ
@given(
    st.dictionaries(
        st.text(max_size=12).filter(lambda k: k not in {*GOOD, "currency"}), json_values
    )
)
def test_extra_fields_are_ignored(extra: dict[str, Any]) -> None:
    result = run(dumps({**extra, **GOOD}))
    assert isinstance(result, TransactionEvent), result


@FUZZ
@given(
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(10**400), max_value=10**400),
        st.sampled_from([0, -0.0, -1, 1e308, 10**308, 10**309, 5e-324]),
    )
)
def test_amounts(amount: float | int) -> None:
    result = run(dumps({**GOOD, "amount": amount}))
    try:
        number = float(amount)
    except OverflowError:
        number = math.inf
    if math.isfinite(number) and number > 0:
        assert isinstance(result, TransactionEvent) and result.amount == number
    else:
        assert isinstance(result, str) and result.startswith("amount:"), result


@pytest.mark.parametrize("raw", [b"1e999", b"-1e999", b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_json_amounts(raw: bytes) -> None:
    value = dumps(GOOD).replace(b"12.5", raw)
    result = run(value)
    assert isinstance(result, str) and result.startswith("amount:"), result


offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
timestamps = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.one_of(st.none(), offsets),
)


@FUZZ
@given(timestamps)
@example(datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC))
@example(datetime(2026, 6, 2, 12, 0, 1, tzinfo=UTC))
def test_timestamps(stamp: datetime) -> None:
    result = run(dumps({**GOOD, "timestamp": stamp.isoformat()}))
    if stamp.utcoffset() is None:
        ok = False
    else:
        utc = stamp.astimezone(UTC)
        ok = utc >= MIN_TIMESTAMP and utc.timestamp() <= NOW_S + MAX_FUTURE_S
    if ok:
        assert isinstance(result, TransactionEvent), result
        assert result.timestamp == stamp
    else:
        assert isinstance(result, str) and result.startswith("timestamp:"), result


@pytest.mark.parametrize(
    ("stamp", "word"),
    [
        ("0001-01-01T00:00:00+01:00", "out of range"),  # before year 1 in UTC
        ("9999-12-31T23:59:59-01:00", "out of range"),  # after year 9999 in UTC
        ("1999-12-31T23:59:59Z", "before 2000"),
        ("1970-01-01T00:00:00Z", "before 2000"),
        ("2026-06-02T12:00:01Z", "after the worker's clock"),
        ("2126-01-01T00:00:00Z", "after the worker's clock"),
        ("2026-06-01T12:00:00", "no UTC offset"),
        ("yesterday", "not an ISO-8601"),
    ],
)
def test_timestamp_rules(stamp: str, word: str) -> None:
    result = run(dumps({**GOOD, "timestamp": stamp}))
    assert isinstance(result, str) and result.startswith("timestamp:"), result
    assert word in result, result


@pytest.mark.parametrize(
    "stamp", ["2000-01-01T00:00:00Z", "2018-04-01T00:00:00+02:00", "2026-06-02T11:59:59Z"]
)
def test_timestamps_at_the_bounds_are_valid(stamp: str) -> None:
    assert isinstance(run(dumps({**GOOD, "timestamp": stamp})), TransactionEvent)


def test_future_bound_follows_the_clock() -> None:
    value = dumps({**GOOD, "timestamp": (NOW + timedelta(days=2)).isoformat()})
    assert isinstance(decode(value, now_s=NOW_S), str)
    assert isinstance(decode(value, now_s=NOW_S + 2 * 86_400), TransactionEvent)


def test_tables_keep_no_future_bound() -> None:
    """The future bound is the worker's; a single event elsewhere (the API) may be late."""
    far = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    assert TransactionEvent.model_validate({**GOOD, "timestamp": far}).timestamp.year >= 2027


@pytest.mark.parametrize("size", [MAX_MESSAGE_BYTES + 1, 3 * MAX_MESSAGE_BYTES])
def test_oversized_message_is_refused_before_parsing(size: int) -> None:
    body = dumps({**GOOD, "pad": ""})
    value = body[:-2] + b"x" * (size - len(body)) + body[-2:]
    assert len(value) == size
    assert json.loads(value)  # valid JSON: the size alone is the reason
    result = run(value)
    assert result == f"message: {size:,} bytes, over the 1,000,000-byte limit"
    message = Incoming("transactions", 0, 5, 1.0, b"k", value)
    letter = dead_letter(message, result, "invalid_event", "dlq")
    assert letter.value == value[:DEAD_LETTER_MAX_VALUE_BYTES]
    assert dict(letter.headers)["value_bytes"] == str(size).encode()


def test_message_at_the_limit_is_parsed() -> None:
    body = dumps({**GOOD, "pad": ""})
    value = body[:-2] + b"x" * (MAX_MESSAGE_BYTES - len(body)) + body[-2:]
    assert isinstance(run(value), TransactionEvent)
    # its dead letter (a worker error) would exceed the producer's limit with its headers:
    # the head only (tests/unit/test_dead_letter_size.py)
    letter = dead_letter(Incoming("t", 0, 0, None, None, value), "x", "worker_error", "dlq")
    assert letter.value == value[:DEAD_LETTER_MAX_VALUE_BYTES]
    assert dict(letter.headers)["value_bytes"] == str(MAX_MESSAGE_BYTES).encode()


@FUZZ
@given(st.binary(min_size=1, max_size=50))
def test_non_utf8_is_named(junk: bytes) -> None:
    value = b'{"transaction_id": "' + junk + b'"}'
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        assert run(value).startswith("message: not UTF-8")  # type: ignore[union-attr]
    else:
        assert isinstance(run(value), str)


def test_tombstone() -> None:
    assert run(None) == "message: empty value (tombstone)"
