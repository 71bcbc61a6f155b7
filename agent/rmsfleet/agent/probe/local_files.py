"""The local host's files behind the FileReader interface (files.py), for the local Windows probe.

Paths arrive in the FileReader form (`%SystemRoot%\\...`, `%SystemDrive%\\...`, `X:\\...`) and
are expanded from the environment (`SystemRoot`, `SystemDrive`, as Windows sets them for every
process). A 32-bit Python on 64-bit Windows would see `system32` redirected to `SysWOW64` by
the file system redirector; `Sysnative` is the documented way for such a process to reach the
real `system32` (where the 64-bit kernel lies), so that is used then.

Off Windows the reader still works on a folder laid out like a system drive (tests), with `\\`
turned into the platform's separator; names are then compared as the file system does.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from rmsfleet.agent.probe.files import FileAccessDenied

_VARIABLE = re.compile(r"^%(?P<name>SystemRoot|SystemDrive)%", re.IGNORECASE)
_SYSTEM32 = re.compile(r"^(?P<root>.*?[\\/])system32(?=[\\/]|$)", re.IGNORECASE)


class LocalFileReader:
    def __init__(self, environ: Mapping[str, str] | None = None, *, redirected: bool | None = None) -> None:
        self._environ = dict(os.environ if environ is None else environ)
        # The redirector applies to a 32-bit process on 64-bit Windows (WOW64 sets
        # PROCESSOR_ARCHITEW6432 for it).
        self._redirected = (
            redirected
            if redirected is not None
            else sys.platform == "win32" and sys.maxsize <= 2**32 and "PROCESSOR_ARCHITEW6432" in self._environ
        )

    def local_path(self, path: str) -> str:
        """The local path a probe path stands for. Raises ValueError for a variable that is not set."""
        match = _VARIABLE.match(path)
        if match is not None:
            name = match.group("name")
            value = next((v for k, v in self._environ.items() if k.lower() == name.lower()), None)
            if not value:
                raise ValueError(f"{path}: %{name}% is not set in this process's environment")
            path = value.rstrip("\\/") + path[match.end() :]
        if self._redirected:
            path = _SYSTEM32.sub(lambda m: m.group("root") + "Sysnative", path, count=1)
        if os.sep != "\\":
            path = path.replace("\\", os.sep)
        return path

    def read_bytes(self, path: str, limit: int) -> bytes | None:
        try:
            with Path(self.local_path(path)).open("rb") as handle:
                return handle.read(limit)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except PermissionError as exc:
            raise FileAccessDenied(path) from exc

    def exists(self, path: str) -> bool:
        local = Path(self.local_path(path))
        try:
            local.stat()
        except (FileNotFoundError, NotADirectoryError):
            return False
        except PermissionError as exc:
            raise FileAccessDenied(path) from exc
        return True

    def list_dir(self, path: str) -> list[str]:
        try:
            return sorted((entry.name for entry in Path(self.local_path(path)).iterdir()), key=str.lower)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except PermissionError as exc:
            raise FileAccessDenied(path) from exc
