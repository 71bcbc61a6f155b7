"""HKEY_LOCAL_MACHINE over MS-RRP (the `\\winreg` named pipe, impacket.dcerpc.v5.rrp): the
RegistryReader the shared probe mapping reads through, remotely."""

from __future__ import annotations

from rmsfleet.agent.probe.registry import RegistryValue
from rmsfleet.agent.scanner.remote import RemoteOptions
from rmsfleet.agent.scanner.session import SmbSession


class RemoteRegistryReader:
    """RegistryReader over MS-RRP, with the same WOW6432Node fallback as the local reader."""

    @classmethod
    def open(cls, session: SmbSession, options: RemoteOptions) -> RemoteRegistryReader:
        """Bind to `\\winreg` and open HKLM. Raises ScanFailure (REMOTE_REGISTRY_OFF...)."""
        raise NotImplementedError

    def read_value(self, path: str, name: str) -> RegistryValue:
        raise NotImplementedError

    def subkeys(self, path: str) -> list[str]:
        raise NotImplementedError

    def key_exists(self, path: str) -> bool:
        raise NotImplementedError

    def value_names(self, path: str) -> list[str]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError
