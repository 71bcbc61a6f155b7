"""From a product or file version ("5.2.3790.134") to an RMS release (RTM, SP1, SP2), per role.

A rule maps a dotted version *prefix* to a release for one role (server or client). A version
matches a rule when the rule's numbers are the version's leading numbers ("6.0.6406" matches
"6.0.6406.0" but not "6.0.64061.0"; leading zeros do not matter). The longest matching prefix
wins; at equal length a rule from the agent configuration wins over a built-in one. A version no
rule matches is Version.UNKNOWN: the agent never guesses a release (domain.md, Versions).

Each built-in rule says where it comes from: `known` (stated by the source document or public
Microsoft documentation) or `assumption` (a believed build number nobody has yet confirmed on a
real host). docs/agent.md lists them all; `[version_map] include_assumptions = false` leaves only
the known rules and the configured ones. A configured rule may map a prefix to UNKNOWN to
silence a built-in rule it knows to be wrong.

Careful with 5.2: domain.md says the SP2 client's *lockbox* is version 5.2.0.0 or later. That is
the lockbox component's version, not the client's, so it is no rule here: mapping every 5.2.x
client to SP2 would report RTM and SP1 clients as SP2.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rmsfleet.contract.facts import Version

_DOTTED = re.compile(r"^\d{1,10}(\.\d{1,10}){0,7}$")


class Role(enum.Enum):
    SERVER = "server"
    CLIENT = "client"


class Source(enum.Enum):
    KNOWN = "known"
    ASSUMPTION = "assumption"
    CONFIGURED = "configured"


def parse_dotted(text: str) -> tuple[int, ...] | None:
    """'5.2.3790.0134' -> (5, 2, 3790, 134); None when the text is not a dotted number."""
    cleaned = text.strip()
    if not _DOTTED.match(cleaned):
        return None
    return tuple(int(part) for part in cleaned.split("."))


def dotted(parts: Sequence[int]) -> str:
    return ".".join(str(part) for part in parts)


@dataclass(frozen=True, slots=True)
class VersionRule:
    role: Role
    prefix: tuple[int, ...]
    release: Version
    source: Source
    note: str = ""

    @property
    def prefix_text(self) -> str:
        return dotted(self.prefix)

    def matches(self, version: tuple[int, ...]) -> bool:
        return version[: len(self.prefix)] == self.prefix


def _assumed(role: Role, prefix: str, release: Version, note: str) -> VersionRule:
    parts = parse_dotted(prefix)
    assert parts is not None, prefix
    return VersionRule(role, parts, release, Source.ASSUMPTION, note)


# The built-in table. Every entry is an assumption: neither the source document nor the public
# documentation we had states the build numbers each release reports. Confirm them on one host
# per release (the agent logs the raw version it read) and add what differs to the config.
DEFAULT_RULES: tuple[VersionRule, ...] = (
    _assumed(Role.SERVER, "1.0.180", Version.RTM, "RMS 1.0 server without a service pack"),
    _assumed(Role.SERVER, "1.0.502", Version.SP1, "RMS 1.0 server with SP1"),
    _assumed(Role.SERVER, "1.0.701", Version.SP2, "RMS 1.0 server with SP2"),
    _assumed(Role.CLIENT, "5.2.3790.134", Version.RTM, "RMS client 1.0 (DRMGetClientVersion)"),
    _assumed(Role.CLIENT, "5.2.3790.302", Version.SP1, "RMS client with SP1 (DRMGetClientVersion)"),
    _assumed(Role.CLIENT, "6.0.6406", Version.SP2, "RMS client with SP2 for Windows XP / Server 2003"),
)


def configured_rule(role: Role, prefix: str, release: str) -> VersionRule:
    """A rule from the agent configuration. Raises ValueError with the reason."""
    parts = parse_dotted(prefix)
    if parts is None:
        raise ValueError(f"expected a dotted version prefix such as 6.0.6406, got {prefix!r}")
    try:
        target = Version(release.strip().upper())
    except ValueError:
        allowed = ", ".join(v.value for v in Version)
        raise ValueError(f"expected one of {allowed}, got {release!r}") from None
    return VersionRule(role, parts, target, Source.CONFIGURED, "from the agent configuration")


class VersionMap:
    def __init__(self, rules: Iterable[VersionRule]) -> None:
        self._rules = tuple(rules)
        seen: dict[tuple[Role, tuple[int, ...], Source], VersionRule] = {}
        for rule in self._rules:
            key = (rule.role, rule.prefix, rule.source)
            other = seen.get(key)
            if other is not None and other.release is not rule.release:
                raise ValueError(
                    f"{rule.role.value} version {rule.prefix_text} is mapped to both "
                    f"{other.release.value} and {rule.release.value}"
                )
            seen[key] = rule

    @classmethod
    def with_defaults(cls, overrides: Iterable[VersionRule] = (), *, include_assumptions: bool = True) -> VersionMap:
        defaults = [r for r in DEFAULT_RULES if include_assumptions or r.source is Source.KNOWN]
        return cls([*defaults, *overrides])

    @property
    def rules(self) -> tuple[VersionRule, ...]:
        return self._rules

    def rule_for(self, role: Role, version: str) -> VersionRule | None:
        """The rule that decides `version`, or None when no rule matches (or it is not dotted)."""
        parts = parse_dotted(version)
        if parts is None:
            return None
        best: VersionRule | None = None
        for rule in self._rules:
            if rule.role is not role or not rule.matches(parts):
                continue
            if best is None or _precedence(rule) > _precedence(best):
                best = rule
        return best

    def release(self, role: Role, version: str) -> Version:
        rule = self.rule_for(role, version)
        return Version.UNKNOWN if rule is None else rule.release


def _precedence(rule: VersionRule) -> tuple[int, int]:
    # Longest prefix first; at equal length the operator's own rule beats a built-in one.
    return (len(rule.prefix), 1 if rule.source is Source.CONFIGURED else 0)


@dataclass(frozen=True, slots=True)
class VersionMapConfig:
    """The `[version_map]` part of the agent configuration."""

    include_assumptions: bool = True
    overrides: tuple[VersionRule, ...] = ()

    def build(self) -> VersionMap:
        return VersionMap.with_defaults(self.overrides, include_assumptions=self.include_assumptions)
