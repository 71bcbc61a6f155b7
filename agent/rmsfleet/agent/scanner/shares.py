"""Files over the administrative shares: the FileReader the shared probe mapping reads through,
remotely (`%SystemRoot%` is `ADMIN$`, `%SystemDrive%` is `C$` unless configured, `X:` is `X$`)."""

from __future__ import annotations

from rmsfleet.agent.scanner.session import SmbSession


class ShareFileReader:
    """FileReader over SMB."""

    def __init__(self, session: SmbSession, system_drive_share: str = "C$") -> None:
        self._session = session
        self._system_drive_share = system_drive_share

    def read_bytes(self, path: str, limit: int) -> bytes | None:
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def list_dir(self, path: str) -> list[str]:
        raise NotImplementedError
