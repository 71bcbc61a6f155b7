"""Reading a Windows host's files through a small interface, so one mapping from documented
facts serves the local Windows probe (the local disk) and the agentless scanner (the
administrative shares over SMB), and both are tested on Linux.

Paths are Windows paths with backslashes, starting with one of:
- `%SystemRoot%\\...`: the Windows folder (remotely the `ADMIN$` share, which Windows maps to it,
  so the scanner need not know whether it is `C:\\WINDOWS` or `C:\\WINNT`);
- `%SystemDrive%\\...`: the system drive (remotely `C$` unless configured);
- `X:\\...`: a drive letter (remotely the `X$` share).
Profile paths from the registry (`ProfileImagePath`, e.g. `%SystemDrive%\\Documents and
Settings\\alice`) have this form already. Names are case-insensitive, as on Windows.
"""

from __future__ import annotations

from typing import Protocol

from rmsfleet.agent.probe.base import ProbeAccessDenied


class FileReader(Protocol):
    def read_bytes(self, path: str, limit: int) -> bytes | None:
        """The first `limit` bytes of the file at `path`, or None when it does not exist.
        Raises FileAccessDenied when it may not be read."""
        ...

    def exists(self, path: str) -> bool:
        """Whether a file or folder exists at `path`. Raises FileAccessDenied."""
        ...

    def list_dir(self, path: str) -> list[str]:
        """The names in the folder at `path` (files and folders); empty when it does not exist.
        Raises FileAccessDenied."""
        ...


class FileAccessDenied(ProbeAccessDenied):
    """Reading a file or folder was refused."""

    def __init__(self, path: str) -> None:
        super().__init__(path, hint="grant the account read access to the administrative shares")
        self.path = path
