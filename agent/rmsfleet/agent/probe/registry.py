"""Reading HKEY_LOCAL_MACHINE through a small interface, so the Windows probe runs on Linux.

`RegistryReader` is all the Windows probe knows of the registry. `WinRegReader` is the real one
(the standard library's `winreg`, imported only when it is first used, so this module imports
on every platform). `RecordedRegistry` answers from a dict recorded from a real host (the
fixtures in tests/fixtures/windows_hosts/), which is how the probe is tested without Windows.

Paths are relative to HKLM and written with backslashes, e.g. `SOFTWARE\\Microsoft\\DRMS\\1.0`.
Registry paths and value names are case-insensitive on Windows, and so they are here.

32-bit software on 64-bit Windows (the RMS server with SP2 "runs in emulation mode" on x64)
writes under `SOFTWARE\\WOW6432Node`. Both readers therefore look up a `SOFTWARE\\...` path in
the native view first and then in the WOW6432Node view (`candidate_paths`), so the probe finds
the key wherever the installer put it and the two readers cannot disagree about the order.

The value `name` "" is a key's (Default) value: the RMS client's service location overrides are
subkeys whose (Default) value holds the URL.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from rmsfleet.agent.probe.base import ProbeAccessDenied

RegistryValue = str | int | None

_SOFTWARE = "software\\"
_WOW = "wow6432node\\"


class RegistryReader(Protocol):
    def read_value(self, path: str, name: str) -> RegistryValue:
        """The value `name` under HKLM\\`path`: a string (REG_SZ, REG_EXPAND_SZ, the first string of
        REG_MULTI_SZ), an integer (REG_DWORD, REG_QWORD), or None when the key or value does not
        exist or holds another type. Raises RegistryAccessDenied when the key may not be read."""
        ...

    def subkeys(self, path: str) -> list[str]:
        """Names of the subkeys of HKLM\\`path`; empty when the key does not exist."""
        ...

    def value_names(self, path: str) -> list[str]:
        """Names of the values of HKLM\\`path` (the (Default) value, when set, as ""), as the host
        spells them; empty when the key does not exist. Like `subkeys`, the first view of
        `candidate_paths` in which the key exists answers. Raises RegistryAccessDenied.

        Needed where a documented fact is a value's *name*: the `KeyProtection` value
        `PASSWORDDERIVEDKEY_<database server>_DRMS_CONFIG_<cluster name>_<port>` (domain.md)."""
        ...

    def key_exists(self, path: str) -> bool:
        """Whether HKLM\\`path` exists (in either view). Raises RegistryAccessDenied."""
        ...


class RegistryAccessDenied(ProbeAccessDenied):
    """Reading a key was refused (winreg raises PermissionError, i.e. ERROR_ACCESS_DENIED)."""

    def __init__(self, path: str) -> None:
        super().__init__(display_path(path))
        self.path = path


def display_path(path: str) -> str:
    return "HKLM\\" + path.strip("\\")


def candidate_paths(path: str) -> list[str]:
    """The paths a reader tries for `path`, in order: as given, then its WOW6432Node twin."""
    clean = path.strip("\\")
    lowered = clean.lower()
    if lowered.startswith(_SOFTWARE) and not lowered.startswith(_SOFTWARE + _WOW):
        return [clean, clean[: len(_SOFTWARE)] + "WOW6432Node\\" + clean[len(_SOFTWARE) :]]
    return [clean]


# --- the real registry ---------------------------------------------------------------------------


class WinRegReader:
    """HKLM through the standard library's winreg. Windows only; imports winreg lazily."""

    def __init__(self) -> None:
        self._winreg: Any = None

    def _module(self) -> Any:
        if self._winreg is None:
            self._winreg = _import_winreg()
        return self._winreg

    def read_value(self, path: str, name: str) -> RegistryValue:
        winreg = self._module()
        for candidate in candidate_paths(path):
            key = self._open(winreg, candidate)
            if key is None:
                continue
            with key:
                try:
                    raw, kind = winreg.QueryValueEx(key, name)
                except FileNotFoundError:
                    continue
                except PermissionError as exc:
                    raise RegistryAccessDenied(candidate) from exc
            value = _convert(winreg, raw, kind)
            if value is not None:
                return value
        return None

    def subkeys(self, path: str) -> list[str]:
        winreg = self._module()
        for candidate in candidate_paths(path):
            key = self._open(winreg, candidate)
            if key is None:
                continue
            names: list[str] = []
            with key:
                index = 0
                while True:
                    try:
                        names.append(winreg.EnumKey(key, index))
                    except OSError:
                        # EnumKey signals the end with ERROR_NO_MORE_ITEMS as an OSError.
                        break
                    index += 1
            return names
        return []

    def value_names(self, path: str) -> list[str]:
        winreg = self._module()
        for candidate in candidate_paths(path):
            key = self._open(winreg, candidate)
            if key is None:
                continue
            names: list[str] = []
            with key:
                index = 0
                while True:
                    try:
                        name, _raw, _kind = winreg.EnumValue(key, index)
                    except OSError:
                        # EnumValue signals the end with ERROR_NO_MORE_ITEMS as an OSError.
                        break
                    names.append(str(name))
                    index += 1
            return names
        return []

    def key_exists(self, path: str) -> bool:
        winreg = self._module()
        for candidate in candidate_paths(path):
            key = self._open(winreg, candidate)
            if key is not None:
                key.Close()
                return True
        return False

    @staticmethod
    def _open(winreg: Any, path: str) -> Any:
        try:
            # KEY_READ only: the probe never writes (and must not need rights that allow it).
            return winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, path, 0, winreg.KEY_READ)
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            raise RegistryAccessDenied(path) from exc


def _import_winreg() -> Any:
    if sys.platform != "win32":
        raise RuntimeError("WinRegReader reads the Windows registry and runs only on Windows")
    import winreg

    return winreg


def _convert(winreg: Any, raw: Any, kind: int) -> RegistryValue:
    if kind in (winreg.REG_SZ, winreg.REG_EXPAND_SZ) and isinstance(raw, str):
        return raw
    if kind in (winreg.REG_DWORD, winreg.REG_QWORD) and isinstance(raw, int):
        return raw
    if kind == winreg.REG_MULTI_SZ and isinstance(raw, list) and raw and isinstance(raw[0], str):
        return raw[0]
    return None


# --- a recorded registry (tests, and replaying a host's export) ----------------------------------


class RecordedRegistry:
    """A registry recorded from a host: `{path: {value name: value}}` plus the paths that were
    denied. Lookups behave like WinRegReader's, including the WOW6432Node fallback."""

    def __init__(self, keys: Mapping[str, Mapping[str, str | int]], denied: Iterable[str] = ()) -> None:
        self._keys: dict[str, dict[str, str | int]] = {}
        self._spelled: dict[str, str] = {}  # subkey names keep the host's spelling, as winreg's do
        self._names: dict[str, dict[str, str]] = {}  # value names too
        for path, values in keys.items():
            self._keys[_norm(path)] = {name.lower(): value for name, value in values.items()}
            self._names[_norm(path)] = {name.lower(): name for name in values}
            self._spelled[_norm(path)] = path.strip("\\")
        # (normalised, as recorded): errors name the key as the host spelled it.
        self._denied = [(_norm(path), path.strip("\\")) for path in denied]

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> RecordedRegistry:
        """Build from a fixture's `registry` object: `{"keys": {path: {name: value}}, "denied": [path]}`.
        The (Default) value is recorded under the name ""."""
        keys = document.get("keys", {})
        denied = document.get("denied", [])
        if not isinstance(keys, Mapping) or not all(isinstance(v, Mapping) for v in keys.values()):
            raise ValueError("registry.keys: expected an object of {path: {name: value}}")
        if not isinstance(denied, list) or not all(isinstance(p, str) for p in denied):
            raise ValueError("registry.denied: expected a list of paths")
        return cls(keys, denied)

    def _check(self, path: str) -> None:
        # A denied key denies its subtree too, as a key's ACL is inherited by default.
        for denied, spelled in self._denied:
            if path == denied or path.startswith(denied + "\\"):
                raise RegistryAccessDenied(spelled)

    def _exists(self, path: str) -> bool:
        return path in self._keys or any(key.startswith(path + "\\") for key in self._keys)

    def read_value(self, path: str, name: str) -> RegistryValue:
        for candidate in candidate_paths(path):
            normal = _norm(candidate)
            self._check(normal)
            value = self._keys.get(normal, {}).get(name.lower())
            if value is not None:
                return value
        return None

    def subkeys(self, path: str) -> list[str]:
        for candidate in candidate_paths(path):
            normal = _norm(candidate)
            self._check(normal)
            if not self._exists(normal):
                continue
            prefix = normal + "\\"
            names = {
                self._spelled[key][len(prefix) :].split("\\", 1)[0] for key in self._keys if key.startswith(prefix)
            }
            return sorted(names, key=str.lower)
        return []

    def value_names(self, path: str) -> list[str]:
        for candidate in candidate_paths(path):
            normal = _norm(candidate)
            self._check(normal)
            if not self._exists(normal):
                continue
            return list(self._names.get(normal, {}).values())
        return []

    def key_exists(self, path: str) -> bool:
        for candidate in candidate_paths(path):
            normal = _norm(candidate)
            self._check(normal)
            if self._exists(normal):
                return True
        return False


def _norm(path: str) -> str:
    return path.strip("\\").lower()
