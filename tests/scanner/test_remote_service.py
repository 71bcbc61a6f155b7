"""Starting the Remote Registry over SVCCTL, against Samba's SVCCTL.

Samba reports RemoteRegistry always running and refuses to start or stop any service, so what
is tested here is everything short of a service that really starts: a running service is left
alone, and a stopped or disabled one that the host refuses to start is a REMOTE_REGISTRY_OFF
failure that changes nothing on the host. (Samba's NETLOGON and Spooler stand in for a stopped
Remote Registry: they are the services it reports stopped.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rmsfleet.agent.scanner.remote import RemoteOptions, ScanFailure, ScanReason, open_remote_host
from rmsfleet.agent.scanner.service import REMOTE_REGISTRY, service_state, start_service
from rmsfleet.agent.scanner.session import SmbSession

from .conftest import StartHost
from .fake_hosts import WINDOWS_7, FakeWindowsHost, RunningFakeHost

SERVICE_STOPPED, SERVICE_RUNNING = 1, 4
DEMAND_START, DISABLED = 3, 4


@pytest.fixture
def windows7(fake_host: StartHost) -> RunningFakeHost:
    return fake_host(FakeWindowsHost("WIN7SVC", windows_version=WINDOWS_7))


@pytest.fixture
def session(windows7: RunningFakeHost) -> Iterator[SmbSession]:
    opened = SmbSession.open(windows7.target(), windows7.credentials, RemoteOptions(timeout=10))
    yield opened
    opened.close()


def test_a_running_remote_registry_is_left_as_it_is(windows7: RunningFakeHost) -> None:
    options = RemoteOptions(timeout=10, start_remote_registry=True)
    with open_remote_host(windows7.target(), windows7.credentials, options) as host:
        assert not host.registry.started_service
        assert host.registry.subkeys("SOFTWARE\\Microsoft")
    with open_remote_host(windows7.target(), windows7.credentials, RemoteOptions(timeout=10)) as host:
        assert host.registry.started_service is False


def test_start_service_does_nothing_to_a_running_service(session: SmbSession) -> None:
    assert service_state(session, REMOTE_REGISTRY, 10) == (SERVICE_RUNNING, DEMAND_START)
    assert start_service(session, REMOTE_REGISTRY, 10) is None
    assert service_state(session, REMOTE_REGISTRY, 10) == (SERVICE_RUNNING, DEMAND_START)


def test_a_stopped_service_the_host_will_not_start_is_remote_registry_off(session: SmbSession) -> None:
    assert service_state(session, "Spooler", 10) == (SERVICE_STOPPED, DEMAND_START)
    with pytest.raises(ScanFailure) as raised:
        start_service(session, "Spooler", 10)
    assert raised.value.reason is ScanReason.REMOTE_REGISTRY_OFF
    assert "could not be started" in raised.value.message
    assert "access denied" in raised.value.message
    assert service_state(session, "Spooler", 10) == (SERVICE_STOPPED, DEMAND_START)


def test_a_disabled_service_stays_disabled_when_it_cannot_be_enabled(session: SmbSession) -> None:
    assert service_state(session, "NETLOGON", 10) == (SERVICE_STOPPED, DISABLED)
    with pytest.raises(ScanFailure) as raised:
        start_service(session, "NETLOGON", 10)
    assert raised.value.reason is ScanReason.REMOTE_REGISTRY_OFF
    assert service_state(session, "NETLOGON", 10) == (SERVICE_STOPPED, DISABLED)


def test_a_service_that_does_not_exist_is_named(session: SmbSession) -> None:
    with pytest.raises(ScanFailure) as raised:
        start_service(session, "NoSuchService", 10)
    assert raised.value.reason is ScanReason.REMOTE_REGISTRY_OFF
    assert "ERROR_SERVICE_DOES_NOT_EXIST" in raised.value.message
