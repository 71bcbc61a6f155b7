"""`rmsfleet-agent`: read this host's RMS facts and report them to a collector.

    rmsfleet-agent [--config FILE] [flags]            keep reporting every interval (a service)
    rmsfleet-agent --collector H:P --facts F --once   one report; exit 0 once acknowledged
    rmsfleet-agent check-config [--config FILE] [flags]
                                                      print the effective configuration, exit 0,
                                                      or exit 2 with the one-line error
    rmsfleet-agent spool --spool-dir DIR [flags] [--once]
                                                      send every facts file dropped into DIR as
                                                      its own host (spool.py, docs/agent.md)

Configuration: flags > RMSFLEET_* environment > TOML file > defaults (docs/agent.md).

The state directory (the outbox and the node key): when set (flag, environment or file) it is
used, and an unusable one is an error. When not set, `--once` uses a temporary outbox removed at
exit (a one-shot report needs no state; the sequence still grows across runs because a new
outbox starts its counter at the time in microseconds), and the service mode uses the platform's
default and falls back to a temporary outbox, with a WARNING, when it cannot be used.

Imports only the standard library, grpcio and protobuf (tests/e2e/test_agent_imports.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from rmsfleet.agent import __version__
from rmsfleet.agent.config import (
    AgentConfig,
    ConfigError,
    add_arguments,
    config_file_path,
    flag_values,
    load_config,
    render_effective,
)
from rmsfleet.agent.enrollment import EnrollFileError, read_credential
from rmsfleet.agent.multihost import HostOutboxes
from rmsfleet.agent.outbox import Outbox, OutboxError
from rmsfleet.agent.probe import Probe, ProbeError, select_probe
from rmsfleet.agent.runner import EXIT_CONFIG, EXIT_OK, EXIT_UNREACHABLE, Runner
from rmsfleet.agent.spool import SpoolFolder
from rmsfleet.agent.spool_loop import SpoolRunner
from rmsfleet.agent.transport import TransportError, open_links, read_tls_material
from rmsfleet.contract.stop_signals import stop_on_signals

log = logging.getLogger("rmsfleet.agent")

CHECK_CONFIG = "check-config"
SPOOL = "spool"


def build_parser(prog: str = "rmsfleet-agent") -> argparse.ArgumentParser:
    spooling = prog.endswith(f" {SPOOL}")
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Send every facts file dropped into the spool folder as its own host."
        if spooling
        else "Report this host's RMS facts to a collector. "
        f"`rmsfleet-agent {CHECK_CONFIG} [flags]` prints the effective configuration; "
        f"`rmsfleet-agent {SPOOL} --spool-dir DIR` sends the facts files dropped into DIR.",
    )
    add_arguments(parser)
    parser.add_argument(
        "--once",
        action="store_true",
        help="take the files there now, send, exit 0 when all are acknowledged"
        if spooling
        else "report once, exit 0 when acknowledged",
    )
    parser.add_argument(
        "--log-level", default=None, help="DEBUG, INFO (default), WARNING or ERROR (RMSFLEET_LOG_LEVEL)"
    )
    parser.add_argument("--version", action="version", version=f"rmsfleet-agent {__version__}")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = args_list[0] if args_list and args_list[0] in (CHECK_CONFIG, SPOOL) else None
    if command is not None:
        args_list = args_list[1:]
    parser = build_parser(f"rmsfleet-agent {command}" if command else "rmsfleet-agent")
    args = parser.parse_args(args_list)
    level = (args.log_level or env.get("RMSFLEET_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(flag_values(args), env, config_file_path(args.config, env))
        if command == SPOOL:
            spool_dir = _check_spool(config)
        else:
            probe = _check(config)
    except (ConfigError, ProbeError, EnrollFileError, TransportError) as exc:
        return _fail(str(exc), EXIT_CONFIG)
    if command == SPOOL:
        return run_spool(config, spool_dir, once=args.once)
    if command == CHECK_CONFIG:
        sys.stdout.write(render_effective(config))
        return EXIT_OK
    return run(config, probe, once=args.once)


def _check(config: AgentConfig) -> Probe:
    """What running needs beyond a well-formed configuration: a collector, a probe that can
    work here, a readable enrollment secret or token and TLS files. Raises with one line."""
    if not config.collectors:
        raise ConfigError(
            "no collector address: pass --collector HOST:PORT, set RMSFLEET_COLLECTOR or [agent] collectors"
        )
    probe = select_probe(config, sys.platform)
    read_credential(config.enroll_secret_file, config.enroll_token_file)
    if any(not config.tls.plaintext_to(address) for address in config.collectors):
        read_tls_material(config.tls)
    return probe


def _check_spool(config: AgentConfig) -> Path:
    """What the spool needs: a collector, a spool folder that exists, a readable enrollment
    secret or token and TLS files. Returns the folder. Raises with one line."""
    if not config.collectors:
        raise ConfigError(
            "no collector address: pass --collector HOST:PORT, set RMSFLEET_COLLECTOR or [agent] collectors"
        )
    folder = config.spool.dir
    if folder is None:
        raise ConfigError("no spool folder: pass --spool-dir DIR, set RMSFLEET_SPOOL_DIR or [spool] dir")
    if not folder.is_dir():
        raise ConfigError(
            f"spool folder {folder} ({config.source_of('spool.dir')}): "
            + ("not a folder" if folder.exists() else "does not exist; create it where the writers drop their files")
        )
    read_credential(config.enroll_secret_file, config.enroll_token_file)
    if any(not config.tls.plaintext_to(address) for address in config.collectors):
        read_tls_material(config.tls)
    return folder


def run_spool(config: AgentConfig, folder: Path, *, once: bool) -> int:
    """The spool: its state directory must last (the files are deleted once their report is in
    an outbox), so there is no temporary fallback as for a single agent's --once."""
    stop = stop_on_signals(log)
    try:
        links = open_links(config.collectors, config.tls, config.sender)
    except TransportError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    try:
        with HostOutboxes(config.state_dir, max_changes=config.outbox_max_changes) as hosts:
            spool = SpoolFolder(
                folder,
                hosts,
                settle_seconds=config.spool.settle_seconds,
                batch_size=config.spool.batch_size,
                keep_done=config.spool.keep_done,
            )
            runner = SpoolRunner(config, spool, hosts, links, stop)
            if not once:
                return runner.run_forever()
            code, message = runner.run_once()
            return code if message is None else _fail(message, code)
    except OutboxError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    finally:
        for link in links:
            link.close()


def run(config: AgentConfig, probe: Probe, *, once: bool) -> int:
    stop = stop_on_signals(log)
    if once:
        # Read first: a bad facts file is one line and nothing else, with nothing sent.
        try:
            probe.read()
        except ProbeError as exc:
            return _fail(str(exc), EXIT_CONFIG)
    try:
        links = open_links(config.collectors, config.tls, config.sender)
    except TransportError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    try:
        with _outbox(config, once=once) as outbox:
            runner = Runner(config, probe, outbox, links, stop)
            if not once:
                log.info(
                    "rmsfleet-agent %s: reporting to %s every %gs; outbox %s (%d pending)",
                    __version__,
                    ", ".join(f"{link.address} ({link.transport})" for link in links),
                    config.interval_seconds,
                    outbox.path,
                    outbox.pending_count(),
                )
                return runner.run_forever()
            code, message = runner.run_once()
            if message is not None:
                return _fail(message, code)
            return code
    except OutboxError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    finally:
        for link in links:
            link.close()


@contextmanager
def _outbox(config: AgentConfig, *, once: bool) -> Iterator[Outbox]:
    explicit = config.source_of("state_dir") != "default"
    temporary: Path | None = None
    try:
        if explicit or not once:
            try:
                outbox = Outbox.in_state_dir(config.state_dir, config.outbox_max_changes)
            except OutboxError as exc:
                if explicit:
                    raise
                temporary = Path(tempfile.mkdtemp(prefix="rmsfleet-agent-"))
                log.warning(
                    "%s; using a temporary outbox in %s instead: unsent reports and the node key are lost "
                    "when the agent stops (set a writable --state-dir)",
                    exc,
                    temporary,
                )
                outbox = Outbox.in_state_dir(temporary, config.outbox_max_changes)
        else:
            temporary = Path(tempfile.mkdtemp(prefix="rmsfleet-agent-"))
            log.debug("--once without a state directory: temporary outbox in %s", temporary)
            outbox = Outbox.in_state_dir(temporary, config.outbox_max_changes)
        with outbox:
            yield outbox
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def _fail(message: str, code: int) -> int:
    print(f"rmsfleet-agent: {message}", file=sys.stderr)
    return code


__all__ = ["EXIT_CONFIG", "EXIT_OK", "EXIT_UNREACHABLE", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
