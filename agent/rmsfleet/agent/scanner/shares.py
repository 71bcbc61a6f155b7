"""Files over the administrative shares: the FileReader the shared probe mapping reads through,
remotely. Path rules (rmsfleet.agent.probe.files): `%SystemRoot%\\...` is the `ADMIN$` share
(Windows maps it to its own folder, `C:\\WINDOWS` or `C:\\WINNT`), `%SystemDrive%\\...` is `C$`
unless configured, `X:\\...` is `X$`. Files are opened for reading with every share mode, so a
file Windows holds open (the kernel, a loaded DLL) can still be read.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from rmsfleet.agent.probe.base import ProbeError
from rmsfleet.agent.probe.files import FileAccessDenied
from rmsfleet.agent.scanner.failures import STATUS_ACCESS_DENIED, failure_from, nt_status
from rmsfleet.agent.scanner.session import SmbSession

_SYSTEM_ROOT = "%systemroot%"
_SYSTEM_DRIVE = "%systemdrive%"
_DRIVE = re.compile(r"^([A-Za-z]):$")

# What "no such file or folder" looks like, depending on which part of the path is missing.
_NOT_FOUND = frozenset(
    {
        0xC0000034,  # STATUS_OBJECT_NAME_NOT_FOUND
        0xC000003A,  # STATUS_OBJECT_PATH_NOT_FOUND
        0xC000000F,  # STATUS_NO_SUCH_FILE
        0xC0000033,  # STATUS_OBJECT_NAME_INVALID
        0xC0000103,  # STATUS_NOT_A_DIRECTORY
        0xC00000BA,  # STATUS_FILE_IS_A_DIRECTORY
        0xC0000056,  # STATUS_DELETE_PENDING
    }
)
STATUS_BAD_NETWORK_NAME = 0xC00000CC


class ShareNotFound(ProbeError):
    """The administrative share a path needs is not there (AutoShareServer/AutoShareWks = 0, or
    no such drive): the file's absence cannot be told, so it is not reported as absent."""


def split_path(path: str, system_drive_share: str = "C$") -> tuple[str, str]:
    """(share, path inside the share) for a Windows path; ProbeError for a path no
    administrative share reaches (a UNC path, a relative path, another variable)."""
    clean = path.replace("/", "\\")
    head, _, rest = clean.partition("\\")
    lowered = head.lower()
    if lowered == _SYSTEM_ROOT:
        share = "ADMIN$"
    elif lowered == _SYSTEM_DRIVE:
        share = system_drive_share
    elif match := _DRIVE.match(head):
        share = match.group(1).upper() + "$"
    else:
        raise ProbeError(
            f"cannot read {path!r} remotely: only %SystemRoot%\\..., %SystemDrive%\\... and X:\\... paths "
            "map to administrative shares"
        )
    return share, rest.strip("\\")


class ShareFileReader:
    """FileReader over SMB; tree connections are kept for the rest of the scan."""

    def __init__(self, session: SmbSession, system_drive_share: str = "C$") -> None:
        self._session = session
        self._system_drive_share = system_drive_share
        self._trees: dict[str, int] = {}

    def read_bytes(self, path: str, limit: int) -> bytes | None:
        from impacket.smb import SMB_DIALECT
        from impacket.smbconnection import (
            FILE_READ_ATTRIBUTES,
            FILE_READ_DATA,
            FILE_SHARE_DELETE,
            FILE_SHARE_READ,
            FILE_SHARE_WRITE,
        )

        share, inner = split_path(path, self._system_drive_share)
        if not inner:
            return None  # the share itself is a folder
        connection = self._session.connection
        tree = self._tree(share, path)
        try:
            access = FILE_READ_DATA | FILE_READ_ATTRIBUTES  # read only, nothing more
            sharing = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE
            if connection.getDialect() == SMB_DIALECT:
                handle = _open_smb1_without_oplock(connection, tree, inner, access, sharing)
            else:
                handle = connection.openFile(tree, inner, desiredAccess=access, shareMode=sharing)
        except Exception as exc:
            if nt_status(exc) in _NOT_FOUND:
                return None
            raise self._error(exc, path, "opening") from None
        try:
            data: bytes = connection.readFile(tree, handle, 0, limit, singleCall=False)
        except Exception as exc:
            raise self._error(exc, path, "reading") from None
        finally:
            with contextlib.suppress(Exception):
                connection.closeFile(tree, handle)
        return data[:limit]

    def exists(self, path: str) -> bool:
        share, inner = split_path(path, self._system_drive_share)
        if not inner:
            self._tree(share, path)
            return True
        return bool(self._list(share, inner, path))

    def list_dir(self, path: str) -> list[str]:
        share, inner = split_path(path, self._system_drive_share)
        pattern = f"{inner}\\*" if inner else "*"
        return sorted((name for name in self._list(share, pattern, path) if name not in (".", "..")), key=str.lower)

    def _list(self, share: str, pattern: str, path: str) -> list[str]:
        self._tree(share, path)  # a missing or refused share is told apart from a missing file
        try:
            entries = self._session.connection.listPath(share, pattern)
        except Exception as exc:
            if nt_status(exc) in _NOT_FOUND:
                return []
            raise self._error(exc, path, "listing") from None
        return [str(entry.get_longname()) for entry in entries]

    def _tree(self, share: str, path: str) -> int:
        tree = self._trees.get(share)
        if tree is not None:
            return tree
        try:
            tree = int(self._session.connection.connectTree(share))
        except Exception as exc:
            if nt_status(exc) == STATUS_BAD_NETWORK_NAME:
                raise ShareNotFound(
                    f"{self._session.target.name}: the share {share} for {path} does not exist "
                    "(administrative shares turned off, or no such drive)"
                ) from None
            raise self._error(exc, path, f"connecting to {share}") from None
        self._trees[share] = tree
        return tree

    def _error(self, exc: Exception, path: str, doing: str) -> Exception:
        if nt_status(exc) == STATUS_ACCESS_DENIED:
            return FileAccessDenied(path)
        return failure_from(exc, self._session.target, f"{doing} {path}")


def _open_smb1_without_oplock(connection: Any, tree: int, inner: str, access: int, sharing: int) -> int:
    """NT_CREATE_ANDX as impacket's openFile sends it over SMB1, but asking for no oplock:
    impacket asks for a batch oplock (CreateFlags 0x16) and cannot take the oplock break the
    server sends when someone else opens the file meanwhile (another scan of the same host, a
    user, the host itself): the break arrives where the read's answer was expected and the read
    fails ("Got 36, Expected 46"). 0x10 keeps only the extended response."""
    from impacket import smb

    _, flags2 = connection.getSMBServer().get_flags()
    name = inner.replace("/", "\\")
    packet_name = name.encode("utf-16le") if flags2 & smb.SMB.FLAGS2_UNICODE else name
    create = smb.SMBCommand(smb.SMB.SMB_COM_NT_CREATE_ANDX)
    create["Parameters"] = smb.SMBNtCreateAndX_Parameters()
    create["Data"] = smb.SMBNtCreateAndX_Data(flags=flags2)
    create["Parameters"]["FileNameLength"] = len(packet_name)
    create["Parameters"]["AccessMask"] = access
    create["Parameters"]["FileAttributes"] = 0x80  # FILE_ATTRIBUTE_NORMAL
    create["Parameters"]["ShareAccess"] = sharing
    create["Parameters"]["Disposition"] = 0x1  # FILE_OPEN
    create["Parameters"]["CreateOptions"] = 0x40  # FILE_NON_DIRECTORY_FILE
    create["Parameters"]["Impersonation"] = 0x2  # SecurityImpersonation
    create["Parameters"]["SecurityFlags"] = 0
    create["Parameters"]["CreateFlags"] = 0x10  # NT_CREATE_REQUEST_EXTENDED_RESPONSE, no oplock
    create["Data"]["FileName"] = packet_name
    if flags2 & smb.SMB.FLAGS2_UNICODE:
        create["Data"]["Pad"] = 0x0
    handle: int = connection.getSMBServer().nt_create_andx(tree, name, cmd=create)
    return handle
