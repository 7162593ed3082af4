"""The dead-letter format shared by its writer (``streaming.worker.dead_letter``) and its
readers (``fraudstream dlq --error-type``, :mod:`fraudstream.redrive`).

A dead letter keeps the original message's key and bytes; its headers say why: ``error``
(one line), :data:`ERROR_TYPE` (one of :data:`ERROR_TYPES`), the source's topic, partition,
offset and timestamp, and :data:`VALUE_BYTES` / :data:`KEY_BYTES` (the full size) when
only the head of an oversized value / key was kept.

A message :mod:`fraudstream.redrive` sent back carries :data:`REDRIVEN_FROM`
(``topic:partition:offset`` of its dead letter); the worker copies it onto the message's
decision, or onto its dead letter if it fails again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: Header names.
ERROR = "error"
ERROR_TYPE = "error_type"
VALUE_BYTES = "value_bytes"
KEY_BYTES = "key_bytes"
REDRIVEN_FROM = "redriven_from"

#: ``error_type`` values: a message that is not a valid event,
INVALID_EVENT = "invalid_event"
#: a valid event that could not be scored (a corrupt stored state, a bug),
SCORING_FAILED = "scoring_failed"
#: every message of a batch the worker failed on.
WORKER_ERROR = "worker_error"
ERROR_TYPES = (INVALID_EVENT, SCORING_FAILED, WORKER_ERROR)


def error_type_of(headers: Mapping[str, bytes | None]) -> str:
    """A dead letter's ``error_type`` from its headers (``unknown`` without one)."""
    raw = headers.get(ERROR_TYPE)
    return raw.decode(errors="replace") if raw else "unknown"


#: The longest :data:`REDRIVEN_FROM` value taken (``topic:partition:offset``; a topic name
#: has at most 249 characters): a longer one is not ours, and copied onto a decision or a
#: dead letter it could make that message too large to send.
MAX_REDRIVEN_FROM_BYTES = 512


def redriven_from(
    headers: Sequence[tuple[str, bytes | None]] | Mapping[str, Any] | None,
) -> bytes | None:
    """The :data:`REDRIVEN_FROM` header of a message's ``headers``, if it has one of at most
    :data:`MAX_REDRIVEN_FROM_BYTES` (a longer one is ignored)."""
    if not headers:
        return None
    if isinstance(headers, Mapping):
        value = headers.get(REDRIVEN_FROM)
    else:
        value = next((v for name, v in headers if name == REDRIVEN_FROM), None)
    if isinstance(value, bytes) and len(value) <= MAX_REDRIVEN_FROM_BYTES:
        return value
    return None
