"""Opaque page tokens for keyset paging: clients hand back what they were given."""

from __future__ import annotations

import base64

DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 1000


class BadPageToken(ValueError):
    pass


def page_size(requested: int) -> int:
    if requested < 0:
        raise BadPageToken("page_size: expected a number >= 0")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(last_key: str) -> str:
    return base64.urlsafe_b64encode(last_key.encode("utf-8")).decode("ascii")


def decode_token(token: str) -> str | None:
    if not token:
        return None
    try:
        key = base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True).decode("utf-8")
    except (ValueError, UnicodeError):
        key = ""
    if not key:
        raise BadPageToken("page_token: expected a token from a previous response")
    return key
