"""Several Redis commands in one round trip, Lua scripts included.

The scorer's reads (customer versions, terminal stamps) and writes (history append,
customer-view write) are each sent as one pipeline: one round trip per phase, which on a
busy machine costs far more than the commands themselves. Scripts are sent by SHA
(``EVALSHA``); a script Redis has not seen yet (a restart, ``SCRIPT FLUSH``) is loaded and
only the commands that failed for that reason are sent again, so no command runs twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis


@dataclass(frozen=True)
class Script:
    """A Lua script, called by its SHA-1."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        sha = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", sha)

    def command(self, keys: Sequence[Any], args: Sequence[Any]) -> tuple[Any, ...]:
        """The ``EVALSHA`` command calling this script (for :func:`execute`)."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


def execute(
    client: redis.Redis, commands: Sequence[tuple[Any, ...]], scripts: Sequence[Script] = ()
) -> list[Any]:
    """The replies of ``commands``, sent in one pipeline (no transaction).

    ``scripts`` are those the commands may call: if Redis lacks one, they are loaded and the
    commands that failed with ``NOSCRIPT`` are sent again. Any other error of a command is
    raised (after the others ran), as are connection errors.
    """
    replies = _pipeline(client, commands)
    missing = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
    if missing and scripts:
        for script in scripts:
            client.script_load(script.source)
        for i, reply in zip(
            missing, _pipeline(client, [commands[i] for i in missing]), strict=True
        ):
            replies[i] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _pipeline(client: redis.Redis, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    with client.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute(raise_on_error=False))
