"""A real Prometheus scrapes a real collector that real agents reported to, with the shipped
scrape config and rules: the fleet numbers it stores equal what the CLI reports, an injected
violation's alert reaches `firing`, and every Grafana panel's query returns data."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from processes import FLEET, ROOT, Collector, free_port, report_facts, start_collector, wait_for, write_facts

pytestmark = [pytest.mark.e2e, pytest.mark.promtool]

DEPLOY = ROOT / "deploy" / "prometheus"


def _dashboard_module() -> Any:
    spec = importlib.util.spec_from_file_location("rmsfleet_dashboard", ROOT / "tests" / "deploy" / "dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{params}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


def shipped_config_for_test(tmp: Path, metrics_url: str) -> Path:
    """The shipped prometheus.yml and rules, changed only where a test must: the target is the
    test's collector, intervals are 1 s, and `for:` durations are 1 s so alerts fire in time."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    target = urllib.parse.urlparse(metrics_url).netloc
    config["global"].update({"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"})
    rules_dir = tmp / "rules"
    rules_dir.mkdir()
    rule_files = []
    for relative in config["rule_files"]:
        rules = yaml.safe_load((DEPLOY / relative).read_text())
        for group in rules["groups"]:
            group.pop("interval", None)
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = "1s"
        path = rules_dir / Path(relative).name
        path.write_text(yaml.safe_dump(rules))
        rule_files.append(str(path))
    config["rule_files"] = rule_files
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "rmsfleet-collector"]
    job["static_configs"] = [{"targets": [target]}]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def prometheus_binary() -> str:
    from conftest import require_tool

    return require_tool("prometheus", "prometheus")


@pytest.fixture
def stack(tmp_path: Path, sqlite_url: str, prometheus_binary: str) -> Iterator[tuple[Collector, Prometheus]]:
    collector = start_collector(tmp_path, sqlite_url)
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            prometheus_binary,
            f"--config.file={shipped_config_for_test(tmp_path, collector.metrics_url)}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        prometheus = Prometheus(f"http://127.0.0.1:{port}")

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return process.poll() is not None and pytest.fail((tmp_path / "prometheus.log").read_text())

        wait_for(ready, timeout=60, what="Prometheus to be ready")
        yield collector, prometheus
    finally:
        process.terminate()
        process.wait(30)
        collector.stop()


def test_prometheus_sees_the_fleet_the_cli_reports_and_fires_an_injected_alert(
    stack: tuple[Collector, Prometheus], tmp_path: Path
) -> None:
    collector, prometheus = stack
    files = sorted(FLEET.glob("*.json"))
    report_facts(collector, *files)
    wait_for(lambda: prometheus.value('up{job="rmsfleet-collector"}') == 1, timeout=60, what="the scrape target up")
    wait_for(lambda: prometheus.value("max(rmsfleet_fleet_hosts)") == len(files), timeout=60, what="the fleet scraped")
    violations = wait_for(lambda: collector.cli_json("violations"), what="violations")

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


def test_every_dashboard_panel_query_returns_data(stack: tuple[Collector, Prometheus]) -> None:
    collector, prometheus = stack
    report_facts(collector, *sorted(FLEET.glob("*.json")))
    expressions = _dashboard_module().panel_expressions()
    assert expressions
    # Recording rules and rate() need a few evaluations and scrapes before they have data.
    wait_for(lambda: prometheus.value("count(rmsfleet:hosts:by_role_version)") or 0, timeout=60, what="recording rules")

    def empty_panels() -> list[str]:
        return [f"{title}: {expr}" for title, expr in expressions if not prometheus.query(expr)]

    try:
        wait_for(lambda: not empty_panels(), timeout=60, what="every panel to return data")
    except AssertionError:
        pytest.fail("panels with no data:\n" + "\n".join(empty_panels()))
