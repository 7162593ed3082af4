"""The base of every error fraudstream reports to a user as a message, not a traceback."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class FraudstreamError(Exception):
    """An error whose message says what is wrong and which setting or input to fix."""


def describe_validation(exc: ValidationError) -> str:
    """A pydantic error on one line: each wrong field (dotted path) and what is wrong."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        message = re.sub(r" or instance of \w+$", "", err["msg"].removeprefix("Value error, "))
        parts.append(f"{loc}: {message}" if loc else message)
    return "; ".join(parts)
