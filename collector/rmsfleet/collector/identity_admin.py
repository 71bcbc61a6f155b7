"""The duration of a re-enrollment allowance (`rmsfleet-collector hosts allow-reenroll HOST
[--for DURATION] --db URL`, written by admin.allow_reenroll like `hosts revoke`)."""

from __future__ import annotations

import re
from datetime import timedelta

DEFAULT_ALLOWANCE = timedelta(hours=1)
MAX_ALLOWANCE = timedelta(days=30)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class DurationError(ValueError):
    pass


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `2h`, `7d` or a number of seconds; from 1 second to 30 days."""
    match = _DURATION.match(text)
    if match is None:
        raise DurationError(f"expected a duration such as 30m, 2h or 7d, got {text!r}")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not 1 <= seconds <= MAX_ALLOWANCE.total_seconds():
        raise DurationError(f"expected a duration from 1s to {MAX_ALLOWANCE.days}d, got {text!r}")
    return timedelta(seconds=seconds)
