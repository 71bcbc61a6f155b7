"""Opaque page tokens for keyset paging: clients hand back what they were given.

A token is the URL-safe base64 of the last key of the page before. What comes back is checked
as strictly as any other input: a bounded length, a key free of control characters (a NUL
cannot reach PostgreSQL), and for numeric keys a number the database column can hold."""

from __future__ import annotations

import base64

DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 1000
# The longest key is a cluster URL (2048 characters, rmsfleet.contract.facts.MAX_URL_LENGTH);
# its token is 4/3 of that, in UTF-8 at most four bytes a character.
MAX_TOKEN_LENGTH = 12_000
MAX_ID = 2**63 - 1  # a BIGINT key

_EXPECTED = "a token from a previous response"


class BadPageToken(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: expected {reason}")
        self.field = field
        self.reason = reason


def page_size(requested: int) -> int:
    if requested < 0:
        raise BadPageToken("page_size", "a number >= 0")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(last_key: str) -> str:
    return base64.urlsafe_b64encode(last_key.encode("utf-8")).decode("ascii")


def decode_token(token: str) -> str | None:
    """The key after which the page starts; None for the first page."""
    if not token:
        return None
    if len(token) > MAX_TOKEN_LENGTH:
        raise BadPageToken("page_token", f"{_EXPECTED} (at most {MAX_TOKEN_LENGTH} characters, got {len(token)})")
    try:
        key = base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True).decode("utf-8")
    except (ValueError, UnicodeError):
        key = ""
    if not key or any(ord(ch) < 32 for ch in key):
        raise BadPageToken("page_token", _EXPECTED)
    return key


def decode_id_token(token: str) -> int | None:
    """decode_token for lists keyed by a numeric id."""
    key = decode_token(token)
    if key is None:
        return None
    if not key.isascii() or not key.isdigit() or int(key) > MAX_ID:
        raise BadPageToken("page_token", _EXPECTED)
    return int(key)
