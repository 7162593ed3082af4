"""The customer history's stored entries: what counts as whole, and the error that names
the keys that are not (pure functions; the reads are in tests/integration/test_history.py)."""

from __future__ import annotations

import numpy as np
import pytest

from fraudstream.features import transaction_digests
from fraudstream.history import (
    ENTRY,
    CorruptStateError,
    pack_entries,
    unpack_entries,
    whole_entries,
)

pytestmark = pytest.mark.unit


def test_written_entries_are_whole_and_read_back() -> None:
    ms = np.array([3_000, 1_000, 2_000], dtype=np.int64)
    ids = transaction_digests(["a", "b", "c"])
    amount = np.array([1.5, 2.5, 3.5])
    members = pack_entries(ms, ids, amount)
    assert whole_entries(members) and whole_entries([])
    state = unpack_entries(members)
    assert state.ms.tolist() == [1_000, 2_000, 3_000]  # time order
    assert state.amount.tolist() == [2.5, 3.5, 1.5]


@pytest.mark.parametrize(
    "sizes",
    [[ENTRY.itemsize - 1], [ENTRY.itemsize + 1], [ENTRY.itemsize - 1, ENTRY.itemsize + 1], [0]],
)
def test_members_of_other_sizes_are_not_whole(sizes: list[int]) -> None:
    # [23, 25]: as many bytes as two entries, but neither member is one
    whole = pack_entries(np.array([1], np.int64), transaction_digests(["x"]), np.array([1.0]))
    assert not whole_entries([*whole, *(b"\0" * n for n in sizes)])


def test_the_error_names_the_keys_and_says_what_to_do() -> None:
    one = CorruptStateError(["c1"], [b"fraudstream:p:history:c1"])
    assert one.customer_ids == ["c1"]
    assert str(one) == (
        "stored customer history is not whole 24-byte entries: fraudstream:p:history:c1 "
        "(repair or delete it; its customer's transactions cannot be scored until then)"
    )
    many = CorruptStateError([f"c{i}" for i in range(7)], [f"k{i}".encode() for i in range(7)])
    assert "k0, k1, k2, k3, k4 and 2 more (repair or delete each;" in str(many)
