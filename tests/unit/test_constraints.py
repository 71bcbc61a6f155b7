"""constraints/collector.txt (the exact versions a collector deployment installs, docs/deploy.md)
pins every dependency of the agent and of the collector extra, each within the range
pyproject.toml allows: a dependency added or a range moved fails here until the file follows."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for raw in (ROOT / "constraints" / "collector.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"not an exact pin: {raw}"
            found[canonicalize_name(name)] = version
    return found


def test_every_deployed_dependency_is_pinned_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = pins()
    for text in [*project["dependencies"], *project["optional-dependencies"]["collector"]]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is not in constraints/collector.txt"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{name}=={pinned[name]} is outside {requirement.specifier} (pyproject.toml)"
        )
        for extra in requirement.extras:  # psycopg[binary] -> psycopg-binary
            assert canonicalize_name(f"{requirement.name}-{extra}") in pinned, f"{text}: its extra is not pinned"


def test_the_development_tools_are_pinned_exactly() -> None:
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    tools = {"ruff", "mypy", "pytest", "hypothesis"}
    pinned = {Requirement(r).name for r in dev if str(Requirement(r).specifier).startswith("==")}
    assert tools <= pinned
    assert all(Requirement(r).name in pinned for r in dev if Requirement(r).name.startswith("types-"))
