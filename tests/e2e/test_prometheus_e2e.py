"""A real Prometheus scrapes a real collector that real agents reported to, with the shipped
scrape config and rules: the fleet numbers it stores equal what the CLI reports, an injected
violation's alert reaches `firing`, and every Grafana panel's query returns data."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from monitoring import Prometheus, prometheus
from processes import FLEET, ROOT, Collector, report_facts, start_collector, wait_for, write_facts

pytestmark = [pytest.mark.e2e, pytest.mark.promtool]


def _dashboard_module() -> Any:
    spec = importlib.util.spec_from_file_location("rmsfleet_dashboard", ROOT / "tests" / "deploy" / "dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def prometheus_binary() -> str:
    from conftest import require_tool

    return require_tool("prometheus", "prometheus")


@pytest.fixture
def stack(tmp_path: Path, sqlite_url: str, prometheus_binary: str) -> Iterator[tuple[Collector, Prometheus]]:
    collector = start_collector(tmp_path, sqlite_url)
    try:
        with prometheus(prometheus_binary, tmp_path, collector.metrics_url) as server:
            yield collector, server
    finally:
        collector.stop()


def test_prometheus_sees_the_fleet_the_cli_reports_and_fires_an_injected_alert(
    stack: tuple[Collector, Prometheus], tmp_path: Path
) -> None:
    collector, prometheus = stack
    files = sorted(FLEET.glob("*.json"))
    report_facts(collector, *files)
    wait_for(lambda: prometheus.value('up{job="rmsfleet-collector"}') == 1, timeout=60, what="the scrape target up")
    wait_for(lambda: prometheus.value("max(rmsfleet_fleet_hosts)") == len(files), timeout=60, what="the fleet scraped")
    violations = collector.cli_json("violations", "--wait-for-evaluation")

    hosts = collector.cli_json("hosts")
    by_version = Counter(h["server"]["version"] for h in hosts if h["server"])
    for version, count in by_version.items():
        assert prometheus.value(f'max(rmsfleet_hosts{{role="server", version="{version}"}})') == count
    wait_for(
        lambda: all(
            prometheus.value(f'max(rmsfleet_policy_violations{{policy="{policy}"}})') == n
            for policy, n in Counter(v["policy"] for v in violations).items()
        ),
        timeout=30,
        what="violation counts in Prometheus equal to the CLI's",
    )

    firing = 'ALERTS{alertname="RmsfleetUnsupportedUpgradePath", alertstate="firing"}'
    assert prometheus.query(firing) == []
    # Inject D1's violation: a server seen at RTM, then at SP2 with no SP1 between.
    document = json.loads((FLEET / "nyc-lic-02.json").read_text())
    document["server"]["version"] = "SP2"
    document["server"]["enrollment"] = "offline"
    report_facts(collector, write_facts(tmp_path / "nyc-lic-02.json", **document))
    alerts = wait_for(lambda: prometheus.query(firing), timeout=60, what="RmsfleetUnsupportedUpgradePath firing")
    assert alerts[0]["metric"]["severity"] == "critical"


# Panels that may show nothing for the demo fleet, by title, with the reason. None today: every
# count panel (critical violations, stale agents, mixed clusters) returns a series even at 0,
# because the collector exports every policy and state with 0 and the recording rules keep them.
EMPTY_BY_DESIGN: dict[str, str] = {}


def test_every_dashboard_panel_query_returns_data(stack: tuple[Collector, Prometheus]) -> None:
    """Every panel query of the shipped dashboard, evaluated by the real Prometheus for the demo
    fleet (examples/fleet/), returns at least one series: the dashboard shows data, not only
    valid PromQL."""
    collector, prometheus = stack
    report_facts(collector, *sorted(FLEET.glob("*.json")))
    expressions = _dashboard_module().panel_expressions()
    assert expressions
    assert set(EMPTY_BY_DESIGN) <= {title for title, _ in expressions}, "EMPTY_BY_DESIGN names no panel"
    # Recording rules and rate() need a few evaluations and scrapes before they have data.
    wait_for(lambda: prometheus.value("count(rmsfleet:hosts:by_role_version)") or 0, timeout=60, what="recording rules")

    def empty_panels() -> list[str]:
        return [
            f"{title}: {expr}"
            for title, expr in expressions
            if title not in EMPTY_BY_DESIGN and not prometheus.query(expr)
        ]

    try:
        wait_for(lambda: not empty_panels(), timeout=60, what="every panel to return data")
    except AssertionError:
        pytest.fail("panels with no data:\n" + "\n".join(empty_panels()))
    # A panel called empty by design must really be empty, or the note is out of date.
    for title, expr in expressions:
        if title in EMPTY_BY_DESIGN:
            assert prometheus.query(expr) == [], f"{title} shows data: update EMPTY_BY_DESIGN"
