"""The hosts to scan: listed one by one, in a targets file or as arguments. Never a network sweep:
a CIDR range, a wildcard or an address range is refused with a message saying so, because an
agentless scanner that logs on with an administrator's account must touch only the hosts an
operator named.

A targets file has one host per line; `#` starts a comment, blank lines are skipped:

    # NAME[:PORT]          [ADDRESS[:PORT]]     [group=GROUP]
    rms01.corp.example
    rms02.corp.example     10.0.0.12            group=amsterdam
    xp-desk-07             10.0.1.7:4445        group=desktops

NAME is the host's identity: the host id the collector knows it by, whatever address it is
reached at. ADDRESS (default: NAME) and PORT (default 445) are where the scanner connects. An
IPv6 address with a port is written `[::1]:4445`. GROUP names a `[groups.GROUP]` table of the
scanner's configuration (forest, cluster URLs, version rules, SMB options for those hosts).

An argument on the command line is a line of the same form (`rms01`, `rms01:4445`, or
`"rms02 10.0.0.12 group=amsterdam"` quoted as one argument).

Every error names where it was found (`targets.txt:7: ...`, `argument 2: ...`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORT = 445
MAX_NAME_LENGTH = 255  # the facts contract's bound on a host id (contract/facts.py)

# A DNS name or NetBIOS-style name: labels of letters, digits, `-` and `_` separated by dots.
_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_GROUP = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")
_BRACKETED = re.compile(r"^\[(?P<host>[^\]]+)\](?::(?P<port>[^:]*))?$")


class TargetError(Exception):
    """A target that cannot be scanned as written; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class ListedTarget:
    """One host as the operator listed it. `where` is `FILE:LINE` or `argument N`."""

    name: str
    address: str | None
    port: int
    group: str | None
    where: str

    @property
    def connect_address(self) -> str:
        return self.address or self.name

    def describe(self) -> str:
        """`name` or `name (address:port)`, for progress lines and summaries."""
        if self.address is None and self.port == DEFAULT_PORT:
            return self.name
        host = self.connect_address
        shown = f"[{host}]" if ":" in host else host
        return f"{self.name} ({shown}:{self.port})"


def _refuse_sweep(text: str, where: str) -> None:
    if "/" in text:
        raise TargetError(
            f"{where}: {text!r} is a network range: the scanner reads only hosts listed one by one "
            "(no network sweeps); list each host by name or address"
        )
    if "*" in text or "?" in text:
        raise TargetError(
            f"{where}: {text!r} is a wildcard: the scanner reads only hosts listed one by one "
            "(no network sweeps); list each host by name or address"
        )


def _check_host(text: str, where: str, what: str) -> str:
    """A host name or an IP address, as written (an IPv6 address without brackets)."""
    _refuse_sweep(text, where)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return text
    if len(text) > MAX_NAME_LENGTH:
        raise TargetError(f"{where}: {what} {text[:40]!r}...: longer than {MAX_NAME_LENGTH} characters")
    labels = text.rstrip(".").split(".")
    if not text or not all(_LABEL.match(label) for label in labels):
        raise TargetError(
            f"{where}: {what} {text!r} is neither a host name (letters, digits, '-', '_' and dots) nor an IP address"
        )
    if all(part.replace("-", "").isdigit() for part in labels) and any("-" in part for part in labels):
        # 10.0.0.1-20: an address range in disguise.
        raise TargetError(
            f"{where}: {text!r} is an address range: the scanner reads only hosts listed one by one "
            "(no network sweeps); list each host by name or address"
        )
    if labels[-1].isdigit():
        raise TargetError(f"{where}: {what} {text!r} is not a valid IP address")
    return text


def _port(text: str, where: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise TargetError(f"{where}: port {text!r}: expected a number from 1 to 65535")
    return int(text)


def _host_and_port(text: str, where: str, what: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address."""
    _refuse_sweep(text, where)
    bracketed = _BRACKETED.match(text)
    if bracketed:
        host = bracketed.group("host")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise TargetError(f"{where}: {what} [{host}]: brackets hold an IPv6 address") from None
        port = bracketed.group("port")
        return host, None if port is None else _port(port, where)
    if text.count(":") > 1:
        return _check_host(text, where, what), None  # a bare IPv6 address
    host, colon, port = text.partition(":")
    return _check_host(host, where, what), _port(port, where) if colon else None


def parse_target_line(line: str, where: str) -> ListedTarget | None:
    """One line (comments already allowed here); None for a blank or comment-only line."""
    text = line.split("#", 1)[0].strip()
    if not text:
        return None
    fields = text.split()
    group: str | None = None
    positional: list[str] = []
    for field in fields:
        if field.lower().startswith("group="):
            if group is not None:
                raise TargetError(f"{where}: group given twice")
            group = field[len("group=") :]
            if not _GROUP.match(group):
                raise TargetError(
                    f"{where}: group {group!r}: expected letters, digits, '.', '-' and '_' (the name of a [groups.NAME] table)"
                )
        elif "=" in field:
            raise TargetError(f"{where}: {field!r}: unknown setting (a line is NAME [ADDRESS[:PORT]] [group=GROUP])")
        else:
            positional.append(field)
    if not positional:
        raise TargetError(f"{where}: no host name (a line is NAME [ADDRESS[:PORT]] [group=GROUP])")
    if len(positional) > 2:
        raise TargetError(
            f"{where}: {len(positional)} fields where at most two are expected (a line is NAME [ADDRESS[:PORT]] [group=GROUP])"
        )
    name, name_port = _host_and_port(positional[0], where, "host name")
    address: str | None = None
    port = name_port
    if len(positional) == 2:
        address, address_port = _host_and_port(positional[1], where, "address")
        if name_port is not None and address_port is not None and name_port != address_port:
            raise TargetError(f"{where}: two different ports ({name_port} and {address_port})")
        port = address_port if address_port is not None else name_port
    return ListedTarget(name=name, address=address, port=port or DEFAULT_PORT, group=group, where=where)


def read_targets_file(path: Path) -> list[ListedTarget]:
    """Every target in the file, in order. Raises TargetError (`FILE:LINE: ...`)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TargetError(f"{path}: no such targets file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    found: list[ListedTarget] = []
    for number, line in enumerate(text.splitlines(), start=1):
        target = parse_target_line(line, f"{path}:{number}")
        if target is not None:
            found.append(target)
    return found


def parse_target_arguments(arguments: Iterable[str]) -> list[ListedTarget]:
    found: list[ListedTarget] = []
    for index, argument in enumerate(arguments, start=1):
        target = parse_target_line(argument, f"argument {index} ({argument!r})")
        if target is None:
            raise TargetError(f"argument {index}: an empty target")
        found.append(target)
    return found


def check_unique(targets: Iterable[ListedTarget]) -> list[ListedTarget]:
    """The targets, refusing a name listed twice (names are case-insensitive, as host names are):
    two entries would report one host twice, each overwriting the other."""
    seen: dict[str, ListedTarget] = {}
    result: list[ListedTarget] = []
    for target in targets:
        key = target.name.lower()
        earlier = seen.get(key)
        if earlier is not None:
            raise TargetError(f"{target.where}: {target.name} is already listed at {earlier.where}")
        seen[key] = target
        result.append(target)
    return result
