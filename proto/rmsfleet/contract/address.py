"""Collector addresses as every part takes them, and the loopback rule (docs/security.md).

`HOST:PORT`, with an IPv6 address in brackets (`[::1]:50051`), is what the agent's
`--collector`, the collector's `--listen`/`--metrics-listen` and the query commands' `--collector`
accept. Plaintext gRPC is allowed without `--insecure` only to or on a loopback address: traffic
that never leaves the host gains nothing from TLS. Both sides apply the same rule from here.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._-]+)):(?P<port>\d{1,5})$")


class AddressError(ValueError):
    """Not a HOST:PORT address; the message says what was expected (without the input)."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str  # an IPv6 address without its brackets
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(value: str, *, any_port: bool = False) -> Address:
    """Parse HOST:PORT. The port is 1 to 65535; with `any_port`, 0 too (a listener that lets
    the system pick a free port)."""
    match = _HOST_PORT.match(value.strip())
    lowest = 0 if any_port else 1
    if match is None or not lowest <= int(match.group("port")) <= 65535:
        raise AddressError(f"HOST:PORT (an IPv6 address in brackets) with a port from {lowest} to 65535")
    return Address(match.group("v6") or match.group("host"), int(match.group("port")))


def is_loopback_host(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1 (brackets allowed). Any other name is not
    loopback: a name could resolve anywhere, and 0.0.0.0 / :: listen on every interface."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_loopback_address(address: str) -> bool:
    """True when HOST:PORT names a loopback host; an address that does not parse is not."""
    try:
        return is_loopback_host(parse_address(address, any_port=True).host)
    except AddressError:
        return False
