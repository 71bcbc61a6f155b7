"""A file's version from its PE version resource (VS_FIXEDFILEINFO), read with pefile from the
file's bytes: the VersionResourceReader the shared probe mapping reads through, remotely."""

from __future__ import annotations

from rmsfleet.agent.probe.files import FileReader


class RemoteVersionReader:
    """VersionResourceReader over a FileReader: reads at most `max_bytes` of the file."""

    def __init__(self, files: FileReader, max_bytes: int) -> None:
        self._files = files
        self._max_bytes = max_bytes

    def file_version(self, path: str) -> tuple[int, int, int, int] | None:
        """The file version of the PE file at `path`; None when there is no such file or it has
        no version resource."""
        raise NotImplementedError
