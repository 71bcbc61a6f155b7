"""Reading the Grafana dashboards of deploy/grafana/dashboards/.

`panel_expressions` is the seam for tests that run the dashboard's queries, e.g. against a real
Prometheus. Import it as `from tests.deploy.dashboard import panel_expressions` (with the
repository root on sys.path) or load this file by path: it needs only the standard library.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"
OVERVIEW = DASHBOARDS / "rmsfleet-overview.json"


def load_dashboard(path: Path | str = OVERVIEW) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a dashboard is a JSON object")
    return data


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from iter_panels(panel)


def data_panels(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The panels that query a datasource (all but rows)."""
    return [panel for panel in iter_panels(dashboard) if panel.get("type") != "row"]


def panel_expressions(path: Path | str = OVERVIEW) -> list[tuple[str, str]]:
    """(panel title, PromQL expression) for every query target of every panel, in order.

    The expressions are plain PromQL (no Grafana variables such as $__rate_interval), so they can
    be sent to Prometheus' /api/v1/query as they are. Some use the recording rules of
    deploy/prometheus/rules/recording.yml, so load those into that Prometheus too.
    """
    return [
        (str(panel.get("title", "")), str(target["expr"]))
        for panel in data_panels(load_dashboard(path))
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
