"""The collector's log lines: one line per event, whatever a caller put in the message.

Messages carry values from the network (host ids, peers, refused values). The edge refuses control
and format characters in identifiers, but a log line must not depend on every call site having
checked first: the formatter escapes them in the message itself (a traceback, appended after the
message, keeps its lines)."""

from __future__ import annotations

import logging

from rmsfleet.contract.text import escape

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class EscapingFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)


def configure_logging(level: str) -> None:
    """The root logger writes escaped lines to stderr at `level` (a name such as INFO)."""
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter(FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
