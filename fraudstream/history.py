"""Each customer's recent transactions in Redis: the state behind the real-time features.

Why Redis and not a Faust table: the state is needed by every worker that may own the
customer's partition after a rebalance and by the REST API, which scores on the same
code path; a Redis sorted set per customer is read by any of them at once, with no
changelog to replay after a restart.

Layout (the namespace is the Feast project, so two deployments sharing a Redis keep apart):

* ``fraudstream:<namespace>:history:<customer_id>``: a sorted set whose score is the
  transaction time in epoch milliseconds and whose member packs, little-endian, the time
  (int64), the 64-bit digest of the transaction id
  (:func:`~fraudstream.features.transaction_digests`) and the amount (float64): 24 bytes,
  read back in bulk with no per-entry parsing. Writes are idempotent: the same transaction
  is the same member (``ZADD NX``).
* ``fraudstream:<namespace>:history-version:<customer_id>``: a version every write raises to
  Redis's clock in microseconds (or by one, if that is more), not a counter from 1, so a
  version never comes back after the keys expired, Redis lost them (a flush, a restart
  without persistence) or went back to older data (a restart from an older snapshot, a
  failover to a replica behind): a process that cached a state at some version never takes
  it for current after another writer wrote the keys again.

Entries older than :data:`~fraudstream.features.CUSTOMER_STATE_MS` (the longest window and
a margin for late events) before the customer's latest transaction are removed on write;
both keys expire after a quiet period. A write is one Lua script for the whole batch
(atomic per batch, one round trip).

The in-process cache: :class:`CustomerHistory` keeps the states it read or wrote (least
recently used first out, bounded in rows) with the version it saw. Each batch reads the
versions of its customers (one ``MGET``), with the histories of those not cached in the same
round trip, and re-reads only those another writer (a REST call with ``update``, another
worker during a rebalance) changed, so a worker reads each customer's history once, not per
event, and never uses a state that is out of date.
"""

from __future__ import annotations

import logging
import struct
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import redis

from fraudstream.errors import FraudstreamError
from fraudstream.features import (
    CUSTOMER_HISTORY_MS,
    CUSTOMER_STATE_MS,
    MS_PER_DAY,
    CustomerState,
    to_ms,
    transaction_digests,
    with_flags,
)
from fraudstream.redis_batch import Script, execute, in_chunks, scan_keys

log = logging.getLogger(__name__)

#: A customer quiet for this long has nothing left in any window: the keys may go.
EXPIRE_S = (CUSTOMER_HISTORY_MS + 7 * MS_PER_DAY) // 1000
ENTRY = np.dtype([("ms", "<i8"), ("id", "<u8"), ("amount", "<f8")])
_PACK = struct.Struct("<qQd")
#: Entries per write script when loading a large table (keeps each call short).
BULK_ENTRIES = 20_000
#: Customers read per round trip when warming the cache (:meth:`CustomerHistory.warm`).
WARM_CHUNK = 500

# KEYS: per customer its sorted set then its version counter.
# ARGV: expire seconds, then per customer: n, prune bound (ms), r, then r members to remove
# (a replayed transaction's earlier entry), then n x (ms, member).
# Removes entries at or before the bound (the customer's latest new time minus
# CUSTOMER_STATE_MS). The new version is the server's time in microseconds, or the version
# before plus one if that is more. Returns per customer its version before (0: none) and after.
_APPEND_LUA = """
local expire = tonumber(ARGV[1])
local out, a = {}, 2
for k = 1, #KEYS, 2 do
  local zkey, vkey = KEYS[k], KEYS[k + 1]
  local n, bound, r = tonumber(ARGV[a]), ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  local j = 0
  while j < r do
    local m = math.min(r - j, 1000)
    redis.call('ZREM', zkey, unpack(ARGV, a, a + m - 1))
    a, j = a + m, j + m
  end
  local i = 0
  while i < n do
    local m = math.min(n - i, 1000)
    redis.call('ZADD', zkey, 'NX', unpack(ARGV, a, a + 2 * m - 1))
    a, i = a + 2 * m, i + m
  end
  redis.call('ZREMRANGEBYSCORE', zkey, '-inf', bound)
  redis.call('EXPIRE', zkey, expire)
  local before = tonumber(redis.call('GET', vkey) or '0')
  local now = redis.call('TIME')
  local version = math.max(before + 1, tonumber(now[1]) * 1000000 + tonumber(now[2]))
  redis.call('SET', vkey, string.format('%.0f', version), 'EX', expire)
  out[#out + 1] = before
  out[#out + 1] = version
end
return out
"""
_APPEND = Script(_APPEND_LUA)
#: The scripts :meth:`CustomerHistory.append_command` calls (for ``execute``).
SCRIPTS = (_APPEND,)


def pack_entries(ms: np.ndarray, ids: np.ndarray, amount: np.ndarray) -> list[bytes]:
    """The sorted-set members of transactions (see the module docstring)."""
    table = np.empty(len(ms), dtype=ENTRY)
    table["ms"], table["id"], table["amount"] = ms, ids, amount
    raw = table.tobytes()
    size = ENTRY.itemsize
    return [raw[i : i + size] for i in range(0, len(raw), size)]


class CorruptStateError(FraudstreamError):
    """Customers whose stored history is not whole entries: they cannot be scored until
    their key is repaired or deleted (other customers' transactions are unaffected)."""

    def __init__(self, customer_ids: Sequence[str], keys: Sequence[bytes]) -> None:
        self.customer_ids = list(customer_ids)
        shown = ", ".join(k.decode(errors="replace") for k in keys[:5])
        more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
        what = "it; its customer's" if len(keys) == 1 else "each; their customers'"
        super().__init__(
            f"stored customer history is not whole {ENTRY.itemsize}-byte entries: {shown}{more}"
            f" (repair or delete {what} transactions cannot be scored until then)"
        )


def whole_entries(members: Sequence[bytes]) -> bool:
    """Whether sorted-set ``members`` are all whole entries (:data:`ENTRY`), as written."""
    return set(map(len, members)) <= {ENTRY.itemsize}  # one pass, half the time of max + sum


def unpack_entries(members: Sequence[bytes]) -> CustomerState:
    """A state (flags not known yet) from sorted-set members, in time order."""
    table = np.frombuffer(b"".join(members), dtype=ENTRY)
    order = np.argsort(table["ms"], kind="stable")
    table = table[order]
    return CustomerState(
        np.ascontiguousarray(table["ms"]),
        np.ascontiguousarray(table["amount"]),
        np.ascontiguousarray(table["id"]),
        None,
    )


class CustomerHistory:
    """Customers' states in Redis, with an in-process cache checked against Redis per batch."""

    def __init__(self, client: redis.Redis, namespace: str, cache_rows: int = 4_000_000) -> None:
        self.client = client
        self.prefix = f"fraudstream:{namespace}:history:".encode()
        self.version_prefix = f"fraudstream:{namespace}:history-version:".encode()
        self.cache_rows = cache_rows
        self._cache: OrderedDict[str, tuple[CustomerState, int]] = OrderedDict()
        self._cached_rows = 0
        self.reads = 0  # customers read from Redis (cache misses), for metrics and tests

    def _key(self, customer_id: str) -> bytes:
        return self.prefix + customer_id.encode()

    def _version_key(self, customer_id: str) -> bytes:
        return self.version_prefix + customer_id.encode()

    def version_keys(self, customer_ids: Sequence[str]) -> list[bytes]:
        """The keys of the customers' versions (what a write changes)."""
        return [self._version_key(c) for c in customer_ids]

    def cached_versions(self, customer_ids: Sequence[str]) -> list[int]:
        """The cached version of each customer (all cached), as the ``MGET`` of
        :meth:`read_commands` would reply while none changed."""
        return [self._cache[c][1] for c in customer_ids]

    def cached_ids(self) -> list[str]:
        """The customers cached."""
        return list(self._cache)

    # ------------------------------------------------------------ read

    def read_commands(self, customer_ids: Sequence[str]) -> list[tuple[Any, ...]]:
        """The ``MGET`` of the customers' versions, then a ``ZRANGE`` of each customer not
        cached here, to send with other reads (:func:`~fraudstream.redis_batch.execute`);
        their replies, in order, go to :meth:`states_from`. A first-seen customer thus costs
        no round trip of its own. No ``MULTI`` is needed: the version is read before the
        entries, and a write is one script, so a write in between leaves a version older
        than the entries, which only makes the next batch read them again."""
        missing = [c for c in customer_ids if c not in self._cache]
        return [
            ("MGET", *[self._version_key(c) for c in customer_ids]),
            *[("ZRANGE", self._key(c), 0, -1) for c in missing],
        ]

    def states_from(
        self, customer_ids: Sequence[str], replies: Sequence[Any]
    ) -> list[CustomerState]:
        """The current state of each customer (distinct ids), given the replies of
        :meth:`read_commands`: cached states whose version still matches, the entries read
        with the versions, plus one read of the customers another writer changed."""
        versions, entries = replies[0], iter(replies[1:])
        out: list[CustomerState | None] = []
        stale: list[int] = []
        read: list[tuple[int, Sequence[bytes], int]] = []  # (position, entries, version)
        for i, (cid, raw) in enumerate(zip(customer_ids, versions, strict=True)):
            cached = self._cache.get(cid)
            if cached is None:
                out.append(None)
                read.append((i, next(entries), int(raw or 0)))
            elif cached[1] == int(raw or 0):
                self._cache.move_to_end(cid)
                out.append(cached[0])
            else:
                out.append(None)
                stale.append(i)
        if stale:
            loaded = self._load([customer_ids[i] for i in stale])
            read += [
                (i, members, version) for i, (members, version) in zip(stale, loaded, strict=True)
            ]
        if read:
            states = self._admit(
                [customer_ids[i] for i, _, _ in read], [(m, v) for _, m, v in read]
            )
            for (i, _, _), state in zip(read, states, strict=True):
                out[i] = state
        return [s if s is not None else CustomerState.empty() for s in out]

    def _admit(
        self, customer_ids: Sequence[str], loaded: Sequence[tuple[Sequence[bytes], int]]
    ) -> list[CustomerState]:
        """The states of ``customer_ids`` from their stored entries and versions (``loaded``),
        now cached and counted as reads. Big-amount flags are computed here, once, for all
        at once: a cached state never needs them again (the API scores without updating, so
        it keeps what it read). Raises :class:`CorruptStateError` (naming them, caching
        none) when a customer's entries are not whole entries."""
        self.reads += len(customer_ids)
        corrupt = [
            cid for cid, (m, _) in zip(customer_ids, loaded, strict=True) if not whole_entries(m)
        ]
        if corrupt:
            raise CorruptStateError(corrupt, [self._key(cid) for cid in corrupt])
        states = with_flags([unpack_entries(members) for members, _ in loaded])
        for cid, state, (_, version) in zip(customer_ids, states, loaded, strict=True):
            self._remember(cid, state, version)
        return states

    def _load(self, customer_ids: Sequence[str]) -> list[tuple[Sequence[bytes], int]]:
        """Each customer's entries and version, read together (``MULTI``), so they match."""
        with self.client.pipeline(transaction=True) as pipe:
            for cid in customer_ids:
                pipe.get(self._version_key(cid))
                pipe.zrange(self._key(cid), 0, -1)
            replies = pipe.execute()
        return [(replies[2 * i + 1], int(replies[2 * i] or 0)) for i in range(len(customer_ids))]

    def warm(self, stop: Callable[[], bool], chunk: int = WARM_CHUNK) -> int:
        """Read stored customers' states into the cache, ``chunk`` per round trip, until the
        cache is full, every stored customer is in it, or ``stop()`` is true (asked after each
        chunk); returns how many were read. A process that has just started then scores a
        known customer as fast as one it has seen. Redis's ``SCAN`` order, not recency,
        decides which customers come in when they do not all fit. A customer whose stored
        entries are not whole entries (a corrupt state) is left out and logged: scoring it
        reads it, and fails for it alone, as without the warm-up."""
        if self.cache_rows <= 0:
            return 0
        before = self.reads
        stored = (key[len(self.prefix) :].decode() for key in scan_keys(self.client, self.prefix))
        in_chunks(
            (c for c in stored if c not in self._cache),
            self._admit_intact,
            lambda: self._cached_rows >= self.cache_rows or stop(),
            chunk,
        )
        return self.reads - before

    def _admit_intact(self, customer_ids: Sequence[str]) -> None:
        """Read and admit ``customer_ids``, but those whose entries are not whole entries."""
        intact: list[str] = []
        intact_loaded: list[tuple[Sequence[bytes], int]] = []
        corrupt: list[str] = []
        for cid, entry in zip(customer_ids, self._load(customer_ids), strict=True):
            if whole_entries(entry[0]):
                intact.append(cid)
                intact_loaded.append(entry)
            else:
                corrupt.append(cid)
        if corrupt:
            log.warning(
                "%d customer state(s) not warmed, their stored entries are not %d-byte entries: %s",
                len(corrupt),
                ENTRY.itemsize,
                ", ".join(corrupt[:5]),
            )
        self._admit(intact, intact_loaded)

    # ------------------------------------------------------------ write

    def saved(
        self, customer_ids: Sequence[str], states: Sequence[CustomerState], versions: Sequence[Any]
    ) -> None:
        """Cache the customers' next ``states`` given the reply of :meth:`append_command`
        (each customer's version before and after the write), unless another writer came in
        between."""
        numbers = [int(v) for v in versions]
        for cid, state, before, after in zip(
            customer_ids, states, numbers[::2], numbers[1::2], strict=True
        ):
            cached = self._cache.get(cid)
            if cached is not None and cached[1] == before:
                self._remember(cid, state, after)
            else:  # someone else wrote too: read it back next time
                self._forget(cid)

    def append(self, events: pd.DataFrame) -> None:
        """Add ``events`` (a table: customer, time, amount, transaction id); idempotent by
        transaction id; prunes what no window needs. For loading history in bulk."""
        if events.empty:
            return
        customers, codes = np.unique(
            events["customer_id"].astype(str).to_numpy(dtype=object), return_inverse=True
        )
        codes = codes.astype(np.int64)
        ms = to_ms(events["timestamp"])
        ids = transaction_digests(events["transaction_id"].astype(str).tolist())
        amount = events["amount"].to_numpy(dtype=np.float64)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(customers) + 1))
        start = 0
        while start < len(customers):  # chunks of whole customers, about BULK_ENTRIES each
            stop = int(np.searchsorted(bounds, bounds[start] + BULK_ENTRIES, side="right"))
            stop = max(stop - 1, start + 1)
            rows = order[bounds[start] : bounds[stop]]
            chunk = list(customers[start:stop])
            command = self.append_command(
                chunk, codes[rows] - start, ms[rows], ids[rows], amount[rows]
            )
            execute(self.client, [command], [_APPEND])
            for cid in chunk:
                self._forget(cid)
            start = stop

    def append_command(
        self,
        customer_ids: Sequence[str],
        codes: np.ndarray,
        ms: np.ndarray,
        ids: np.ndarray,
        amount: np.ndarray,
        replaced: Sequence[CustomerState] | None = None,
    ) -> tuple[Any, ...]:
        """The script call appending transactions (customer ``codes`` into ``customer_ids``),
        to send with other writes (:func:`~fraudstream.redis_batch.execute`, with
        :data:`SCRIPTS`); its reply, each customer's versions before and after, goes to
        :meth:`saved`. ``replaced[c]``: entries of customer ``c`` to remove first (the
        earlier entry of a transaction replayed with another time or amount)."""
        members = pack_entries(ms, ids, amount)
        keys: list[bytes] = []
        args: list[bytes | int] = [EXPIRE_S]
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(customer_ids) + 1))
        ms_list = ms.tolist()
        for c, cid in enumerate(customer_ids):
            keys += (self._key(cid), self._version_key(cid))
            rows = order[bounds[c] : bounds[c + 1]].tolist()
            latest = max((ms_list[r] for r in rows), default=0)
            gone = replaced[c] if replaced is not None else None
            old = (
                []
                if gone is None or not len(gone)
                else pack_entries(gone.ms, gone.ids, gone.amount)
            )
            args += (len(rows), latest - CUSTOMER_STATE_MS if rows else 0, len(old), *old)
            for r in rows:
                args += (ms_list[r], members[r])
        return _APPEND.command(keys, args)

    # ------------------------------------------------------------ cache

    def _remember(self, customer_id: str, state: CustomerState, version: int) -> None:
        self._forget(customer_id)
        self._cache[customer_id] = (state, version)
        self._cached_rows += len(state)
        while self._cached_rows > self.cache_rows and len(self._cache) > 1:
            _, (old, _) = self._cache.popitem(last=False)
            self._cached_rows -= len(old)

    def _forget(self, customer_id: str) -> None:
        old = self._cache.pop(customer_id, None)
        if old is not None:
            self._cached_rows -= len(old[0])
