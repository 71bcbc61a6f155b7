"""Starting the Remote Registry service over SVCCTL (impacket.dcerpc.v5.scmr) for one scan and
putting it back afterwards, as impacket's own secretsdump example does: a service that was
stopped is stopped again, one that was disabled is disabled again.

Windows Vista and later ship Remote Registry stopped (manual or trigger start); Windows 2000/XP/
2003 run it by default. The scanner starts it only when the operator asked (`start_remote_registry`).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from rmsfleet.agent.scanner.failures import describe, failure_from, rpc_code
from rmsfleet.agent.scanner.remote import ScanFailure, ScanReason
from rmsfleet.agent.scanner.session import SmbSession

REMOTE_REGISTRY = "RemoteRegistry"
_POLL_SECONDS = 0.25


class StartedService:
    """A service this scan started; `restore()` puts it back (stop, then the old start type)."""

    def __init__(self, session: SmbSession, dce: Any, handle: Any, name: str, disabled_before: bool) -> None:
        self._session = session
        self._dce = dce
        self._handle = handle
        self.name = name
        self.disabled_before = disabled_before
        self._restored = False

    def restore(self) -> None:
        """Stop the service and restore a disabled start type. Never raises: a host that went
        away cannot be put back, and the scan's result stands either way."""
        if self._restored:
            return
        self._restored = True
        from impacket.dcerpc.v5 import scmr

        with contextlib.suppress(Exception):
            scmr.hRControlService(self._dce, self._handle, scmr.SERVICE_CONTROL_STOP)
        if self.disabled_before:
            with contextlib.suppress(Exception):
                scmr.hRChangeServiceConfigW(self._dce, self._handle, dwStartType=scmr.SERVICE_DISABLED)
        with contextlib.suppress(Exception):
            scmr.hRCloseServiceHandle(self._dce, self._handle)
        with contextlib.suppress(Exception):
            self._dce.disconnect()


def service_state(session: SmbSession, name: str, timeout: float) -> tuple[int, int]:
    """(current state, start type) of the service `name`, as SVCCTL reports them."""
    from impacket.dcerpc.v5 import scmr

    try:
        dce, handle = _open_service(session, name, timeout)
    except Exception as exc:
        raise failure_from(exc, session.target, f"querying the {name} service") from None
    try:
        state = scmr.hRQueryServiceStatus(dce, handle)["lpServiceStatus"]["dwCurrentState"]
        start_type = scmr.hRQueryServiceConfigW(dce, handle)["lpServiceConfig"]["dwStartType"]
    except Exception as exc:
        raise failure_from(exc, session.target, f"querying the {name} service") from None
    finally:
        with contextlib.suppress(Exception):
            dce.disconnect()
    return int(state), int(start_type)


def start_service(session: SmbSession, name: str, timeout: float) -> StartedService | None:
    """Start the stopped service `name` (enabling it first if disabled) and wait until it runs.

    Returns None when it was running or starting already (nothing to restore). Raises ScanFailure
    REMOTE_REGISTRY_OFF when it cannot be started, naming what the host said."""
    from impacket.dcerpc.v5 import scmr

    try:
        dce, handle = _open_service(session, name, timeout)
    except Exception as exc:
        raise _cannot_start(exc, session, name) from None
    started: StartedService | None = None
    try:
        state = scmr.hRQueryServiceStatus(dce, handle)["lpServiceStatus"]["dwCurrentState"]
        if state != scmr.SERVICE_STOPPED:
            # Running, or on its way (someone else started it): not this scan's to stop later.
            _wait_running(dce, handle, timeout, f"{session.target.name}: the {name} service")
            with contextlib.suppress(Exception):
                dce.disconnect()
            return None
        start_type = scmr.hRQueryServiceConfigW(dce, handle)["lpServiceConfig"]["dwStartType"]
        disabled = start_type == scmr.SERVICE_DISABLED
        if disabled:
            scmr.hRChangeServiceConfigW(dce, handle, dwStartType=scmr.SERVICE_DEMAND_START)
        started = StartedService(session, dce, handle, name, disabled)
        scmr.hRStartServiceW(dce, handle)
        _wait_running(dce, handle, timeout, f"{session.target.name}: the {name} service")
    except BaseException as exc:
        if started is not None:
            started.restore()  # also closes the pipe
        else:
            with contextlib.suppress(Exception):
                dce.disconnect()
        if isinstance(exc, ScanFailure) or not isinstance(exc, Exception):
            raise
        raise _cannot_start(exc, session, name) from None
    return started


def _open_service(session: SmbSession, name: str, timeout: float) -> tuple[Any, Any]:
    """(bound SVCCTL pipe, handle of the service `name`); raises impacket's exceptions."""
    from impacket.dcerpc.v5 import scmr, transport

    rpc = transport.SMBTransport(
        session.target.name, session.target.port, r"\svcctl", smb_connection=session.connection
    )
    rpc.set_connect_timeout(timeout)
    dce = rpc.get_dce_rpc()
    dce.connect()
    try:
        dce.bind(scmr.MSRPC_UUID_SCMR)
        manager = scmr.hROpenSCManagerW(dce)["lpScHandle"]
        handle = scmr.hROpenServiceW(dce, manager, name)["lpServiceHandle"]
    except BaseException:
        with contextlib.suppress(Exception):
            dce.disconnect()
        raise
    return dce, handle


def _wait_running(dce: Any, handle: Any, timeout: float, what: str) -> None:
    from impacket.dcerpc.v5 import scmr

    deadline = time.monotonic() + timeout
    while True:
        state = scmr.hRQueryServiceStatus(dce, handle)["lpServiceStatus"]["dwCurrentState"]
        if state == scmr.SERVICE_RUNNING:
            return
        if time.monotonic() >= deadline:
            raise ScanFailure(ScanReason.TIMEOUT, f"{what} did not reach RUNNING within {timeout:g} s")
        time.sleep(_POLL_SECONDS)


def _cannot_start(exc: Exception, session: SmbSession, name: str) -> ScanFailure:
    failure = failure_from(exc, session.target, f"starting the {name} service")
    if failure.reason in (ScanReason.TIMEOUT, ScanReason.UNREACHABLE):
        return failure
    said = "access denied" if rpc_code(exc) == 5 else describe(exc)
    return ScanFailure(
        ScanReason.REMOTE_REGISTRY_OFF,
        f"{session.target.name}: the {name} service is not running and could not be started over SVCCTL ({said})",
    )
