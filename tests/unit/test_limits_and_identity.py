"""The pure parts of the per-address limits (limits.py) and of host identity (identity.py,
identity_admin.py): addresses without ports, the in-flight count, the enrollment token bucket on an
injected clock, which certificate names admit a host id, and the allowance durations."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rmsfleet.collector.identity import CertificateBinding, CertificateNames, IdentityRefused, certificate_names
from rmsfleet.collector.identity_admin import DurationError, parse_duration
from rmsfleet.collector.limits import InFlight, RatePerMinute, peer_address


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.1.2.3:50123", "ipv4:10.1.2.3"),
        ("ipv6:[::1]:50123", "ipv6:[::1]"),
        ("ipv6:[2001:db8::7]:443", "ipv6:[2001:db8::7]"),
        ("unix:/run/rmsfleet.sock", "unix:/run/rmsfleet.sock"),
    ],
)
def test_an_address_is_the_peer_without_its_port(peer: str, address: str) -> None:
    # A new connection (a new port) must not reset a limit.
    assert peer_address(peer) == address


def test_calls_in_flight_are_counted_per_address_and_released() -> None:
    flight = InFlight(2)
    assert flight.acquire("ipv4:a") and flight.acquire("ipv4:a")
    assert not flight.acquire("ipv4:a"), "a third call from the same address waits for none: refused"
    assert flight.acquire("ipv4:b"), "another address is not affected"
    flight.release("ipv4:a")
    assert flight.acquire("ipv4:a")


def test_enrollments_per_minute_allow_a_burst_then_refill() -> None:
    now = [0.0]
    rate = RatePerMinute(3, clock=lambda: now[0])
    assert [rate.take("ipv4:a") for _ in range(3)] == [None, None, None]
    wait = rate.take("ipv4:a")
    assert wait is not None and wait == pytest.approx(20.0)
    assert rate.take("ipv4:b") is None, "each address has its own bucket"
    now[0] = 20.0
    assert rate.take("ipv4:a") is None, "one token back after a third of a minute"
    assert rate.take("ipv4:a") is not None


@pytest.mark.parametrize(
    ("names", "host_id", "admitted"),
    [
        (CertificateNames("ws-1.corp.example", ()), "ws-1.corp.example", True),
        (CertificateNames("WS-1.Corp.Example.", ()), "ws-1.corp.example", True),
        (CertificateNames("agent", ("ws-3.corp.example", "ws-3")), "ws-3", True),
        (CertificateNames("ws-1.corp.example", ()), "ws-2.corp.example", False),
        (CertificateNames(None, ("*.corp.example",)), "ws-1.corp.example", False),
        (CertificateNames("*.corp.example", ()), "*.corp.example", False),
        (CertificateNames(None, ()), "ws-1", False),
    ],
)
def test_a_host_id_must_be_a_dns_name_or_the_cn_exactly(names: CertificateNames, host_id: str, admitted: bool) -> None:
    assert names.permits(host_id) is admitted


def test_the_auth_context_gives_the_names_and_no_certificate_is_refused() -> None:
    context = {"x509_common_name": [b"agent"], "peer_dns": [b"ws-3.corp.example"], "transport_security_type": [b"ssl"]}
    assert certificate_names(context) == CertificateNames("agent", ("ws-3.corp.example",))
    assert certificate_names({"transport_security_type": [b"ssl"]}) is None
    with pytest.raises(IdentityRefused, match="the connection presented none"):
        CertificateBinding().check("ws-3", {})


@pytest.mark.parametrize(
    ("text", "duration"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("600", timedelta(minutes=10)),
    ],
)
def test_allowance_durations(text: str, duration: timedelta) -> None:
    assert parse_duration(text) == duration


@pytest.mark.parametrize("text", ["forever", "0s", "31d", "-1h", "1w"])
def test_bad_allowance_durations_are_refused(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)
