"""`--certificate-roles FILE`: client-certificate identities mapped to roles, one `NAME ROLE` a
line (`#` starts a comment). NAME is matched, without case, against the client certificate's
SAN DNS names and its CN, like the host-id binding (identity.CertificateNames); no wildcards.
A bad line stops the collector's start naming the file and the line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rmsfleet.collector.identity import CertificateNames
from rmsfleet.collector.tokens import BadName, Role, check_name, role_of


class CertificateRolesError(ValueError):
    pass


def _canonical(name: str) -> str:
    return name.strip().rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class CertificateRoles:
    path: Path
    # canonical name -> (the name as written, its role), in file order.
    roles: dict[str, tuple[str, Role]]

    def match(self, names: CertificateNames) -> tuple[str, Role] | None:
        """The first name of the certificate (DNS names, then the CN) that the file gives a role."""
        for name in [*names.dns_names, *([names.common_name] if names.common_name else [])]:
            if "*" in name:
                continue
            found = self.roles.get(_canonical(name))
            if found is not None:
                return found
        return None


def load_certificate_roles(path: Path) -> CertificateRoles:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CertificateRolesError(
            f"--certificate-roles {path}: cannot read: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    roles: dict[str, tuple[str, Role]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        where = f"--certificate-roles {path}:{number}"
        if len(parts) != 2:
            raise CertificateRolesError(f"{where}: expected `NAME ROLE`, got {len(parts)} words")
        name, role_name = parts
        try:
            check_name(name)
            role = role_of(role_name)
        except BadName as exc:
            raise CertificateRolesError(f"{where}: expected {exc}") from None
        if _canonical(name) in roles:
            raise CertificateRolesError(f"{where}: {name} is named twice")
        roles[_canonical(name)] = (name, role)
    return CertificateRoles(path, roles)
