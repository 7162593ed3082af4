"""A lean path to Feast's Redis online store: write and read its exact byte format.

Feast's ``push`` costs milliseconds per call and ``get_online_features`` about half a
millisecond per entity, mostly Python overhead around a few Redis commands. The stream
needs neither the overhead nor the generality, so :class:`OnlineStore` writes and reads
the same Redis hashes Feast does, for a whole micro-batch in one pipelined round trip.

The layout is Feast's (``feast/infra/online_stores/redis.py``):

* one hash per entity, key ``serialize_entity_key(join key = value) + project``;
* one field per feature, named ``mmh3("<view>:<feature>")`` (4 bytes), holding a
  serialized ``feast.types.Value`` (an empty message for null, which NaN becomes);
* a field ``_ts:<view>`` holding the serialized ``google.protobuf.Timestamp`` of the row.

Keys, field names and values are produced by Feast's own functions
(``_redis_key``/``serialize_entity_key``, ``_mmh3``, ``ValueProto``, ``Timestamp``), so the
bytes cannot drift from Feast's. Reads decode the two forms Feast writes for doubles and
small ints directly and hand every other value to ``ValueProto``; unit tests check both
agree. Writes keep Feast's last-write rule (a row not newer than the stored one is
skipped) in a Lua script, so it costs no extra round trip and is atomic per entity.

The view definitions come from the Feast registry (:meth:`OnlineStore.from_feature_store`):
it is what Feast itself reads and writes with (field types, online view name), and they are
checked once against :mod:`fraudstream.features`, which computes the values.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import redis
from feast.infra.key_encoding_utils import deserialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, _redis_key, compute_versioned_name
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from fraudstream.errors import FraudstreamError
from fraudstream.features import (
    CUSTOMER_FEATURES,
    CUSTOMER_VIEW,
    TERMINAL_FEATURES,
    TERMINAL_VIEW,
    Feature,
)
from fraudstream.redis_batch import Script, execute, in_chunks, scan_keys

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

TIMESTAMP_COLUMN = "event_timestamp"
#: Value fields that a numeric feature may be stored in, and how each is encoded.
_ENCODERS: dict[ValueType, tuple[str, Callable[[Any], Any]]] = {
    ValueType.INT32: ("int32_val", int),
    ValueType.INT64: ("int64_val", int),
    ValueType.FLOAT: ("float_val", float),
    ValueType.DOUBLE: ("double_val", float),
    ValueType.BOOL: ("bool_val", bool),
}
_INTEGRAL = frozenset({ValueType.INT32, ValueType.INT64, ValueType.BOOL})
_NUMERIC_FIELDS = frozenset(field for field, _ in _ENCODERS.values())
_ENTITY_FIELDS = {
    ValueType.STRING: "string_val",
    ValueType.INT64: "int64_val",
    ValueType.INT32: "int32_val",
    ValueType.BYTES: "bytes_val",
}
#: Two values per join-key type whose serialized keys differ from the first byte that
#: depends on the value (length or value): their common prefix is every key's.
_KEY_SAMPLES: dict[ValueType, tuple[Any, Any]] = {
    ValueType.STRING: ("a", "bb"),
    ValueType.INT64: (1, 2),
    ValueType.INT32: (1, 2),
    ValueType.BYTES: (b"a", b"bb"),
}
_DOUBLE_TAG = 0x29  # field 5 (double_val), wire type 1 (64-bit)
_INT64_TAG = 0x20  # field 4 (int64_val), wire type 0 (varint)
_UNPACK_DOUBLE = struct.Struct("<d").unpack_from
_PACK_DOUBLE = struct.Struct("<Bd").pack
_NAT = np.iinfo(np.int64).min
NULL = b""  # ValueProto().SerializeToString(): Feast's null

# KEYS: the entity hashes. ARGV: ts field, ttl, number of feature fields F, the F field
# names, then per key: seconds, nanos, serialized timestamp, F serialized values.
# Feast's online_write_batch rule, row by row in order: skip a row unless it is strictly
# newer than the stored timestamp (a stored epoch-zero timestamp counts as none).
_WRITE_LUA = """
local function varint(s, i)
  local v, m = 0, 1
  while true do
    local b = string.byte(s, i)
    if b == nil then return nil, i end
    i = i + 1
    v = v + (b % 128) * m
    if b < 128 then return v, i end
    m = m * 128
  end
end
local tsf, ttl, nf = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local written, a = 0, 4 + nf
for k = 1, #KEYS do
  local key = KEYS[k]
  local s, n = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local newer = true
  local prev = redis.call('HGET', key, tsf)
  if prev then
    local sec, nan, i = 0, 0, 1
    while i <= #prev do
      local tag = string.byte(prev, i)
      local v
      v, i = varint(prev, i + 1)
      if v == nil then break end
      if tag == 8 then sec = v elseif tag == 16 then nan = v end
    end
    if (sec > 0 or nan > 0) and (s < sec or (s == sec and n <= nan)) then newer = false end
  end
  if newer then
    local pairs = {tsf, ARGV[a + 2]}
    for f = 1, nf do
      pairs[#pairs + 1] = ARGV[3 + f]
      pairs[#pairs + 1] = ARGV[a + 2 + f]
    end
    redis.call('HSET', key, unpack(pairs))
    if ttl > 0 then redis.call('EXPIRE', key, ttl) end
    written = written + 1
  end
  a = a + 3 + nf
end
return written
"""
_WRITE = Script(_WRITE_LUA)

# KEYS: entity keys; ARGV[1]: a view's ``_ts`` field. Returns each key's stored ``_ts``
# ("" when the entity has no row): one command for a whole batch, however many keys.
_STAMPS_LUA = """
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGET', KEYS[i], ARGV[1]) or '' end
return out
"""
_STAMPS = Script(_STAMPS_LUA)
#: The scripts the commands of :meth:`OnlineStore.write_commands` and
#: :meth:`CachedViewReader.read_commands` call (for ``execute``).
SCRIPTS = (_WRITE, _STAMPS)
#: Entities read per round trip when warming a reader's cache (:meth:`CachedViewReader.warm`).
WARM_CHUNK = 1000


def _common_prefix(a: bytes, b: bytes) -> bytes:
    """The longest common prefix of ``a`` and ``b``."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]


class OnlineStoreMismatch(FraudstreamError, ValueError):
    """The Feast registry and fraudstream's feature definitions disagree."""


@dataclass(frozen=True)
class ViewSpec:
    """What the fast path needs to know of one feature view."""

    name: str  # the Feast view name
    join_key: str
    join_key_type: ValueType
    features: tuple[str, ...]
    dtypes: tuple[ValueType, ...]
    online_name: str = ""  # name in the Redis fields (versioned if Feast versions it)

    def __post_init__(self) -> None:
        if not self.online_name:
            object.__setattr__(self, "online_name", self.name)
        if len(self.features) != len(self.dtypes):
            raise ValueError(
                f"{self.name}: {len(self.features)} features, {len(self.dtypes)} types"
            )
        for name, dtype in zip(self.features, self.dtypes, strict=True):
            if dtype not in _ENCODERS:
                raise ValueError(f"{self.name}:{name}: type {dtype.name} is not numeric")
        if self.join_key_type not in _ENTITY_FIELDS:
            raise ValueError(f"{self.name}: join key type {self.join_key_type.name} unsupported")

    @property
    def ts_field(self) -> bytes:
        return f"_ts:{self.online_name}".encode()

    def field(self, feature: str) -> bytes:
        """The hash field of ``feature``: Feast's ``mmh3("<view>:<feature>")``."""
        return bytes(_mmh3(f"{self.online_name}:{feature}"))


# ---------------------------------------------------------------- codec (pure)


def encode_values(values: pd.Series | np.ndarray | Sequence[Any], dtype: ValueType) -> list[bytes]:
    """Serialized ``ValueProto`` of each value, as Feast writes it; NaN/None → null."""
    field, convert = _ENCODERS[dtype]
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":  # object, nullable or mixed: let pandas coerce
        array = pd.to_numeric(pd.Series(array), errors="raise").to_numpy(
            np.float64, na_value=np.nan
        )
    if array.dtype.kind == "f":
        missing = np.isnan(array)
        if dtype in _INTEGRAL and not np.all(np.mod(array[~missing], 1) == 0):
            raise ValueError(f"non-integral value for a {dtype.name} feature")
        missing_list = missing.tolist() if missing.any() else None
    else:
        missing_list = None
    if dtype == ValueType.DOUBLE:
        encode: Callable[[Any], bytes] = _encode_double
    elif dtype == ValueType.INT64:
        encode = _encode_int64
    else:

        def encode(x: Any) -> bytes:
            return ValueProto(**{field: convert(x)}).SerializeToString()

    items = array.tolist()
    if missing_list is None:
        return [encode(x) for x in items]
    return [NULL if gone else encode(x) for x, gone in zip(items, missing_list, strict=True)]


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint; negative numbers as 64-bit two's complement."""
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_INT64 = [bytes((_INT64_TAG, i)) for i in range(128)]


def _encode_double(x: Any) -> bytes:
    """``ValueProto(double_val=x)`` serialized (a set oneof field is written even if 0)."""
    return _PACK_DOUBLE(_DOUBLE_TAG, float(x))


def _encode_int64(x: Any) -> bytes:
    """``ValueProto(int64_val=x)`` serialized."""
    value = int(x)
    if 0 <= value < 128:
        return _SMALL_INT64[value]
    return bytes((_INT64_TAG,)) + _varint(value)


def _decode_generic(raw: bytes) -> float:
    value = ValueProto.FromString(raw)
    kind = value.WhichOneof("val")
    if kind is None:
        return math.nan
    if kind not in _NUMERIC_FIELDS:
        raise TypeError(f"online value of kind {kind} is not numeric")
    return float(getattr(value, kind))


def decode_value(raw: bytes | None) -> float:
    """A stored value as a float: NaN for null or absent, ints exactly up to 2**53."""
    if not raw:
        return math.nan
    if len(raw) == 9 and raw[0] == _DOUBLE_TAG:
        return float(_UNPACK_DOUBLE(raw, 1)[0])
    if len(raw) == 2 and raw[0] == _INT64_TAG and raw[1] < 0x80:
        return float(raw[1])
    return _decode_generic(raw)


def _micros(timestamps: pd.Series | pd.DatetimeIndex | np.ndarray) -> np.ndarray:
    """Microseconds since the epoch (floored), naive times taken as UTC."""
    array = getattr(timestamps, "array", timestamps)
    if isinstance(array, pd.arrays.DatetimeArray):
        unit = array.unit  # tz-aware or naive, asi8 counts from the UTC epoch
        ints = array.asi8
        if array.isna().any():
            raise ValueError(f"missing {TIMESTAMP_COLUMN}")
    else:
        index = pd.DatetimeIndex(timestamps)
        if index.hasnans:
            raise ValueError(f"missing {TIMESTAMP_COLUMN}")
        unit, ints = index.unit, index.asi8
    if unit == "ns":
        return np.asarray(ints // 1000, dtype=np.int64)
    return np.asarray(ints * {"s": 1_000_000, "ms": 1000, "us": 1}[unit], dtype=np.int64)


def encode_timestamps(
    timestamps: pd.Series | pd.DatetimeIndex | np.ndarray,
) -> tuple[np.ndarray, list[bytes]]:
    """Microseconds since the epoch and serialized ``Timestamp`` of each time, as Feast does.

    Feast converts to ``datetime`` (microseconds, naive meaning UTC) before
    ``Timestamp.FromDatetime``; so does this, by flooring to the microsecond.
    """
    micros = _micros(timestamps)
    return micros, encode_micros(micros)


def encode_micros(micros: np.ndarray) -> list[bytes]:
    """Serialized ``Timestamp`` of each time given in microseconds since the epoch."""
    if len(micros) and micros.min() <= 0:
        raise ValueError("timestamps at or before 1970-01-01 are not supported")
    return [_encode_timestamp(us // 1_000_000, (us % 1_000_000) * 1000) for us in micros.tolist()]


def _encode_timestamp(seconds: int, nanos: int) -> bytes:
    """``Timestamp(seconds, nanos)`` serialized (proto3: zero fields are left out)."""
    out = b""
    if seconds:
        out += b"\x08" + _varint(seconds)
    if nanos:
        out += b"\x10" + _varint(nanos)
    return out


def decode_timestamp(raw: bytes | None) -> int:
    """Nanoseconds since the epoch of a stored ``_ts`` field; the NaT integer if absent."""
    if not raw:
        return int(_NAT)
    ts = Timestamp.FromString(raw)
    return int(ts.seconds) * 1_000_000_000 + int(ts.nanos)


def entity_key(
    project: str, join_key: str, join_key_type: ValueType, value: Any, version: int
) -> bytes:
    """The Redis key of one entity: Feast's ``_redis_key`` (serialize_entity_key + project)."""
    proto = ValueProto(**{_ENTITY_FIELDS[join_key_type]: value})
    key = EntityKeyProto(join_keys=[join_key], entity_values=[proto])
    return bytes(_redis_key(project, key, entity_key_serialization_version=version))


# ---------------------------------------------------------------- the store


class OnlineStore:
    """Write and read Feast's Redis online store for whole micro-batches, one round trip each.

    ``client`` must return bytes (``decode_responses=False``). ``dedup`` mirrors Feast's
    ``skip_dedup: false`` (skip rows not newer than the stored one); ``key_ttl_seconds``
    Feast's option of that name. Prefer :meth:`from_feature_store`, which takes all of
    these from the repo and registry.
    """

    def __init__(
        self,
        client: redis.Redis,
        project: str,
        views: Sequence[ViewSpec],
        entity_key_serialization_version: int = 3,
        dedup: bool = True,
        key_ttl_seconds: int | None = None,
        key_cache_size: int = 1 << 16,
    ) -> None:
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
        if kwargs.get("decode_responses"):
            raise ValueError("the Redis client must return bytes (decode_responses=False)")
        self.client = client
        self.project = project
        self.version = entity_key_serialization_version
        self.dedup = dedup
        self.key_ttl_seconds = key_ttl_seconds or 0
        self.views: dict[str, ViewSpec] = {v.name: v for v in views}
        self._view_of: dict[str, str] = {}
        for view in views:
            for name in view.features:
                if name in self._view_of:
                    raise ValueError(f"feature {name} is in {self._view_of[name]} and {view.name}")
                self._view_of[name] = view.name
        self._fields = {v.name: [v.field(f) for f in v.features] for v in views}
        self._keys = {v.name: self._key_function(v, key_cache_size) for v in views}
        log.info(
            "online store fast path: project %s, views %s, dedup %s, key ttl %s",
            project,
            ", ".join(self.views),
            dedup,
            key_ttl_seconds,
        )

    @classmethod
    def from_feature_store(
        cls,
        store: FeatureStore,
        client: redis.Redis,
        views: Sequence[str] = (CUSTOMER_VIEW, TERMINAL_VIEW),
        check_definitions: bool = True,
    ) -> OnlineStore:
        """Views, project and options from a Feast ``FeatureStore`` (read once, here).

        With ``check_definitions`` the registry's views must hold exactly the features
        and types of :mod:`fraudstream.features`; otherwise :class:`OnlineStoreMismatch`.
        """
        from feast.infra.online_stores.redis import RedisOnlineStoreConfig

        config = store.config
        online = config.online_store
        if not isinstance(online, RedisOnlineStoreConfig):
            raise OnlineStoreMismatch(f"the online store is {online.type}, not redis")
        versioning = bool(getattr(config.registry, "enable_online_feature_view_versioning", False))
        specs = []
        for name in views:
            fv = store.get_feature_view(name)
            if len(fv.entity_columns) != 1:
                raise OnlineStoreMismatch(f"{name}: the fast path needs exactly one join key")
            join = fv.entity_columns[0]
            specs.append(
                ViewSpec(
                    name=fv.name,
                    join_key=join.name,
                    join_key_type=join.dtype.to_value_type(),
                    features=tuple(f.name for f in fv.features),
                    dtypes=tuple(f.dtype.to_value_type() for f in fv.features),
                    online_name=compute_versioned_name(fv, versioning),
                )
            )
        if check_definitions:
            check_against_definitions(specs)
        return cls(
            client,
            project=config.project,
            views=specs,
            entity_key_serialization_version=config.entity_key_serialization_version,
            dedup=not online.skip_dedup,
            key_ttl_seconds=online.key_ttl_seconds,
        )

    def _key_function(self, view: ViewSpec, size: int) -> Callable[[Any], bytes]:
        project, version = self.project, self.version

        @lru_cache(maxsize=size)
        def key(value: Any) -> bytes:
            return entity_key(project, view.join_key, view.join_key_type, value, version)

        return key

    def key_prefix(self, view: str) -> bytes:
        """What the Redis keys of every entity of ``view`` begin with: the serialized entity
        key up to the value (so also other views' keys of the same join key)."""
        spec = self.views[view]
        samples = _KEY_SAMPLES[spec.join_key_type]
        a, b = (
            entity_key(self.project, spec.join_key, spec.join_key_type, v, self.version)
            for v in samples
        )
        return _common_prefix(a, b)

    def key(self, view: str, entity: Any) -> bytes:
        """The Redis key of ``entity`` in ``view`` (cached)."""
        return self._keys[view](entity)

    # ------------------------------------------------------------ write

    def write(self, view: str, frame: pd.DataFrame) -> int:
        """Write rows of ``view`` (join key, ``event_timestamp``, every feature) in one round trip.

        NaN becomes Feast's null. With dedup, a row not newer than what is stored for its
        entity (including an earlier row of ``frame``) is skipped, as Feast does. Returns
        the number of rows written.
        """
        commands = self.write_commands(view, frame)
        if not commands:
            return 0
        replies = execute(self.client, commands, SCRIPTS)
        written = int(replies[0]) if self.dedup else len(frame)
        log.debug("%s: wrote %d of %d rows", view, written, len(frame))
        return written

    def write_commands(self, view: str, frame: pd.DataFrame) -> list[tuple[Any, ...]]:
        """The commands of :meth:`write`, to send with other writes
        (:func:`~fraudstream.redis_batch.execute` with :data:`SCRIPTS`)."""
        spec = self.views[view]
        if frame.empty:
            return []
        missing = [c for c in (spec.join_key, TIMESTAMP_COLUMN, *spec.features) if c not in frame]
        if missing:
            raise KeyError(f"{view}: frame lacks {', '.join(missing)}")
        return self.write_array_commands(
            view,
            frame[spec.join_key].tolist(),
            _micros(frame[TIMESTAMP_COLUMN]),
            {name: frame[name] for name in spec.features},
        )

    def write_array_commands(
        self,
        view: str,
        entities: Sequence[Any],
        micros: np.ndarray,
        columns: Mapping[str, pd.Series | np.ndarray],
    ) -> list[tuple[Any, ...]]:
        """:meth:`write_commands` of rows given as arrays: each row's entity, its event time
        in microseconds since the epoch, and every feature of the view (no DataFrame)."""
        spec = self.views[view]
        if not len(entities):
            return []
        stamps = encode_micros(micros)
        us_list = micros.tolist()
        encoded = [
            encode_values(columns[name], dtype)
            for name, dtype in zip(spec.features, spec.dtypes, strict=True)
        ]
        key_of = self._keys[view]
        keys = [key_of(v) for v in entities]
        fields = self._fields[view]
        ts_field = spec.ts_field
        if not self.dedup:
            commands: list[tuple[Any, ...]] = []
            for i, key in enumerate(keys):
                pairs: list[bytes] = [ts_field, stamps[i]]
                for field, column in zip(fields, encoded, strict=True):
                    pairs += (field, column[i])
                commands.append(("HSET", key, *pairs))
                if self.key_ttl_seconds:
                    commands.append(("EXPIRE", key, self.key_ttl_seconds))
            return commands
        args: list[Any] = [ts_field, self.key_ttl_seconds, len(fields), *fields]
        for i, us in enumerate(us_list):
            args += (us // 1_000_000, (us % 1_000_000) * 1000, stamps[i])
            args += [column[i] for column in encoded]
        return [_WRITE.command(keys, args)]

    # ------------------------------------------------------------ read

    def read_arrays(
        self,
        entities: pd.DataFrame | Mapping[str, Sequence[Any]],
        features: Sequence[str] | None = None,
    ) -> OnlineRows:
        """What :meth:`read` returns, as numpy arrays (no DataFrame built): the scoring path."""
        columns = {
            v.name: (
                entities[v.join_key].tolist()
                if isinstance(entities, pd.DataFrame)
                else list(entities[v.join_key])
            )
            for v in self.views.values()
            if v.join_key in entities
        }
        if not columns:
            raise KeyError(f"no join key of the views {', '.join(self.views)} to read")
        names = (
            list(features)
            if features is not None
            else [f for view in columns for f in self.views[view].features]
        )
        by_view: dict[str, list[str]] = {view: [] for view in columns}
        for name in names:
            view_name = self._view_of.get(name)
            if view_name is None or view_name not in by_view:
                raise KeyError(f"feature {name} is not in the views read ({', '.join(by_view)})")
            by_view[view_name].append(name)

        plans = []
        commands: list[tuple[Any, ...]] = []
        n = 0
        for view, ids in columns.items():
            n = len(ids)
            spec = self.views[view]
            first: dict[Any, int] = {}
            code_list = [-1 if i is None else first.setdefault(i, len(first)) for i in ids]
            key_of = self._keys[view]
            fields = [spec.field(f) for f in by_view[view]] + [spec.ts_field]
            commands += [("HMGET", key_of(i), *fields) for i in first]
            plans.append((view, np.asarray(code_list, dtype=np.intp), len(first)))
        replies = execute(self.client, commands)

        values = np.empty((n, len(names)), dtype=np.float64)
        stamps: dict[str, np.ndarray] = {}
        position = {name: i for i, name in enumerate(names)}
        start = 0
        for view, codes, n_unique in plans:
            rows = replies[start : start + n_unique]
            start += n_unique
            wanted = by_view[view]
            # one extra all-missing row last, picked by the -1 code of a missing join key
            decoded = np.full((n_unique + 1, len(wanted)), np.nan)
            ts = np.full(n_unique + 1, _NAT, dtype=np.int64)
            if wanted and rows:
                decoded[:n_unique] = [[decode_value(raw) for raw in r[:-1]] for r in rows]
            ts[:n_unique] = [decode_timestamp(r[-1]) for r in rows]
            picked = decoded[codes]
            for j, name in enumerate(wanted):
                values[:, position[name]] = picked[:, j]
            stamps[view] = ts[codes]
        return OnlineRows(features=names, values=values, event_timestamps=stamps)

    def read(
        self,
        entities: pd.DataFrame | Mapping[str, Sequence[Any]],
        features: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Online features of every row of ``entities`` in one round trip (one HMGET per entity).

        ``entities`` has one column per join key (``customer_id``, ``terminal_id``); the views
        whose join key it holds are read. Returns, aligned with ``entities``' index,
        ``features`` (default: all of those views, in view order) as float64 with NaN
        for missing, then ``<view>__event_timestamp`` (UTC, NaT if the entity has no row).
        Feast does not enforce TTL online; neither does this (compute the age from the
        timestamps).
        """
        rows = self.read_arrays(entities, features)
        columns: dict[str, Any] = {name: rows.values[:, j] for j, name in enumerate(rows.features)}
        for view, ns in rows.event_timestamps.items():
            columns[f"{view}__{TIMESTAMP_COLUMN}"] = pd.DatetimeIndex(ns.view("M8[ns]"), tz="UTC")
        index = entities.index if isinstance(entities, pd.DataFrame) else None
        out = pd.DataFrame(columns, index=index, copy=False)
        return out


@dataclass(frozen=True)
class StampsPlan:
    """The distinct entities of a batch read, their keys, each row's entity, and the
    positions (among the entities) of those read whole with the stamps (not cached)."""

    entities: list[Any]
    keys: list[bytes]
    codes: np.ndarray
    prefetched: list[int]


class CachedViewReader:
    """One view's features for a batch, re-reading only the entities whose row changed.

    A view materialised in bulk (the terminal view) changes rarely, and Feast writes a row
    only with a newer ``_ts``. So each batch asks Redis for the stored ``_ts`` of its
    entities (one command) and reads the features (one ``HMGET`` each) only of entities not
    cached, in the same round trip, and of those whose ``_ts`` differs from the cached one,
    in a second: the values are those a full read returns, a new ``feast materialize``
    included, at a fraction of the cost.
    Holds at most ``max_entities`` rows (oldest first out).
    """

    def __init__(
        self,
        store: OnlineStore,
        view: str,
        features: Sequence[str],
        max_entities: int = 1 << 18,
    ) -> None:
        spec = store.views[view]
        unknown = [f for f in features if f not in spec.features]
        if unknown:
            raise KeyError(f"{view} has no feature {', '.join(unknown)}")
        self.store = store
        self.view = view
        self.features = list(features)
        self.max_entities = max_entities
        self._key_of = store._keys[view]
        self._ts_field = spec.ts_field
        self._fields = [spec.field(f) for f in self.features] + [spec.ts_field]
        self._missing = (math.nan,) * len(self.features)
        # entity -> (raw _ts, feature values, _ts in ns)
        self._cache: dict[Any, tuple[bytes, tuple[float, ...], int]] = {}
        self.reads = 0  # rows read (entities not cached, or changed)

    def read(self, ids: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Features (rows aligned with ``ids``, float64, NaN when missing) and each row's
        stored event time in ns (NaT integer when the entity has no row)."""
        commands, plan = self.read_commands(ids)
        return self.read_from(plan, execute(self.store.client, commands, SCRIPTS))

    def read_commands(self, ids: Sequence[Any]) -> tuple[list[tuple[Any, ...]], StampsPlan]:
        """The commands reading the stored ``_ts`` of ``ids``' entities, and the whole row of
        those not cached, to send with other reads (:func:`~fraudstream.redis_batch.execute`
        with :data:`SCRIPTS`); their replies, in order, and the plan go to :meth:`read_from`."""
        first: dict[Any, int] = {}
        codes = np.fromiter(
            (first.setdefault(i, len(first)) for i in ids), dtype=np.intp, count=len(ids)
        )
        entities = list(first)
        keys = [self._key_of(e) for e in entities]
        prefetched = [j for j, e in enumerate(entities) if e not in self._cache]
        commands = [
            _STAMPS.command(keys, [self._ts_field]),
            *[("HMGET", keys[j], *self._fields) for j in prefetched],
        ]
        return commands, StampsPlan(entities, keys, codes, prefetched)

    def cached_stamps(self, plan: StampsPlan) -> list[bytes]:
        """The cached raw ``_ts`` of ``plan``'s entities (all cached), as the first reply
        of :meth:`read_commands` would be while none changed."""
        cache = self._cache
        return [cache[e][0] for e in plan.entities]

    def cached_entities(self) -> list[Any]:
        """The entities cached."""
        return list(self._cache)

    def keys_of(self, entities: Sequence[Any]) -> list[bytes]:
        """The Redis keys of ``entities``."""
        return [self._key_of(e) for e in entities]

    def read_from(self, plan: StampsPlan, replies: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`read`, given :meth:`read_commands`' plan and replies (reads the changed rows)."""
        entities, keys, codes = plan.entities, plan.keys, plan.codes
        stamps, prefetched = replies[0], set(plan.prefetched)
        cache = self._cache
        rows: list[tuple[float, ...]] = []
        ts = np.full(len(entities), _NAT, dtype=np.int64)
        todo: list[int] = []
        for j, (entity, raw) in enumerate(zip(entities, stamps, strict=True)):
            hit = cache.get(entity)
            if hit is not None and raw and hit[0] == raw:
                rows.append(hit[1])
                ts[j] = hit[2]
            else:
                rows.append(self._missing)
                if not raw:
                    cache.pop(entity, None)
                elif j not in prefetched:
                    todo.append(j)
        read = list(zip(plan.prefetched, replies[1:], strict=True))
        if todo:
            more = execute(self.store.client, [("HMGET", keys[j], *self._fields) for j in todo])
            read += zip(todo, more, strict=True)
        for j, reply in read:
            raw_ts = reply[-1]
            if not raw_ts:  # no row (yet), or deleted meanwhile
                continue
            self.reads += 1
            row = tuple(decode_value(v) for v in reply[:-1])
            stamp = decode_timestamp(raw_ts)
            rows[j], ts[j] = row, stamp
            cache.pop(entities[j], None)
            cache[entities[j]] = (raw_ts, row, stamp)
        while len(cache) > self.max_entities:
            del cache[next(iter(cache))]
        values = np.array(rows, dtype=np.float64).reshape(len(entities), len(self.features))
        return values[codes], ts[codes]

    def warm(self, stop: Callable[[], bool], chunk: int = WARM_CHUNK) -> int:
        """Read the stored rows of the view's entities into the cache, ``chunk`` per round
        trip, until it holds ``max_entities``, every stored entity is in it, or ``stop()`` is
        true (asked after each chunk); returns how many rows were read. The entities are
        found by ``SCAN`` over the project's keys (Feast's key: the serialized entity key,
        then the project name), so only with Feast's entity key serialization 3 and later."""
        store = self.store
        if store.version < 3:
            return 0
        project = store.project.encode()
        join_key = store.views[self.view].join_key
        before = self.reads
        stored = (
            _entity_of(key[: -len(project)], join_key, store.version)
            for key in scan_keys(store.client, suffix=project)
        )
        in_chunks(
            (e for e in stored if e is not None and e not in self._cache),
            self._fill,
            lambda: len(self._cache) >= self.max_entities or stop(),
            chunk,
        )
        return self.reads - before

    def _fill(self, entities: list[Any]) -> None:
        commands, plan = self.read_commands(entities)
        self.read_from(plan, execute(self.store.client, commands, SCRIPTS))


def _entity_of(raw: bytes, join_key: str, version: int) -> Any | None:
    """The entity of a serialized Feast entity key of ``join_key`` alone, else ``None``."""
    try:
        proto = deserialize_entity_key(raw, entity_key_serialization_version=version)
    except (ValueError, struct.error, UnicodeDecodeError):
        return None
    if list(proto.join_keys) != [join_key]:
        return None
    value = proto.entity_values[0]
    field = value.WhichOneof("val")
    return None if field is None else getattr(value, field)


@dataclass(frozen=True)
class OnlineRows:
    """Online features of a batch: ``values[i, j]`` is feature ``features[j]`` of row ``i``.

    float64, NaN for missing; ``event_timestamps[view]`` holds nanoseconds since the epoch
    of each row's stored row of that view (``numpy.iinfo(int64).min``, i.e. NaT, if none).
    """

    features: list[str]
    values: np.ndarray
    event_timestamps: dict[str, np.ndarray]


def check_against_definitions(specs: Sequence[ViewSpec]) -> None:
    """Raise :class:`OnlineStoreMismatch` unless each known view matches fraudstream.features."""
    expected: dict[str, list[Feature]] = {
        CUSTOMER_VIEW: CUSTOMER_FEATURES,
        TERMINAL_VIEW: TERMINAL_FEATURES,
    }
    types = {"int64": ValueType.INT64, "float64": ValueType.DOUBLE}
    for spec in specs:
        if spec.name not in expected:
            continue
        want = [(f.name, types[f.dtype]) for f in expected[spec.name]]
        have = list(zip(spec.features, spec.dtypes, strict=True))
        if have != want:
            raise OnlineStoreMismatch(
                f"{spec.name}: the Feast registry has {have}, fraudstream.features defines "
                f"{want}; run `fraudstream feast apply`"
            )
