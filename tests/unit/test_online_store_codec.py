"""The fast path's pure encode/decode helpers agree with Feast's own conversions, byte for byte."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import redis
from feast.infra.online_stores.helpers import _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudstream.features import CUSTOMER_FEATURES, CUSTOMER_VIEW
from fraudstream.online_store import (
    NULL,
    OnlineStore,
    OnlineStoreMismatch,
    ViewSpec,
    check_against_definitions,
    decode_timestamp,
    decode_value,
    encode_timestamps,
    encode_values,
    entity_key,
)

pytestmark = pytest.mark.unit

rng = np.random.default_rng(11)
DOUBLES = np.concatenate(
    [
        [0.0, -0.0, 1.5, -2.25, 1e-300, 1e300, math.inf, -math.inf, math.nan, 0.1],
        rng.normal(0, 1e3, 500),
        rng.uniform(0, 1, 200),
    ]
)
INTS = np.array(
    [
        *(0, 1, 127, 128, 255, 300, 16383, 16384, 2**31, 2**53, 2**63 - 1, -1, -128, -(2**63)),
        *rng.integers(-(10**12), 10**12, 300),
    ],
    dtype=np.int64,
)


def _feast(values: list[object], dtype: ValueType) -> list[bytes]:
    """Feast's own conversion (what push and materialise use), serialized."""
    return [v.SerializeToString() for v in python_values_to_proto_values(values, dtype)]


def test_doubles_encode_as_feast_and_decode_back() -> None:
    encoded = encode_values(DOUBLES, ValueType.DOUBLE)
    assert encoded == _feast(list(DOUBLES), ValueType.DOUBLE)
    assert encoded[8] == NULL  # NaN → null
    decoded = np.array([decode_value(b) for b in encoded])
    np.testing.assert_array_equal(decoded, DOUBLES)  # NaN == NaN here, -0.0 kept
    assert math.copysign(1.0, decode_value(encoded[1])) == -1.0


def test_ints_encode_as_feast_and_decode_back() -> None:
    encoded = encode_values(INTS, ValueType.INT64)
    assert encoded == _feast(list(INTS), ValueType.INT64)
    decoded = [decode_value(b) for b in encoded]
    assert decoded == [float(x) for x in INTS]
    assert encode_values(pd.Series([1.0, np.nan, 3.0]), ValueType.INT64) == [
        ValueProto(int64_val=1).SerializeToString(),
        NULL,
        ValueProto(int64_val=3).SerializeToString(),
    ]
    with pytest.raises(ValueError, match="non-integral"):
        encode_values(pd.Series([1.5]), ValueType.INT64)


def test_fast_decoding_equals_the_generic_protobuf_parse() -> None:
    protos = (
        [ValueProto(double_val=float(x)) for x in DOUBLES]
        + [ValueProto(int64_val=int(x)) for x in INTS]
        + [ValueProto(int32_val=-5), ValueProto(float_val=0.5), ValueProto(bool_val=True)]
        + [ValueProto()]
    )
    for proto in protos:
        kind = proto.WhichOneof("val")
        expected = math.nan if kind is None else float(getattr(proto, kind))
        got = decode_value(proto.SerializeToString())
        assert got == expected or (math.isnan(got) and math.isnan(expected)), proto
    assert math.isnan(decode_value(None))
    with pytest.raises(TypeError, match="not numeric"):
        decode_value(ValueProto(string_val="x").SerializeToString())


def test_timestamps_as_feast_serializes_them() -> None:
    times = pd.Series(
        pd.to_datetime(
            ["2024-01-02T03:04:05.123456789Z", "2024-01-02T03:04:05Z", "2030-12-31T23:59:59.5Z"],
            format="ISO8601",
        )
    )
    micros, encoded = encode_timestamps(times)
    for t, raw, us in zip(times, encoded, micros, strict=True):
        ts = Timestamp()
        ts.FromDatetime(t.to_pydatetime(warn=False))  # Feast: datetime, then FromDatetime
        assert raw == ts.SerializeToString()
        assert us == t.value // 1000
        assert decode_timestamp(raw) == (t.value // 1000) * 1000
    naive = encode_timestamps(pd.Series([datetime(2024, 1, 2, 3, 4, 5)]))[1]
    assert naive == encode_timestamps(pd.Series([datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)]))[1]
    assert decode_timestamp(None) == np.iinfo(np.int64).min
    with pytest.raises(ValueError):
        encode_timestamps(pd.Series([pd.NaT], dtype="datetime64[ns, UTC]"))


def test_entity_key_is_feasts() -> None:
    for value in ("C1", "12345", "ünïcode", ""):
        proto = EntityKeyProto(
            join_keys=["customer_id"], entity_values=[ValueProto(string_val=value)]
        )
        assert entity_key("proj", "customer_id", ValueType.STRING, value, 3) == _redis_key(
            "proj", proto, 3
        )
    assert entity_key("p", "customer_id", ValueType.STRING, "1", 3) != entity_key(
        "p", "terminal_id", ValueType.STRING, "1", 3
    )


def test_definitions_check() -> None:
    good = ViewSpec(
        CUSTOMER_VIEW,
        "customer_id",
        ValueType.STRING,
        tuple(f.name for f in CUSTOMER_FEATURES),
        tuple(
            ValueType.INT64 if f.dtype == "int64" else ValueType.DOUBLE for f in CUSTOMER_FEATURES
        ),
    )
    check_against_definitions([good])
    assert good.ts_field == b"_ts:customer_features"
    assert len(good.field("customer_nb_tx_1d")) == 4
    bad = ViewSpec(
        CUSTOMER_VIEW,
        "customer_id",
        ValueType.STRING,
        good.features,
        (ValueType.DOUBLE,) * len(good.features),
    )
    with pytest.raises(OnlineStoreMismatch):
        check_against_definitions([bad])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(allow_nan=False), min_size=1, max_size=20),
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=1, max_size=20),
    st.integers(min_value=1, max_value=9_000_000_000),
    st.integers(min_value=0, max_value=999_999),
)
def test_hand_written_encoders_are_byte_identical_to_protobuf(
    doubles: list[float], ints: list[int], seconds: int, micros: int
) -> None:
    assert encode_values(np.array(doubles), ValueType.DOUBLE) == [
        ValueProto(double_val=x).SerializeToString() for x in doubles
    ]
    assert encode_values(np.array(ints, dtype=np.int64), ValueType.INT64) == [
        ValueProto(int64_val=x).SerializeToString() for x in ints
    ]
    us = seconds * 1_000_000 + micros
    _, encoded = encode_timestamps(pd.DatetimeIndex([us * 1000], tz="UTC"))
    assert encoded == [Timestamp(seconds=seconds, nanos=micros * 1000).SerializeToString()]


@pytest.mark.parametrize(
    ("kind", "values"),
    [
        (ValueType.STRING, st.text(max_size=40)),
        (ValueType.INT64, st.integers(min_value=-(2**63), max_value=2**63 - 1)),
        (ValueType.INT32, st.integers(min_value=-(2**31), max_value=2**31 - 1)),
        (ValueType.BYTES, st.binary(max_size=40)),
    ],
)
def test_key_prefix_begins_every_key_of_the_view_and_stops_before_the_value(
    kind: ValueType, values: st.SearchStrategy[object]
) -> None:
    # the key watch asks Redis for changes under this prefix: a key outside it would be
    # trusted without Redis ever reporting its changes
    view = ViewSpec("terminal_features", "terminal_id", kind, ("x",), (ValueType.DOUBLE,))
    store = OnlineStore(redis.Redis(), "proj", [view])
    prefix = store.key_prefix("terminal_features")
    assert b"terminal_id" in prefix

    @settings(max_examples=200, deadline=None)
    @given(values)
    def every_key(value: object) -> None:
        assert store.key("terminal_features", value).startswith(prefix)

    every_key()
    other = entity_key("proj", "customer_id", ValueType.STRING, "1", 3)
    assert not other.startswith(prefix)
