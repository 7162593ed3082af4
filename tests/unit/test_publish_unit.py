"""Pure pieces of publishing and reading: pacing arithmetic, encoding, record formatting."""

from __future__ import annotations

import base64

import orjson
import pandas as pd
import pytest

from fraudstream.consume import Record, dumps_line, format_record, parse_value
from fraudstream.publish import (
    Pacer,
    PublishError,
    PublishResult,
    encode,
    event_payloads,
    label_table,
    poll_then_sleep,
    simulated_events,
)
from fraudstream.schema import TransactionEvent, validate_frame

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_pacer_schedule_is_absolute() -> None:
    clock = FakeClock()
    pacer = Pacer(400, clock=clock)
    assert pacer.due(0) == 100.0
    assert pacer.due(200) == pytest.approx(100.5)
    assert pacer.delay(0) == 0.0
    clock.now = 100.1
    assert pacer.delay(40) == pytest.approx(0.0)  # event 40 is due at exactly 100.1
    assert pacer.delay(80) == pytest.approx(0.1)


def test_pacer_has_no_drift_when_sends_are_slow_or_sleeps_overshoot() -> None:
    clock = FakeClock()
    pacer = Pacer(1000, clock=clock)

    def overshooting_sleep(seconds: float) -> None:
        clock.now += seconds + 0.0004  # every sleep overshoots by 0.4 ms

    for i in range(10_000):
        pacer.wait(i, overshooting_sleep)
        clock.now += 0.0003  # each send costs 0.3 ms
    # 10,000 events at 1,000/s: the last was due at +9.999 s; lateness does not accumulate.
    assert clock.now - 100.0 == pytest.approx(9.999, abs=0.002)


def test_pacer_catches_up_after_a_stall_without_waiting() -> None:
    clock = FakeClock()
    pacer = Pacer(10, clock=clock)
    pacer.due(0)
    clock.now += 5.0  # a stall of 5 s: events 1..50 are all due now
    slept: list[float] = []
    for i in range(1, 51):
        pacer.wait(i, slept.append)
    assert slept == []
    pacer.wait(51, clock.sleep)
    assert clock.now == pytest.approx(105.1)


def test_waits_under_a_millisecond_sleep_instead_of_polling_at_once() -> None:
    """A producer's poll counts whole milliseconds: poll(0.0004) would return at once and the
    pacing loop would spin; the wait is slept instead, and whole milliseconds are polled."""
    clock = FakeClock()
    calls: list[tuple[str, float]] = []

    def poll(seconds: float) -> None:
        calls.append(("poll", seconds))
        clock.now += int(seconds * 1000) / 1000  # what librdkafka waits: whole ms

    def sleep(seconds: float) -> None:
        calls.append(("sleep", seconds))
        clock.now += seconds

    pacer = Pacer(1000, clock=clock)
    pacer.due(0)
    clock.now += 0.0006  # event 1 is due in 0.4 ms
    pacer.wait(1, poll_then_sleep(poll, sleep))
    assert calls == [("sleep", pytest.approx(0.0004))]
    calls.clear()
    pacer.wait(4, poll_then_sleep(poll, sleep))  # due in 3 ms: polled, then nothing left
    assert [kind for kind, _ in calls] == ["poll"]
    assert clock.now == pytest.approx(100.004)
    calls.clear()
    clock.now += 0.0005
    pacer.wait(7, poll_then_sleep(poll, sleep))  # due in 2.5 ms: 2 ms polled, 0.5 ms slept
    assert [kind for kind, _ in calls] == ["poll", "sleep"]
    assert clock.now == pytest.approx(100.007)


def test_unpaced_and_invalid_rates() -> None:
    clock = FakeClock()
    pacer = Pacer(None, clock=clock)
    assert pacer.delay(10**6) == 0.0
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(PublishError):
            Pacer(bad)


def test_summary_rate_and_fields() -> None:
    result = PublishResult(topic="t", sent=200, delivered=199, failed=1, seconds=0.5)
    result.errors.append("boom")
    assert result.summary() == {
        "topic": "t",
        "sent": 200,
        "delivered": 199,
        "failed": 1,
        "seconds": 0.5,
        "rate": 400.0,
        "first_error": "boom",
    }
    assert PublishResult(topic="t").summary()["rate"] == 0.0


def table() -> pd.DataFrame:
    return validate_frame(
        pd.DataFrame(
            {
                "transaction_id": [2, 1],
                "timestamp": ["2024-01-01T00:00:01+01:00", "2024-01-01T00:00:00Z"],
                "customer_id": ["c-1", 7],
                "terminal_id": [5, 6],
                "amount": [10.5, 3],
                "is_fraud": [1, 0],
            }
        ),
        keep=("is_fraud",),
    )


def test_messages_are_the_events_json_keyed_by_customer_without_labels() -> None:
    events = list(event_payloads(table()))
    key, value = encode(events[0])
    assert key == b"c-1"
    data = orjson.loads(value)
    assert data == {
        "transaction_id": "2",
        "timestamp": "2023-12-31T23:00:01Z",
        "customer_id": "c-1",
        "terminal_id": "5",
        "amount": 10.5,
    }
    assert TransactionEvent.model_validate(data) == TransactionEvent.model_validate_json(value)
    assert encode(events[1])[0] == b"7"


def test_label_table() -> None:
    labels = label_table(table())
    assert labels is not None
    assert labels.to_dict("list") == {"transaction_id": ["2", "1"], "is_fraud": [1, 0]}
    assert label_table(table().drop(columns="is_fraud")) is None


def test_simulated_events_take_the_latest_and_get_run_ids() -> None:
    events = simulated_events(30, seed=2, customers=20, terminals=50, run_id="r1")
    assert len(events) == 30
    assert events["transaction_id"].str.startswith("sim2-r1-").all()
    assert events["timestamp"].is_monotonic_increasing
    with pytest.raises(PublishError):
        simulated_events(0)


def record(value: bytes | None, **kw: object) -> Record:
    fields: dict = {"topic": "t", "partition": 1, "offset": 7, "timestamp_ms": 0, "key": b"k"}
    fields.update(kw)
    return Record(value=value, **fields)


def test_json_values_print_as_they_are() -> None:
    assert format_record(record(b'{"a": 1}')) == {"a": 1}
    assert format_record(record(b"[1, 2]")) == [1, 2]
    assert dumps_line(format_record(record(b' {"a" : "\\u00e9"} '))) == '{"a":"é"}'


def test_metadata_envelope() -> None:
    line = format_record(
        record(b'{"a": 1}', headers=(("error", b"bad"), ("error", b"worse"), ("x", None))),
        metadata=True,
    )
    assert line == {
        "topic": "t",
        "partition": 1,
        "offset": 7,
        "timestamp": "1970-01-01T00:00:00.000Z",
        "key": "k",
        "headers": {"error": ["bad", "worse"], "x": None},
        "value": {"a": 1},
    }


@pytest.mark.parametrize("raw", [b"\xff\xfe\x00", b"not json", b'{"a": ', b"", b"NaN", b"\xe2\x82"])
def test_bad_bytes_never_crash(raw: bytes) -> None:
    line = format_record(record(raw, key=b"\xff", timestamp_ms=None))
    assert base64.b64decode(line["value_base64"]) == raw
    assert line["error"].startswith("not JSON")
    assert line["key"] == {"base64": "/w=="}
    assert line["timestamp"] is None
    assert orjson.loads(dumps_line(line)) == line


def test_tombstone_is_an_envelope_with_null_value() -> None:
    line = format_record(record(None, key=None))
    assert line["value"] is None and line["key"] is None
    assert parse_value(None) == (None, None)


def test_pacer_wait_stops_promptly_at_a_slow_rate() -> None:
    clock = FakeClock()
    pacer = Pacer(0.01, clock=clock)  # one event per 100 s
    assert pacer.wait(0, clock.sleep, stop=lambda: False) is True
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        clock.sleep(seconds)

    assert pacer.wait(1, nap, stop=lambda: clock.now >= 101.0) is False
    assert max(naps) <= 0.2 and clock.now < 101.3
    assert pacer.wait(1, nap, stop=lambda: True) is False
