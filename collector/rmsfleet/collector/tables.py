"""Aligned plain-text tables for the CLI."""

from __future__ import annotations

from collections.abc import Sequence

from rmsfleet.contract.text import escape


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    # Cells come from agents' reports: a control or format character that an older collector
    # stored is shown escaped, never sent to the terminal (docs/limits.md).
    cells = [[escape(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.extend("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)
    return "\n".join(lines)
