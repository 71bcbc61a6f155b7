"""The host facts contract (design.md, contract 1): the domain types every part shares.

Pure code: no grpc, no SQLAlchemy, no clock. The agent parses facts files into these types,
the collector converts wire messages into them, and the policies and the planner reason over
them. `validate` holds the rules both sides enforce, so a facts file the agent accepts is a
report the collector accepts.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rmsfleet.contract.text import unsafe_reason

MAX_ID_LENGTH = 255
MAX_URL_LENGTH = 2048
# A bound for a count of user profiles on one computer; more is a corrupt report, not a host.
MAX_ACTIVATED_USERS = 100_000


class Version(enum.Enum):
    """RMS releases, oldest first (domain.md, Versions). UNKNOWN is never ordered. BUILTIN is the
    RMS client that Windows Vista and later ship themselves (D15): a client only, none of
    RTM/SP1/SP2, never ordered against them, and self-activating."""

    RTM = "RTM"
    SP1 = "SP1"
    SP2 = "SP2"
    UNKNOWN = "UNKNOWN"
    BUILTIN = "BUILTIN"

    @property
    def rank(self) -> int | None:
        """Position in the release order, or None for UNKNOWN (which cannot be compared)."""
        return _RANK.get(self)


_RANK = {Version.RTM: 0, Version.SP1: 1, Version.SP2: 2}
# D15: every RMS server is RTM, SP1 or SP2 (or one the probe could not map); BUILTIN is a client.
SERVER_EXCLUDED_VERSIONS = frozenset({Version.BUILTIN})


class ClusterKind(enum.Enum):
    ROOT_CERTIFICATION = "root-certification"
    LICENSING = "licensing"


class Enrollment(enum.Enum):
    OFFLINE = "offline"
    ONLINE = "online"


class Activation(enum.Enum):
    """The observed activation state of a client: activated by itself (SP1 and later) or over the
    internet (RTM), not activated, or unknown (D17: from SP1 on it is per user, so a service
    account alone cannot tell). What a version *can* do is derived from the version."""

    SELF = "self"
    INTERNET = "internet"
    NONE = "none"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ServerFacts:
    version: Version
    cluster: str
    cluster_kind: ClusterKind
    root_cluster: str | None
    enrollment: Enrollment


@dataclass(frozen=True, slots=True)
class ClientFacts:
    version: Version
    activation: Activation
    cluster: str | None
    # User profiles holding a machine certificate (D17); None when the profiles were not read.
    activated_users: int | None = None


@dataclass(frozen=True, slots=True)
class HostFacts:
    host_id: str
    hostname: str
    forest: str
    server: ServerFacts | None
    client: ClientFacts | None


E = TypeVar("E", bound=enum.Enum)


class InvalidFacts(ValueError):
    """A fact outside the contract. `field` is the dotted path, `reason` what was expected."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def validate(facts: HostFacts) -> None:
    """Raise InvalidFacts for the first rule the facts break; the contract both sides enforce."""
    _check_text("host_id", facts.host_id, MAX_ID_LENGTH)
    _check_text("hostname", facts.hostname, MAX_ID_LENGTH)
    _check_text("forest", facts.forest, MAX_ID_LENGTH)
    if facts.server is None and facts.client is None:
        raise InvalidFacts("server", "a host reports a server part, a client part or both")
    if facts.server is not None:
        server = facts.server
        if server.version in SERVER_EXCLUDED_VERSIONS:
            # D15: Windows ships a client of its own; every RMS server is RTM, SP1 or SP2.
            raise InvalidFacts("server.version", "RTM, SP1, SP2 or UNKNOWN (BUILTIN is a client only)")
        _check_text("server.cluster", server.cluster, MAX_URL_LENGTH)
        if server.cluster_kind is ClusterKind.LICENSING:
            # D6: a licensing-only cluster is subenrolled under a root certification cluster.
            if not server.root_cluster:
                raise InvalidFacts("server.root_cluster", "a licensing cluster names its root certification cluster")
            _check_text("server.root_cluster", server.root_cluster, MAX_URL_LENGTH)
            if server.root_cluster == server.cluster:
                raise InvalidFacts("server.root_cluster", "a licensing cluster cannot be its own root")
        elif server.root_cluster:
            raise InvalidFacts("server.root_cluster", "only a licensing cluster has a root cluster")
    if facts.client is not None:
        client = facts.client
        if client.cluster is not None:
            _check_text("client.cluster", client.cluster, MAX_URL_LENGTH)
        users = client.activated_users
        if users is not None and not 0 <= users <= MAX_ACTIVATED_USERS:
            raise InvalidFacts("client.activated_users", f"a count from 0 to {MAX_ACTIVATED_USERS}, got {users}")


def _check_text(field: str, value: str, max_length: int) -> None:
    if not value or not value.strip():
        raise InvalidFacts(field, "a non-empty string")
    if len(value) > max_length:
        raise InvalidFacts(field, f"at most {max_length} characters, got {len(value)}")
    unsafe = unsafe_reason(value)
    if unsafe is not None:
        raise InvalidFacts(field, unsafe)


# --- the JSON form (facts files) --------------------------------------------------------------


def facts_from_json(document: Mapping[str, Any]) -> HostFacts:
    """Build HostFacts from the facts-file JSON object; InvalidFacts names the first bad field."""
    if not isinstance(document, Mapping):
        raise InvalidFacts("(top level)", "a JSON object")
    server_doc = document.get("server")
    client_doc = document.get("client")
    facts = HostFacts(
        host_id=_string(document, "host_id", ""),
        hostname=_string(document, "hostname", ""),
        forest=_string(document, "forest", ""),
        server=None if server_doc is None else _server_from_json(server_doc),
        client=None if client_doc is None else _client_from_json(client_doc),
    )
    validate(facts)
    return facts


def facts_to_json(facts: HostFacts) -> dict[str, Any]:
    server = facts.server
    client = facts.client
    return {
        "host_id": facts.host_id,
        "hostname": facts.hostname,
        "forest": facts.forest,
        "server": None
        if server is None
        else {
            "version": server.version.value,
            "cluster": server.cluster,
            "cluster_kind": server.cluster_kind.value,
            "root_cluster": server.root_cluster,
            "enrollment": server.enrollment.value,
        },
        "client": None if client is None else _client_to_json(client),
    }


def _client_to_json(client: ClientFacts) -> dict[str, Any]:
    document: dict[str, Any] = {
        "version": client.version.value,
        "activation": client.activation.value,
        "cluster": client.cluster,
    }
    # Optional (D17): left out when not read, so files written before it existed compare equal.
    if client.activated_users is not None:
        document["activated_users"] = client.activated_users
    return document


def load_facts_file(path: Path) -> HostFacts:
    """Read and validate a facts file. Errors read `FILE: FIELD: expected ...` on one line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FactsFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FactsFileError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from exc
    try:
        return facts_from_json(document)
    except InvalidFacts as exc:
        raise FactsFileError(f"{path}: {exc.field}: expected {exc.reason}") from exc


class FactsFileError(Exception):
    """A facts file that cannot be used; the message is the one line the user sees."""


def _server_from_json(doc: Any) -> ServerFacts:
    if not isinstance(doc, Mapping):
        raise InvalidFacts("server", "an object or null")
    root = doc.get("root_cluster")
    if root is not None and not isinstance(root, str):
        raise InvalidFacts("server.root_cluster", "a string or null")
    return ServerFacts(
        version=_enum(doc, "server.version", Version, SERVER_EXCLUDED_VERSIONS),
        cluster=_string(doc, "cluster", "server."),
        cluster_kind=_enum(doc, "server.cluster_kind", ClusterKind),
        root_cluster=root,
        enrollment=_enum(doc, "server.enrollment", Enrollment),
    )


def _client_from_json(doc: Any) -> ClientFacts:
    if not isinstance(doc, Mapping):
        raise InvalidFacts("client", "an object or null")
    cluster = doc.get("cluster")
    if cluster is not None and not isinstance(cluster, str):
        raise InvalidFacts("client.cluster", "a string or null")
    users = doc.get("activated_users")
    # bool is an int in Python; `true` is no count.
    if users is not None and (not isinstance(users, int) or isinstance(users, bool)):
        raise InvalidFacts("client.activated_users", "a whole number or null")
    return ClientFacts(
        version=_enum(doc, "client.version", Version),
        activation=_enum(doc, "client.activation", Activation),
        cluster=cluster,
        activated_users=users,
    )


def _string(doc: Mapping[str, Any], key: str, prefix: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise InvalidFacts(prefix + key, "a string" if key in doc else "a string (the field is missing)")
    return value


def _enum(doc: Mapping[str, Any], field: str, kind: type[E], exclude: frozenset[E] = frozenset()) -> E:
    key = field.rsplit(".", 1)[-1]
    value = doc.get(key)
    members = [member for member in kind if member not in exclude]
    allowed = ", ".join(repr(member.value) for member in members)
    if key not in doc:
        raise InvalidFacts(field, f"one of {allowed} (the field is missing)")
    found = next((member for member in members if member.value == value), None)
    if found is None:
        raise InvalidFacts(field, f"one of {allowed}, got {value!r}")
    return found
