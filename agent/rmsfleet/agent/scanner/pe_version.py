"""A file's version from its PE version resource (VS_FIXEDFILEINFO), read with pefile from the
file's bytes: the VersionResourceReader the shared probe mapping reads through, remotely.

The version is the fixed file version (FileVersionMS/LS), the number Windows Explorer shows and
GetFileVersionInfo returns, not the free-text "FileVersion" string, which vendors format as
they like. The whole file is read (at most `max_bytes`): the resource section of a PE file is
usually near its end.
"""

from __future__ import annotations

from rmsfleet.agent.probe.files import FileReader

FileVersion = tuple[int, int, int, int]


def version_from_pe(data: bytes) -> FileVersion | None:
    """The fixed file version in a PE image's version resource; None when `data` is not a PE
    image (or is cut short before its resources) or has no version resource."""
    import pefile

    try:
        image = pefile.PE(data=data, fast_load=True)
        image.parse_data_directories(directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_RESOURCE"]])
    except pefile.PEFormatError:
        return None
    try:
        for fixed in getattr(image, "VS_FIXEDFILEINFO", None) or []:
            high, low = int(fixed.FileVersionMS), int(fixed.FileVersionLS)
            return (high >> 16, high & 0xFFFF, low >> 16, low & 0xFFFF)
        return None
    finally:
        image.close()


class RemoteVersionReader:
    """VersionResourceReader over a FileReader: reads at most `max_bytes` of the file."""

    def __init__(self, files: FileReader, max_bytes: int) -> None:
        self._files = files
        self._max_bytes = max_bytes

    def file_version(self, path: str) -> FileVersion | None:
        """The file version of the PE file at `path`; None when there is no such file, it is no
        PE image, it has no version resource, or its resources lie beyond `max_bytes`.
        Raises FileAccessDenied when it may not be read."""
        data = self._files.read_bytes(path, self._max_bytes)
        if data is None:
            return None
        return version_from_pe(data)
