"""Set-up shared by the README's two commands: with only `python3` on the machine, create the
project's virtual environment (.venv), install the project into it, and re-run the calling
script inside it. Standard library only: this runs before anything is installed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
# Extras that include others: installing "dev" also satisfies "collector" and "scanner".
IMPLIED = {"dev": ("dev", "collector", "scanner"), "collector": ("collector",), "scanner": ("scanner",)}


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _marker(extras: str) -> Path:
    return VENV / f".rmsfleet-installed-{extras}"


def _digest() -> str:
    # Reinstall when the dependency list changes, not on every run.
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]


def ensure_venv(extras: str) -> None:
    """Re-exec the running script inside .venv with `.[extras]` installed, unless already there."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not venv_python().exists():
        print(f"setting up {VENV} (first run only) ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    marker = _marker(extras)
    if not marker.exists() or marker.read_text() != _digest():
        print(f"installing rmsfleet[{extras}] into {VENV} ...", flush=True)
        pip = [str(venv_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "-e", f"{ROOT}[{extras}]"], check=True)
        for implied in IMPLIED.get(extras, (extras,)):
            _marker(implied).write_text(_digest())
    os.execv(str(venv_python()), [str(venv_python()), *sys.argv])
