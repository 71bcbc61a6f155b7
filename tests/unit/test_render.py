"""What the query commands print (collector/render.py) from given answers: aligned tables with
every control character escaped, and JSON that round-trips."""

from __future__ import annotations

import json
from typing import Any

from rmsfleet.collector import render

HOST: dict[str, Any] = {
    "host_id": "ams-rms-01",
    "hostname": "ams-rms-01.corp.example",
    "forest": "corp.example",
    "server": {
        "version": "SP1",
        "cluster": "https://rms.corp.example",
        "cluster_kind": "root-certification",
        "root_cluster": None,
        "enrollment": "offline",
    },
    "client": None,
    "first_seen": "2026-01-01T00:00:00Z",
    "last_seen": "2026-01-02T00:00:00Z",
    "observed_at": "2026-01-02T00:00:00Z",
    "last_sequence": 3,
    "agent_version": "0.1.0",
    "stale": False,
}
CLIENT: dict[str, Any] = {
    **HOST,
    "host_id": "ws-07",
    "server": None,
    "client": {"version": "BUILTIN", "activation": "unknown", "cluster": None},
    "stale": True,
}


def lines(text: str) -> list[str]:
    return text.rstrip("\n").split("\n")


def test_hosts_table_aligns_columns_and_counts() -> None:
    table = lines(render.hosts_table([HOST, CLIENT]))
    assert table[0].split() == ["HOST", "FOREST", "SERVER", "CLUSTER", "CLIENT", "ACTIVATION", "LAST_SEEN", "STALE"]
    assert table[1].split() == [
        "ams-rms-01",
        "corp.example",
        "SP1",
        "https://rms.corp.example",
        "-",
        "-",
        "2026-01-02T00:00:00Z",
    ]
    assert table[2].split() == ["ws-07", "corp.example", "-", "-", "BUILTIN", "unknown", "2026-01-02T00:00:00Z", "yes"]
    # Every column starts at the same offset on every line.
    start = table[0].index("CLUSTER")
    assert table[1][start:].startswith("https://") and table[2][start:].startswith("-")
    assert table[-1] == "2 hosts"


def test_a_control_character_in_data_is_escaped_not_sent_to_the_terminal() -> None:
    hostile = {**HOST, "host_id": "evil\x1b[2J\x1b]0;pwned\x07", "forest": "a\u202eb"}
    table = render.hosts_table([hostile])
    assert "\x1b" not in table and "\x07" not in table and "\u202e" not in table
    assert "evil\\x1b[2J\\x1b]0;pwned\\x07" in table
    assert "a\\u202eb" in table
    assert len(lines(table)) == 3, "a newline in a cell cannot forge a row"
    forged = render.violations_table(
        [
            {
                "policy": "stale-agent",
                "severity": "warning",
                "subject_kind": "host",
                "subject": "x\nstale-agent  critical",
                "since": "2026-01-01T00:00:00Z",
                "resolved_at": None,
                "detail": "\r",
            }
        ],
        with_resolved=False,
    )
    assert len(lines(forged)) == 2 and "x\\nstale-agent" in forged and "\\r" in forged


def test_unicode_that_prints_is_left_alone() -> None:
    assert render.printable("Zürich - 東京 😀") == "Zürich - 東京 😀"
    assert render.printable("tab\there") == "tab\\there"
    assert render.printable("\x7f\x85\u2028") == "\\x7f\\x85\\u2028"


def test_json_is_the_data_itself_and_escapes_control_characters() -> None:
    hostile = {**HOST, "host_id": "evil\x1b[2J"}
    text = render.as_json([hostile, CLIENT])
    assert "\x1b" not in text
    assert json.loads(text) == [hostile, CLIENT]


def test_empty_lists_say_none() -> None:
    assert lines(render.violations_table([], with_resolved=True)) == [
        "POLICY  SEVERITY  SUBJECT_KIND  SUBJECT  SINCE  RESOLVED_AT  DETAIL",
        "(none)",
    ]
    assert lines(render.exemptions_table([]))[-1] == "(none)"
    assert lines(render.clusters_table([]))[-1] == "(none)"


def test_violations_show_resolved_at_only_when_asked() -> None:
    violation = {
        "policy": "client-not-self-activating",
        "severity": "warning",
        "subject_kind": "host",
        "subject": "ws1",
        "since": "2026-01-01T00:00:00Z",
        "resolved_at": "2026-01-03T00:00:00Z",
        "detail": "D10: activate it.",
    }
    assert "RESOLVED_AT" not in render.violations_table([violation], with_resolved=False)
    both = lines(render.violations_table([violation], with_resolved=True))
    assert both[1].split()[:6] == [
        "client-not-self-activating",
        "warning",
        "host",
        "ws1",
        "2026-01-01T00:00:00Z",
        "2026-01-03T00:00:00Z",
    ]


def test_clusters_exemptions_and_host_detail() -> None:
    cluster = {
        "url": "https://rms.corp.example",
        "kind": "root-certification",
        "root_cluster": None,
        "forest": "corp.example",
        "server_versions": {"SP1": 2, "SP2": 1},
        "client_versions": {},
        "offline_enrollment": True,
        "self_activating_clients": "some",
        "server_lockbox": False,
        "sql_server_2005_by_default": False,
    }
    row = lines(render.clusters_table([cluster]))[1].split()
    assert row == [
        "https://rms.corp.example",
        "root-certification",
        "-",
        "corp.example",
        "SP1:2",
        "SP2:1",
        "-",
        "yes",
        "some",
        "no",
        "no",
    ]
    exemption = {"id": 4, "policy": "stale-agent", "subject_kind": "host", "subject": "ws1", "reason": "kiosk"}
    assert lines(render.exemptions_table([{**exemption, "expires_at": None}]))[1].split() == [
        "4",
        "stale-agent",
        "host",
        "ws1",
        "kiosk",
        "never",
    ]
    detail = render.host_detail_table({"host": HOST, "history": [{"changed_at": "2026-01-01T00:00:00Z", **HOST}]})
    assert "\nHISTORY\n" in detail
    assert lines(detail)[-1].split() == ["2026-01-01T00:00:00Z", "SP1", "https://rms.corp.example", "-"]


def test_plan_text_lists_waves_checklists_and_unplanned_hosts() -> None:
    plan = {
        "waves": [
            {
                "wave": 1,
                "checklist": [
                    {"forest": "corp.example", "cluster": "https://rms", "action": "Back up\x1b the database"}
                ],
                "steps": [
                    {
                        "forest": "corp.example",
                        "cluster": "https://rms",
                        "role": "server",
                        "hosts": ["s1", "s2"],
                        "from": "SP1",
                        "to": "SP2",
                    }
                ],
            }
        ],
        "unplanned": [{"host_id": "s9\x1b", "role": "server", "version": "UNKNOWN", "reason": "unknown version"}],
    }
    text = render.plan_text(plan)
    assert lines(text)[1].split() == [
        "1",
        "corp.example",
        "https://rms",
        "server",
        "SP1",
        "->",
        "SP2",
        "2",
        "s1,",
        "s2",
    ]
    assert "Before wave 1 (D4):\n  [https://rms] Back up\\x1b the database\n" in text
    assert "Not planned:\n  s9\\x1b (server UNKNOWN): unknown version\n" in text
    assert "\x1b" not in text
    assert "(nothing to upgrade" in render.plan_text({"waves": [], "unplanned": []})


def test_the_evaluation_line_says_how_far_evaluation_got() -> None:
    mark: dict[str, Any] = {
        "collector_id": "c0ffee",
        "reports_committed": 32,
        "reports_evaluated": 32,
        "evaluated_at": "2026-11-01T12:00:03Z",
        "oldest_pending_at": None,
    }
    assert render.evaluation_line(mark) == (
        "evaluated: 32 of the 32 reports this collector committed (up to date); "
        "last evaluation pass 2026-11-01T12:00:03Z\n"
    )
    behind = render.evaluation_line({**mark, "reports_committed": 33, "evaluated_at": None})
    assert "(1 not yet; --wait-for-evaluation waits for them)" in behind
    assert behind.endswith("last evaluation pass none yet\n")
