"""`rmsfleet-collector`: serve, migrate, and the query commands (hosts, violations, clusters,
exemptions, plan) that read a running collector over the query service."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from rmsfleet.collector import query_client as qc
from rmsfleet.collector.config import ConfigError, add_serve_arguments, serve_config
from rmsfleet.collector.tables import render_table
from rmsfleet.v1 import facts_pb2, query_pb2, query_pb2_grpc

DEFAULT_COLLECTOR = "127.0.0.1:50051"
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rmsfleet-collector", description="The rmsfleet collector and its query CLI.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the collector (gRPC ingest and query, /metrics)")
    add_serve_arguments(serve)
    serve.add_argument("--log-level", default=os.environ.get("RMSFLEET_LOG_LEVEL", "INFO"))

    migrate = commands.add_parser("migrate", help="bring the database schema to the newest migration")
    migrate.add_argument("--db", help="database URL (RMSFLEET_DB)")

    def query_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument(
            "--collector", help=f"collector address HOST:PORT (RMSFLEET_COLLECTOR; default {DEFAULT_COLLECTOR})"
        )
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
        sub.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer (default 10)")
        sub.add_argument("--tls-ca", help="connect with TLS, trusting the CAs in this PEM file (default: system roots)")
        sub.add_argument("--tls-cert", help="client certificate (PEM) for a collector that requires mutual TLS")
        sub.add_argument("--tls-key", help="private key of --tls-cert (PEM)")
        sub.add_argument(
            "--insecure",
            action="store_true",
            help="plaintext gRPC to a non-loopback collector (loopback collectors are plaintext unless --tls-* is given)",
        )
        return sub

    hosts = query_command(
        "hosts", "list hosts, show one host with its history, revoke a host's node key or allow it to enroll again"
    )
    hosts.add_argument("action", nargs="?", choices=["list", "show", "revoke", "allow-reenroll"], default="list")
    hosts.add_argument("host_id", nargs="?", help="with `show` and `revoke`: the host")
    hosts.add_argument(
        "--db", help="with revoke, allow-reenroll: the database URL (RMSFLEET_DB); the change is written there"
    )
    hosts.add_argument(
        "--for",
        dest="for_",
        help="with allow-reenroll: how long the allowance lasts, e.g. 30m, 2h, 7d (default 1h; used once)",
    )
    hosts.add_argument("--role", choices=["server", "client"])
    hosts.add_argument("--version", choices=["RTM", "SP1", "SP2", "UNKNOWN"])
    hosts.add_argument("--cluster")
    hosts.add_argument("--forest")
    hosts.add_argument("--stale", action="store_true", help="only hosts that stopped reporting")

    violations = query_command("violations", "list policy violations (open by default)")
    violations.add_argument("--policy")
    violations.add_argument("--severity", choices=["warning", "critical"])
    violations.add_argument("--state", choices=["open", "resolved", "all"], default="open")
    violations.add_argument("--since", help="only violations first seen at or after this ISO 8601 time")

    query_command("clusters", "list clusters with their versions and capabilities (D9-D12)")
    exemptions = query_command("exemptions", "list, add or remove policy exemptions")
    exemptions.add_argument("action", nargs="?", choices=["list", "add", "remove"], default="list")
    exemptions.add_argument("--db", help="with add/remove: the database URL (RMSFLEET_DB); writes go to the database")
    exemptions.add_argument("--policy", help="with add: the policy id")
    exemptions.add_argument("--subject-kind", choices=["cluster", "host", "forest"], help="with add")
    exemptions.add_argument("--subject", help="with add: the cluster URL, host id or forest name")
    exemptions.add_argument("--reason", help="with add: why (shown in the list)")
    exemptions.add_argument("--expires", help="with add: ISO 8601 time the exemption ends (default: never)")
    exemptions.add_argument("--id", type=int, help="with remove: the exemption's id (see the list)")
    plan = query_command("plan", "compute the upgrade plan to SP2")
    plan.add_argument(
        "--max-unavailable",
        type=float,
        default=0.0,
        help="share of a cluster's servers upgraded at once (default 0.34)",
    )
    plan.add_argument("--forest", help="plan one forest only (D7)")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return run_serve(args, env)
        if args.command == "migrate":
            return run_migrate(args, env)
        if args.command == "exemptions" and args.action in ("add", "remove"):
            return run_exemption_change(args, env)
        if args.command == "hosts" and args.action == "revoke":
            return run_revoke(args, env)
        if args.command == "hosts" and args.action == "allow-reenroll":
            from rmsfleet.collector.identity_admin import run_allow_reenroll

            return run_allow_reenroll(args, env)
        return run_query(args, env, sys.stdout)
    except CliError as exc:
        print(f"rmsfleet-collector: {exc}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(f"rmsfleet-collector: {exc}", file=sys.stderr)
        return EXIT_USAGE


def run_serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from rmsfleet.collector.log_format import configure_logging
    from rmsfleet.collector.server import serve
    from rmsfleet.collector.store.database import SchemaOutOfDate

    configure_logging(args.log_level)
    config = serve_config(args, env)
    try:
        serve(config)
    except SchemaOutOfDate as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(str(exc)) from None
    return 0


def run_migrate(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from rmsfleet.collector.config import DEFAULT_DB
    from rmsfleet.collector.store.database import create_db_engine, current_revision, upgrade_to_head

    url = args.db or env.get("RMSFLEET_DB") or DEFAULT_DB
    try:
        engine = create_db_engine(url)
        with engine.connect() as connection:
            before = current_revision(connection)
        upgrade_to_head(engine)
        with engine.connect() as connection:
            after = current_revision(connection)
    except SQLAlchemyError as exc:
        raise CliError(f"migrate: {str(exc).splitlines()[0]}") from None
    print(f"database {engine.url.render_as_string(hide_password=True)}: {before or 'empty'} -> {after}")
    return 0


def run_exemption_change(args: argparse.Namespace, env: Mapping[str, str]) -> int:

    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.orm import Session

    from rmsfleet.collector.config import DEFAULT_DB
    from rmsfleet.collector.domain.policies import POLICIES
    from rmsfleet.collector.store import queries
    from rmsfleet.collector.store.database import create_db_engine, prepare_for_serving

    url = args.db or env.get("RMSFLEET_DB") or DEFAULT_DB
    now = datetime.now(UTC)
    if args.action == "add":
        missing = [
            flag
            for flag, value in (
                ("--policy", args.policy),
                ("--subject-kind", args.subject_kind),
                ("--subject", args.subject),
                ("--reason", args.reason),
            )
            if not value
        ]
        if missing:
            raise CliError(f"exemptions add: {', '.join(missing)} required", EXIT_USAGE)
        if args.policy not in {p.id for p in POLICIES}:
            raise CliError(
                f"exemptions add: --policy: no policy {args.policy!r}; known: {', '.join(p.id for p in POLICIES)}",
                EXIT_USAGE,
            )
        expires = None
        if args.expires:
            try:
                expires = datetime.fromisoformat(args.expires.replace("Z", "+00:00"))
            except ValueError:
                raise CliError(
                    f"exemptions add: --expires: expected an ISO 8601 time, got {args.expires!r}", EXIT_USAGE
                ) from None
            expires = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
    elif args.id is None:
        raise CliError("exemptions remove: --id required (see `rmsfleet-collector exemptions`)", EXIT_USAGE)
    try:
        engine = create_db_engine(url)
        prepare_for_serving(engine)
        with Session(engine) as session, session.begin():
            if args.action == "add":
                queries.add_exemption(session, args.policy, args.subject_kind, args.subject, args.reason, now, expires)
                print(
                    f"exempted {args.subject_kind} {args.subject} from {args.policy} until {expires.isoformat() if expires else 'removed'}"
                )
            elif queries.remove_exemption(session, args.id):
                print(f"removed exemption {args.id}")
            else:
                raise CliError(f"exemptions remove: no exemption with id {args.id}")
    except SQLAlchemyError as exc:
        raise CliError(f"exemptions {args.action}: {str(exc).splitlines()[0]}") from None
    return 0


def run_revoke(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """`hosts revoke HOST --db URL`: mark the host's node key revoked in the database. Every
    collector replica checks keys in each batch's own transaction, so the next report with that
    key is refused (UNAUTHENTICATED) on all of them; the agent enrolls again if its enrollment
    secret is still accepted (rotate the secret first to keep a host out)."""
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.orm import Session

    from rmsfleet.collector.config import DEFAULT_DB
    from rmsfleet.collector.store.database import SchemaOutOfDate, create_db_engine, prepare_for_serving
    from rmsfleet.collector.store.identity_sql import revoke_node_key

    if not args.host_id:
        raise CliError("hosts revoke: name the host (rmsfleet-collector hosts revoke HOST_ID --db URL)", EXIT_USAGE)
    url = args.db or env.get("RMSFLEET_DB") or DEFAULT_DB
    now = datetime.now(UTC)
    try:
        engine = create_db_engine(url)
        prepare_for_serving(engine)
        with Session(engine) as session, session.begin():
            record = revoke_node_key(session, args.host_id, now)
    except SchemaOutOfDate as exc:
        raise CliError(f"hosts revoke: {exc}") from None
    except SQLAlchemyError as exc:
        raise CliError(f"hosts revoke: {str(exc).splitlines()[0]}") from None
    if record is None:
        raise CliError(f"hosts revoke: host {args.host_id} has no node key (it never enrolled)")
    assert record.revoked_at is not None
    print(
        f"revoked the node key of host {args.host_id} (enrolled {record.created_at.isoformat()}, revoked "
        f"{record.revoked_at.isoformat()}): its reports are refused until it enrolls again"
    )
    return 0


def query_channel(args: argparse.Namespace, address: str) -> grpc.Channel:
    """Plaintext to a loopback collector unless TLS files are given; TLS to any other unless
    --insecure (the collector's loopback rule, docs/security.md)."""
    from rmsfleet.collector.config import is_loopback_host, split_host_port

    tls_files = (args.tls_ca, args.tls_cert, args.tls_key)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise CliError("--tls-cert and --tls-key go together", EXIT_USAGE)
    if args.insecure and any(tls_files):
        raise CliError("--insecure turns TLS off, but --tls-ca/--tls-cert/--tls-key are also given", EXIT_USAGE)
    try:
        host, _port = split_host_port(address, "--collector")
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if args.insecure or (not any(tls_files) and is_loopback_host(host)):
        return grpc.insecure_channel(address)

    def read(path: str | None, flag: str) -> bytes | None:
        if path is None:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise CliError(f"{flag} {path}: cannot read: {exc.strerror or exc}", EXIT_USAGE) from None

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(args.tls_ca, "--tls-ca"),
        private_key=read(args.tls_key, "--tls-key"),
        certificate_chain=read(args.tls_cert, "--tls-cert"),
    )
    return grpc.secure_channel(address, credentials)


def run_query(args: argparse.Namespace, env: Mapping[str, str], out: Any) -> int:
    address = args.collector or env.get("RMSFLEET_COLLECTOR") or DEFAULT_COLLECTOR
    with query_channel(args, address) as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        try:
            handler = COMMANDS[args.command]
            handler(stub, args, out)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise CliError(f"cannot reach the collector at {address}: {details}", EXIT_UNAVAILABLE) from None
            name = code.name if code is not None else "error"
            raise CliError(f"the collector at {address} answered {name}: {details}") from None
    return 0


def _emit(
    out: Any,
    as_json: bool,
    items: Iterable[dict[str, Any]],
    headers: Sequence[str],
    row: Callable[[dict[str, Any]], Sequence[str]],
) -> None:
    if as_json:
        json.dump(list(items), out, indent=2)
        out.write("\n")
        return
    rows = [row(item) for item in items]
    out.write(render_table(headers, rows) + "\n")
    if not rows:
        out.write("(none)\n")


def _hosts(stub: query_pb2_grpc.QueryServiceStub, args: argparse.Namespace, out: Any) -> None:
    if args.action == "show":
        if not args.host_id:
            raise CliError("hosts show: name the host (rmsfleet-collector hosts show HOST_ID)", EXIT_USAGE)
        found = stub.GetHost(query_pb2.GetHostRequest(host_id=args.host_id), timeout=args.timeout)
        history = [{"changed_at": qc.iso(c.changed_at), **qc.facts_dict(c.facts)} for c in found.history]
        if args.json:
            json.dump({"host": qc.host_dict(found.host), "history": history}, out, indent=2)
            out.write("\n")
            return
        host = qc.host_dict(found.host)
        out.write(render_table(*_host_table([host])) + "\n\nHISTORY\n")
        out.write(
            render_table(
                ["changed_at", "server", "cluster", "client"],
                [
                    [
                        h["changed_at"] or "",
                        _ver(h["server"]),
                        (h["server"] or {}).get("cluster") or "",
                        _ver(h["client"]),
                    ]
                    for h in history
                ],
            )
            + "\n"
        )
        return
    version = {
        "RTM": facts_pb2.VERSION_RTM,
        "SP1": facts_pb2.VERSION_SP1,
        "SP2": facts_pb2.VERSION_SP2,
        "UNKNOWN": facts_pb2.VERSION_UNKNOWN,
    }
    request = query_pb2.ListHostsRequest(
        role=args.role or "",
        version=version.get(args.version or "", facts_pb2.VERSION_UNSPECIFIED),
        cluster=args.cluster or "",
        forest=args.forest or "",
        stale_only=args.stale,
    )

    def fetch(token: str) -> query_pb2.ListHostsResponse:
        request.page_token = token
        return stub.ListHosts(request, timeout=args.timeout)

    hosts = [qc.host_dict(h) for h in qc.pages(fetch, lambda r: list(r.hosts))]
    if args.json:
        json.dump(hosts, out, indent=2)
        out.write("\n")
        return
    headers, rows = _host_table(hosts)
    out.write(render_table(headers, rows) + "\n")
    out.write(f"{len(rows)} hosts\n")


def _ver(part: dict[str, Any] | None) -> str:
    return "-" if part is None else str(part["version"])


def _host_table(hosts: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = ["host", "forest", "server", "cluster", "client", "activation", "last_seen", "stale"]
    rows = [
        [
            h["host_id"],
            h["forest"],
            _ver(h["server"]),
            (h["server"] or h["client"] or {}).get("cluster") or "-",
            _ver(h["client"]),
            (h["client"] or {}).get("activation") or "-",
            h["last_seen"] or "",
            "yes" if h["stale"] else "",
        ]
        for h in hosts
    ]
    return headers, rows


def _violations(stub: query_pb2_grpc.QueryServiceStub, args: argparse.Namespace, out: Any) -> None:
    request = query_pb2.ListViolationsRequest(policy=args.policy or "", severity=args.severity or "", state=args.state)
    if args.since:
        try:
            since = datetime.fromisoformat(args.since.replace("Z", "+00:00"))
        except ValueError:
            raise CliError(f"violations: --since: expected an ISO 8601 time, got {args.since!r}", EXIT_USAGE) from None
        request.since.FromDatetime((since if since.tzinfo else since.replace(tzinfo=UTC)).astimezone(UTC))

    def fetch(token: str) -> query_pb2.ListViolationsResponse:
        request.page_token = token
        return stub.ListViolations(request, timeout=args.timeout)

    items = [qc.violation_dict(v) for v in qc.pages(fetch, lambda r: list(r.violations))]
    headers = ["policy", "severity", "subject_kind", "subject", "since", "detail"]
    if args.state != "open":
        headers.insert(5, "resolved_at")
    _emit(out, args.json, items, headers, lambda v: [str(v[h] or "") for h in headers])


def _clusters(stub: query_pb2_grpc.QueryServiceStub, args: argparse.Namespace, out: Any) -> None:
    request = query_pb2.ListClustersRequest()

    def fetch(token: str) -> query_pb2.ListClustersResponse:
        request.page_token = token
        return stub.ListClusters(request, timeout=args.timeout)

    items = [qc.cluster_dict(c) for c in qc.pages(fetch, lambda r: list(r.clusters))]

    def counts(mapping: dict[str, int]) -> str:
        return " ".join(f"{v}:{n}" for v, n in mapping.items()) or "-"

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    _emit(
        out,
        args.json,
        items,
        [
            "cluster",
            "kind",
            "root",
            "forest",
            "servers",
            "clients",
            "offline_enroll",
            "self_activating",
            "lockbox",
            "sql2005",
        ],
        lambda c: [
            c["url"],
            c["kind"] or "",
            c["root_cluster"] or "-",
            c["forest"],
            counts(c["server_versions"]),
            counts(c["client_versions"]),
            yes(c["offline_enrollment"]),
            c["self_activating_clients"],
            yes(c["server_lockbox"]),
            yes(c["sql_server_2005_by_default"]),
        ],
    )


def _exemptions(stub: query_pb2_grpc.QueryServiceStub, args: argparse.Namespace, out: Any) -> None:
    request = query_pb2.ListExemptionsRequest()

    def fetch(token: str) -> query_pb2.ListExemptionsResponse:
        request.page_token = token
        return stub.ListExemptions(request, timeout=args.timeout)

    items = [qc.exemption_dict(e) for e in qc.pages(fetch, lambda r: list(r.exemptions))]
    headers = ["id", "policy", "subject_kind", "subject", "reason", "expires_at"]
    _emit(
        out,
        args.json,
        items,
        headers,
        lambda e: [str(e[h] or "never") if h == "expires_at" else str(e[h]) for h in headers],
    )


def _plan(stub: query_pb2_grpc.QueryServiceStub, args: argparse.Namespace, out: Any) -> None:
    response = stub.GetPlan(
        query_pb2.GetPlanRequest(max_unavailable=args.max_unavailable, forest=args.forest or ""), timeout=args.timeout
    )
    plan = plan_dict(response)
    if args.json:
        json.dump(plan, out, indent=2)
        out.write("\n")
        return
    rows = [
        [
            str(w["wave"]),
            s["forest"],
            s["cluster"] or "-",
            s["role"],
            f"{s['from']} -> {s['to']}",
            str(len(s["hosts"])),
            ", ".join(s["hosts"]),
        ]
        for w in plan["waves"]
        for s in w["steps"]
    ]
    out.write(render_table(["wave", "forest", "cluster", "role", "upgrade", "count", "hosts"], rows) + "\n")
    if not rows:
        out.write("(nothing to upgrade: every planned host runs SP2)\n")
    for w in plan["waves"]:
        if w["checklist"]:
            out.write(f"\nBefore wave {w['wave']} (D4):\n")
            out.write("".join(f"  [{c['cluster']}] {c['action']}\n" for c in w["checklist"]))
    if plan["unplanned"]:
        out.write("\nNot planned:\n")
        out.write("".join(f"  {u['host_id']} ({u['role']} {u['version']}): {u['reason']}\n" for u in plan["unplanned"]))


def plan_dict(response: query_pb2.GetPlanResponse) -> dict[str, Any]:
    return {
        "waves": [
            {
                "wave": w.number,
                "checklist": [{"forest": c.forest, "cluster": c.cluster, "action": c.action} for c in w.checklist],
                "steps": [
                    {
                        "forest": s.forest,
                        "cluster": s.cluster or None,
                        "role": s.role,
                        "hosts": list(s.hosts),
                        "from": qc.VERSION.get(s.from_version),
                        "to": qc.VERSION.get(s.to_version),
                    }
                    for s in w.steps
                ],
            }
            for w in response.waves
        ],
        "unplanned": [
            {"host_id": u.host_id, "role": u.role, "version": qc.VERSION.get(u.version), "reason": u.reason}
            for u in response.unplanned
        ],
    }


COMMANDS: dict[str, Callable[[query_pb2_grpc.QueryServiceStub, argparse.Namespace, Any], None]] = {
    "hosts": _hosts,
    "violations": _violations,
    "clusters": _clusters,
    "exemptions": _exemptions,
    "plan": _plan,
}


if __name__ == "__main__":
    raise SystemExit(main())
