"""Scanner benchmark: targets scanned per minute against local fake Windows hosts (real Samba
servers, the test harness of tests/scanner/fake_hosts.py), the scanner's peak RSS, and what the
scanner extra adds to the agent's install.

    .venv/bin/python bench/scan_bench.py                         # 16 Samba hosts x 8 names = 128 targets, concurrency 32
    .venv/bin/python bench/scan_bench.py --samba-hosts 8 --names-per-host 4 --rounds 3
    .venv/bin/python bench/scan_bench.py --install-size          # also: fresh venvs, `pip install .` vs '.[scanner]'

What runs, all on this machine:
- `--samba-hosts` fake hosts, a mix of RMS 1.0 estates (SP1 root and SP2 licensing servers, RTM and
  SP2 clients on XP, a Windows 7 built-in client, a host without RMS; every third one speaks only
  SMB1, as Windows 2000/XP/2003 do), each its own smbd + samba-dcerpcd on a loopback port;
- a collector (`rmsfleet-collector serve`, SQLite in a temporary folder);
- `rmsfleet-scan` as its own process, every host listed under `--names-per-host` names (a name is
  a host's identity, so each name is its own target with its own outbox), `--concurrency` at a
  time, one scan per round, a fresh state directory per round.

Figures: wall time of the scanner process, targets per minute (targets / wall time, so reading,
queueing and delivering to the collector are all in it), the read phase alone (the scanner's own
summary time is the whole run; the per-target seconds in --json give the read time), and the
scanner's peak RSS from wait4(). Samba, the collector and the scanner share the machine's cores:
the figure is a floor for a scanner on its own machine, and the real limit in an estate is the
targets' network latency, which this loopback setup does not have.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]

from processes import start_collector  # noqa: E402  (tests/e2e: the collector starter the e2e tests use)
from scanner.fake_hosts import (  # noqa: E402
    ADMIN_PASSWORD,
    ADMIN_USER,
    SERVER_SP1,
    SERVER_SP2,
    VISTA_DRM_FOLDER,
    WINDOWS_7,
    WINDOWS_2003,
    WINDOWS_XP,
    FakeWindowsHost,
    Profile,
    RegValue,
    RunningFakeHost,
    running_fake_host,
)
from scanner.samba import require_samba  # noqa: E402

BIN = Path(sys.executable).parent
DRMS = "SOFTWARE\\Microsoft\\DRMS\\1.0"
ASSEMBLY = "%SystemDrive%\\Inetpub\\wwwroot\\_wmcs\\bin\\Plugin.DirectoryServices.dll"
MSDRM = "%SystemRoot%\\system32\\msdrm.dll"
SP2_PRODUCT = "Windows Rights Management Client with Service Pack 2"


def estate(index: int) -> FakeWindowsHost:
    """The index-th fake host: six kinds in turn; every third host speaks only SMB1."""
    name = f"BENCH{index:03d}"
    smb1_only = index % 3 == 2
    kind = index % 6
    if kind == 0:
        return FakeWindowsHost(
            netbios_name=name,
            windows_version=WINDOWS_2003,
            registry={
                DRMS: {"GicURL": "https://rms.corp.example/_wmcs/certification"},
                DRMS + "\\KeyProtection": {
                    "PASSWORDDERIVEDKEY_SQL01_DRMS_CONFIG_rms_corp_example_443": RegValue.binary(b"\x01")
                },
            },
            files={ASSEMBLY: SERVER_SP1},
            smb1_only=smb1_only,
        )
    if kind == 1:
        wow = "SOFTWARE\\WOW6432Node\\Microsoft\\DRMS\\1.0"
        return FakeWindowsHost(
            netbios_name=name,
            windows_version=WINDOWS_2003,
            registry={
                wow: {"SubEnrollmentURL": "https://rms.corp.example/_wmcs/certification/subenrollservice.asmx"},
                wow + "\\KeyProtection": {
                    "PASSWORDDERIVEDKEY_SQL02_DRMS_CONFIG_rms_lic_corp_example_443": RegValue.binary(b"\x01")
                },
            },
            files={ASSEMBLY: SERVER_SP2},
            smb1_only=smb1_only,
        )
    if kind == 2:
        return FakeWindowsHost(
            netbios_name=name,
            windows_version=WINDOWS_XP,
            files={MSDRM: (5, 2, 3790, 100)},
            profiles=[Profile("carol", f"S-1-5-21-1-2-3-{1000 + index}")],
            smb1_only=smb1_only,
        )
    if kind == 3:
        return FakeWindowsHost(
            netbios_name=name,
            windows_version=WINDOWS_XP,
            registry={"SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\RMSSP2": {"DisplayName": SP2_PRODUCT}},
            files={MSDRM: (5, 2, 3790, 433)},
            profiles=[
                Profile("alice", f"S-1-5-21-1-2-3-{2000 + index}", activated=True),
                Profile("bob", f"S-1-5-21-1-2-3-{3000 + index}", activated=True),
            ],
            smb1_only=smb1_only,
        )
    if kind == 4:
        return FakeWindowsHost(
            netbios_name=name,
            windows_version=WINDOWS_7,
            profiles=[
                Profile(
                    "erin",
                    f"S-1-5-21-1-2-3-{4000 + index}",
                    activated=True,
                    home="%SystemDrive%\\Users\\erin",
                    drm_folder=VISTA_DRM_FOLDER,
                )
            ],
            smb1_only=smb1_only,
        )
    return FakeWindowsHost(netbios_name=name, windows_version=WINDOWS_2003, smb1_only=smb1_only)


CONFIG = """
[agent]
collectors = ["{collector}"]

[scan]
forest = "corp.example"
timeout = 30
concurrency = {concurrency}

[clusters]
"rms_corp_example:443" = "https://rms.corp.example"
"rms_lic_corp_example:443" = "https://rms-lic.corp.example"

[versions.client]
"5.2.3790.100" = "RTM"
"""


@contextlib.contextmanager
def fake_estate(count: int, pe_cache: Path) -> Iterator[list[RunningFakeHost]]:
    tools = require_samba()
    with contextlib.ExitStack() as stack:
        started = time.monotonic()
        hosts = [stack.enter_context(running_fake_host(estate(i), tools, pe_cache)) for i in range(count)]
        print(f"started {count} fake hosts in {time.monotonic() - started:.1f} s", file=sys.stderr)
        yield hosts


def scan_round(
    work: Path, collector_address: str, hosts: list[RunningFakeHost], names: int, concurrency: int
) -> dict[str, Any]:
    config = work / "scan.toml"
    config.write_text(CONFIG.format(collector=collector_address, concurrency=concurrency))
    targets = work / "targets.txt"
    lines = [
        f"{host.host.netbios_name.lower()}-{n}.corp.example  {host.address}:{host.port}\n"
        for n in range(names)
        for host in hosts
    ]
    targets.write_text("".join(lines))
    state = work / "state"
    shutil.rmtree(state, ignore_errors=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RMSFLEET_")},
        "RMSFLEET_SCAN_USERNAME": ADMIN_USER,
        "RMSFLEET_SCAN_PASSWORD": ADMIN_PASSWORD,
    }
    with (work / "scan.out").open("w") as out, (work / "scan.err").open("w") as err:
        started = time.monotonic()
        process = subprocess.Popen(
            [
                str(BIN / "rmsfleet-scan"),
                "--config",
                str(config),
                "--targets-file",
                str(targets),
                "--state-dir",
                str(state),
                "--json",
            ],
            stdout=out,
            stderr=err,
            env=env,
        )
        _pid, status, usage = os.wait4(process.pid, 0)
        wall = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    document = json.loads((work / "scan.out").read_text().strip().splitlines()[-1])
    summary = document["summary"]
    read_seconds = [target["seconds"] for target in document["targets"]]
    return {
        "targets": len(lines),
        "exit_code": process.returncode,
        "wall_seconds": round(wall, 2),
        "targets_per_minute": round(len(lines) / wall * 60, 1),
        "reported": summary["reported"],
        "outcomes": {k: v for k, v in summary["outcomes"].items() if v},
        "failures": sorted(
            {
                f"{t['outcome']}: {t['message']}"
                for t in document["targets"]
                if t["outcome"] not in ("reported", "rms-not-found")
            }
        )[:5],
        "read_seconds_median": round(statistics.median(read_seconds), 3),
        "read_seconds_max": round(max(read_seconds), 3),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux: kilobytes
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
    }


def install_sizes(work: Path) -> dict[str, Any]:
    """Fresh venvs: `pip install .` (the agent) and `pip install '.[scanner]'`, measured on disk
    (site-packages, less what an empty venv already holds: pip itself)."""

    def site_packages(venv: Path) -> Path:
        return next((venv / "lib").glob("python3*/site-packages"))

    def size(path: Path) -> int:
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())

    results: dict[str, Any] = {}
    empty = work / "venv-empty"
    subprocess.run([sys.executable, "-m", "venv", str(empty)], check=True)
    baseline = size(site_packages(empty))
    for label, spec in (("agent", "."), ("agent+scanner", ".[scanner]")):
        venv = work / f"venv-{label}"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        command = [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", spec]
        subprocess.run(command, check=True, cwd=ROOT)
        installed = subprocess.run(
            [str(venv / "bin" / "pip"), "list", "--format=freeze", "--disable-pip-version-check"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        results[label] = {
            "command": f"pip install '{spec}'",
            "mib": round((size(site_packages(venv)) - baseline) / 2**20, 1),
            "packages": len([line for line in installed if not line.lower().startswith(("pip==", "setuptools=="))]),
        }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samba-hosts", type=int, default=16)
    parser.add_argument("--names-per-host", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--install-size", action="store_true", help="also measure the install sizes (a few minutes)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rmsfleet-scan-bench-") as scratch:
        work = Path(scratch)
        (work / "pe").mkdir()
        report: dict[str, Any] = {
            "samba_hosts": args.samba_hosts,
            "names_per_host": args.names_per_host,
            "concurrency": args.concurrency,
        }
        with fake_estate(args.samba_hosts, work / "pe") as hosts:
            collector = start_collector(work, f"sqlite:///{work / 'collector.db'}")
            try:
                rounds = []
                for number in range(args.rounds):
                    result = scan_round(work, collector.address, hosts, args.names_per_host, args.concurrency)
                    print(f"round {number + 1}: {json.dumps(result)}", file=sys.stderr)
                    rounds.append(result)
            finally:
                collector.stop()
        report["rounds"] = rounds
        report["targets_per_minute_median"] = statistics.median(r["targets_per_minute"] for r in rounds)
        report["peak_rss_mib_max"] = max(r["peak_rss_mib"] for r in rounds)
        if args.install_size:
            report["install"] = install_sizes(work)
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
