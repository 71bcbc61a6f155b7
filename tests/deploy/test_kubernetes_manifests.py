"""The Kubernetes manifests of deploy/kubernetes/ and the names that tie them together: a typo
in any of them leaves a Service without endpoints, a pod that never gets ready or starts without
its database, or metrics nobody scrapes."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .catalogue import DEPLOY, REPO

MANIFESTS = DEPLOY / "kubernetes"
IMAGE = "ghcr.io/rmsfleet/rmsfleet-collector:0.1.0"


def load_manifests() -> list[tuple[Path, dict[str, Any]]]:
    documents = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document is not None:
                documents.append((path, document))
    return documents


def find(kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [doc for _, doc in load_manifests() if doc["kind"] == kind and name in (None, doc["metadata"]["name"])]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    return result


def collector() -> dict[str, Any]:
    (container,) = containers(find("Deployment", "rmsfleet-collector"))
    return container


def env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def ports(container: dict[str, Any]) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container["ports"]}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def pod_labels() -> dict[str, str]:
    labels: dict[str, str] = find("Deployment", "rmsfleet-collector")["spec"]["template"]["metadata"]["labels"]
    return labels


def probes(container: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        if kind in container:
            yield kind, container[kind]


def test_every_manifest_is_namespace_agnostic() -> None:
    documents = load_manifests()
    assert {doc["kind"] for _, doc in documents} >= {"Deployment", "Service", "Secret", "Job", "PodDisruptionBudget"}
    for path, doc in documents:
        assert doc.get("apiVersion") and doc["metadata"].get("name"), path.name
        assert "namespace" not in doc["metadata"], f"{path.name}: apply with `kubectl -n`, do not pin a namespace"


def test_collector_runs_at_least_two_replicas_of_its_image() -> None:
    deployment = find("Deployment", "rmsfleet-collector")
    assert deployment["spec"]["replicas"] >= 2
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels())
    container = collector()
    assert container["image"] == IMAGE
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert container["command"][0] in scripts
    assert container["command"][1:] == ["serve"]


def test_collector_listens_where_its_ports_are_declared() -> None:
    container = collector()
    variables = env(container)
    declared = ports(container)
    assert declared == {"grpc": 50051, "metrics": 9464, "health": 8081}
    assert variables["RMSFLEET_LISTEN"]["value"] == f"0.0.0.0:{declared['grpc']}"
    assert variables["RMSFLEET_METRICS_LISTEN"]["value"] == f"0.0.0.0:{declared['metrics']}"
    assert variables["RMSFLEET_HEALTH_LISTEN"]["value"] == f"0.0.0.0:{declared['health']}"


def test_service_reaches_the_collector_pods_on_declared_ports() -> None:
    service = find("Service", "rmsfleet-collector")
    assert selects(service["spec"]["selector"], pod_labels()), "the Service selects no collector pod"
    declared = ports(collector())
    for port in service["spec"]["ports"]:
        target = port["targetPort"]
        assert target in declared or target in declared.values(), f"targetPort {target} is no container port"
    assert {port["name"] for port in service["spec"]["ports"]} == {"grpc", "metrics"}


def test_probes_ask_the_grpc_health_service_on_a_declared_port() -> None:
    container = collector()
    declared = ports(container)
    proto = (REPO / "proto" / "rmsfleet" / "v1" / "inventory.proto").read_text(encoding="utf-8")
    package = re.search(r"^package\s+([\w.]+);", proto, re.MULTILINE)
    service = re.search(r"^service\s+(\w+)", proto, re.MULTILINE)
    assert package and service
    inventory = f"{package.group(1)}.{service.group(1)}"
    found = dict(probes(container))
    assert {"readinessProbe", "livenessProbe"} <= set(found)
    for kind, probe in found.items():
        action = probe.get("grpc") or probe.get("httpGet") or probe.get("tcpSocket")
        assert action is not None, kind
        port = action["port"]
        assert port in declared.values() or port in declared, f"{kind} probes port {port}, which is not declared"
    assert found["readinessProbe"]["grpc"] == {"port": declared["health"], "service": inventory}
    assert found["livenessProbe"]["grpc"]["service"] == ""


def test_tls_stays_on_the_report_port_and_probes_ask_the_plaintext_health_listener() -> None:
    """The kubelet's gRPC probe speaks plaintext: it asks the health-only listener
    (RMSFLEET_HEALTH_LISTEN), so the report port keeps TLS. A gRPC probe on a TLS port would keep
    every pod unready (docs/deploy.md)."""
    container = collector()
    variables = env(container)
    declared = ports(container)
    assert {"RMSFLEET_TLS_CERT", "RMSFLEET_TLS_KEY"} <= set(variables), "TLS on the report port"
    assert "RMSFLEET_INSECURE" not in variables
    health_port = int(variables["RMSFLEET_HEALTH_LISTEN"]["value"].rsplit(":", 1)[1])
    for kind, probe in probes(container):
        assert "grpc" in probe, kind
        port = probe["grpc"]["port"]
        assert declared.get(port, port) == health_port, f"{kind} probes port {port}, not the health listener"
    service = find("Service", "rmsfleet-collector")
    assert health_port not in {p["port"] for p in service["spec"]["ports"]}, "the probe port stays off the Service"


def test_the_tls_files_are_mounted_from_the_example_secret() -> None:
    deployment = find("Deployment", "rmsfleet-collector")
    container = collector()
    variables = env(container)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    (name,) = [n for n, path in mounts.items() if variables["RMSFLEET_TLS_CERT"]["value"].startswith(path + "/")]
    assert variables["RMSFLEET_TLS_KEY"]["value"].startswith(mounts[name] + "/")
    secret = volumes[name]["secret"]["secretName"]
    examples = {doc["metadata"]["name"]: doc for path, doc in load_manifests() if path.name == "secret-example.yaml"}
    assert examples[secret]["type"] == "kubernetes.io/tls"
    for variable in ("RMSFLEET_TLS_CERT", "RMSFLEET_TLS_KEY"):
        assert variables[variable]["value"].rsplit("/", 1)[1] in examples[secret]["stringData"]


def test_plaintext_on_the_pod_network_is_explicit() -> None:
    """The collector refuses plaintext gRPC on a non-loopback address without RMSFLEET_INSECURE,
    and refuses RMSFLEET_INSECURE together with TLS files: either way the pod would crash-loop."""
    variables = env(collector())
    tls = "RMSFLEET_TLS_CERT" in variables
    insecure = variables.get("RMSFLEET_INSECURE", {}).get("value") in {"1", "true", "yes", "on"}
    assert tls != insecure, "set exactly one of RMSFLEET_TLS_CERT/RMSFLEET_TLS_KEY and RMSFLEET_INSECURE"


def test_prometheus_annotations_point_at_the_metrics_port() -> None:
    annotations = find("Deployment", "rmsfleet-collector")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(ports(collector())["metrics"])
    assert annotations["prometheus.io/path"] == "/metrics"
    # /metrics follows the report port's TLS (the same certificate files).
    assert annotations["prometheus.io/scheme"] == ("https" if "RMSFLEET_TLS_CERT" in env(collector()) else "http")


def secret_refs(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        name: (item["valueFrom"]["secretKeyRef"]["name"], item["valueFrom"]["secretKeyRef"]["key"])
        for name, item in env(container).items()
        if "secretKeyRef" in item.get("valueFrom", {})
    }


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_secret_references_exist_in_the_example_secret(kind: str) -> None:
    examples = [doc for path, doc in load_manifests() if path.name == "secret-example.yaml"]
    keys = {
        doc["metadata"]["name"]: set(doc.get("stringData", {})) | set(doc.get("data", {}))
        for doc in examples
        if doc["kind"] == "Secret"
    }
    (workload,) = [doc for _, doc in load_manifests() if doc["kind"] == kind]
    refs = [ref for container in containers(workload) for ref in secret_refs(container).values()]
    assert refs, f"the {kind} reads no Secret"
    for name, key in refs:
        assert key in keys.get(name, set()), f"{kind} reads key {key!r} of Secret {name!r}: not in secret-example.yaml"


def test_migration_job_migrates_the_collector_database_with_the_same_image() -> None:
    job = find("Job")
    (container,) = containers(job)
    assert container["image"] == collector()["image"]
    assert container["command"] == [collector()["command"][0], "migrate"]
    assert secret_refs(container)["RMSFLEET_DB"] == secret_refs(collector())["RMSFLEET_DB"] == ("rmsfleet-db", "url")
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"Never", "OnFailure"}
    job_pod = job["spec"]["template"]["metadata"]["labels"]
    assert not selects(find("Service", "rmsfleet-collector")["spec"]["selector"], job_pod), (
        "the Service would send agents to the migration pod"
    )


def test_disruption_budget_keeps_a_collector_and_lets_nodes_drain() -> None:
    budget = find("PodDisruptionBudget", "rmsfleet-collector")
    assert selects(budget["spec"]["selector"]["matchLabels"], pod_labels())
    replicas = find("Deployment", "rmsfleet-collector")["spec"]["replicas"]
    assert 1 <= budget["spec"]["minAvailable"] < replicas
