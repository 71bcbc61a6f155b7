"""pyproject.toml lists the packages explicitly (a namespace package across three folders); a
package missing from that list would be absent from a real install."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found: set[str] = set()
    for name, folder in config["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            relative = init.parent.relative_to(base)
            found.add(".".join([name, *relative.parts]) if relative.parts else name)
    assert found == listed


def test_the_agent_install_needs_only_grpcio_and_protobuf() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert sorted(dep.split(">")[0].split("=")[0].split("<")[0] for dep in project["dependencies"]) == [
        "grpcio",
        "protobuf",
    ]
