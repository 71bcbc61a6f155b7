"""The collector speaks to agents through the contract only (design.md: "the collector imports
nothing else of the agent"): no collector module imports rmsfleet.agent, neither at import time
(every module is imported with the agent package made unimportable) nor inside a function (every
import statement in the collector's source is read)."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import rmsfleet.collector

COLLECTOR = Path(rmsfleet.collector.__file__).parent


def test_every_collector_module_imports_with_the_agent_package_unimportable() -> None:
    code = textwrap.dedent(
        """
        import importlib, importlib.abc, pkgutil, sys

        class Blocker(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "rmsfleet.agent" or name.startswith("rmsfleet.agent."):
                    raise ImportError(f"the collector must not import {name}")
                return None

        sys.meta_path.insert(0, Blocker())
        import rmsfleet.collector
        names = [m.name for m in pkgutil.walk_packages(rmsfleet.collector.__path__, "rmsfleet.collector.")]
        for name in names:
            importlib.import_module(name)
        assert "rmsfleet.collector.servicers" in names and "rmsfleet.collector.store.queries" in names, names
        print(len(names))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 20


def imported_modules(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_collector_source_names_the_agent_package_in_an_import() -> None:
    offenders = {
        str(path.relative_to(COLLECTOR)): sorted(
            m for m in imported_modules(ast.parse(path.read_text())) if "rmsfleet.agent" in m
        )
        for path in sorted(COLLECTOR.rglob("*.py"))
    }
    assert len(offenders) > 20
    assert {path: modules for path, modules in offenders.items() if modules} == {}


def test_the_import_reader_sees_lazy_imports() -> None:
    tree = ast.parse("def f():\n    from rmsfleet.agent import outbox\n    import rmsfleet.agent.cli\n")
    assert {"rmsfleet.agent", "rmsfleet.agent.outbox", "rmsfleet.agent.cli"} <= imported_modules(tree)
