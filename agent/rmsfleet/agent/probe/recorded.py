"""Hosts recorded as JSON (tests/fixtures/windows_hosts/), replayed through the real mapping.

A recording holds what the mapping reads: registry keys and values, which files exist, the
files' version resources, and (local only) what DRMGetClientVersion answered, plus paths that
were denied. `RecordedHost.load(path).sources()` gives HostSources over it, so any host export in
this shape runs through the same code as a live host.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmsfleet.agent.probe.base import ProbeError
from rmsfleet.agent.probe.documented import HostSources
from rmsfleet.agent.probe.files import FileAccessDenied
from rmsfleet.agent.probe.registry import RecordedRegistry
from rmsfleet.agent.probe.rms_client import RecordedRmsClient
from rmsfleet.agent.probe.version_resource import RecordedVersions


def _norm(path: str) -> str:
    return path.replace("/", "\\").strip().rstrip("\\").lower()


class RecordedFiles:
    """Files recorded from a host: the paths of files that exist (their folders exist too) and
    the paths that were denied (a denied folder denies what is below it). Case-insensitive."""

    def __init__(self, files: Iterable[str], denied: Iterable[str] = ()) -> None:
        self._files = {_norm(path): path.strip().rstrip("\\").rsplit("\\", 1)[-1] for path in files}
        self._denied = [(_norm(path), path) for path in denied]

    def _check(self, path: str) -> None:
        for denied, spelled in self._denied:
            if path == denied or path.startswith(denied + "\\"):
                raise FileAccessDenied(spelled)

    def read_bytes(self, path: str, limit: int) -> bytes | None:
        # Recordings keep no contents: versions come from `version_resources`.
        return b"" if self.exists(path) else None

    def exists(self, path: str) -> bool:
        normal = _norm(path)
        self._check(normal)
        return normal in self._files or any(known.startswith(normal + "\\") for known in self._files)

    def list_dir(self, path: str) -> list[str]:
        normal = _norm(path)
        self._check(normal)
        prefix = normal + "\\"
        names: dict[str, str] = {}
        for known, spelled_leaf in self._files.items():
            if not known.startswith(prefix):
                continue
            rest = known[len(prefix) :]
            child = rest.split("\\", 1)[0]
            if "\\" not in rest:
                names[child] = spelled_leaf
            else:
                names.setdefault(child, child)
        return sorted(names.values(), key=str.lower)


@dataclass(frozen=True, slots=True)
class RecordedHost:
    """One recording: `registry` ({"keys": {path: {name: value}}, "denied": [path]}), `files`
    ([path]), `files_denied` ([path]), `version_resources` ({path: [a, b, c, d]}) and
    `rms_client` (null, or {"version": [a, b, c, d] | null, "error": str | null}: what
    DRMGetClientVersion answered on the host, local probe only)."""

    registry: RecordedRegistry
    files: RecordedFiles
    versions: RecordedVersions
    client: RecordedRmsClient | None
    document: Mapping[str, Any]

    @classmethod
    def load(cls, path: Path) -> RecordedHost:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            return cls.from_json(document)
        except (OSError, ValueError, TypeError, IndexError, AttributeError, KeyError) as exc:
            raise ProbeError(f"{path}: not a recorded host: {exc}") from exc

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> RecordedHost:
        if not isinstance(document, Mapping):
            raise ValueError("expected a JSON object")
        files = document.get("files", [])
        files_denied = document.get("files_denied", [])
        for name, value in (("files", files), ("files_denied", files_denied)):
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise ValueError(f"{name}: expected a list of paths")
        client_doc = document.get("rms_client")
        client = None
        if client_doc is not None:
            raw = client_doc.get("version")
            version = None if raw is None else (int(raw[0]), int(raw[1]), int(raw[2]), int(raw[3]))
            client = RecordedRmsClient(version, client_doc.get("error"))
        return cls(
            registry=RecordedRegistry.from_json(document.get("registry", {})),
            files=RecordedFiles(files, files_denied),
            versions=RecordedVersions.from_json(document.get("version_resources", {}), tuple(files_denied)),
            client=client,
            document=document,
        )

    def sources(self) -> HostSources:
        return HostSources(self.registry, self.files, self.versions, self.client)
