"""`rmsfleet-collector`: serve, migrate, the query commands (hosts, violations, clusters,
exemptions, plan) that read a running collector over the query service, and the admin commands
that write to its database (exemptions add|remove, hosts revoke).

Every refusal is one line on stderr and a non-zero exit, never a traceback. An option a command
would ignore is refused (`--collector` on a command that writes to the database, `--json` on
one that prints no data, ...), so a mistaken command line never looks like it worked."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TextIO

import grpc

from rmsfleet.collector import render
from rmsfleet.collector.config import ConfigError, add_serve_arguments, database_url, serve_config
from rmsfleet.collector.query_client import ChannelError, ChannelOptions, Evaluated, QueryClient, open_channel
from rmsfleet.collector.query_convert import VERSION_CHOICES, UnreadableAnswer
from rmsfleet.collector.watermark import NOT_EVALUATED

DEFAULT_COLLECTOR = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 10.0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_NOT_EVALUATED = 4
DEFAULT_WAIT_TIMEOUT = 30.0
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# The options every query command takes; they say how to reach the collector and what to print.
QUERY = frozenset({"collector", "json", "timeout", "tls_ca", "tls_cert", "tls_key", "insecure"})
# The commands whose answers carry the evaluation watermark can first wait for it.
EVALUATED = frozenset({"wait_for_evaluation", "wait_timeout"})
# (command, action) -> the options it takes. Any other option given is refused.
ACCEPTS: dict[tuple[str, str | None], frozenset[str]] = {
    ("hosts", "list"): QUERY | EVALUATED | {"role", "version", "cluster", "forest", "stale"},
    ("hosts", "show"): QUERY | EVALUATED,
    ("hosts", "revoke"): frozenset({"db"}),
    ("hosts", "allow-reenroll"): frozenset({"db", "for_"}),
    ("violations", None): QUERY | EVALUATED | {"policy", "severity", "state", "since"},
    ("clusters", None): QUERY,
    ("exemptions", "list"): QUERY,
    ("exemptions", "add"): frozenset({"db", "policy", "subject_kind", "subject", "reason", "expires"}),
    ("exemptions", "remove"): frozenset({"db", "id"}),
    ("plan", None): QUERY | {"max_unavailable", "forest"},
}
WRITES = {("hosts", "revoke"), ("hosts", "allow-reenroll"), ("exemptions", "add"), ("exemptions", "remove")}


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other refusal (sub-commands inherit it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rmsfleet-collector", description="The rmsfleet collector and its query CLI.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the collector (gRPC ingest and query, /metrics)")
    add_serve_arguments(serve)
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (RMSFLEET_LOG_LEVEL; default INFO)")

    migrate = commands.add_parser("migrate", help="bring the database schema to the newest migration")
    migrate.add_argument("--db", help="database URL (RMSFLEET_DB)")

    # Options default to None, so that an option given where it does not apply can be told
    # from one left out (see ACCEPTS).
    def query_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument(
            "--collector", help=f"collector address HOST:PORT (RMSFLEET_COLLECTOR; default {DEFAULT_COLLECTOR})"
        )
        sub.add_argument("--json", action="store_true", default=None, help="print JSON instead of a table")
        sub.add_argument("--timeout", type=float, help=f"seconds to wait for each answer (default {DEFAULT_TIMEOUT:g})")
        sub.add_argument("--tls-ca", help="connect with TLS, trusting the CAs in this PEM file (default: system roots)")
        sub.add_argument("--tls-cert", help="client certificate (PEM) for a collector that requires mutual TLS")
        sub.add_argument("--tls-key", help="private key of --tls-cert (PEM)")
        sub.add_argument(
            "--insecure",
            action="store_true",
            default=None,
            help="plaintext gRPC to a non-loopback collector (loopback collectors are plaintext unless --tls-* is given)",
        )
        return sub

    def evaluation_wait(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--wait-for-evaluation",
            action="store_true",
            default=None,
            help="first wait until evaluation has covered every report the collector committed before this call",
        )
        sub.add_argument(
            "--wait-timeout",
            type=float,
            help=f"with --wait-for-evaluation: seconds to wait at most (default {DEFAULT_WAIT_TIMEOUT:g}); "
            f"then exit {EXIT_NOT_EVALUATED} saying how far evaluation got",
        )

    hosts = query_command(
        "hosts", "list hosts, show one host with its history, revoke a host's node key or allow it to enroll again"
    )
    evaluation_wait(hosts)
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
    hosts.add_argument("--version", choices=VERSION_CHOICES)
    hosts.add_argument("--cluster")
    hosts.add_argument("--forest")
    hosts.add_argument("--stale", action="store_true", default=None, help="only hosts that stopped reporting")

    violations = query_command("violations", "list policy violations (open by default)")
    evaluation_wait(violations)
    violations.add_argument("--policy")
    violations.add_argument("--severity", choices=["warning", "critical"])
    violations.add_argument("--state", choices=["open", "resolved", "all"], help="default: open")
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
        "--max-unavailable", type=float, help="share of a cluster's servers upgraded at once (default 0.34)"
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
        key = (args.command, getattr(args, "action", None))
        check_options(args, key)
        if key in WRITES:
            return run_write(args, key, env)
        return run_query(args, env, sys.stdout)
    except CliError as exc:
        return _fail(str(exc), exc.code)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)


def _fail(message: str, code: int) -> int:
    print(f"rmsfleet-collector: {message}", file=sys.stderr)
    return code


def _print(line: str) -> int:
    print(line)
    return 0


def check_options(args: argparse.Namespace, key: tuple[str, str | None]) -> None:
    """Refuse every option the command would ignore, naming it and what the command takes."""
    accepted = ACCEPTS[key]
    name = " ".join(part for part in key if part)
    given = [
        dest
        for dest, value in vars(args).items()
        if value is not None and dest not in accepted and dest not in ("command", "action", "host_id")
    ]
    if given:
        flags = ", ".join(_flag(dest) for dest in sorted(given))
        takes = ", ".join(_flag(dest) for dest in sorted(accepted)) or "no options"
        raise CliError(
            f"{name}: {flags} {'does' if len(given) == 1 else 'do'} not apply here; it takes {takes}", EXIT_USAGE
        )
    if getattr(args, "wait_timeout", None) is not None and not args.wait_for_evaluation:
        raise CliError(f"{name}: --wait-timeout applies only with --wait-for-evaluation", EXIT_USAGE)
    host_id = getattr(args, "host_id", None)
    if host_id is not None and key not in (("hosts", "show"), ("hosts", "revoke"), ("hosts", "allow-reenroll")):
        raise CliError(f"{name}: takes no HOST_ID (to see one host: hosts show HOST_ID)", EXIT_USAGE)


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def run_serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    import logging

    from sqlalchemy.exc import SQLAlchemyError

    from rmsfleet.collector.server import serve
    from rmsfleet.collector.store.database import SchemaOutOfDate

    level = (args.log_level or env.get("RMSFLEET_LOG_LEVEL") or "INFO").strip().upper()
    if level not in LOG_LEVELS:
        raise CliError(
            f"--log-level (RMSFLEET_LOG_LEVEL): expected one of {', '.join(LOG_LEVELS)}, got {level[:40]!r}", EXIT_USAGE
        )
    config = serve_config(args, env)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        serve(config)
    except (SchemaOutOfDate, OSError) as exc:
        raise CliError(f"serve: {exc}") from None
    except SQLAlchemyError as exc:
        raise CliError(f"serve: the database cannot be used: {str(exc).splitlines()[0]}") from None
    return 0


# The database commands import SQLAlchemy and alembic only when they run: the query commands
# would pay a quarter of a second for them otherwise.


def run_migrate(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from rmsfleet.collector import admin

    try:
        return _print(admin.migrate(database_url(args.db, env)))
    except admin.AdminError as exc:
        raise CliError(str(exc)) from None


def _time(flag: str, value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{flag}: expected an ISO 8601 time, got {value[:80]!r}", EXIT_USAGE) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run_write(args: argparse.Namespace, key: tuple[str, str | None], env: Mapping[str, str]) -> int:
    from rmsfleet.collector import admin

    url = database_url(args.db, env)
    now = datetime.now(UTC)
    try:
        if key == ("hosts", "revoke"):
            if not args.host_id:
                raise CliError(
                    "hosts revoke: name the host (rmsfleet-collector hosts revoke HOST_ID --db URL)", EXIT_USAGE
                )
            return _print(admin.revoke_host(url, args.host_id, now))
        if key == ("hosts", "allow-reenroll"):
            if not args.host_id:
                raise CliError(
                    "hosts allow-reenroll: name the host (rmsfleet-collector hosts allow-reenroll HOST_ID --db URL)",
                    EXIT_USAGE,
                )
            return _print(admin.allow_reenroll(url, args.host_id, args.for_, now))
        if args.action == "add":
            required = {"--policy": args.policy, "--subject-kind": args.subject_kind, "--subject": args.subject}
            missing = [flag for flag, value in {**required, "--reason": args.reason}.items() if not value]
            if missing:
                raise CliError(f"exemptions add: {', '.join(missing)} required", EXIT_USAGE)
            expires = _time("exemptions add: --expires", args.expires) if args.expires else None
            return _print(
                admin.add_exemption(url, args.policy, args.subject_kind, args.subject, args.reason, now, expires)
            )
        if args.id is None:
            raise CliError("exemptions remove: --id required (see `rmsfleet-collector exemptions`)", EXIT_USAGE)
        return _print(admin.remove_exemption(url, args.id))
    except admin.AdminError as exc:
        raise CliError(str(exc), EXIT_USAGE if exc.bad_input else EXIT_REFUSED) from None


def run_query(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    address = args.collector or env.get("RMSFLEET_COLLECTOR") or DEFAULT_COLLECTOR
    timeout = DEFAULT_TIMEOUT if args.timeout is None else args.timeout
    if not timeout > 0:
        raise CliError(f"--timeout: expected seconds > 0, got {timeout}", EXIT_USAGE)
    options = ChannelOptions(address, args.tls_ca, args.tls_cert, args.tls_key, bool(args.insecure))
    try:
        channel = open_channel(options)
    except ChannelError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    with channel:
        try:
            text, note = answer(QueryClient(channel, timeout), args)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            if code is grpc.StatusCode.DEADLINE_EXCEEDED and (details or "").startswith(NOT_EVALUATED):
                raise CliError(f"the collector at {address}: {details}", EXIT_NOT_EVALUATED) from None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise CliError(f"cannot reach the collector at {address}: {details}", EXIT_UNAVAILABLE) from None
            name = code.name if code is not None else "error"
            raise CliError(f"the collector at {address} answered {name}: {details}") from None
        except UnreadableAnswer as exc:
            raise CliError(f"{exc} (are the CLI and the collector the same release?)") from None
    out.write(text)
    sys.stderr.write(note)
    return 0


def _wait(args: argparse.Namespace) -> float | None:
    """With --wait-for-evaluation, the seconds the collector may wait for evaluation."""
    if not getattr(args, "wait_for_evaluation", None):
        return None
    seconds = DEFAULT_WAIT_TIMEOUT if args.wait_timeout is None else args.wait_timeout
    if not seconds > 0:
        raise CliError(f"--wait-timeout: expected seconds > 0, got {seconds:g}", EXIT_USAGE)
    return float(seconds)


def _evaluated(found: Evaluated[Any], as_json: bool, table: Callable[[Any], str]) -> tuple[str, str]:
    """The answer, and how far evaluation had got: under the table, or on stderr with --json so
    stdout stays the documented JSON."""
    line = render.evaluation_line(found.evaluation)
    if as_json:
        return render.as_json(found.answer), line
    return table(found.answer) + line, ""


def answer(client: QueryClient, args: argparse.Namespace) -> tuple[str, str]:
    """Ask the collector what the command asks and render it (a table, or JSON with --json):
    (what goes to stdout, what goes to stderr)."""
    as_json = bool(args.json)
    if args.command == "hosts":
        wait = _wait(args)
        if args.action == "show":
            if not args.host_id:
                raise CliError("hosts show: name the host (rmsfleet-collector hosts show HOST_ID)", EXIT_USAGE)
            return _evaluated(client.host(args.host_id, wait), as_json, render.host_detail_table)
        hosts = client.hosts(args.role, args.version, args.cluster, args.forest, bool(args.stale), wait)
        return _evaluated(hosts, as_json, render.hosts_table)
    if args.command == "violations":
        wait = _wait(args)
        since = _time("violations: --since", args.since) if args.since else None
        state = args.state or "open"
        items = client.violations(args.policy, args.severity, state, since, wait)
        return _evaluated(items, as_json, lambda found: render.violations_table(found, with_resolved=state != "open"))
    if args.command == "clusters":
        clusters = client.clusters()
        return (render.as_json(clusters) if as_json else render.clusters_table(clusters)), ""
    if args.command == "exemptions":
        exemptions = client.exemptions()
        return (render.as_json(exemptions) if as_json else render.exemptions_table(exemptions)), ""
    plan = client.plan(args.max_unavailable, args.forest)
    return (render.as_json(plan) if as_json else render.plan_text(plan)), ""


if __name__ == "__main__":
    raise SystemExit(main())
