"""The account the scanner logs on to its targets with: from a credentials file, the environment
or a Kerberos ticket cache. Never from the command line (it would show in `ps` and in shell
history), and never printed: `Credentials`' repr hides the secrets, and no message here quotes a
value read from the file.

Where they come from, the first that applies:

1. a credentials file (`--credentials-file FILE`, `RMSFLEET_SCAN_CREDENTIALS_FILE` or `[scan]
   credentials_file`): TOML, readable by its owner only on POSIX (like the node keys, it is a
   credential; a file others may read is refused, not used):

       username = "rmsscan"
       domain = "CORP"               # "" or absent: the target's own account database
       password = "..."              # or nthash = "<32 hex digits>" (pass-the-hash, as impacket)
       # kerberos = true             # use the ticket cache in KRB5CCNAME instead of a password
       # kdc = "dc01.corp.example"   # when DNS cannot find the KDC

2. the environment: `RMSFLEET_SCAN_USERNAME`, `RMSFLEET_SCAN_PASSWORD`, `RMSFLEET_SCAN_DOMAIN`
   (a systemd `LoadCredential=`/`EnvironmentFile=` or a scheduled task's protected variables);
3. a Kerberos ticket cache: `KRB5CCNAME` set (by `kinit` or a keytab-driven `k5start`) and none
   of the above; `RMSFLEET_SCAN_USERNAME`/`RMSFLEET_SCAN_DOMAIN` may name the principal, else the
   cache's own is used.

`DOMAIN\\user` and `user@domain` in a username are split into domain and user.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

from rmsfleet.agent.scanner.remote import Credentials

ENV_FILE = "RMSFLEET_SCAN_CREDENTIALS_FILE"
ENV_USERNAME = "RMSFLEET_SCAN_USERNAME"
ENV_PASSWORD = "RMSFLEET_SCAN_PASSWORD"
ENV_DOMAIN = "RMSFLEET_SCAN_DOMAIN"
ENV_KDC = "RMSFLEET_SCAN_KDC"
ENV_CCACHE = "KRB5CCNAME"

_FILE_KEYS = ("username", "domain", "password", "nthash", "lmhash", "kerberos", "kdc")
_HASH = re.compile(r"^[0-9A-Fa-f]{32}$")


class CredentialsError(Exception):
    """Credentials that cannot be used; one line, never holding a secret."""


def split_username(username: str, domain: str) -> tuple[str, str]:
    """`CORP\\user` -> (user, CORP); `user@corp.example` -> (user, corp.example); else as given.
    A domain given separately wins only when the username names none."""
    if "\\" in username:
        named, _, user = username.partition("\\")
        return user, named
    if "@" in username:
        user, _, named = username.rpartition("@")
        return user, named
    return username, domain


def _private(path: Path) -> bool:
    if os.name != "posix":
        # On Windows the folder's ACL protects the file (docs/scanner.md); there is no mode.
        return True
    return path.stat().st_mode & 0o077 == 0


def read_credentials_file(path: Path) -> Credentials:
    try:
        if not _private(path):
            mode = path.stat().st_mode & 0o777
            raise CredentialsError(
                f"credentials file {path}: readable by others than its owner (mode {mode:04o}): "
                f"run `chmod 600 {path}` (it holds a password)"
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CredentialsError(f"credentials file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(
            f"credentials file {path}: cannot read: {getattr(exc, 'strerror', None) or type(exc).__name__}"
        ) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message names the line and column, never the text there.
        raise CredentialsError(f"credentials file {path}: not valid TOML: {exc}") from None
    for key in document:
        if key not in _FILE_KEYS:
            raise CredentialsError(f"credentials file {path}: {key}: unknown key; known keys: {', '.join(_FILE_KEYS)}")

    def text_of(key: str) -> str:
        value = document.get(key, "")
        if not isinstance(value, str):
            raise CredentialsError(f"credentials file {path}: {key}: expected a string")
        return value

    kerberos = document.get("kerberos", False)
    if not isinstance(kerberos, bool):
        raise CredentialsError(f"credentials file {path}: kerberos: expected true or false")
    username, domain = split_username(text_of("username").strip(), text_of("domain").strip())
    password = text_of("password")
    nthash = text_of("nthash").strip()
    lmhash = text_of("lmhash").strip()
    for key, value in (("nthash", nthash), ("lmhash", lmhash)):
        if value and not _HASH.match(value):
            raise CredentialsError(f"credentials file {path}: {key}: expected 32 hexadecimal digits")
    if not kerberos and not username:
        raise CredentialsError(f"credentials file {path}: username: missing (or set kerberos = true)")
    if not kerberos and not (password or nthash):
        raise CredentialsError(f"credentials file {path}: password (or nthash): missing")
    kdc = text_of("kdc").strip() or None
    return Credentials(
        username=username,
        password=password,
        domain=domain,
        lmhash=lmhash,
        nthash=nthash,
        use_kerberos=kerberos,
        kdc=kdc,
    )


def load_credentials(file: Path | None, environ: Mapping[str, str]) -> tuple[Credentials, str]:
    """The credentials to log on with and where they came from (for the log: `file X`,
    `environment`, `Kerberos ticket cache`). Raises CredentialsError."""
    from_env = environ.get(ENV_FILE, "").strip()
    if file is None and from_env:
        file = Path(from_env)
    if file is not None:
        return read_credentials_file(file), f"credentials file {file}"
    username_raw = environ.get(ENV_USERNAME, "").strip()
    password = environ.get(ENV_PASSWORD, "")
    username, domain = split_username(username_raw, environ.get(ENV_DOMAIN, "").strip())
    kdc = environ.get(ENV_KDC, "").strip() or None
    if password:
        if not username:
            raise CredentialsError(f"{ENV_PASSWORD} is set but {ENV_USERNAME} is not: set both")
        return Credentials(username=username, password=password, domain=domain, kdc=kdc), "environment"
    if environ.get(ENV_CCACHE, "").strip():
        return (
            Credentials(username=username, domain=domain, use_kerberos=True, kdc=kdc),
            f"Kerberos ticket cache ({ENV_CCACHE})",
        )
    if username:
        raise CredentialsError(
            f"{ENV_USERNAME} is set but no password: set {ENV_PASSWORD}, or {ENV_CCACHE} for a Kerberos ticket cache"
        )
    raise CredentialsError(
        "no credentials to log on to the targets with: give --credentials-file FILE (mode 600), set "
        f"{ENV_USERNAME} and {ENV_PASSWORD} (and {ENV_DOMAIN}), or {ENV_CCACHE} for a Kerberos ticket cache"
    )
