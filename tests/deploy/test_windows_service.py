"""The Windows service files of deploy/windows/: the WinSW configuration and its installer."""

from __future__ import annotations

import re
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

from .catalogue import DEPLOY, REPO

WINDOWS = DEPLOY / "windows"
CONFIG = WINDOWS / "rmsfleet-agent.xml"
INSTALLER = WINDOWS / "install.ps1"


def service() -> ET.Element:
    return ET.parse(CONFIG).getroot()


def test_winsw_runs_the_agent_with_its_configuration_and_restarts_it() -> None:
    root = service()
    assert root.tag == "service"
    assert root.findtext("id") == "rmsfleet-agent"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    executable = Path(root.findtext("executable", "").replace("\\", "/"))
    assert executable.stem in scripts and executable.suffix == ".exe"
    assert root.findtext("arguments", "").startswith("--config ")
    assert root.findtext("startmode") == "Automatic"
    assert [failure.get("action") for failure in root.findall("onfailure")][:1] == ["restart"]
    assert root.find("serviceaccount/user") is not None


def test_installer_rewrites_elements_the_configuration_has() -> None:
    """install.ps1 edits the copied XML by element name: a renamed element would break it."""
    installer = INSTALLER.read_text(encoding="utf-8")
    assert "'rmsfleet-agent.xml'" in installer
    assert "rmsfleet-agent-service.xml" in installer and "rmsfleet-agent-service.exe" in installer
    edited = re.findall(r"SelectSingleNode\('([^']+)'\)", installer)
    assert edited
    root = service()
    parents = {"serviceaccount": root.find("serviceaccount")}
    for path in edited:
        if path == "/service":
            continue
        owner = parents["serviceaccount"] if path in {"domain", "user"} else root
        assert owner is not None and owner.find(path) is not None, f"install.ps1 edits <{path}>, the XML has none"
