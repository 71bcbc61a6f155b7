"""Results that say how current they are, with real agents and a real collector: the CLI prints
how far evaluation got under every violations and hosts answer (on stderr with --json, so stdout
stays the documented array), `--wait-for-evaluation` waits for every report committed before
the call, or says clearly that evaluation did not get there, and /metrics exports the lag."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlalchemy
from processes import FLEET, metric_value, report_facts, start_collector, write_facts

from rmsfleet.collector.store.evaluation_sql import EVALUATION_LOCK_KEY

pytestmark = pytest.mark.e2e

LINE = re.compile(
    r"^evaluated: (\d+) of the (\d+) reports this collector committed \((.*)\); last evaluation pass (\S+)$"
)


def evaluation_line(text: str) -> re.Match[str]:
    lines = text.strip().splitlines()
    found = LINE.match(lines[-1]) if lines else None
    assert found is not None, f"no evaluation line at the end of:\n{text}"
    return found


def test_answers_say_how_far_evaluation_got(tmp_path: Path, sqlite_url: str) -> None:
    collector = start_collector(tmp_path, sqlite_url)
    try:
        files = sorted(FLEET.glob("*.json"))
        report_facts(collector, *files)

        table = collector.cli("violations", "--wait-for-evaluation").stdout
        line = evaluation_line(table)
        assert (int(line.group(1)), int(line.group(2)), line.group(3)) == (len(files), len(files), "up to date")
        assert line.group(4).endswith("Z")
        assert "client-not-self-activating" in table

        done = collector.cli("violations", "--json", "--wait-for-evaluation")
        violations = json.loads(done.stdout)  # stdout is the documented array, nothing else
        assert isinstance(violations, list) and {v["policy"] for v in violations} >= {"mixed-version-cluster"}
        assert evaluation_line(done.stderr).group(3) == "up to date"

        hosts = collector.cli("hosts")
        assert f"{len(files)} hosts" in hosts.stdout
        assert int(evaluation_line(hosts.stdout).group(2)) == len(files)
        shown = collector.cli("hosts", "show", "ams-rms-01", "--json")
        assert json.loads(shown.stdout)["host"]["host_id"] == "ams-rms-01"
        assert evaluation_line(shown.stderr)

        text = collector.metrics()
        assert metric_value(text, "rmsfleet_evaluation_pending_reports") == 0
        assert metric_value(text, "rmsfleet_evaluation_lag_seconds") == 0
    finally:
        collector.stop()


@pytest.mark.postgres
def test_waiting_is_bounded_and_says_how_far_evaluation_got(tmp_path: Path, postgres_url: str) -> None:
    """Evaluation blocked (the test holds the advisory lock, as another replica's pass would):
    the wait ends after its timeout with one clear line and exit 4, /metrics shows the reports
    waiting, and once evaluation runs the same command answers."""
    collector = start_collector(tmp_path, postgres_url)
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        with engine.connect() as other:
            other.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": EVALUATION_LOCK_KEY})
            document = {
                "host_id": "ws1",
                "hostname": "ws1.corp.example",
                "forest": "corp.example",
                "client": {"version": "RTM", "activation": "internet", "cluster": None},
            }
            report_facts(collector, write_facts(tmp_path / "ws1.json", **document))

            late = collector.cli("violations", "--wait-for-evaluation", "--wait-timeout", "2", check=False)
            assert late.returncode == 4, late.stderr
            assert late.stdout == ""
            (message,) = late.stderr.strip().splitlines()
            assert message.startswith(f"rmsfleet-collector: the collector at {collector.address}: evaluation has not")
            assert "within 2 s: 0 of 1 reports evaluated" in message
            assert "Traceback" not in late.stderr

            now = collector.cli("violations")
            assert evaluation_line(now.stdout).group(3) == "1 not yet; --wait-for-evaluation waits for them"
            text = collector.metrics()
            assert metric_value(text, "rmsfleet_evaluation_pending_reports") == 1
            assert (metric_value(text, "rmsfleet_evaluation_lag_seconds") or 0) > 0

            other.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": EVALUATION_LOCK_KEY})
        answered = collector.cli("violations", "--json", "--wait-for-evaluation")
        assert [v["subject"] for v in json.loads(answered.stdout)] == ["ws1"]
        assert metric_value(collector.metrics(), "rmsfleet_evaluation_pending_reports") == 0
    finally:
        engine.dispose()
        collector.stop()
