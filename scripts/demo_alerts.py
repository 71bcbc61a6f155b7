"""The demo's last part: where the alerts show up. When Debian's `prometheus` and
`prometheus-alertmanager` are installed, start both with the shipped files of deploy/ (only the
targets, the receivers' address and the waiting times changed, so the demo does not take an
hour), stand in for the pager and the ticket queue with a webhook receiver, and print what
Alertmanager sent and what it held back. Otherwise say how to get there.

Standard library only: the demo's environment has no YAML parser, so the few values the demo
changes are replaced as text, and a shipped file that no longer has them stops the demo with a
message instead of running something else."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
# The shipped `for:` is 5 minutes to an hour and group_wait 30 s: too long to watch.
DEMO_FOR = "10s"
DEMO_INTERVAL = "2s"
INSTALL_HINT = (
    "To see the alerts too: install Debian's prometheus and prometheus-alertmanager packages\n"
    "(apt-get install prometheus prometheus-alertmanager) and run the demo again; it starts both with\n"
    "the files in deploy/. Routing, grouping and inhibitions: docs/deploy.md#alertmanager."
)


def find_tools() -> tuple[str, str] | None:
    prometheus = shutil.which("prometheus")
    alertmanager = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    return (prometheus, alertmanager) if prometheus and alertmanager else None


def _replace(text: str, pattern: str, new: str, where: str) -> str:
    changed, count = re.subn(pattern, new, text, flags=re.MULTILINE)
    if count == 0:
        raise SystemExit(f"the demo cannot find {pattern!r} in {where}: update scripts/demo_alerts.py")
    return changed


def write_configs(directory: Path, metrics: str, alertmanager: str, webhook: str) -> tuple[Path, Path]:
    """Copies of the shipped prometheus.yml (with its rules) and alertmanager.yml for the demo."""
    (directory / "rules").mkdir(parents=True, exist_ok=True)
    for rules in sorted((DEPLOY / "prometheus" / "rules").glob("*.yml")):
        text = rules.read_text(encoding="utf-8")
        if "for:" in text:
            text = _replace(text, r"^(\s+)for: \S+$", rf"\g<1>for: {DEMO_FOR}", rules.name)
        (directory / "rules" / rules.name).write_text(text, encoding="utf-8")
    text = (DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8")
    for key in ("scrape_interval", "scrape_timeout", "evaluation_interval"):
        text = _replace(text, rf"^(\s+){key}: \S+$", rf"\g<1>{key}: {DEMO_INTERVAL}", "prometheus.yml")
    text = _replace(text, r'"127\.0\.0\.1:9464"', f'"{metrics}"', "prometheus.yml")
    text = _replace(text, r'"127\.0\.0\.1:9093"', f'"{alertmanager}"', "prometheus.yml")
    prometheus_yml = directory / "prometheus.yml"
    prometheus_yml.write_text(text, encoding="utf-8")
    text = (DEPLOY / "alertmanager" / "alertmanager.yml").read_text(encoding="utf-8")
    text = _replace(text, r"^(\s+)group_wait: \S+$", rf"\g<1>group_wait: {DEMO_INTERVAL}", "alertmanager.yml")
    text = _replace(text, r"^(\s+)group_interval: \S+$", rf"\g<1>group_interval: {DEMO_INTERVAL}", "alertmanager.yml")
    text = _replace(text, r"http://127\.0\.0\.1:5001", webhook, "alertmanager.yml")
    alertmanager_yml = directory / "alertmanager.yml"
    alertmanager_yml.write_text(text, encoding="utf-8")
    return prometheus_yml, alertmanager_yml


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _key(labels: dict[str, str]) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


def describe(receiver: str, alert: dict[str, Any]) -> str:
    labels, annotations = alert["labels"], alert.get("annotations", {})
    what = labels.get("policy") or labels.get("component", "")
    where = f"forest {labels['forest']}" if "forest" in labels else "fleet-wide"
    return (
        f"  {receiver:<17} {alert['status'].upper():<9} {labels['alertname']} ({what}, {where})\n"
        f"  {'':<17} {annotations.get('summary', '')}\n"
        f"  {'':<17} runbook: {annotations.get('runbook', '-')}"
    )


class Receiver:
    """Stands in for the pager and the ticket queue: keeps every notification Alertmanager posts,
    and prints new ones once `live` is set."""

    def __init__(self, port: int) -> None:
        self.notifications: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.live = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                with owner.lock:
                    owner.notifications.append(body)
                if owner.live:
                    print("\n".join(describe(body["receiver"], a) for a in body["alerts"]), flush=True)
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, name="demo-webhook", daemon=True).start()

    def sent(self) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            return [(n["receiver"], alert) for n in self.notifications for alert in n["alerts"]]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class AlertStack:
    def __init__(self, directory: Path, tools: tuple[str, str], ports: tuple[int, int, int], metrics: str) -> None:
        prometheus_port, alertmanager_port, webhook_port = ports
        self.receiver = Receiver(webhook_port)
        self.prometheus_url = f"http://127.0.0.1:{prometheus_port}"
        self.alertmanager_url = f"http://127.0.0.1:{alertmanager_port}"
        prometheus_yml, alertmanager_yml = write_configs(
            directory, metrics, f"127.0.0.1:{alertmanager_port}", self.receiver.url
        )
        for leftover in ("tsdb", "alertmanager-data"):
            shutil.rmtree(directory / leftover, ignore_errors=True)
        self.log = directory / "monitoring.log"
        self.processes: list[subprocess.Popen[bytes]] = []
        with self.log.open("wb") as log:
            self.processes.append(
                subprocess.Popen(
                    [
                        tools[1],
                        f"--config.file={alertmanager_yml}",
                        f"--storage.path={directory / 'alertmanager-data'}",
                        f"--web.listen-address=127.0.0.1:{alertmanager_port}",
                        "--cluster.listen-address=",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            self.processes.append(
                subprocess.Popen(
                    [
                        tools[0],
                        f"--config.file={prometheus_yml}",
                        f"--storage.tsdb.path={directory / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{prometheus_port}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )

    def _wait(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                raise SystemExit(f"Prometheus or Alertmanager exited; their log:\n{self.log.read_text()}")
            try:
                if done():
                    return True
            except OSError:
                pass
            time.sleep(0.5)
        return False

    def prometheus_alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = _get(f"{self.prometheus_url}/api/v1/alerts")["data"]["alerts"]
        return alerts

    def held_back(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = _get(f"{self.alertmanager_url}/api/v2/alerts")
        return [a for a in alerts if a["status"]["state"] == "suppressed"]

    def settled(self) -> bool:
        """Every alert Prometheus has is firing, and each was sent or held back."""
        alerts = self.prometheus_alerts()
        if not alerts or any(a["state"] != "firing" for a in alerts):
            return False
        accounted = {_key(a["labels"]) for _, a in self.receiver.sent()}
        accounted |= {_key(a["labels"]) for a in self.held_back()}
        return all(_key(a["labels"]) in accounted for a in alerts)

    def show(self, timeout: float = 120) -> None:
        if not self._wait(self.settled, timeout):
            print(f"(the alerts had not settled after {timeout:.0f} s; the pages below show where they are)")
        print(
            f"Demo timings: alert rules fire after {DEMO_FOR} and Alertmanager notifies after {DEMO_INTERVAL}"
            " (the shipped files wait 5 minutes to an hour, and 30 s);\n"
            "otherwise the files in deploy/ run as shipped.\n"
            f"Prometheus alert states: {self.prometheus_url}/alerts\n"
            f"Alertmanager:            {self.alertmanager_url}/#/alerts\n"
            "What Alertmanager sent (a webhook receiver in this demo stands in for the pager and the ticket queue):"
        )
        sent = self.receiver.sent()
        for receiver, alert in sent:
            print(describe(receiver, alert))
        if not sent:
            print("  nothing yet")
        held = self.held_back()
        if held:
            names = {a["fingerprint"]: a["labels"]["alertname"] for a in _get(f"{self.alertmanager_url}/api/v2/alerts")}
            print("Held back by an inhibition (docs/deploy.md#alertmanager):")
            for alert in held:
                labels = alert["labels"]
                by = sorted({names.get(f, f) for f in alert["status"]["inhibitedBy"]})
                print(f"  {labels['alertname']} (forest {labels.get('forest', '-')}) while {', '.join(by)} fires")
        self.receiver.live = True

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.receiver.stop()


def start(directory: Path, metrics: str, free_port: Callable[[int], int]) -> AlertStack | None:
    """The running stack, or None (after saying how to get it) when a tool is missing."""
    tools = find_tools()
    if tools is None:
        print(INSTALL_HINT)
        return None
    return AlertStack(directory, tools, (free_port(9090), free_port(9093), free_port(0)), metrics)
