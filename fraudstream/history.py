"""Each customer's recent transactions in Redis: the state behind the real-time features.

Why Redis and not a Faust table: the state is needed by every worker that may own the
customer's partition after a rebalance and by the REST API, which scores on the same
code path; a Redis sorted set per customer is read by any of them at once, with no
changelog to replay after a restart. Writes are idempotent: an entry is keyed by the
transaction id (``ZADD NX``), and a transaction replayed after a crash is left out of
its own history when its features are recomputed, so the replay scores it exactly as
the first time.

Layout: ``fraudstream:<namespace>:history:<customer_id>`` (the namespace is the Feast
project, so two deployments sharing a Redis keep apart) is a sorted set whose score is the
transaction time in epoch milliseconds and whose member is ``<transaction_id>\\x1f<amount>``
(``repr`` of the float, exact). Entries older than :data:`CUSTOMER_HISTORY_MS` before the
customer's latest transaction are removed on write; the key expires after a quiet period.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import redis

from fraudstream.features import CUSTOMER_HISTORY_MS, MS_PER_DAY, to_ms

log = logging.getLogger(__name__)

SEPARATOR = "\x1f"
#: A customer quiet for this long has nothing left in any window: the key may go.
EXPIRE_S = (CUSTOMER_HISTORY_MS + 7 * MS_PER_DAY) // 1000
HISTORY_FRAME_COLUMNS = ["customer_id", "timestamp", "amount", "transaction_id"]


def empty_history() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.array([], dtype="string[pyarrow]"),
            "timestamp": pd.DatetimeIndex([], tz="UTC"),
            "amount": np.array([], dtype=np.float64),
            "transaction_id": pd.array([], dtype="string[pyarrow]"),
        }
    )


class CustomerHistory:
    """Load and append customers' recent transactions, one pipelined round trip each."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.prefix = f"fraudstream:{namespace}:history:".encode()

    def _key(self, customer_id: str) -> bytes:
        return self.prefix + customer_id.encode()

    def load(self, customer_ids: Sequence[str], since_ms: int) -> pd.DataFrame:
        """Transactions of ``customer_ids`` at or after ``since_ms`` (history columns)."""
        unique = list(dict.fromkeys(customer_ids))
        with self.client.pipeline(transaction=False) as pipe:
            for cid in unique:
                pipe.zrangebyscore(self._key(cid), since_ms, "+inf", withscores=True)
            replies = pipe.execute()
        customers: list[str] = []
        stamps: list[float] = []
        amounts: list[float] = []
        ids: list[str] = []
        for cid, entries in zip(unique, replies, strict=True):
            for member, score in entries:
                txid, _, amount = member.decode().rpartition(SEPARATOR)
                customers.append(cid)
                stamps.append(score)
                amounts.append(float(amount))
                ids.append(txid)
        if not customers:
            return empty_history()
        return pd.DataFrame(
            {
                "customer_id": pd.array(customers, dtype="string[pyarrow]"),
                "timestamp": pd.to_datetime(
                    np.asarray(stamps, dtype=np.int64), unit="ms", utc=True
                ),
                "amount": np.asarray(amounts, dtype=np.float64),
                "transaction_id": pd.array(ids, dtype="string[pyarrow]"),
            }
        )

    def append(self, events: pd.DataFrame) -> None:
        """Add ``events`` (idempotent by transaction id) and prune what no window needs."""
        ms = to_ms(events["timestamp"])
        customers = events["customer_id"].astype(str).to_numpy()
        with self.client.pipeline(transaction=False) as pipe:
            for cid, txid, amount, t in zip(
                customers,
                events["transaction_id"].astype(str).to_numpy(),
                events["amount"].to_numpy(dtype=np.float64),
                ms,
                strict=True,
            ):
                member = f"{txid}{SEPARATOR}{float(amount)!r}"
                pipe.zadd(self._key(cid), {member: int(t)}, nx=True)
            latest = pd.Series(ms).groupby(customers).max()
            for cid, t in latest.items():
                key = self._key(str(cid))
                pipe.zremrangebyscore(key, "-inf", int(t) - CUSTOMER_HISTORY_MS)
                pipe.expire(key, EXPIRE_S)
            pipe.execute()
