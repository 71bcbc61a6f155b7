"""What the agent presents when it enrolls a host (docs/security.md): the enrollment secret, or
an API token with the scanner role (`rmsfleet-collector tokens create NAME --role scanner`) sent
as `authorization: Bearer TOKEN` metadata, which the collector takes in place of the secret.

A configuration names one of the two files, never both (config.py refuses both): the token
stands for a sender of many hosts (the spool, the scanner), the secret for a host's own agent,
and a process that held both would leave the operator guessing which one the collector saw.

Both files are read on every enrollment, so a rotated secret or a replaced token is used without
a restart. Neither value ever appears in a message, a log line or a repr: messages name the file.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from rmsfleet.contract.secret_file import secret_lines

# The longest token the agent sends: the collector's own bound (tokens.MAX_TOKEN_LENGTH; the agent
# does not import the collector). A longer value is surely not a token.
MAX_TOKEN_LENGTH = 128


class EnrollFileError(Exception):
    """The enrollment secret or token file cannot be used; one line naming the file."""


class Kind(enum.Enum):
    SECRET = "secret"
    TOKEN = "token"


@dataclass(frozen=True, slots=True)
class EnrollCredential:
    """The secret or the token, and the file it came from (for messages: never the value)."""

    kind: Kind
    file: Path
    value: str = field(repr=False)

    @property
    def secret(self) -> str:
        """The EnrollRequest's enroll_secret: empty when enrolling with a token."""
        return self.value if self.kind is Kind.SECRET else ""

    @property
    def token(self) -> str | None:
        """The token to send as `authorization: Bearer TOKEN`; None when enrolling with a secret."""
        return self.value if self.kind is Kind.TOKEN else None

    def describe(self) -> str:
        """`the enrollment secret from FILE` / `the enrollment token in FILE`."""
        return (
            f"the enrollment secret from {self.file}"
            if self.kind is Kind.SECRET
            else f"the enrollment token in {self.file}"
        )


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EnrollFileError(f"{what} {path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None


def read_enroll_secret(path: Path) -> str:
    """The enrollment secret: the first line of the file that is not blank or a `#` comment."""
    secrets = secret_lines(_read(path, "enroll secret_file"))
    if secrets:
        return secrets[0]
    raise EnrollFileError(f"enroll secret_file {path}: holds no secret (one line, not starting with #)")


def read_enroll_token(path: Path) -> str:
    """The token: the first line that is not blank or a `#` comment, as `tokens create` printed
    it (printable ASCII without spaces: gRPC metadata carries nothing else)."""
    tokens = secret_lines(_read(path, "enroll token_file"))
    if not tokens:
        raise EnrollFileError(
            f"enroll token_file {path}: holds no token (put the line `rmsfleet-collector tokens create NAME "
            "--role scanner` printed in it)"
        )
    token = tokens[0]
    if len(token) > MAX_TOKEN_LENGTH or not all("!" <= ch <= "~" for ch in token):
        # The value is not shown: it may be a token with a stray character in it.
        raise EnrollFileError(
            f"enroll token_file {path}: expected one token (as `tokens create` printed it) on its first line"
        )
    return token


def read_credential(secret_file: Path | None, token_file: Path | None) -> EnrollCredential | None:
    """The credential the configuration names (None: no enrollment configured). Raises
    EnrollFileError."""
    if token_file is not None:
        return EnrollCredential(Kind.TOKEN, token_file, read_enroll_token(token_file))
    if secret_file is not None:
        return EnrollCredential(Kind.SECRET, secret_file, read_enroll_secret(secret_file))
    return None
