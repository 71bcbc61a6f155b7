"""The enrollment secret file, as the agent and the collector both read it (docs/security.md):
one secret per line, surrounding spaces removed; blank lines and lines starting with `#` are
not secrets. The collector accepts every listed secret (so secrets rotate without downtime);
the agent sends the first."""

from __future__ import annotations


def secret_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
