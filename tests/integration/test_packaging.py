"""The project as pip builds and installs it, not as it sits in the source tree: a wheel built
from a copy of the tree is installed into a fresh virtual environment, and every module of every
package imports from there, the package data is there, and the console scripts run.

The fresh environment gets the wheel alone (`--no-deps`, no network); its third-party
dependencies come from the test run's own environment, added after its site-packages (a .pth
line), so only rmsfleet itself is under test."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(
    ".venv", ".git", "__pycache__", "*.egg-info", "build", "dist", ".*_cache", "tests", "bench", "*.db*"
)


@dataclass(frozen=True)
class Installed:
    python: Path
    scripts: Path
    site: Path


def run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, check=False, cwd=cwd)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=SKIP)
    dist = tmp / "dist"
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-q",
        "-w",
        dist,
        source,
    )
    (wheel,) = dist.glob("rmsfleet-*.whl")
    target = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    python = target / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel)
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    # The dependencies, after the fresh site-packages (a .pth line adds a path; it does not run
    # the .pth files there, so this environment's editable rmsfleet stays out).
    (site / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return Installed(python, target / "bin", site)


def source_modules() -> set[str]:
    """Every module of the source tree, by the folder each package portion lives in."""
    folders = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    found: set[str] = set()
    for name, folder in folders.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if not all((ROOT / folder / Path(*parts[:i]) / "__init__.py").is_file() for i in range(len(parts))):
                continue  # not inside a package (e.g. a script next to one)
            found.add(".".join([name, *parts]).removesuffix(".__init__"))
    return found


def test_every_source_module_is_installed_and_imports_from_the_install(installed: Installed) -> None:
    expected = source_modules()
    assert {
        "rmsfleet.agent.cli",
        "rmsfleet.collector.cli",
        "rmsfleet.contract.wire",
        "rmsfleet.v1.facts_pb2",
    } <= expected
    code = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys
        import rmsfleet
        names = sorted(m.name for m in pkgutil.walk_packages(rmsfleet.__path__, "rmsfleet."))
        outside = []
        for name in names:
            if name == "rmsfleet.migrations.env":
                continue  # alembic's environment script runs only inside alembic (see the migrate test)
            module = importlib.import_module(name)
            if not module.__file__.startswith({str(installed.site)!r}):
                outside.append((name, module.__file__))
        assert not outside, outside
        print("\\n".join(names))
        """
    )
    imported = set(run(installed.python, "-c", code).split())
    # Namespace portions without an __init__ (rmsfleet itself) are not modules of their own.
    assert imported == expected - {"rmsfleet"}


def test_the_package_data_is_installed(installed: Installed) -> None:
    package = installed.site / "rmsfleet"
    assert {p.name for p in (package / "v1").glob("*.proto")} == {
        p.name for p in (ROOT / "proto/rmsfleet/v1").glob("*.proto")
    }
    assert {p.name for p in (package / "v1").glob("*.pyi")} == {
        p.name for p in (ROOT / "proto/rmsfleet/v1").glob("*.pyi")
    }
    for typed in ("agent", "collector", "contract", "v1"):
        assert (package / typed / "py.typed").is_file(), typed
    assert (package / "migrations" / "script.py.mako").is_file()


def test_the_console_scripts_run_and_migrations_come_with_the_install(installed: Installed, tmp_path: Path) -> None:
    assert run(installed.scripts / "rmsfleet-agent", "--version").startswith("rmsfleet-agent ")
    database = tmp_path / "fresh.db"
    migrated = run(installed.scripts / "rmsfleet-collector", "migrate", "--db", f"sqlite:///{database}", cwd=tmp_path)
    assert migrated.strip().startswith("database sqlite:///") and "empty -> " in migrated
    assert database.is_file()


def test_the_agent_install_needs_only_grpcio_and_protobuf(installed: Installed) -> None:
    (metadata,) = installed.site.glob("rmsfleet-*.dist-info/METADATA")
    requires = email.message_from_string(metadata.read_text()).get_all("Requires-Dist") or []
    unconditional = sorted(r.split(">")[0].split("=")[0].split("<")[0].strip() for r in requires if "extra ==" not in r)
    assert unconditional == ["grpcio", "protobuf"]
    collector = {r.split(">")[0].split("=")[0].split("<")[0].strip() for r in requires if 'extra == "collector"' in r}
    assert {"SQLAlchemy", "alembic", "cryptography", "prometheus-client"} <= collector
