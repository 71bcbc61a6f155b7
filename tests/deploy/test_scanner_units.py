"""The scanner's scheduling files: the systemd service and timer, the Windows scheduled task, and
the example configuration they point at."""

from __future__ import annotations

import re
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

from rmsfleet.agent.scanner.settings import ScanFlags, load_scan_config
from rmsfleet.agent.scanner.targets import read_targets_file

from .catalogue import DEPLOY
from .conftest import run
from .test_systemd_units import console_scripts, directives, one

UNITS = DEPLOY / "systemd"
SERVICE = UNITS / "rmsfleet-scan.service"
TIMER = UNITS / "rmsfleet-scan.timer"
TASK = DEPLOY / "windows" / "rmsfleet-scan-task.xml"
TASK_NS = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}


def section(path: Path, name: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    current = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line
        elif current == f"[{name}]":
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_service_runs_one_scan_with_the_config_and_a_systemd_credential() -> None:
    command = shlex.split(one(SERVICE, "ExecStart"))
    assert Path(command[0]).is_absolute() and Path(command[0]).name == "rmsfleet-scan"
    assert "rmsfleet-scan" in console_scripts()
    assert command[1:3] == ["--config", "/etc/rmsfleet/scan.toml"]
    # The password reaches the dynamic user through systemd's credentials (%d), never argv.
    assert command[3:] == ["--credentials-file", "%d/scan.credentials"]
    assert one(SERVICE, "LoadCredential") == "scan.credentials:/etc/rmsfleet/scan.credentials"
    assert one(SERVICE, "Type") == "oneshot"
    assert one(SERVICE, "StateDirectory") == "rmsfleet-scan"
    assert one(SERVICE, "DynamicUser") == "yes"
    # Some unreachable hosts are normal; only the scanner's own failures fail the unit.
    assert one(SERVICE, "SuccessExitStatus") == "1"
    assert "Restart" not in directives(SERVICE)


def test_the_timer_starts_the_service_hourly_and_catches_up_after_downtime() -> None:
    timer = section(TIMER, "Timer")
    assert timer["Unit"] == [SERVICE.name]
    assert timer["OnCalendar"] == ["hourly"]
    assert timer["Persistent"] == ["true"]
    assert section(TIMER, "Install")["WantedBy"] == ["timers.target"]
    assert "[Install]" not in SERVICE.read_text(encoding="utf-8"), "the timer, not boot, starts the scan"


def test_systemd_accepts_the_service_and_the_timer(systemd_analyze: str, tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "fake"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n", encoding="utf-8")
    fake.chmod(0o755)
    service = tmp_path / SERVICE.name
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={fake}", SERVICE.read_text(encoding="utf-8"), flags=re.MULTILINE)
    service.write_text(text, encoding="utf-8")
    timer = tmp_path / TIMER.name
    timer.write_text(TIMER.read_text(encoding="utf-8"), encoding="utf-8")
    result = run(systemd_analyze, "verify", str(service), str(timer), cwd=tmp_path)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        f"{result.stdout}\n{result.stderr}"
    )


def test_the_service_is_hardened(systemd_analyze: str) -> None:
    result = run(systemd_analyze, "security", "--offline=true", "--no-pager", str(SERVICE))
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert score is not None, f"{result.stdout}\n{result.stderr}"
    assert float(score.group(1)) <= 2.0, result.stdout


def test_the_windows_task_runs_the_scanner_hourly_one_at_a_time() -> None:
    root = ET.parse(TASK).getroot()
    command = root.findtext("t:Actions/t:Exec/t:Command", namespaces=TASK_NS) or ""
    assert Path(command.replace("\\", "/")).stem in console_scripts()
    arguments = root.findtext("t:Actions/t:Exec/t:Arguments", namespaces=TASK_NS) or ""
    assert shlex.split(arguments.replace("\\", "/"))[0] == "--config"
    assert root.findtext("t:Triggers/t:CalendarTrigger/t:Repetition/t:Interval", namespaces=TASK_NS) == "PT1H"
    assert root.findtext("t:Settings/t:MultipleInstancesPolicy", namespaces=TASK_NS) == "IgnoreNew"
    assert root.findtext("t:Settings/t:ExecutionTimeLimit", namespaces=TASK_NS) == "PT50M"
    assert "password" not in arguments.lower()


def test_the_example_configuration_and_targets_load(tmp_path: Path) -> None:
    """The files a new operator copies must be accepted as they are (apart from the paths)."""
    example = (UNITS / "scan.toml.example").read_text(encoding="utf-8")
    config_path = tmp_path / "scan.toml"
    config_path.write_text(example.replace("/etc/rmsfleet/", f"{tmp_path}/"), encoding="utf-8")
    targets_path = tmp_path / "targets.txt"
    targets_path.write_text((UNITS / "targets.txt.example").read_text(encoding="utf-8"), encoding="utf-8")
    config = load_scan_config({}, ScanFlags(), {}, config_path, platform="linux")
    assert config.targets_file == targets_path
    targets = read_targets_file(targets_path)
    assert len(targets) == 4
    for target in targets:
        assert target.group is None or target.group in config.groups
        assert config.for_target(target.name, target.group).forest
