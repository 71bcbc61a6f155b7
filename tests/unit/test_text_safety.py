"""Control and format characters: refused in every identifier of the facts contract and the wire,
named in the refusal, and printed escaped by the CLI's tables and the collector's log lines."""

from __future__ import annotations

import io
import logging
import re
from dataclasses import replace

import pytest

from rmsfleet.collector.log_format import EscapingFormatter
from rmsfleet.collector.render import render_table
from rmsfleet.contract.facts import (
    Activation,
    ClientFacts,
    ClusterKind,
    Enrollment,
    HostFacts,
    InvalidFacts,
    ServerFacts,
    Version,
    validate,
)
from rmsfleet.contract.text import escape, unsafe_character
from rmsfleet.contract.wire import check_wire_text

FACTS = HostFacts(
    "ws-1",
    "ws-1.corp.example",
    "corp.example",
    ServerFacts(Version.SP2, "https://rms.corp.example", ClusterKind.ROOT_CERTIFICATION, None, Enrollment.OFFLINE),
    ClientFacts(Version.SP2, Activation.SELF, "https://rms.corp.example"),
)

# (character, how the refusal names it): C0 and C1 controls, bidi and zero-width format
# characters, the BOM, a lone surrogate (a JSON facts file can hold one), the line separators.
UNSAFE = [
    ("\x1b", "U+001B"),
    ("\x85", "U+0085"),
    ("\u202e", "U+202E RIGHT-TO-LEFT OVERRIDE"),
    ("\u200b", "U+200B ZERO WIDTH SPACE"),
    ("\ufeff", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
    ("\ud800", "U+D800"),
    ("\u2028", "U+2028 LINE SEPARATOR"),
    ("\u2029", "U+2029 PARAGRAPH SEPARATOR"),
]


@pytest.mark.parametrize(("char", "named"), UNSAFE)
@pytest.mark.parametrize("field", ["host_id", "hostname", "forest", "server.cluster", "client.cluster"])
def test_every_identifier_of_the_facts_refuses_control_and_format_characters(char: str, named: str, field: str) -> None:
    value = f"ws{char}-1"
    if field == "server.cluster":
        assert FACTS.server is not None
        facts = replace(FACTS, server=replace(FACTS.server, cluster=value))
    elif field == "client.cluster":
        assert FACTS.client is not None
        facts = replace(FACTS, client=replace(FACTS.client, cluster=value))
    elif field == "host_id":
        facts = replace(FACTS, host_id=value)
    elif field == "hostname":
        facts = replace(FACTS, hostname=value)
    else:
        facts = replace(FACTS, forest=value)
    with pytest.raises(InvalidFacts) as refused:
        validate(facts)
    assert refused.value.field == field
    assert refused.value.reason == f"no control characters or format characters (got {named} at position 2)"


@pytest.mark.parametrize(("char", "named"), UNSAFE)
def test_wire_text_refuses_them_too(char: str, named: str) -> None:
    with pytest.raises(InvalidFacts, match=re.escape(f"got {named} at position 3")):
        check_wire_text("forest", f"abc{char}", 255)


@pytest.mark.parametrize("value", ["ws-1.corp.example", "Ünïcödé-hôst", "主机-01", "a b", "x\u00a0y", "ws-\ue000"])
def test_printable_text_and_harmless_spaces_pass(value: str) -> None:
    assert unsafe_character(value) is None
    check_wire_text("hostname", value, 255)


def test_escape_writes_unsafe_characters_as_escapes_and_leaves_the_rest() -> None:
    assert escape("ws-1\x1b[31m\u202eexe.txt\nforged") == "ws-1\\x1b[31m\\u202eexe.txt\\nforged"
    assert escape("主机-01 ok") == "主机-01 ok"


def test_a_table_prints_a_stored_escape_sequence_as_text() -> None:
    table = render_table(["host", "forest"], [["ws\x1b[2J-1", "corp\u202eexample"]])
    assert "\x1b" not in table and "\u202e" not in table
    assert table.splitlines()[1] == "ws\\x1b[2J-1  corp\\u202eexample"


def test_a_log_line_cannot_be_forged_with_a_line_break_or_terminal_codes() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EscapingFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test_text_safety")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("refused host %s", "ws-1\nINFO enrolled host admin\x1b[8m")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == "WARNING refused host ws-1\\nINFO enrolled host admin\\x1b[8m\n"


def test_a_reply_names_a_long_identifier_by_its_start_and_length() -> None:
    # Found by bench/fuzz_collector.py: a 255-character host id of four-byte characters, named
    # four times in a refusal, made a status message over gRPC's 8 KiB trailer limit, so the agent
    # saw RESOURCE_EXHAUSTED instead of the reason.
    from rmsfleet.collector.enrollment import KeyProblem, NodeKeyRejected
    from rmsfleet.contract.text import shown

    host = "😀" * 255
    assert shown("ws-1.corp.example") == "ws-1.corp.example"
    assert shown(host) == "😀" * 40 + "... (255 characters)"
    message = NodeKeyRejected(host, KeyProblem.WRONG_HOST).message
    assert len(message.encode("utf-8")) < 1000
