"""the evaluation change feed: hosts changed by any replica, for the replica that evaluates

Every collector's group-commit writer inserts one row per host whose facts changed (or that came
back from being stale) in the same transaction as the reports; the replica holding the evaluation
lock consumes the rows in id order and deletes them in the transaction that writes the violations
they lead to (docs/deploy.md, "Replicas").

Purely additive, so collectors of the previous release keep working during a rolling upgrade:
they neither write nor read the table. Their changes reach evaluation as before (their own pass,
when it gets the lock, or the next full pass), and while one of them evaluates, the rows the new
collectors write wait in the table (nothing is lost) until a new collector evaluates.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 07:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "evaluation_feed",
        # SQLite auto-increments only an INTEGER PRIMARY KEY; PostgreSQL gets 64 bits.
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("host_id", sa.String(length=255), nullable=False),
        sa.Column("touches_servers", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluation_feed")),
    )


def downgrade() -> None:
    op.drop_table("evaluation_feed")
