"""`rmsfleet-scan`: read the RMS facts of Windows hosts that cannot run the agent (every RMS 1.0
host, D15) over SMB and the remote registry, and report each as its own host.

    rmsfleet-scan --config /etc/rmsfleet/scan.toml               scan the configured targets once
    rmsfleet-scan --collector H:P --forest F rms01 rms02 ...     scan the hosts named
    rmsfleet-scan --config scan.toml --interval 3600             scan every hour until stopped
    rmsfleet-scan ... --json                                     one JSON document per scan on stdout

Credentials come from a file, the environment or a Kerberos ticket cache (credentials.py),
never from the command line. Exit codes are in summary.py and docs/scanner.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from rmsfleet.agent import __version__
from rmsfleet.agent.config import ConfigError
from rmsfleet.agent.enrollment import EnrollFileError, read_credential
from rmsfleet.agent.multihost import HostOutboxes
from rmsfleet.agent.outbox import OutboxError
from rmsfleet.agent.scanner.credentials import CredentialsError, load_credentials
from rmsfleet.agent.scanner.remote import Credentials
from rmsfleet.agent.scanner.scan import Opener, Outcome, ScanRun, TargetResult, deliver, scan
from rmsfleet.agent.scanner.settings import CONFIG_ENV, ScanConfig, ScanFlags, TargetSettings, load_scan_config
from rmsfleet.agent.scanner.summary import EXIT_CONFIG, EXIT_OK, exit_code, progress_line, render_summary, run_json
from rmsfleet.agent.scanner.targets import (
    ListedTarget,
    TargetError,
    check_unique,
    parse_target_arguments,
    read_targets_file,
)
from rmsfleet.agent.transport import Link, TransportError, open_links, read_tls_material
from rmsfleet.contract.stop_signals import stop_on_signals

log = logging.getLogger("rmsfleet.scan")
PROG = "rmsfleet-scan"


class _NoSecretsOnTheCommandLine(argparse.Action):
    """`--password` exists only to refuse it without echoing its value (argparse would print
    "unrecognized arguments: --password hunter2" for an unknown option)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, *_: object) -> None:
        parser.exit(
            EXIT_CONFIG,
            f"{PROG}: passwords are never taken on the command line (they show in the process list and the "
            "shell history): use --credentials-file FILE (mode 600) or RMSFLEET_SCAN_USERNAME/RMSFLEET_SCAN_PASSWORD\n",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Read the RMS facts of Windows hosts over SMB and the remote registry (no agent on them) "
        "and report each host to the collector.",
    )
    parser.add_argument("targets", nargs="*", metavar="TARGET", help="NAME[:PORT] or 'NAME ADDRESS[:PORT] group=G'")
    parser.add_argument("-f", "--targets-file", type=Path, help="file of targets, one per line ([scan] targets_file)")
    parser.add_argument("--config", type=Path, help=f"scanner config file (TOML; {CONFIG_ENV})")
    parser.add_argument(
        "--credentials-file", type=Path, help="credentials file, mode 600 (RMSFLEET_SCAN_CREDENTIALS_FILE)"
    )
    parser.add_argument("--concurrency", help="targets read at the same time (default 32; RMSFLEET_SCAN_CONCURRENCY)")
    parser.add_argument(
        "--timeout", help="seconds per network exchange with one target (default 30; RMSFLEET_SCAN_TIMEOUT)"
    )
    parser.add_argument("--interval", help="scan again every this many seconds (default: once; RMSFLEET_SCAN_INTERVAL)")
    parser.add_argument("--forest", help="the targets' AD forest ([scan] forest)")
    smb1 = parser.add_mutually_exclusive_group()
    smb1.add_argument(
        "--allow-smb1",
        dest="allow_smb1",
        action="store_const",
        const=True,
        default=None,
        help="offer SMB1 to hosts that speak nothing else (Windows 2000/XP/2003; the default)",
    )
    smb1.add_argument(
        "--no-smb1", dest="allow_smb1", action="store_const", const=False, help="speak only SMB2/3 (SMB1 off)"
    )
    parser.add_argument(
        "--start-remote-registry",
        action="store_const",
        const=True,
        default=None,
        help="start a stopped Remote Registry service over SVCCTL and restore it afterwards (default off)",
    )
    parser.add_argument("--json", action="store_true", help="print each scan's per-target results as JSON on stdout")
    parser.add_argument(
        "--log-level", default=None, help="DEBUG, INFO, WARNING (default) or ERROR (RMSFLEET_LOG_LEVEL)"
    )
    parser.add_argument("--password", nargs="?", action=_NoSecretsOnTheCommandLine, help=argparse.SUPPRESS)
    collector = parser.add_argument_group("collector (as for rmsfleet-agent)")
    collector.add_argument(
        "--collector", dest="collectors", action="append", help="collector HOST:PORT (RMSFLEET_COLLECTOR)"
    )
    collector.add_argument("--state-dir", dest="state_dir", help="outboxes and node keys (RMSFLEET_STATE_DIR)")
    collector.add_argument("--deadline", dest="sender.rpc_deadline_seconds", help="seconds per RPC (RMSFLEET_DEADLINE)")
    collector.add_argument("--tls-ca", dest="tls.ca_file", help="CA of the collector's certificate (RMSFLEET_TLS_CA)")
    collector.add_argument("--tls-cert", dest="tls.cert_file", help="client certificate (RMSFLEET_TLS_CERT)")
    collector.add_argument("--tls-key", dest="tls.key_file", help="client key (RMSFLEET_TLS_KEY)")
    collector.add_argument(
        "--insecure", dest="tls.insecure", action="store_const", const=True, help="plaintext to any collector"
    )
    collector.add_argument(
        "--enroll-secret-file", dest="enroll_secret_file", help="enrollment secret (RMSFLEET_ENROLL_SECRET_FILE)"
    )
    collector.add_argument(
        "--enroll-token-file",
        dest="enroll_token_file",
        help="API token with the scanner role, sent on Enroll instead of a secret (RMSFLEET_ENROLL_TOKEN_FILE)",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser


_AGENT_FLAGS = (
    "collectors",
    "state_dir",
    "sender.rpc_deadline_seconds",
    "tls.ca_file",
    "tls.cert_file",
    "tls.key_file",
    "tls.insecure",
    "enroll_secret_file",
    "enroll_token_file",
)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    level = (args.log_level or env.get("RMSFLEET_LOG_LEVEL") or "WARNING").upper()
    progress = None if args.json or not sys.stderr.isatty() else ProgressLine(sys.stderr)
    _setup_logging(level, progress)
    try:
        config_path = args.config or (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
        config = load_scan_config(
            {name: vars(args).get(name) for name in _AGENT_FLAGS},
            ScanFlags(
                targets_file=args.targets_file,
                credentials_file=args.credentials_file,
                concurrency=args.concurrency,
                timeout=args.timeout,
                interval=args.interval,
                forest=args.forest,
                allow_smb1=args.allow_smb1,
                start_remote_registry=args.start_remote_registry,
            ),
            env,
            config_path,
        )
        targets = _targets(config, args.targets)
        credentials, source = load_credentials(config.credentials_file, env)
        _check_collector(config)
        opener = _remote_opener()
    except (ConfigError, TargetError, CredentialsError, EnrollFileError, TransportError) as exc:
        return _fail(str(exc), EXIT_CONFIG)
    log.info("logging on to %d target(s) as %s (from %s)", len(targets), _account(credentials), source)
    return _run(config, targets, credentials, opener, json_output=args.json, progress=progress)


def _account(credentials: Credentials) -> str:
    username = credentials.username or "(the ticket cache's principal)"
    return f"{credentials.domain}\\{username}" if credentials.domain else username


def _targets(config: ScanConfig, arguments: Sequence[str]) -> list[tuple[ListedTarget, TargetSettings]]:
    listed = parse_target_arguments(arguments)
    if config.targets_file is not None:
        listed += read_targets_file(config.targets_file)
    if not listed:
        raise TargetError(
            "no targets: name hosts as arguments, or give a targets file (--targets-file FILE or [scan] targets_file)"
        )
    resolved: list[tuple[ListedTarget, TargetSettings]] = []
    for target in check_unique(listed):
        if target.group is not None and target.group not in config.groups:
            known = ", ".join(sorted(config.groups)) or "none"
            raise TargetError(
                f"{target.where}: group {target.group!r} has no [groups.{target.group}] table in the scanner's "
                f"configuration (groups configured: {known})"
            )
        settings = config.for_target(target.name, target.group)
        if settings.forest is None:
            raise TargetError(
                f"{target.where}: {target.name}: no forest configured (the scanner never guesses it): set --forest, "
                f'[scan] forest, the group\'s forest or [hosts."{target.name}"] forest'
            )
        resolved.append((target, settings))
    return resolved


def _check_collector(config: ScanConfig) -> None:
    agent = config.agent
    if not agent.collectors:
        raise ConfigError(
            "no collector address: pass --collector HOST:PORT, set RMSFLEET_COLLECTOR or [agent] collectors"
        )
    read_credential(agent.enroll_secret_file, agent.enroll_token_file)
    if any(not agent.tls.plaintext_to(address) for address in agent.collectors):
        read_tls_material(agent.tls)


def _remote_opener() -> Opener:
    """The real remote reader, or a configuration error when the `scanner` extra is missing."""
    missing = [name for name in ("impacket", "pefile") if not _importable(name)]
    if missing:
        raise ConfigError(
            f"the scanner needs {' and '.join(missing)}, which come with the scanner extra: "
            "pip install 'rmsfleet[scanner]'"
        )
    from rmsfleet.agent.scanner.remote import open_remote_host

    return open_remote_host


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _run(
    config: ScanConfig,
    targets: list[tuple[ListedTarget, TargetSettings]],
    credentials: Credentials,
    opener: Opener,
    *,
    json_output: bool,
    progress: ProgressLine | None,
) -> int:
    stop = stop_on_signals(log, level=logging.WARNING)
    try:
        links = open_links(config.agent.collectors, config.agent.tls, config.agent.sender)
    except TransportError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    try:
        with _outboxes(config) as outboxes:
            while True:
                code = _scan_once(config, targets, credentials, outboxes, links, stop, opener, json_output, progress)
                if config.interval is None:
                    return code
                deadline = time.monotonic() + config.interval
                while not stop.is_set() and time.monotonic() < deadline:
                    stop.wait(min(0.5, max(0.0, deadline - time.monotonic())))
                if stop.is_set():
                    return EXIT_OK
    except OutboxError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    finally:
        for link in links:
            link.close()


def _scan_once(
    config: ScanConfig,
    targets: list[tuple[ListedTarget, TargetSettings]],
    credentials: Credentials,
    outboxes: HostOutboxes,
    links: Sequence[Link],
    stop: threading.Event,
    opener: Opener,
    json_output: bool,
    progress: ProgressLine | None,
) -> int:
    started = time.monotonic()
    counts: Counter[Outcome] = Counter()

    def on_result(done: int, total: int, result: TargetResult) -> None:
        counts[result.outcome] += 1
        if progress is not None:
            progress.show(progress_line(done, total, result, counts))

    run: ScanRun = scan(
        targets,
        credentials,
        outboxes,
        opener=opener,
        concurrency=config.concurrency,
        stop=stop,
        progress=on_result,
    )
    if progress is not None:
        progress.show(f"[{len(run.results)}/{len(targets)}] read; sending to the collector...")
    deliver(run, outboxes, config.agent, links, stop, concurrency=config.concurrency)
    if progress is not None:
        progress.clear()
    seconds = time.monotonic() - started
    code = exit_code(run)
    if json_output:
        sys.stdout.write(json.dumps(run_json(run, seconds, code), sort_keys=True) + "\n")
        sys.stderr.write(render_summary(run, seconds))
    else:
        sys.stdout.write(render_summary(run, seconds))
    sys.stdout.flush()
    return code


@contextmanager
def _outboxes(config: ScanConfig) -> Iterator[HostOutboxes]:
    temporary: Path | None = None
    max_changes = config.agent.outbox_max_changes
    try:
        try:
            outboxes = HostOutboxes(config.agent.state_dir, max_changes=max_changes)
        except OutboxError as exc:
            if config.state_dir_explicit:
                raise
            temporary = Path(tempfile.mkdtemp(prefix="rmsfleet-scan-"))
            log.warning(
                "%s; using a temporary state directory %s instead: reports not acknowledged by the end of this run "
                "and node keys are lost (set a writable --state-dir)",
                exc,
                temporary,
            )
            outboxes = HostOutboxes(temporary, max_changes=max_changes)
        try:
            yield outboxes
        finally:
            outboxes.close()
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


class ProgressLine:
    """One status line at the bottom of a terminal, redrawn in place; log records print above it."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.RLock()
        self._text = ""

    def show(self, text: str) -> None:
        with self._lock:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self._text = text[:width]
            self._stream.write("\r\x1b[K" + self._text)
            self._stream.flush()

    def clear(self) -> None:
        with self._lock:
            if self._text:
                self._stream.write("\r\x1b[K")
                self._stream.flush()
            self._text = ""

    @contextmanager
    def above(self) -> Iterator[None]:
        with self._lock:
            if self._text:
                self._stream.write("\r\x1b[K")
            yield
            if self._text:
                self._stream.write(self._text)
                self._stream.flush()


class _ProgressAwareHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def __init__(self, progress: ProgressLine | None) -> None:
        super().__init__(sys.stderr)
        self._progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        if self._progress is None:
            super().emit(record)
            return
        with self._progress.above():
            super().emit(record)


def _setup_logging(level: str, progress: ProgressLine | None) -> None:
    handler = _ProgressAwareHandler(progress)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    try:
        root.setLevel(level)
    except ValueError:
        root.setLevel(logging.WARNING)
        log.warning("unknown log level %r: using WARNING", level)
    # impacket logs through the root logger at INFO and below; its messages are ours to word.
    logging.getLogger("impacket").setLevel(max(root.level, logging.WARNING))


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
