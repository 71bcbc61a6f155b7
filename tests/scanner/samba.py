"""A real Samba server (Debian's `samba` package) on a loopback port, started and stopped by a test.

Low-level part of the fake Windows hosts (`fake_hosts.py` builds on it; tests use that). One
`SambaServer` is one `smbd` plus one `samba-dcerpcd` serving the RPC pipes (`\\winreg`,
`\\svcctl`...) with a configuration, passdb, registry and every state folder of its own in one
directory, so several run side by side without touching the machine's own Samba:

- `rpc start on demand helpers = no`: smbd must not start samba-dcerpcd itself (it would with the
  machine's paths); the test starts it with `--libexec-rpcds`, or with an explicit list of
  `rpcd_*` helpers to leave one out (no `rpcd_winreg`: the remote registry is "stopped").
- `server min protocol = NT1`: SMB1 (`NT LM 0.12`) as Windows 2000/XP/2003 speak it, beside SMB2/3;
  `server max protocol = NT1` makes a host that speaks only SMB1.
- `ntlm auth = yes`: impacket's NTLM logon as a Windows client of that era does it.

smbd runs as root (it switches to the account's Unix user per session), so these tests need root;
without it, or without the Samba binaries, they skip (and fail under CI=true).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from conftest import skip_or_fail

# Debian puts samba-dcerpcd and the rpcd_* helpers in /usr/libexec/samba; other builds in sbin.
_LIBEXEC_DIRS = (
    Path("/usr/libexec/samba"),
    Path("/usr/lib/samba"),
    Path("/usr/sbin"),
    Path("/usr/local/samba/libexec"),
)
_SBIN_DIRS = (Path("/usr/sbin"), Path("/usr/local/sbin"), Path("/usr/local/samba/sbin"))
STATE_DIRS = ("private", "lock", "state", "cache", "pid", "ncalrpc", "log")
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class SambaTools:
    smbd: str
    dcerpcd: str
    rpcd_dir: Path
    net: str
    smbpasswd: str


def find_samba_tools() -> SambaTools | str:
    """The Samba binaries, or the reason they cannot be used here."""
    smbd = shutil.which("smbd") or _first_file("smbd", _SBIN_DIRS)
    dcerpcd = _first_file("samba-dcerpcd", _LIBEXEC_DIRS + _SBIN_DIRS)
    net = shutil.which("net")
    smbpasswd = shutil.which("smbpasswd")
    missing = [
        name
        for name, found in (("smbd", smbd), ("samba-dcerpcd", dcerpcd), ("net", net), ("smbpasswd", smbpasswd))
        if not found
    ]
    if missing:
        return f"Samba not installed ({', '.join(missing)} not found; install Debian's `samba` package)"
    assert smbd and dcerpcd and net and smbpasswd
    if os.geteuid() != 0:
        return "smbd must run as root (it switches to each account's Unix user): run these tests as root"
    return SambaTools(smbd, dcerpcd, Path(dcerpcd).parent, net, smbpasswd)


def require_samba() -> SambaTools:
    """The Samba binaries; skips the test (fails under CI=true) with the reason when unusable."""
    found = find_samba_tools()
    if isinstance(found, str):
        skip_or_fail(found)
        raise AssertionError("unreachable")  # skip_or_fail raises
    return found


def _first_file(name: str, folders: tuple[Path, ...]) -> str | None:
    for folder in folders:
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def free_port() -> int:
    """A loopback TCP port nobody listens on now (another process may take it before smbd does;
    SambaServer.start retries on another port then)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Share:
    name: str
    path: Path


@dataclass(frozen=True)
class SambaSettings:
    """What differs between fake hosts."""

    netbios_name: str
    shares: tuple[Share, ...]
    smb1_only: bool = False
    map_to_guest: str = "Never"  # "Bad User": an unknown account logs on as Guest
    username_map: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (unix user, windows names)
    winreg: bool = True  # serve \winreg (False: as a host whose Remote Registry service is stopped)


class SambaServer:
    """One Samba instance in `directory` on 127.0.0.1:`port`. `start()` returns once smbd listens
    and the RPC pipes are there; `stop()` ends every process it started."""

    def __init__(self, tools: SambaTools, settings: SambaSettings, directory: Path) -> None:
        self.tools = tools
        self.settings = settings
        self.directory = directory
        self.conf = directory / "smb.conf"
        self.port = 0
        self._processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        for name in STATE_DIRS:
            (directory / name).mkdir(parents=True, exist_ok=True)
        (directory / "ncalrpc").chmod(0o755)

    # --- configuration, accounts and the local registry (before or after start) ------------------

    def write_config(self, port: int) -> None:
        settings = self.settings
        folder = self.directory
        lines = [
            "[global]",
            f"netbios name = {settings.netbios_name}",
            "workgroup = WORKGROUP",
            "security = user",
            "passdb backend = tdbsam",
            f"map to guest = {settings.map_to_guest}",
            "guest account = nobody",
            f"username map = {folder / 'users.map'}",
            f"smb ports = {port}",
            "interfaces = 127.0.0.1",
            "bind interfaces only = yes",
            "disable netbios = yes",
            "server min protocol = NT1",
            f"server max protocol = {'NT1' if settings.smb1_only else 'SMB3'}",
            "ntlm auth = yes",
            "rpc start on demand helpers = no",
            *(f"{name} directory = {folder / name}" for name in ("lock", "state", "cache", "pid")),
            f"private dir = {folder / 'private'}",
            f"ncalrpc dir = {folder / 'ncalrpc'}",
            f"log file = {folder / 'log' / 'log.%m'}",
            "log level = 1",
            "load printers = no",
            "printcap name = /dev/null",
            "disable spoolss = yes",
            "",
        ]
        for share in settings.shares:
            lines += [f"[{share.name}]", f"path = {share.path}", "read only = yes", "browseable = no", ""]
        self.conf.write_text("\n".join(lines))
        (folder / "users.map").write_text(
            "".join(f"{unix} = {' '.join(names)}\n" for unix, names in settings.username_map)
        )

    def add_account(self, unix_user: str, password: str) -> None:
        self._run(
            [self.tools.smbpasswd, "-c", str(self.conf), "-a", "-s", unix_user], stdin=f"{password}\n{password}\n"
        )

    def net_registry(self, *args: str) -> None:
        """`net registry ...` on this instance's registry, locally (no SMB involved)."""
        self._run([self.tools.net, "-s", str(self.conf), "registry", *args])

    # --- processes -------------------------------------------------------------------------------

    def start(self) -> None:
        last_error = ""
        for _ in range(3):
            self.port = free_port()
            self.write_config(self.port)
            try:
                self._start_processes()
                return
            except RuntimeError as exc:
                last_error = str(exc)
                self.stop()
        raise RuntimeError(f"Samba for {self.settings.netbios_name} did not start: {last_error}")

    def _start_processes(self) -> None:
        helpers = ["--libexec-rpcds"]
        if not self.settings.winreg:
            helpers = [str(path) for path in sorted(self.tools.rpcd_dir.glob("rpcd_*")) if path.name != "rpcd_winreg"]
        self._spawn(
            "dcerpcd",
            [
                self.tools.dcerpcd,
                "-s",
                str(self.conf),
                "--foreground",
                "--no-process-group",
                "--debug-stdout",
                *helpers,
            ],
        )
        self._spawn(
            "smbd", [self.tools.smbd, "-s", str(self.conf), "--foreground", "--no-process-group", "--debug-stdout"]
        )
        pipe = self.directory / "ncalrpc" / "np" / ("winreg" if self.settings.winreg else "svcctl")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self._check_alive()
            if pipe.exists() and self._listening():
                return
            time.sleep(0.05)
        raise RuntimeError(
            f"not ready within {START_TIMEOUT:g} s (port {self.port}, {pipe.name} pipe)\n{self.output()}"
        )

    def _spawn(self, name: str, command: list[str]) -> None:
        out = (self.directory / "log" / f"{name}.out").open("ab")
        # A session of its own: stop() signals the whole group, the helpers smbd and
        # samba-dcerpcd fork (they keep the group with --no-process-group).
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()
        self._processes.append((name, process))

    def _check_alive(self) -> None:
        for name, process in self._processes:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}\n{self.output()}")

    def _listening(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        for _, process in self._processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for _, process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            # The helpers may outlive their parent by a moment; the group is gone after this.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        self._processes = []

    def output(self, lines: int = 30) -> str:
        """The last lines each process printed: what a failing test shows."""
        parts = []
        for name in ("smbd", "dcerpcd"):
            path = self.directory / "log" / f"{name}.out"
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {name} ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def _run(self, command: list[str], stdin: str | None = None) -> None:
        done = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command[:1] + command[3:])} failed ({done.returncode}): {(done.stderr or done.stdout).strip()}"
            )
