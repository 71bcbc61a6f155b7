"""Shared fixtures of the deploy tests: the repository's paths and the promtool binary."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .catalogue import REPO


def _require_tool(name: str, why: str) -> str:
    """The path of a command-line tool, or skip the test, except under CI=true, where a missing
    tool fails the test: CI must not pass by skipping the checks it exists for."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} not found on PATH ({why})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true requires it")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return _require_tool("promtool", "install Debian's prometheus package: apt-get install prometheus")


@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze not found on PATH (install systemd)")
    return path


def run(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    """Fail with the tool's own output, so that a red test tells what is wrong."""
    command = " ".join(str(arg) for arg in result.args)
    assert result.returncode == 0, (
        f"`{command}` exited {result.returncode}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )
