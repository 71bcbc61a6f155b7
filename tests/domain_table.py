"""domain.md's policy table, read from shared/domain.md itself in every run (no hand copy), so a
test that compares the code or the deploy files with it fails as soon as the truth changes.

CI lays shared/ beside the clone, as it is beside the working copy; a bare checkout without it
skips with the reason, and under CI=true the tests that need it fail instead."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOMAIN_MD = REPO.parent / "shared" / "domain.md"

_CODE = re.compile(r"`([^`]+)`")


def parse_policy_table(text: str, source: str = "domain.md") -> dict[str, tuple[str, ...]]:
    """The table under the heading "What the product flags": policy id -> the fact ids (D1..)
    in its `from` column, in the order written."""
    policies: dict[str, tuple[str, ...]] = {}
    in_table = False
    for line in text.splitlines():
        if line.startswith("#"):
            in_table = line.lstrip("#").strip().lower().startswith("what the product flags")
            continue
        if not in_table or not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        policy = _CODE.fullmatch(cells[0])
        if policy is not None and len(cells) >= 3:
            policies[policy.group(1)] = tuple(re.findall(r"\bD\d+\b", cells[2]))
    if not policies:
        raise AssertionError(f"found no policy table in {source}: has its format changed?")
    return policies
