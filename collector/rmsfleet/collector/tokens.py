"""API tokens and roles (docs/security.md, "Roles and the admin API"): the token format, its hash,
the names and roles an operator may give, and which role may call what. No grpc, no SQL.

A token is `rmsfleet_<lookup id>_<secret>`: 16 hex digits that find the row with one indexed
read, then 32 random bytes (urlsafe base64). The database keeps `sha256:<hex>` of the whole
token: a salted slow hash buys nothing for 256-bit random secrets (no dictionary to run), and
costs every RPC."""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from dataclasses import dataclass

from rmsfleet.collector.enrollment import same_hash

PREFIX = "rmsfleet_"
LOOKUP_HEX = 16
SECRET_BYTES = 32
# The longest token this format makes is 9 + 16 + 1 + 43 characters; anything much longer is
# refused before it is hashed or logged.
MAX_TOKEN_LENGTH = 128
MAX_NAME_LENGTH = 64
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_TOKEN = re.compile(rf"^{PREFIX}([0-9a-f]{{{LOOKUP_HEX}}})_([A-Za-z0-9_-]{{43}})$")


class Role(enum.Enum):
    """reader: every query RPC. admin: reader and the admin RPCs. scanner: Enroll of the hosts it
    scans in place of the enrollment secret (each host still gets its own node key). The agent
    role is the enrollment secret and the node key, not a token."""

    READER = "reader"
    ADMIN = "admin"
    SCANNER = "scanner"


ROLE_NAMES = tuple(role.value for role in Role)


class Scope(enum.Enum):
    """What a call needs: a query (reader or admin), an admin action, or an enrollment."""

    QUERY = "query"
    ADMIN = "admin"
    ENROLL = "enroll"


ALLOWED: dict[Scope, frozenset[Role]] = {
    Scope.QUERY: frozenset({Role.READER, Role.ADMIN}),
    Scope.ADMIN: frozenset({Role.ADMIN}),
    Scope.ENROLL: frozenset({Role.SCANNER}),
}


class BadName(ValueError):
    pass


def check_name(name: str) -> str:
    """A token or certificate-identity name: 1 to 64 characters of letters, digits, `.`, `_`,
    `@` and `-`, starting with a letter or digit (it lands in logs, the audit trail and tables)."""
    if not _NAME.match(name):
        raise BadName(f"1 to {MAX_NAME_LENGTH} letters, digits, '.', '_', '@' or '-', starting with a letter or digit")
    return name


def role_of(name: str) -> Role:
    try:
        return Role(name)
    except ValueError:
        raise BadName(f"one of {', '.join(ROLE_NAMES)}") from None


@dataclass(frozen=True, slots=True)
class NewToken:
    token: str  # shown once, never stored
    lookup_id: str
    secret_hash: str


def new_token() -> NewToken:
    lookup = secrets.token_hex(LOOKUP_HEX // 2)
    token = f"{PREFIX}{lookup}_{secrets.token_urlsafe(SECRET_BYTES)}"
    return NewToken(token, lookup, hash_token(token))


def hash_token(token: str) -> str:
    return f"sha256:{hashlib.sha256(token.encode('utf-8')).hexdigest()}"


def lookup_id_of(token: str) -> str | None:
    """The lookup id of a well-formed token, or None (nothing to look up)."""
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    match = _TOKEN.match(token)
    return None if match is None else match.group(1)


def matches(stored_hash: str, token: str) -> bool:
    """Constant-time comparison of the stored hash with the presented token's."""
    return same_hash(stored_hash, hash_token(token))
