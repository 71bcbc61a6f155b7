"""From a file version ("5.2.3790.134") to an RMS release (RTM, SP1, SP2), per role.

A rule maps a dotted version *prefix* to a release for one role (server or client). A version
matches a rule when the rule's numbers are the version's leading numbers ("5.2.3790" matches
"5.2.3790.134" but not "5.2.37901.0"; leading zeros do not matter). The longest matching prefix
wins; at equal length a rule from the configuration wins over a built-in one. A version no rule
matches is Version.UNKNOWN: the probe never guesses a release (domain.md, Versions).

Built-in rules are only the `known` ones, each citing its source: the three versions of the
server assembly `Plugin.DirectoryServices` that [MS-RMPRS] 2.3.1.2 names. No client version is
published anywhere found (domain.md), so there is no built-in client rule: an operator confirms
the msdrm.dll version of one client per release and configures it (`[versions.client]`). A
configured rule may map a prefix to UNKNOWN to overrule a built-in one.

Careful with 5.2: domain.md says the SP2 client's *lockbox* is version 5.2.0.0 or later. That is
the lockbox component's version, not the client's, so it is no rule here.
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
    KNOWN = "known"  # stated by a cited public Microsoft document
    CONFIGURED = "configured"  # from the operator's configuration


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


def _known(role: Role, version: str, release: Version, note: str) -> VersionRule:
    parts = parse_dotted(version)
    assert parts is not None, version
    return VersionRule(role, parts, release, Source.KNOWN, note)


# [MS-RMPRS] 2.3.1.2 (IsPrincipalMemberOfRequest, TypeName): the Server Type name each RMS
# version puts in a group expansion request names the assembly `Plugin.DirectoryServices`
# with these versions. The SP1 one also appears as `Server-Version 5.2.3790.134` in a 2006
# publishing license (domain.md).
DEFAULT_RULES: tuple[VersionRule, ...] = (
    _known(Role.SERVER, "1.0.3246.0", Version.RTM, "Plugin.DirectoryServices of RMS 1.0 ([MS-RMPRS] 2.3.1.2)"),
    _known(Role.SERVER, "5.2.3790.134", Version.SP1, "Plugin.DirectoryServices of RMS 1.0 SP1 ([MS-RMPRS] 2.3.1.2)"),
    _known(Role.SERVER, "5.2.3790.300", Version.SP2, "Plugin.DirectoryServices of RMS 1.0 SP2 ([MS-RMPRS] 2.3.1.2)"),
)

# What a configured rule may name: BUILTIN comes from the Windows version (D15), never a rule.
CONFIGURABLE = (Version.RTM, Version.SP1, Version.SP2, Version.UNKNOWN)


def configured_rule(role: Role, prefix: str, release: str) -> VersionRule:
    """A rule from the agent configuration. Raises ValueError with the reason."""
    parts = parse_dotted(prefix)
    if parts is None:
        raise ValueError(f"expected a dotted version prefix such as 6.0.6406, got {prefix!r}")
    target = next((v for v in CONFIGURABLE if v.value == release.strip().upper()), None)
    if target is None:
        allowed = ", ".join(v.value for v in CONFIGURABLE)
        raise ValueError(f"expected one of {allowed}, got {release!r}")
    return VersionRule(role, parts, target, Source.CONFIGURED, "from the configuration")


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
    def with_defaults(cls, overrides: Iterable[VersionRule] = ()) -> VersionMap:
        """The built-in known rules plus `overrides` (the configured rules)."""
        return cls([*DEFAULT_RULES, *overrides])

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
    """The `[versions.server]` and `[versions.client]` tables of the configuration."""

    overrides: tuple[VersionRule, ...] = ()

    def build(self) -> VersionMap:
        return VersionMap.with_defaults(self.overrides)
