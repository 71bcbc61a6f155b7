"""A small run of the structure-aware fuzzer (bench/fuzz_collector.py) against a collector process
on SQLite and on PostgreSQL: a few thousand Report, Enroll, query and admin calls, none answered INTERNAL
or UNKNOWN, the collector alive and SERVING afterwards with no traceback in its log, every stored
row readable through the facts contract, and the database's integrity check clean."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The repository root is not on the path by default; bench/ is a namespace package under it.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.fuzz_collector import fuzz
from rmsfleet.collector.metrics import ADMIN_ACTIONS

pytestmark = pytest.mark.e2e


def test_a_few_thousand_fuzzed_calls_find_nothing(db_url: str, tmp_path: Path) -> None:
    findings = fuzz(db_url, 3000, seed_value=20261202, workdir=tmp_path)
    assert findings.problems == []
    assert findings.inputs >= 3000
    # The run reached the database, not only the edge's refusals.
    assert findings.codes["Report OK"] > 50
    assert findings.codes["Enroll OK"] + findings.codes["Enroll PERMISSION_DENIED"] > 0
    assert sum(n for code, n in findings.codes.items() if code.endswith(" INVALID_ARGUMENT")) > 100
    # The admin API was reached with the admin token, and refused without one.
    assert (
        sum(n for code, n in findings.codes.items() if code.split()[0] in ADMIN_ACTIONS and code.endswith(" OK")) > 20
    )
    assert findings.codes["AddExemption UNAUTHENTICATED"] > 0
