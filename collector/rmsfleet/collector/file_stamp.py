"""Telling whether files changed since they were last read, for the files the collector re-reads
while it runs (enrollment secrets, TLS certificates): a change of modification time, size or
inode (an editor that writes a new file and renames it over the old) counts."""

from __future__ import annotations

from pathlib import Path

FileStamp = tuple[tuple[int, int, int], ...]


def file_stamp(*paths: Path) -> FileStamp:
    """The stamp of `paths`, compared whole: any file's change changes it. Raises OSError."""
    stamps = []
    for path in paths:
        status = path.stat()
        stamps.append((status.st_mtime_ns, status.st_size, status.st_ino))
    return tuple(stamps)
