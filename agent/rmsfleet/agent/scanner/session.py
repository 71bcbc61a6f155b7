"""An SMB session with one host (impacket's SMBConnection): connect, negotiate, log on, and turn
everything that can go wrong into a ScanFailure with its reason."""

from __future__ import annotations

from typing import Any

from rmsfleet.agent.scanner.remote import Credentials, RemoteOptions, Target


class SmbSession:
    """A logged-on SMB session. `connection` is impacket's SMBConnection."""

    def __init__(self, target: Target, connection: Any, dialect_name: str) -> None:
        self.target = target
        self.connection = connection
        self.dialect_name = dialect_name

    @classmethod
    def open(cls, target: Target, credentials: Credentials, options: RemoteOptions) -> SmbSession:
        """Connect and log on. Raises ScanFailure."""
        raise NotImplementedError

    def close(self) -> None:
        """Log off and close the socket; never raises."""
        raise NotImplementedError
