"""The demo as a new user runs it (`python3 scripts/demo.py`, here with --no-wait): it ends by
showing where the alerts are, with Prometheus and Alertmanager when they are installed, and says
how to get them when they are not."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from processes import ROOT

pytestmark = pytest.mark.e2e


def run_demo(state: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--no-wait", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )


@pytest.mark.promtool
@pytest.mark.alertmanager
def test_demo_ends_with_the_alerts_prometheus_has_and_what_alertmanager_sent(tmp_path: Path) -> None:
    from conftest import require_tool

    require_tool("prometheus", "prometheus")
    require_tool("prometheus-alertmanager", "prometheus-alertmanager")
    done = run_demo(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Traceback" not in done.stderr
    tail = out[out.index("== Alerts: where to look ==") :]
    prometheus_url = next(line.split()[-1] for line in tail.splitlines() if line.startswith("Prometheus alert states:"))
    assert prometheus_url.startswith("http://127.0.0.1:") and prometheus_url.endswith("/alerts")
    assert "Alertmanager:            http://127.0.0.1:" in tail
    # The sample fleet's mixed root cluster (D5, D8) went to the ticket queue, with its runbook.
    sent = tail[tail.index("What Alertmanager sent") : tail.index("Held back")]
    assert (
        "rmsfleet-tickets  FIRING    RmsfleetMixedVersionCluster (mixed-version-cluster, forest corp.example)" in sent
    )
    assert "RMS cluster https://rms.corp.example runs 2 server versions" in sent
    assert "runbook: docs/deploy.md#rmsfleetmixedversioncluster" in sent
    assert "RmsfleetMixedVersionsInForest" not in sent
    # ... and its forest alert was held back, not sent.
    held = tail[tail.index("Held back") :]
    assert "RmsfleetMixedVersionsInForest (forest corp.example) while RmsfleetMixedVersionCluster fires" in held
    # --no-wait stops what the demo started.
    with pytest.raises(OSError):
        urllib.request.urlopen(prometheus_url, timeout=5)


def test_demo_says_how_to_see_the_alerts_when_prometheus_is_not_installed(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    done = run_demo(tmp_path / "state", env={"PATH": str(empty)})
    assert done.returncode == 0, done.stdout + done.stderr
    tail = done.stdout[done.stdout.index("== Alerts: where to look ==") :]
    assert "apt-get install prometheus prometheus-alertmanager" in tail
    assert "docs/deploy.md#alertmanager" in tail
    assert "Prometheus alert states" not in tail
