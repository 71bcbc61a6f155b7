"""Durations on the command line: a re-enrollment allowance (`hosts allow-reenroll HOST --for
DURATION`) and a token's lifetime (`tokens create NAME --expires-in DURATION`)."""

from __future__ import annotations

import re
from datetime import timedelta

DEFAULT_ALLOWANCE = timedelta(hours=1)
MAX_ALLOWANCE = timedelta(days=30)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class DurationError(ValueError):
    pass


def parse_duration(text: str, maximum: timedelta = MAX_ALLOWANCE) -> timedelta:
    """`90s`, `30m`, `2h`, `7d` or a number of seconds; from 1 second to `maximum` (30 days)."""
    match = _DURATION.match(text)
    if match is None:
        raise DurationError(f"expected a duration such as 30m, 2h or 7d, got {text!r}")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not 1 <= seconds <= maximum.total_seconds():
        raise DurationError(f"expected a duration from 1s to {maximum.days}d, got {text!r}")
    return timedelta(seconds=seconds)
