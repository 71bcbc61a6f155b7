"""Version map: dotted prefixes to releases, never a guess."""

from __future__ import annotations

import pytest

from rmsfleet.agent.probe.version_map import (
    DEFAULT_RULES,
    Role,
    Source,
    VersionMap,
    configured_rule,
    parse_dotted,
)
from rmsfleet.contract.facts import Version


def test_the_built_in_rules_are_the_three_server_assembly_versions_of_ms_rmprs() -> None:
    assert {(rule.role, rule.prefix_text, rule.release) for rule in DEFAULT_RULES} == {
        (Role.SERVER, "1.0.3246.0", Version.RTM),
        (Role.SERVER, "5.2.3790.134", Version.SP1),
        (Role.SERVER, "5.2.3790.300", Version.SP2),
    }
    assert all(rule.source is Source.KNOWN and "[MS-RMPRS] 2.3.1.2" in rule.note for rule in DEFAULT_RULES)


def test_no_client_version_is_mapped_until_the_operator_configures_one() -> None:
    versions = VersionMap.with_defaults()
    for raw in ("5.2.3790.134", "5.2.3790.300", "6.0.6406.0", "1.0.3246.0"):
        assert versions.release(Role.CLIENT, raw) is Version.UNKNOWN
    configured = VersionMap.with_defaults([configured_rule(Role.CLIENT, "5.2.3790.100", "RTM")])
    assert configured.release(Role.CLIENT, "5.2.3790.100") is Version.RTM


def test_server_versions_near_a_known_one_are_unknown() -> None:
    versions = VersionMap.with_defaults()
    assert versions.release(Role.SERVER, "5.2.3790.134") is Version.SP1
    assert versions.release(Role.SERVER, "5.2.3790.1340") is Version.UNKNOWN
    assert versions.release(Role.SERVER, "5.2.3790") is Version.UNKNOWN
    assert versions.release(Role.SERVER, "5.2.3790.301") is Version.UNKNOWN


def test_prefixes_match_whole_numbers_only() -> None:
    versions = VersionMap([configured_rule(Role.CLIENT, "6.0.6406", "SP2")])
    assert versions.release(Role.CLIENT, "6.0.6406.0") is Version.SP2
    assert versions.release(Role.CLIENT, "6.0.6406") is Version.SP2
    assert versions.release(Role.CLIENT, "6.0.64061.0") is Version.UNKNOWN
    assert versions.release(Role.CLIENT, "6.0") is Version.UNKNOWN


def test_leading_zeros_do_not_matter() -> None:
    versions = VersionMap.with_defaults()
    assert versions.release(Role.SERVER, "5.2.3790.0300") is Version.SP2


def test_roles_are_separate() -> None:
    versions = VersionMap([configured_rule(Role.SERVER, "1.0.701", "SP2")])
    assert versions.release(Role.CLIENT, "1.0.701.0") is Version.UNKNOWN


def test_unmappable_versions_are_unknown() -> None:
    versions = VersionMap.with_defaults()
    for raw in ("", "garbage", "6.1.7601.17514", "v1.0", "1..0"):
        assert versions.release(Role.SERVER, raw) is Version.UNKNOWN


def test_a_52_client_is_not_sp2_just_because_the_sp2_lockbox_is_52() -> None:
    # domain.md: the SP2 client's *lockbox* is 5.2.0.0 or later; that says nothing of the client.
    assert VersionMap.with_defaults().release(Role.CLIENT, "5.2.0.0") is Version.UNKNOWN


def test_the_longest_prefix_wins_and_a_configured_rule_wins_a_tie() -> None:
    versions = VersionMap.with_defaults(
        [configured_rule(Role.SERVER, "5.2", "UNKNOWN"), configured_rule(Role.SERVER, "5.2.3790.134", "SP2")]
    )
    assert versions.release(Role.SERVER, "5.2.3790.300") is Version.SP2  # the longer built-in rule still wins
    assert versions.release(Role.SERVER, "5.2.3790.200") is Version.UNKNOWN
    rule = versions.rule_for(Role.SERVER, "5.2.3790.134")
    assert rule is not None and rule.source is Source.CONFIGURED and rule.release is Version.SP2


def test_conflicting_configured_rules_are_rejected() -> None:
    with pytest.raises(ValueError, match="mapped to both"):
        VersionMap([configured_rule(Role.SERVER, "1.0.701", "SP2"), configured_rule(Role.SERVER, "1.0.701", "SP1")])


@pytest.mark.parametrize(("prefix", "release"), [("six", "SP2"), ("6.0", "SP3"), ("6.0.", "SP2"), ("6.1", "BUILTIN")])
def test_bad_configured_rules_say_what_was_expected(prefix: str, release: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        configured_rule(Role.CLIENT, prefix, release)


def test_parse_dotted() -> None:
    assert parse_dotted("5.2.3790.0134") == (5, 2, 3790, 134)
    assert parse_dotted(" 6 ") == (6,)
    assert parse_dotted("6.0.x") is None
