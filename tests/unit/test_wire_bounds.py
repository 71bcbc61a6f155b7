"""The bounds of the report contract at the collector's edge (pure: the time is passed in)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from rmsfleet.contract.facts import Activation, ClientFacts, HostFacts, InvalidFacts, Version
from rmsfleet.contract.wire import MAX_SEQUENCE, check_wire_text, quote, report_fields_from_pb, report_request

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
FACTS = HostFacts("ws-1", "ws-1.corp.example", "corp.example", None, ClientFacts(Version.SP2, Activation.SELF, None))


def test_a_quote_is_bounded_and_says_how_long_the_value_was() -> None:
    assert quote("ws-1") == "'ws-1'"
    assert quote("h" * 3_000_000) == f"'{'h' * 40}'... (3000000 characters)"


@pytest.mark.parametrize("value", ["a\x00b", "line\nbreak", "tab\there", "del\x7f"])
def test_control_characters_are_refused_in_wire_text(value: str) -> None:
    with pytest.raises(InvalidFacts) as refused:
        check_wire_text("agent_version", value, 64)
    assert refused.value.field == "agent_version" and "control characters" in refused.value.reason


def test_observed_at_is_bounded_by_the_collectors_clock() -> None:
    fits = report_request(FACTS, NOW + timedelta(hours=23), 5, "1.0")
    assert report_fields_from_pb(fits, NOW)[1] == NOW + timedelta(hours=23)
    ahead = report_request(FACTS, NOW + timedelta(hours=25), 5, "1.0")
    with pytest.raises(InvalidFacts) as refused:
        report_fields_from_pb(ahead, NOW)
    assert refused.value.field == "observed_at"
    assert refused.value.reason.startswith("a time from 2000-01-01T00:00:00+00:00 to 2026-11-02T12:00:00+00:00")
    broken = report_request(FACTS, NOW, 5, "1.0")
    broken.observed_at.CopyFrom(Timestamp(seconds=253_402_300_800))  # 10000-01-01
    with pytest.raises(InvalidFacts, match="observed_at: a valid timestamp"):
        report_fields_from_pb(broken, NOW)


def test_the_sequence_fits_the_signed_column() -> None:
    assert report_fields_from_pb(report_request(FACTS, NOW, MAX_SEQUENCE, "1.0"), NOW)[2] == 2**63 - 1
    with pytest.raises(InvalidFacts, match="sequence: a per-host sequence number > 0 and at most 9223372036854775807"):
        report_fields_from_pb(report_request(FACTS, NOW, MAX_SEQUENCE + 1, "1.0"), NOW)
