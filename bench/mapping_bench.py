"""What the mapping from documented facts (probe/documented.py) asks of a host, per host kind.

    .venv/bin/python bench/mapping_bench.py                # every recorded host, 2000 reads each
    .venv/bin/python bench/mapping_bench.py --reads 200 --products 300 --profiles 50

For each recorded host in tests/fixtures/windows_hosts/ it counts the reader calls one read makes
(registry: read_value, subkeys, value_names, key_exists; files: exists, list_dir; version
resources) and times the mapping in-process over the recorded readers (median of --rounds runs
of --reads reads). Remotely every call is at least one SMB round trip, so the call count times
the round-trip time bounds a scanner's time per target from below; the in-process time is the
mapping's own CPU cost. A synthetic "busy desktop" (an SP2 client with --products Uninstall
entries and --profiles user profiles) shows how those two enumerations grow, and what a
configured [versions.client] rule for its msdrm.dll saves (the Uninstall entries are then not read).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

from rmsfleet.agent.probe import (  # noqa: E402
    DocumentedSettings,
    HostIdentity,
    HostSources,
    RecordedFiles,
    RecordedHost,
    RecordedRegistry,
    RecordedVersions,
    read_documented_host,
)
from rmsfleet.agent.probe.version_map import Role, VersionMap, configured_rule  # noqa: E402

IDENTITY = HostIdentity("h1", "h1.corp.example", "corp.example")


class Counting:
    """Wraps a reader and counts its calls by method name."""

    def __init__(self, inner: Any, prefix: str, counts: Counter[str]) -> None:
        self._inner = inner
        self._prefix = prefix
        self._counts = counts

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)

        def counted(*args: Any) -> Any:
            self._counts[f"{self._prefix}.{name}"] += 1
            return method(*args)

        return counted


def busy_desktop(products: int, profiles: int) -> HostSources:
    nt = "SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion"
    uninstall = "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall"
    keys: dict[str, dict[str, str | int]] = {nt: {"CurrentVersion": "5.1"}}
    for n in range(products):
        keys[f"{uninstall}\\{{PRODUCT-{n:04d}}}"] = {"DisplayName": f"Product {n}"}
    keys[f"{uninstall}\\{{RMS-SP2}}"] = {"DisplayName": "Windows Rights Management Client with Service Pack 2"}
    files = ["%SystemRoot%\\system32\\ntoskrnl.exe", "%SystemRoot%\\system32\\msdrm.dll"]
    for n in range(profiles):
        profile = f"%SystemDrive%\\Documents and Settings\\user{n}"
        keys[f"{nt}\\ProfileList\\S-1-5-21-1-2-3-{1000 + n}"] = {"ProfileImagePath": profile}
        if n % 2:
            files.append(profile + "\\Local Settings\\Application Data\\Microsoft\\DRM\\CERT-Machine.drm")
    versions = {
        "%SystemRoot%\\system32\\ntoskrnl.exe": (5, 1, 2600, 5512),
        "%SystemRoot%\\system32\\msdrm.dll": (5, 2, 3790, 200),
    }
    return HostSources(RecordedRegistry(keys), RecordedFiles(files), RecordedVersions(versions), None)


def measure(name: str, sources: HostSources, settings: DocumentedSettings, reads: int, rounds: int) -> None:
    counts: Counter[str] = Counter()
    counted = HostSources(
        Counting(sources.registry, "registry", counts),
        Counting(sources.files, "files", counts),
        Counting(sources.versions, "versions", counts),
        sources.client_api,
    )
    try:
        status = read_documented_host(counted, settings, IDENTITY).status.value
    except Exception as exc:  # the access-denied host: counted up to the refusal
        status = type(exc).__name__
    timings = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reads):
            with contextlib.suppress(Exception):
                read_documented_host(sources, settings, IDENTITY)
        timings.append((time.perf_counter() - start) / reads)
    calls = sum(counts.values())
    detail = ", ".join(f"{key.split('.', 1)[1]} {n}" for key, n in sorted(counts.items()))
    print(f"{name:32} {status:18} {calls:5} calls  {statistics.median(timings) * 1e6:8.1f} us/read  ({detail})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--products", type=int, default=300)
    parser.add_argument("--profiles", type=int, default=50)
    args = parser.parse_args(argv)
    versions = VersionMap.with_defaults([configured_rule(Role.CLIENT, "5.2.3790.100", "RTM")])
    print(f"python {sys.version.split()[0]}; median of {args.rounds} rounds of {args.reads} reads")
    for path in sorted((ROOT / "tests" / "fixtures" / "windows_hosts").glob("*.json")):
        host = RecordedHost.load(path)
        measure(path.stem, host.sources(), DocumentedSettings(versions=versions), args.reads, args.rounds)
    desktop = busy_desktop(args.products, args.profiles)
    reads = max(1, args.reads // 20)
    measure(
        f"busy desktop ({args.products} products, {args.profiles} profiles)",
        desktop,
        DocumentedSettings(),
        reads,
        args.rounds,
    )
    rule = configured_rule(Role.CLIENT, "5.2.3790.200", "SP2")
    measure(
        "  the same, msdrm.dll rule set",
        desktop,
        DocumentedSettings(versions=VersionMap.with_defaults([rule])),
        reads,
        args.rounds,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
