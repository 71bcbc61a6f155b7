"""`rmsfleet-collector hosts allow-reenroll HOST [--for DURATION] --db URL`: let a host that holds
a valid node key enroll once more (a reinstalled machine, a lost state directory), until the
allowance expires. Written to the database directly, like `hosts revoke` (docs/security.md)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

DEFAULT_ALLOWANCE = timedelta(hours=1)
MAX_ALLOWANCE = timedelta(days=30)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class DurationError(ValueError):
    pass


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `2h`, `7d` or a number of seconds; from 1 second to 30 days."""
    match = _DURATION.match(text)
    if match is None:
        raise DurationError(f"expected a duration such as 30m, 2h or 7d, got {text!r}")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not 1 <= seconds <= MAX_ALLOWANCE.total_seconds():
        raise DurationError(f"expected a duration from 1s to {MAX_ALLOWANCE.days}d, got {text!r}")
    return timedelta(seconds=seconds)


def run_allow_reenroll(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.orm import Session

    from rmsfleet.collector.cli import EXIT_USAGE, CliError
    from rmsfleet.collector.config import DEFAULT_DB
    from rmsfleet.collector.store.database import SchemaOutOfDate, create_db_engine, prepare_for_serving
    from rmsfleet.collector.store.identity_sql import allow_reenroll, node_key_record
    from rmsfleet.contract.facts import MAX_ID_LENGTH, InvalidFacts
    from rmsfleet.contract.wire import check_wire_text

    if not args.host_id:
        raise CliError(
            "hosts allow-reenroll: name the host (rmsfleet-collector hosts allow-reenroll HOST_ID --db URL)", EXIT_USAGE
        )
    try:
        check_wire_text("HOST_ID", args.host_id, MAX_ID_LENGTH, required=True)
    except InvalidFacts as exc:
        raise CliError(f"hosts allow-reenroll: {exc.field}: expected {exc.reason}", EXIT_USAGE) from None
    try:
        duration = parse_duration(args.for_) if args.for_ else DEFAULT_ALLOWANCE
    except DurationError as exc:
        raise CliError(f"hosts allow-reenroll: --for: {exc}", EXIT_USAGE) from None
    url = args.db or env.get("RMSFLEET_DB") or DEFAULT_DB
    now = datetime.now(UTC)
    until = now + duration
    try:
        engine = create_db_engine(url)
        prepare_for_serving(engine)
        with Session(engine) as session, session.begin():
            record = node_key_record(session, args.host_id)
            allow_reenroll(session, args.host_id, now, until)
    except SchemaOutOfDate as exc:
        raise CliError(f"hosts allow-reenroll: {exc}") from None
    except SQLAlchemyError as exc:
        raise CliError(f"hosts allow-reenroll: {str(exc).splitlines()[0]}") from None
    stamp = until.isoformat(timespec="seconds").replace("+00:00", "Z")
    if record is None:
        state = "it has never enrolled, so it needs no allowance for its first enrollment"
    elif record.revoked_at is not None:
        state = "its key is revoked, so it may enroll again anyway"
    else:
        state = "its current key stays valid until the new enrollment replaces it"
    print(f"host {args.host_id} may enroll once more until {stamp} ({state})")
    return 0
