"""The agent's install pulls only grpcio and protobuf (design.md): every agent module imports,
and a real report goes through, in a process where the collector's dependencies cannot be
imported at all."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from processes import start_collector, write_facts

pytestmark = pytest.mark.e2e

BLOCKED = ("sqlalchemy", "prometheus_client", "alembic", "psycopg", "grpc_health", "grpc_reflection", "yaml")

BLOCKER = textwrap.dedent(
    f"""
    import importlib.abc, sys

    BLOCKED = {BLOCKED!r} + ("rmsfleet.collector", "rmsfleet.migrations")

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"blocked for this test: the agent must not import {{name}}")
            return None

    sys.meta_path.insert(0, Blocker())
    """
)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_agent_module_imports_without_the_collector_dependencies() -> None:
    done = run_python(
        """
        import importlib, pkgutil
        import rmsfleet.agent
        names = [m.name for m in pkgutil.walk_packages(rmsfleet.agent.__path__, "rmsfleet.agent.")]
        for name in names:
            importlib.import_module(name)
        assert "rmsfleet.agent.cli" in names and "rmsfleet.agent.runner" in names, names
        leaked = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED))
        assert not leaked, leaked
        print("imported", len(names))
        """
    )
    assert done.returncode == 0, done.stderr
    assert "imported" in done.stdout


def test_the_agent_reports_and_enrolls_without_the_collector_dependencies(tmp_path: Path, sqlite_url: str) -> None:
    secrets = tmp_path / "secrets"
    secrets.write_text("import-test-secret\n")
    secrets.chmod(0o600)
    collector = start_collector(tmp_path, sqlite_url, ["--enroll-secret-file", str(secrets)])
    try:
        facts = write_facts(
            tmp_path / "f.json",
            host_id="imp-01",
            hostname="imp-01.corp.example",
            forest="corp.example",
            client={"version": "SP2", "activation": "self", "cluster": None},
        )
        done = run_python(
            f"""
            from rmsfleet.agent.cli import main
            code = main(["--collector", {collector.address!r}, "--facts", {str(facts)!r}, "--once",
                         "--enroll-secret-file", {str(secrets)!r}, "--state-dir", {str(tmp_path / "state")!r}])
            assert code == 0, code
            code = main(["check-config", "--collector", {collector.address!r}, "--facts", {str(facts)!r}])
            assert code == 0, code
            """
        )
        assert done.returncode == 0, done.stderr
        assert "enrolled host imp-01" in done.stderr
        assert [h["host_id"] for h in collector.cli_json("hosts")] == ["imp-01"]
    finally:
        collector.stop()
