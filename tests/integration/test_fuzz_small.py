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


def test_a_crash_in_the_log_is_a_finding_but_a_fuzzed_value_that_says_traceback_is_not() -> None:
    """Hypothesis mines string constants from the fuzzer's own source, so a fuzzed token name
    can be "Traceback": the refusal that names it is no crash (a 90,000-input run reported one)."""
    from bench.fuzz_collector import CRASH_SIGNS

    refusal = "2026-12-02 08:02:42,440 WARNING rmsfleet.collector.admin_servicer: no token named Traceback\n"
    assert not any(sign.search(refusal) for sign in CRASH_SIGNS)
    for crash in (
        refusal + 'Traceback (most recent call last):\n  File "x.py", line 1\n',
        refusal + "2026-12-02 08:02:43,001 ERROR grpc._server: Exception calling application: boom\n",
    ):
        assert any(sign.search(crash) for sign in CRASH_SIGNS)
