"""A file's version resource (the PE `VS_FIXEDFILEINFO` file version) behind a one-question
interface, so the one mapping from documented facts (documented.py) reads versions the same way
on the local disk, over SMB and from a recording.

The versions a probe needs are file versions: the RMS server assembly `Plugin.DirectoryServices`
([MS-RMPRS] 2.3.1.2), the RMS client `msdrm.dll`, and the kernel `ntoskrnl.exe` (the Windows
version, D15). Paths follow the FileReader rules (files.py): `%SystemRoot%\\...`,
`%SystemDrive%\\...` or `X:\\...`, case-insensitive.

Implementations:
- `Win32VersionReader`: the local host, through `GetFileVersionInfoW` / `VerQueryValueW` of
  version.dll with ctypes (Windows only; loaded on first use, so this module imports anywhere);
- the agentless scanner's reader (pefile over the bytes read through its FileReader);
- `RecordedVersions`: answers recorded per path (tests, and replaying a host's export).
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from rmsfleet.agent.probe.files import FileAccessDenied

FileVersion = tuple[int, int, int, int]


class VersionResourceReader(Protocol):
    def file_version(self, path: str) -> FileVersion | None:
        """The file version of the file at `path` from its version resource
        (`VS_FIXEDFILEINFO.dwFileVersionMS`/`LS`: major, minor, build, private), or None when
        there is no file at `path` or the file carries no version resource.
        Raises FileAccessDenied when the file may not be read."""
        ...


def split_file_version(ms: int, ls: int) -> FileVersion:
    """`dwFileVersionMS`, `dwFileVersionLS` -> (major, minor, build, private)."""
    return ((ms >> 16) & 0xFFFF, ms & 0xFFFF, (ls >> 16) & 0xFFFF, ls & 0xFFFF)


def dotted_version(version: FileVersion) -> str:
    return ".".join(str(part) for part in version)


# --- recorded (tests) -----------------------------------------------------------------------------


class RecordedVersions:
    """File versions recorded from a host: `{path: [a, b, c, d]}`, and the paths that were denied.
    A path not recorded has no version (None), as a missing file has none."""

    def __init__(self, versions: Mapping[str, FileVersion], denied: tuple[str, ...] = ()) -> None:
        self._versions = {_norm(path): version for path, version in versions.items()}
        self._denied = [(_norm(path).rstrip("\\"), path) for path in denied]

    @classmethod
    def from_json(cls, document: Mapping[str, Any], denied: tuple[str, ...] = ()) -> RecordedVersions:
        """From a fixture's `version_resources` object `{path: [major, minor, build, private]}`."""
        if not isinstance(document, Mapping):
            raise ValueError("version_resources: expected an object of {path: [a, b, c, d]}")
        versions: dict[str, FileVersion] = {}
        for path, raw in document.items():
            if (
                not isinstance(raw, list)
                or len(raw) != 4
                or not all(isinstance(part, int) and 0 <= part <= 0xFFFF for part in raw)
            ):
                raise ValueError(f"version_resources[{path!r}]: expected four numbers from 0 to 65535, got {raw!r}")
            versions[path] = (raw[0], raw[1], raw[2], raw[3])
        return cls(versions, denied)

    def file_version(self, path: str) -> FileVersion | None:
        normal = _norm(path)
        # A denied folder denies the files below it, as on the host.
        for denied, spelled in self._denied:
            if normal == denied or normal.startswith(denied + "\\"):
                raise FileAccessDenied(spelled)
        return self._versions.get(normal)


def _norm(path: str) -> str:
    return path.replace("/", "\\").strip().lower()


# --- the local host (Windows) ---------------------------------------------------------------------


class _FixedFileInfo(ctypes.Structure):
    # VS_FIXEDFILEINFO (verrsrc.h); only the signature and the file version are read.
    _fields_ = (
        ("dwSignature", ctypes.c_uint32),
        ("dwStrucVersion", ctypes.c_uint32),
        ("dwFileVersionMS", ctypes.c_uint32),
        ("dwFileVersionLS", ctypes.c_uint32),
        ("dwProductVersionMS", ctypes.c_uint32),
        ("dwProductVersionLS", ctypes.c_uint32),
        ("dwFileFlagsMask", ctypes.c_uint32),
        ("dwFileFlags", ctypes.c_uint32),
        ("dwFileOS", ctypes.c_uint32),
        ("dwFileType", ctypes.c_uint32),
        ("dwFileSubtype", ctypes.c_uint32),
        ("dwFileDateMS", ctypes.c_uint32),
        ("dwFileDateLS", ctypes.c_uint32),
    )


VS_FFI_SIGNATURE = 0xFEEF04BD
ERROR_FILE_NOT_FOUND = 2
ERROR_PATH_NOT_FOUND = 3
ERROR_ACCESS_DENIED = 5
ERROR_RESOURCE_DATA_NOT_FOUND = 1812
ERROR_RESOURCE_TYPE_NOT_FOUND = 1813


class Win32VersionReader:
    """The local host's files through version.dll. `expand` turns a probe path
    (`%SystemRoot%\\...`) into a local one; LocalFileReader.local_path is meant."""

    def __init__(self, expand: Callable[[str], str]) -> None:
        self._expand = expand
        self._dll: Any = None

    def _version_dll(self) -> Any:
        if self._dll is None:
            if sys.platform != "win32":
                raise RuntimeError(
                    "Win32VersionReader reads version resources with version.dll and runs only on Windows"
                )
            self._dll = ctypes.WinDLL("version.dll", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
        return self._dll

    def file_version(self, path: str) -> FileVersion | None:
        dll = self._version_dll()
        local = self._expand(path)
        size_of = dll.GetFileVersionInfoSizeW
        size_of.argtypes = (ctypes.c_wchar_p, ctypes.POINTER(ctypes.c_uint32))
        size_of.restype = ctypes.c_uint32
        handle = ctypes.c_uint32(0)
        size = int(size_of(local, ctypes.byref(handle)))
        if size == 0:
            error = ctypes.get_last_error()  # type: ignore[attr-defined,unused-ignore]
            if error == ERROR_ACCESS_DENIED:
                raise FileAccessDenied(path)
            # Missing file or folder, or a file without a version resource: no version.
            return None
        buffer = ctypes.create_string_buffer(size)
        get_info = dll.GetFileVersionInfoW
        get_info.argtypes = (ctypes.c_wchar_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p)
        get_info.restype = ctypes.c_int
        if not get_info(local, 0, size, buffer):
            if ctypes.get_last_error() == ERROR_ACCESS_DENIED:  # type: ignore[attr-defined,unused-ignore]
                raise FileAccessDenied(path)
            return None
        query = dll.VerQueryValueW
        query.argtypes = (
            ctypes.c_void_p,
            ctypes.c_wchar_p,
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.POINTER(ctypes.c_uint32),
        )
        query.restype = ctypes.c_int
        pointer = ctypes.c_void_p()
        length = ctypes.c_uint32(0)
        if not query(buffer, "\\", ctypes.byref(pointer), ctypes.byref(length)) or pointer.value is None:
            return None
        if length.value < ctypes.sizeof(_FixedFileInfo):
            return None
        info = _FixedFileInfo.from_address(pointer.value)
        if info.dwSignature != VS_FFI_SIGNATURE:
            return None
        return split_file_version(info.dwFileVersionMS, info.dwFileVersionLS)
