"""The contracts the deploy files must follow, read from where they are written down: the metric
catalogue (docs/metrics.md) and the recording rules. The policy table comes from shared/domain.md
through the `domain_policies` fixture (tests/domain_table.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .promql import metric_names, selectors

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
RECORDING_RULES = PROMETHEUS / "rules" / "recording.yml"
ALERT_RULES = PROMETHEUS / "rules" / "alerts.yml"
METRICS_MD = REPO / "docs" / "metrics.md"
DEPLOY_MD = REPO / "docs" / "deploy.md"

# Labels Prometheus adds to every scraped series, and the series it makes itself per target.
TARGET_LABELS = frozenset({"job", "instance"})
SYNTHETIC_METRICS = frozenset({"up"})


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    type: str
    # label name -> its documented values, or None when the catalogue does not list them all
    labels: Mapping[str, frozenset[str] | None]


_LABEL = re.compile(r"`([a-z_]+)`(?:\s*\(([^)]*)\))?")
_CODE = re.compile(r"`([^`]+)`")


def _parse_labels(cell: str) -> dict[str, frozenset[str] | None]:
    labels: dict[str, frozenset[str] | None] = {}
    for match in _LABEL.finditer(cell):
        values = match.group(2)
        if values is None or "..." in values:
            labels[match.group(1)] = None
        else:
            labels[match.group(1)] = frozenset(_CODE.findall(values))
    return labels


def load_catalogue(path: Path = METRICS_MD) -> dict[str, MetricSpec]:
    """Every metric of the catalogue's tables, with its type and labels."""
    metrics: dict[str, MetricSpec] = {}
    columns: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            columns = []
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells and cells[0] == "metric":
            columns = cells
            continue
        name = _CODE.fullmatch(cells[0]) if cells else None
        if not columns or name is None:
            continue
        row = dict(zip(columns, cells, strict=False))
        kind = row.get("type", "gauge").split()[0]
        metrics[name.group(1)] = MetricSpec(name.group(1), kind, _parse_labels(row.get("labels", "")))
    return metrics


def resolve_metric(name: str, catalogue: Mapping[str, MetricSpec]) -> MetricSpec | None:
    """The catalogue entry a series name belongs to (a histogram's _bucket, _sum and _count)."""
    if name in catalogue:
        return catalogue[name]
    for suffix in ("_bucket", "_sum", "_count"):
        base = catalogue.get(name.removesuffix(suffix)) if name.endswith(suffix) else None
        if base is not None and base.type == "histogram":
            return base
    return None


def load_rules(path: Path) -> list[dict[str, Any]]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def recording_rule_names(path: Path = RECORDING_RULES) -> set[str]:
    return {rule["record"] for rule in load_rules(path) if "record" in rule}


def expression_problems(
    expr: str,
    catalogue: Mapping[str, MetricSpec],
    recorded: set[str],
    policies: Mapping[str, tuple[str, ...]],
) -> list[str]:
    """What in a PromQL expression is not in the contract: metrics missing from the catalogue
    (or the recording rules), labels a metric does not have, label values it never takes."""
    problems: list[str] = []
    for name in sorted(metric_names(expr)):
        if name not in recorded and name not in SYNTHETIC_METRICS and resolve_metric(name, catalogue) is None:
            problems.append(f"metric {name} is neither in docs/metrics.md nor a recording rule")
    # The values a label takes wherever the catalogue lists them (rmsfleet_hosts lists the
    # versions, rmsfleet_cluster_servers does not): used for recorded series and unlisted values.
    any_metric: dict[str, set[str] | None] = {}
    for entry in catalogue.values():
        for label, values in entry.labels.items():
            known = any_metric.get(label)
            if values is not None:
                any_metric[label] = (known or set()) | set(values)
            elif label not in any_metric:
                any_metric[label] = None
    for selector in selectors(expr):
        spec = resolve_metric(selector.metric, catalogue) if selector.metric else None
        labels: Mapping[str, frozenset[str] | set[str] | None]
        if spec is not None:
            labels = dict(spec.labels)
            if selector.metric is not None and selector.metric.endswith("_bucket"):
                labels = {**labels, "le": None}
        elif selector.metric in SYNTHETIC_METRICS:
            labels = {}
        else:
            labels = any_metric
        for matcher in selector.matchers:
            where = f'{selector.metric or ""}{{{matcher.label}{matcher.op}"{matcher.value}"}}'
            if matcher.label == "job":
                if matcher.value != "rmsfleet-collector":
                    problems.append(f"{where}: the scrape job is rmsfleet-collector")
                continue
            if matcher.label in TARGET_LABELS:
                continue
            if matcher.label not in labels:
                problems.append(f"{where}: no such label in docs/metrics.md")
                continue
            if matcher.op != "=":
                continue
            allowed = set(policies) if matcher.label == "policy" else labels[matcher.label]
            if allowed is None:
                allowed = any_metric.get(matcher.label)
            if allowed is not None and matcher.value not in allowed:
                problems.append(f"{where}: value not among {sorted(allowed)}")
    return problems


# --- aggregating over replicas (docs/deploy.md, "What each replica exports") --------------------

REPLICA_SECTION = "### What each replica exports"
_AGGREGATORS = ("sum", "count", "max", "min", "avg", "group", "stddev", "stdvar", "topk", "bottomk", "quantile")
_ANY_LABEL_LIST = re.compile(r"\b(?:by|without)\s*\([^)]*\)")
_RANGE_FUNCTIONS = ("rate", "irate", "increase")
_QUOTED = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`""")
_MATCHERS_OR_RANGE = re.compile(r"\{[^}]*\}|\[[^\]]*\]")


def replica_aggregation(path: Path = DEPLOY_MD) -> dict[str, str]:
    """metric -> how the Replicas table of docs/deploy.md says to aggregate it over replicas
    (the text of its "aggregate with" cell)."""
    text = path.read_text(encoding="utf-8")
    section = text[text.index(REPLICA_SECTION) :]
    section = section[: section.index("\n#", len(REPLICA_SECTION))]
    table: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 3 or cells[0] in ("metrics", "---"):
            continue
        for name in _CODE.findall(cells[0]):
            assert name not in table, f"{name} is in two rows of the Replicas table"
            table[name] = cells[2]
    return table


def direct_aggregations(expr: str, metric: str) -> list[tuple[str, str | None]]:
    """(aggregation, range function or None) for each place `metric` (or a histogram's
    _bucket, _sum, _count) appears directly inside an aggregation, e.g. ("sum", "rate") for
    `sum by (le) (rate(metric_bucket[5m]))`, ("max", None) for `max(metric)`."""
    text = _ANY_LABEL_LIST.sub(" ", _MATCHERS_OR_RANGE.sub("", _QUOTED.sub('""', expr)))
    pattern = re.compile(
        rf"\b({'|'.join(_AGGREGATORS)})\s*\(\s*(?:({'|'.join(_RANGE_FUNCTIONS)})\s*\(\s*)?"
        rf"{re.escape(metric)}(?:_bucket|_sum|_count)?(?![\w:])"
    )
    return [(m.group(1), m.group(2)) for m in pattern.finditer(text)]
