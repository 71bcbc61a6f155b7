"""Real Prometheus and Alertmanager processes for end-to-end tests, run with the shipped
configuration files changed only where a test must (intervals, targets, receiver URLs), and a
webhook receiver that records what Alertmanager sends."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from processes import ROOT, free_port, wait_for

PROMETHEUS_DEPLOY = ROOT / "deploy" / "prometheus"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = get_json(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def firing(self, alertname: str) -> list[dict[str, Any]]:
        return self.query(f'ALERTS{{alertname="{alertname}", alertstate="firing"}}')


class Alertmanager:
    def __init__(self, url: str) -> None:
        self.url = url

    def alerts(self, alertname: str) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds with that name, each with its status
        (`state`: active or suppressed, `inhibitedBy`)."""
        query = urllib.parse.urlencode({"filter": f'alertname="{alertname}"'})
        found: list[dict[str, Any]] = get_json(f"{self.url}/api/v2/alerts?{query}")
        return found


@dataclass
class Notification:
    path: str
    body: dict[str, Any]

    def alerts(self, alertname: str) -> list[dict[str, Any]]:
        return [a for a in self.body.get("alerts", []) if a["labels"].get("alertname") == alertname]


@dataclass
class WebhookReceiver:
    """An HTTP server on loopback that keeps every webhook notification Alertmanager posts."""

    url: str
    notifications: list[Notification] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[Notification]:
        with self.lock:
            return list(self.notifications)

    def about(self, alertname: str, status: str) -> list[Notification]:
        """Notifications carrying `alertname` with that alert status (firing or resolved)."""
        return [n for n in self.received() if any(a["status"] == status for a in n.alerts(alertname))]


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            with receiver.lock:
                receiver.notifications.append(Notification(self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test reads the notifications, not an access log

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def shipped_prometheus_config(tmp: Path, metrics_url: str, alertmanager: str | None = None) -> Path:
    """The shipped prometheus.yml and rules, changed only where a test must: the target is the
    test's collector (and Alertmanager), intervals are 1 s, and `for:` durations are 1 s so
    alerts fire in time."""
    config = yaml.safe_load((PROMETHEUS_DEPLOY / "prometheus.yml").read_text())
    config["global"].update({"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"})
    rules_dir = tmp / "rules"
    rules_dir.mkdir()
    rule_files = []
    for relative in config["rule_files"]:
        rules = yaml.safe_load((PROMETHEUS_DEPLOY / relative).read_text())
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
    job["static_configs"] = [{"targets": [urllib.parse.urlparse(metrics_url).netloc]}]
    if alertmanager is None:
        config.pop("alerting", None)
    else:
        (manager,) = config["alerting"]["alertmanagers"]
        manager["static_configs"] = [{"targets": [alertmanager]}]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def shipped_alertmanager_config(tmp: Path, webhook_url: str) -> Path:
    """The shipped alertmanager.yml, changed only where a test must: notifications go out after
    1 s instead of 30 s and minutes, and the webhooks post to the test's receiver (same paths)."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    config["route"].update({"group_wait": "1s", "group_interval": "1s"})
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            path = urllib.parse.urlparse(webhook["url"]).path
            webhook["url"] = f"{webhook_url}{path}"
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_for(ready, timeout=60, what=f"{what} to be ready")


@contextmanager
def running(argv: list[str], url: str, log: Path, what: str) -> Iterator[None]:
    with log.open("w") as log_file:
        process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait_ready(url, process, log, what)
        yield
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


@contextmanager
def prometheus(binary: str, tmp: Path, metrics_url: str, alertmanager: str | None = None) -> Iterator[Prometheus]:
    port = free_port()
    config = shipped_prometheus_config(tmp, metrics_url, alertmanager)
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    url = f"http://127.0.0.1:{port}"
    with running(argv, url, tmp / "prometheus.log", "Prometheus"):
        yield Prometheus(url)


@contextmanager
def alertmanager(binary: str, tmp: Path, webhook_url: str) -> Iterator[Alertmanager]:
    port = free_port()
    argv = [
        binary,
        f"--config.file={shipped_alertmanager_config(tmp, webhook_url)}",
        f"--storage.path={tmp / 'alertmanager'}",
        f"--web.listen-address=127.0.0.1:{port}",
        # no gossip port: a lone Alertmanager, and parallel tests do not collide on 9094
        "--cluster.listen-address=",
    ]
    url = f"http://127.0.0.1:{port}"
    with running(argv, url, tmp / "alertmanager.log", "Alertmanager"):
        yield Alertmanager(url)
