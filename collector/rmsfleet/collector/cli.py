"""`rmsfleet-collector`: serve, migrate, the query commands (hosts, violations, clusters,
exemptions, plan) that read a running collector over the query service, and the admin commands
(exemptions add|remove, hosts revoke|allow-reenroll, tokens, audit) that go through its admin
service; with `--db URL` the admin writes go straight to the database instead (break-glass).

Credentials come from `--token-file FILE` or RMSFLEET_TOKEN, never from the command line (where
every user of the machine could read them in the process list).

Every refusal is one line on stderr and a non-zero exit, never a traceback. An option a command
would ignore is refused (`--collector` on a command that writes to the database, `--json` on
one that prints no data, ...), so a mistaken command line never looks like it worked."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TextIO

import grpc

from rmsfleet.collector import render
from rmsfleet.collector.admin_client import TOKEN_VARIABLE, AdminClient, TokenFileError, read_token, with_token
from rmsfleet.collector.config import ConfigError, add_serve_arguments, database_url, serve_config
from rmsfleet.collector.identity_admin import DurationError, parse_duration
from rmsfleet.collector.query_client import ChannelError, ChannelOptions, Evaluated, QueryClient, open_channel
from rmsfleet.collector.query_convert import VERSION_CHOICES, UnreadableAnswer
from rmsfleet.collector.tokens import ROLE_NAMES
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
REMOTE = frozenset({"collector", "timeout", "tls_ca", "tls_cert", "tls_key", "insecure", "token_file"})
QUERY = REMOTE | {"json"}
# An admin write goes through the collector, or with --db (break-glass) to the database.
ADMIN = REMOTE | {"db"}
# The commands whose answers carry the evaluation watermark can first wait for it.
EVALUATED = frozenset({"wait_for_evaluation", "wait_timeout"})
# (command, action) -> the options it takes. Any other option given is refused.
ACCEPTS: dict[tuple[str, str | None], frozenset[str]] = {
    ("hosts", "list"): QUERY | EVALUATED | {"role", "version", "cluster", "forest", "stale"},
    ("hosts", "show"): QUERY | EVALUATED,
    ("hosts", "revoke"): ADMIN,
    ("hosts", "allow-reenroll"): ADMIN | {"for_"},
    ("violations", None): QUERY | EVALUATED | {"policy", "severity", "state", "since"},
    ("clusters", None): QUERY,
    ("exemptions", "list"): QUERY,
    ("exemptions", "add"): ADMIN | {"policy", "subject_kind", "subject", "reason", "expires"},
    ("exemptions", "remove"): ADMIN | {"id"},
    ("plan", None): QUERY | {"max_unavailable", "forest"},
    ("tokens", "create"): ADMIN | {"role", "expires_in"},
    ("tokens", "revoke"): ADMIN,
    ("tokens", "list"): QUERY,
    ("audit", None): QUERY | {"limit"},
}
WRITES = {
    ("hosts", "revoke"),
    ("hosts", "allow-reenroll"),
    ("exemptions", "add"),
    ("exemptions", "remove"),
    ("tokens", "create"),
    ("tokens", "revoke"),
}
ADMIN_READS = {("tokens", "list"), ("audit", None)}
DEFAULT_AUDIT_LIMIT = 100
MAX_TOKEN_LIFETIME = timedelta(days=366)
MAX_AUDIT_LIMIT = 100_000


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other refusal (sub-commands inherit it),
    and no abbreviated options: `--token SECRET` must be refused as unknown, not read as
    `--token-file SECRET` (which would then name the secret in its error)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

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
        sub.add_argument(
            "--token-file",
            help=f"file holding the API token to send (default: the {TOKEN_VARIABLE} variable, else none); "
            "never give a token on the command line",
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
        "--db",
        help="with revoke, allow-reenroll: break-glass, write to this database directly instead of through the "
        "collector (still audited, actor break-glass)",
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
    exemptions.add_argument(
        "--db", help="with add/remove: break-glass, write to this database directly instead of through the collector"
    )
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

    tokens = query_command("tokens", "create, list or revoke API tokens (admin role)")
    tokens.add_argument("action", nargs="?", choices=["list", "create", "revoke"], default="list")
    tokens.add_argument("name", nargs="?", help="with create and revoke: the token's name")
    tokens.add_argument("--role", choices=list(ROLE_NAMES), help="with create: reader, admin or scanner")
    tokens.add_argument(
        "--expires-in", help="with create: how long the token lasts, e.g. 12h, 30d (default: no expiry; at most 366d)"
    )
    tokens.add_argument(
        "--db",
        help="with create and revoke: break-glass, write to this database directly (the first admin token of a "
        "fresh install)",
    )
    audit = query_command("audit", "list the audit trail, newest first (admin role)")
    audit.add_argument("--limit", type=int, help=f"how many entries (default {DEFAULT_AUDIT_LIMIT})")
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
        if key in WRITES and args.db is not None:
            return run_break_glass(args, key)
        if key in WRITES or key in ADMIN_READS:
            return run_admin(args, key, env, sys.stdout)
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
        if value is not None and dest not in accepted and dest not in ("command", "action", "host_id", "name")
    ]
    if given:
        flags = ", ".join(_flag(dest) for dest in sorted(given))
        takes = ", ".join(_flag(dest) for dest in sorted(accepted)) or "no options"
        raise CliError(
            f"{name}: {flags} {'does' if len(given) == 1 else 'do'} not apply here; it takes {takes}", EXIT_USAGE
        )
    if getattr(args, "wait_timeout", None) is not None and not args.wait_for_evaluation:
        raise CliError(f"{name}: --wait-timeout applies only with --wait-for-evaluation", EXIT_USAGE)
    if getattr(args, "db", None) is not None:
        remote = sorted(dest for dest in REMOTE if getattr(args, dest, None) is not None)
        if remote:
            flags = ", ".join(_flag(dest) for dest in remote)
            raise CliError(
                f"{name}: --db writes to the database directly (break-glass); {flags} "
                f"{'does' if len(remote) == 1 else 'do'} not apply with it",
                EXIT_USAGE,
            )
    if getattr(args, "name", None) is not None and key not in (("tokens", "create"), ("tokens", "revoke")):
        raise CliError(f"{name}: takes no NAME", EXIT_USAGE)
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


def _duration(flag: str, value: str | None, maximum: timedelta) -> timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(value, maximum)
    except DurationError as exc:
        raise CliError(f"{flag}: {exc}", EXIT_USAGE) from None


def _required(args: argparse.Namespace, key: tuple[str, str | None]) -> None:
    """The arguments a write cannot do without, named in one line (exit 2)."""
    name = " ".join(part for part in key if part)
    if key in (("hosts", "revoke"), ("hosts", "allow-reenroll")) and not args.host_id:
        raise CliError(f"{name}: name the host (rmsfleet-collector {name} HOST_ID)", EXIT_USAGE)
    if key in (("tokens", "create"), ("tokens", "revoke")) and not args.name:
        raise CliError(f"{name}: name the token (rmsfleet-collector {name} NAME)", EXIT_USAGE)
    if key == ("tokens", "create") and not args.role:
        raise CliError("tokens create: --role required (reader, admin or scanner)", EXIT_USAGE)
    if key == ("exemptions", "add"):
        required = {"--policy": args.policy, "--subject-kind": args.subject_kind, "--subject": args.subject}
        missing = [flag for flag, value in {**required, "--reason": args.reason}.items() if not value]
        if missing:
            raise CliError(f"exemptions add: {', '.join(missing)} required", EXIT_USAGE)
    if key == ("exemptions", "remove") and args.id is None:
        raise CliError("exemptions remove: --id required (see `rmsfleet-collector exemptions`)", EXIT_USAGE)


def run_break_glass(args: argparse.Namespace, key: tuple[str, str | None]) -> int:
    """An admin write straight to the database (`--db`): it says so on stderr, and is audited."""
    from rmsfleet.collector import admin, admin_actions
    from rmsfleet.collector.identity_admin import MAX_ALLOWANCE

    _required(args, key)
    url = args.db
    name = " ".join(part for part in key if part)
    expires = _time("exemptions add: --expires", args.expires) if getattr(args, "expires", None) else None
    lasting = _duration("hosts allow-reenroll: --for", getattr(args, "for_", None), MAX_ALLOWANCE)
    lifetime = _duration("tokens create: --expires-in", getattr(args, "expires_in", None), MAX_TOKEN_LIFETIME)
    print(
        f"rmsfleet-collector: {name}: break-glass: writing to the database directly, bypassing the collector "
        "and its credentials (audited as actor break-glass)",
        file=sys.stderr,
    )
    act = admin_actions
    try:
        if key == ("hosts", "revoke"):
            done = admin.break_glass(
                name,
                "RevokeHost",
                f"host {args.host_id[:64]}",
                url,
                lambda: act.host_id(args.host_id),
                act.revoke_host,
            )
        elif key == ("hosts", "allow-reenroll"):
            done = admin.break_glass(
                name,
                "AllowReenroll",
                f"host {args.host_id[:64]}",
                url,
                lambda: (act.host_id(args.host_id), act.allowance(lasting)),
                lambda s, wanted, now: act.allow_reenroll(s, wanted[0], wanted[1], now),
            )
        elif key == ("exemptions", "add"):
            done = admin.break_glass(
                name,
                "AddExemption",
                act.exemption_target(args.policy[:64], args.subject_kind, args.subject),
                url,
                lambda: act.exemption(
                    args.policy, args.subject_kind, args.subject, args.reason, expires, datetime.now(UTC)
                ),
                act.add_exemption,
            )
        elif key == ("exemptions", "remove"):
            done = admin.break_glass(
                name,
                "RemoveExemption",
                f"exemption {args.id}",
                url,
                lambda: act.exemption_id(args.id),
                act.remove_exemption,
            )
        elif key == ("tokens", "create"):
            done = admin.break_glass(
                name,
                "CreateToken",
                f"token {args.name[:64]}",
                url,
                lambda: act.token_wanted(args.name, args.role, lifetime),
                lambda s, wanted, now: act.create(s, wanted, act.BREAK_GLASS, now),
            )
            print(done.message, file=sys.stderr)
            return _print(done.token)
        else:
            done = admin.break_glass(
                name,
                "RevokeToken",
                f"token {args.name[:64]}",
                url,
                lambda: act.name("name", args.name),
                act.revoke,
            )
    except admin.AdminError as exc:
        raise CliError(str(exc), EXIT_USAGE if exc.bad_input else EXIT_REFUSED) from None
    return _print(done.message)


def _channel(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[grpc.Channel, str, float]:
    """The channel to the collector, carrying the token if one is given: (channel, address, timeout)."""
    address = args.collector or env.get("RMSFLEET_COLLECTOR") or DEFAULT_COLLECTOR
    timeout = DEFAULT_TIMEOUT if args.timeout is None else args.timeout
    if not timeout > 0:
        raise CliError(f"--timeout: expected seconds > 0, got {timeout}", EXIT_USAGE)
    try:
        token = read_token(args.token_file, env)
    except TokenFileError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    options = ChannelOptions(address, args.tls_ca, args.tls_cert, args.tls_key, bool(args.insecure))
    try:
        channel = open_channel(options)
    except ChannelError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    return with_token(channel, token), address, timeout


def _refused(exc: grpc.RpcError, address: str) -> CliError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code is grpc.StatusCode.DEADLINE_EXCEEDED and (details or "").startswith(NOT_EVALUATED):
        return CliError(f"the collector at {address}: {details}", EXIT_NOT_EVALUATED)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return CliError(f"cannot reach the collector at {address}: {details}", EXIT_UNAVAILABLE)
    name = code.name if code is not None else "error"
    exit_code = EXIT_USAGE if code is grpc.StatusCode.INVALID_ARGUMENT else EXIT_REFUSED
    return CliError(f"the collector at {address} answered {name}: {details}", exit_code)


def run_admin(args: argparse.Namespace, key: tuple[str, str | None], env: Mapping[str, str], out: TextIO) -> int:
    """An admin command through the collector's AdminService."""
    _required(args, key)
    expires = _time("exemptions add: --expires", args.expires) if getattr(args, "expires", None) else None
    from rmsfleet.collector.identity_admin import MAX_ALLOWANCE

    lasting = _duration("hosts allow-reenroll: --for", getattr(args, "for_", None), MAX_ALLOWANCE)
    lifetime = _duration("tokens create: --expires-in", getattr(args, "expires_in", None), MAX_TOKEN_LIFETIME)
    limit = DEFAULT_AUDIT_LIMIT if getattr(args, "limit", None) is None else args.limit
    if not 1 <= limit <= MAX_AUDIT_LIMIT:
        raise CliError(f"audit: --limit: expected 1 to {MAX_AUDIT_LIMIT}, got {limit}", EXIT_USAGE)
    channel, address, timeout = _channel(args, env)
    with channel:
        client = AdminClient(channel, timeout)
        try:
            if key == ("hosts", "revoke"):
                return _print(client.revoke_host(args.host_id))
            if key == ("hosts", "allow-reenroll"):
                return _print(client.allow_reenroll(args.host_id, lasting))
            if key == ("exemptions", "add"):
                return _print(client.add_exemption(args.policy, args.subject_kind, args.subject, args.reason, expires))
            if key == ("exemptions", "remove"):
                return _print(client.remove_exemption(args.id))
            if key == ("tokens", "create"):
                token, info = client.create_token(args.name, args.role, lifetime)
                until = info["expires_at"] or "never"
                print(
                    f"created token {info['name']} (role {info['role']}, expires {until}); it is shown once:",
                    file=sys.stderr,
                )
                return _print(token)
            if key == ("tokens", "revoke"):
                info = client.revoke_token(args.name)
                return _print(f"revoked token {info['name']} (role {info['role']}) at {info['revoked_at']}")
            if key == ("tokens", "list"):
                found = client.tokens()
                out.write(render.as_json(found) if args.json else render.tokens_table(found))
                return 0
            entries = client.audit(limit)
            out.write(render.as_json(entries) if args.json else render.audit_table(entries))
            return 0
        except grpc.RpcError as exc:
            raise _refused(exc, address) from None
        except UnreadableAnswer as exc:
            raise CliError(f"{exc} (are the CLI and the collector the same release?)") from None


def run_query(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    channel, address, timeout = _channel(args, env)
    with channel:
        try:
            text, note = answer(QueryClient(channel, timeout), args)
        except grpc.RpcError as exc:
            raise _refused(exc, address) from None
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
