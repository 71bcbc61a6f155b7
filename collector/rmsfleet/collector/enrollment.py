"""Enrollment and node keys (docs/security.md).

An agent enrolls once with a shared *enrollment secret* and gets a *node key*: 32 random bytes,
URL-safe base64. Every report then carries the node key, and the collector accepts a report only
when the key belongs to the host the report claims. Only a hash of the key is stored.

Why SHA-256 and not a password hash (bcrypt, scrypt, argon2): those slow a guesser down because
passwords have little entropy. A node key has 256 random bits; no guesser gets anywhere near a
preimage of its SHA-256, slowed or not, and keys are unique, so a salt would defend against
nothing (precomputed tables cannot cover a 2^256 space). A slow hash would cost CPU on every
report for no gain.

Pure code plus file reading: no grpc, no SQL (store/identity_sql.py holds the SQL).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from rmsfleet.collector.file_stamp import FileStamp, file_stamp
from rmsfleet.contract.secret_file import secret_lines
from rmsfleet.contract.text import shown

log = logging.getLogger(__name__)

KEY_BYTES = 32
HASH_SCHEME = "sha256"
MAX_SECRET_LENGTH = 1024


def new_node_key() -> str:
    """A fresh node key: 256 random bits from the OS CSPRNG, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(KEY_BYTES)


def hash_node_key(key: str) -> str:
    """What the database keeps of a node key: `sha256:<hex>` (see the module docstring for why a
    fast hash is right for a random key)."""
    return f"{HASH_SCHEME}:{hashlib.sha256(key.encode('utf-8')).hexdigest()}"


def same_hash(stored: str, presented: str) -> bool:
    """Compare two key hashes in constant time (a timing side channel must not reveal how much of
    a guessed hash matches)."""
    return hmac.compare_digest(stored.encode("ascii", "replace"), presented.encode("ascii", "replace"))


class KeyProblem(enum.Enum):
    """Why a report's node key was not accepted."""

    MISSING = "missing"  # the report carries no node key at all
    NOT_ENROLLED = "not-enrolled"  # no key is on record for the host the report claims
    REVOKED = "revoked"  # the host's key was revoked (`rmsfleet-collector hosts revoke`)
    WRONG_HOST = "wrong-host"  # a key is on record for the host, and it is not this one

    @property
    def authenticated(self) -> bool:
        """False: the caller has no valid credential (UNAUTHENTICATED, enroll again). True: it
        has a credential that does not grant this (PERMISSION_DENIED)."""
        return self is KeyProblem.WRONG_HOST


class NodeKeyRejected(Exception):
    """A report whose node key does not let it speak for the host it claims."""

    def __init__(self, host_id: str, problem: KeyProblem) -> None:
        self.host_id = host_id
        self.problem = problem
        super().__init__(self.message)

    @property
    def message(self) -> str:
        host = shown(self.host_id)
        if self.problem is KeyProblem.MISSING:
            return "no node key in the report: enroll first (this collector requires enrollment)"
        if self.problem is KeyProblem.NOT_ENROLLED:
            return f"host {host} is not enrolled: enroll first"
        if self.problem is KeyProblem.REVOKED:
            return f"key revoked: the node key of host {host} was revoked; enroll again"
        return (
            f"node key does not belong to host {host}: another machine enrolled as {host} after this key was "
            f"issued, or the key is another host's; if this machine is {host}, an operator allows it to enroll "
            f"again (rmsfleet-collector hosts allow-reenroll {host})"
        )


@dataclass(frozen=True, slots=True)
class _Loaded:
    stamp: FileStamp
    secrets: tuple[bytes, ...]


class SecretFile:
    """The collector's enrollment secrets: a file with one secret per line; blank lines and lines
    starting with `#` are ignored. Any listed secret is accepted, so a secret is rotated without
    downtime: add the new one, move the agents over, remove the old one.

    The file is re-read when its modification time, size or inode changes (checked on each
    enrollment, which is rare), so rotation needs no restart. When the file cannot be read after
    the start, the secrets read last stay in force and an ERROR says so: a half-finished edit or
    a permission slip must not lock every new agent out (empty the file to stop enrollment)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._loaded = self._read()  # at start an unreadable file is an error (OSError)
        if not self._loaded.secrets:
            log.warning("enrollment secret file %s lists no secret: every enrollment is refused", path)

    def _read(self) -> _Loaded:
        stamp = file_stamp(self.path)
        text = self.path.read_text(encoding="utf-8")
        return _Loaded(stamp, tuple(secret.encode("utf-8") for secret in secret_lines(text)))

    def secrets(self) -> tuple[bytes, ...]:
        with self._lock:
            try:
                if file_stamp(self.path) != self._loaded.stamp:
                    before = len(self._loaded.secrets)
                    self._loaded = self._read()
                    log.info(
                        "enrollment secret file %s changed: %d secret(s) accepted (were %d)",
                        self.path,
                        len(self._loaded.secrets),
                        before,
                    )
            except (OSError, UnicodeDecodeError) as exc:
                log.error(
                    "cannot re-read the enrollment secret file %s (%s): keeping the %d secret(s) read before",
                    self.path,
                    getattr(exc, "strerror", None) or exc,
                    len(self._loaded.secrets),
                )
            return self._loaded.secrets

    def accepts(self, presented: str) -> bool:
        """True when `presented` is one of the listed secrets (compared in constant time, and
        against every secret, so the time taken does not tell which one nearly matched)."""
        candidate = presented.strip().encode("utf-8")
        if not candidate or len(candidate) > MAX_SECRET_LENGTH:
            return False
        accepted = False
        for known in self.secrets():
            accepted |= hmac.compare_digest(known, candidate)
        return accepted

    def describe(self) -> str:
        return f"{self.path} ({len(self.secrets())} secret(s))"


def file_is_private(path: Path) -> bool:
    """False when others than the owner may read the file (POSIX only; always True elsewhere)."""
    if os.name != "posix":
        return True
    return path.stat().st_mode & 0o077 == 0
