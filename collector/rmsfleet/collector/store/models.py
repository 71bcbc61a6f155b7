"""SQLAlchemy models. The schema itself is created and changed only by the alembic migrations
under migrations/; a test proves the migrations at head match these models."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names, so migrations name what they create and can drop it again.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants 64 bits for history.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Timestamp = DateTime(timezone=True)
ID_LENGTH = 255
URL_LENGTH = 2048


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class FactColumns:
    """The host facts contract flattened into columns, shared by the current state and history."""

    hostname: Mapped[str] = mapped_column(String(ID_LENGTH))
    forest: Mapped[str] = mapped_column(String(ID_LENGTH))
    server_version: Mapped[str | None] = mapped_column(String(16))
    server_cluster: Mapped[str | None] = mapped_column(String(URL_LENGTH))
    server_cluster_kind: Mapped[str | None] = mapped_column(String(32))
    server_root_cluster: Mapped[str | None] = mapped_column(String(URL_LENGTH))
    server_enrollment: Mapped[str | None] = mapped_column(String(16))
    client_version: Mapped[str | None] = mapped_column(String(16))
    client_activation: Mapped[str | None] = mapped_column(String(16))
    client_cluster: Mapped[str | None] = mapped_column(String(URL_LENGTH))
    # D17 (migration 0003): user profiles holding a machine certificate; NULL when not read.
    client_activated_users: Mapped[int | None] = mapped_column(Integer)


class HostRow(FactColumns, Base):
    __tablename__ = "hosts"

    host_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    first_seen: Mapped[datetime] = mapped_column(Timestamp)
    last_seen: Mapped[datetime] = mapped_column(Timestamp)
    observed_at: Mapped[datetime] = mapped_column(Timestamp)
    last_sequence: Mapped[int] = mapped_column(BigInteger)
    agent_version: Mapped[str] = mapped_column(String(64))
    # Never written: node keys live in `node_keys` (migration 0002). Kept only because collectors
    # of the previous release still insert it during a rolling upgrade; a later migration drops it.
    node_key_hash: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (
        Index("ix_hosts_server_cluster", "server_cluster"),
        Index("ix_hosts_client_cluster", "client_cluster"),
        Index("ix_hosts_last_seen", "last_seen"),
        # Migration 0007: the incremental pass's per-cluster counts (store/server_summary_sql.py);
        # the first replaces ix_hosts_forest, whose queries its prefix serves.
        Index("ix_hosts_forest_server_version", "forest", "server_version"),
        Index("ix_hosts_server_root_cluster", "server_root_cluster"),
    )


class HostHistoryRow(FactColumns, Base):
    """One row per change of a host's facts (not per heartbeat)."""

    __tablename__ = "host_history"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    host_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("hosts.host_id", ondelete="CASCADE"))
    changed_at: Mapped[datetime] = mapped_column(Timestamp)
    sequence: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_host_history_host_id_changed_at", "host_id", "changed_at"),
        Index("ix_host_history_server_version", "server_version"),
    )


class NodeKeyRow(Base):
    """A host's node key from enrollment (docs/security.md). Kept apart from `hosts` because a host
    enrolls before its first report: there is no host row yet, and a placeholder host would show
    up in queries and policies.

    Only a hash of the key is stored: a copy of the database does not let anyone report as a host.
    One key per host; enrolling again replaces it (and clears `revoked_at`)."""

    __tablename__ = "node_keys"

    host_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    # "sha256:" + 64 hex digits; the prefix names the scheme so it can change without a guess.
    key_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)


class ReenrollAllowanceRow(Base):
    """An operator's permission for one more enrollment of a host that holds a valid node key
    (`rmsfleet-collector hosts allow-reenroll`, migration 0004): used up by the host's next
    enrollment, void after `expires_at`."""

    __tablename__ = "reenroll_allowances"

    host_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)


class ViolationRow(Base):
    __tablename__ = "violations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    policy: Mapped[str] = mapped_column(String(64))
    subject_kind: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(URL_LENGTH))
    severity: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text)
    since: Mapped[datetime] = mapped_column(Timestamp)
    resolved_at: Mapped[datetime | None] = mapped_column(Timestamp)

    __table_args__ = (
        Index("ix_violations_resolved_at_policy", "resolved_at", "policy"),
        Index("ix_violations_subject", "subject"),
    )


class ExemptionRow(Base):
    __tablename__ = "exemptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    policy: Mapped[str] = mapped_column(String(64))
    subject_kind: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(URL_LENGTH))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime | None] = mapped_column(Timestamp)


class ChangeFeedRow(Base):
    """A host whose facts changed (or that came back from being stale), written by the
    group-commit writer of any replica in its batch's transaction (migration 0005, the change
    feed). The replica that evaluates consumes the rows in id order and deletes them in the same
    transaction as the violations it writes: what is left is exactly what no pass has covered.
    No foreign key to `hosts`: the insert stays one cheap statement per batch, and a host
    deleted meanwhile is simply absent from the pass."""

    __tablename__ = "evaluation_feed"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    host_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    # The change can matter to the cluster and forest rules (AppliedReport.touches_servers).
    touches_servers: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class ApiTokenRow(Base):
    """An API token for people and tools (`rmsfleet-collector tokens create`, migration 0006).

    Only a hash of the token is stored: a copy of the database does not let anyone call the
    collector. `lookup_id` is the public part of the token, so one indexed read finds the row;
    `name` is what the audit trail and `tokens list|revoke` show."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    lookup_id: Mapped[str] = mapped_column(String(32), unique=True)
    # "sha256:" + 64 hex digits of the whole token.
    secret_hash: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)
    created_by: Mapped[str] = mapped_column(String(ID_LENGTH))


class AuditRow(Base):
    """One admin action or one refused call (migration 0006): who, what, when, from where, and
    the outcome. Written in the transaction of the action it records."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # The collector's clock (the CLI's for break-glass writes).
    at: Mapped[datetime] = mapped_column(Timestamp)
    # "token:NAME", "certificate:NAME", "break-glass" or "anonymous".
    actor: Mapped[str] = mapped_column(String(ID_LENGTH))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(Text)
    # The caller's address as gRPC saw it ("ipv4:127.0.0.1:50322"), or "local" for break-glass.
    peer: Mapped[str] = mapped_column(String(ID_LENGTH))
    # "ok" or "refused"; a refusal names its status code and why.
    outcome: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
