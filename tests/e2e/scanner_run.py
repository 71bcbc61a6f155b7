"""Running `rmsfleet-scan` as a real process in end-to-end tests."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processes import command

PASSWORD = "Pa55-w0rd-that-must-never-show"


@dataclass
class ScanDone:
    returncode: int
    stdout: str
    stderr: str

    def document(self) -> dict[str, Any]:
        """The --json document (one line per scan; the last one)."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert lines, f"no JSON on stdout; stderr:\n{self.stderr}"
        document: dict[str, Any] = json.loads(lines[-1])
        return document

    def targets(self) -> dict[str, dict[str, Any]]:
        return {target["name"]: target for target in self.document()["targets"]}


def run_scan(
    *args: str,
    env: dict[str, str] | None = None,
    password: str | None = PASSWORD,
    username: str = "rmsscan",
    timeout: float = 180,
) -> ScanDone:
    """`rmsfleet-scan ARGS` with the account in the environment (never on the command line)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("RMSFLEET_", "KRB5"))}
    if password is not None:
        environment.update({"RMSFLEET_SCAN_USERNAME": username, "RMSFLEET_SCAN_PASSWORD": password})
    environment.update(env or {})
    done = subprocess.run(
        [command("rmsfleet-scan"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=environment,
    )
    return ScanDone(done.returncode, done.stdout, done.stderr)


def tree_text(root: Path) -> str:
    """Every file under `root` as text (binary files decoded leniently): to look for a secret."""
    parts = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            parts.append(path.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(parts)
