"""re-enrollment allowances: an operator lets one host enroll again while it holds a valid key

A host id that holds a valid (unrevoked) node key cannot be enrolled again (docs/security.md);
`rmsfleet-collector hosts allow-reenroll HOST --for DURATION` writes a row here that admits the
next enrollment of that host until `expires_at`, once. Purely additive, so collectors of the
previous release keep working during a rolling upgrade (they ignore the table, and still let any
secret holder replace a key until they are replaced).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-09 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reenroll_allowances",
        sa.Column("host_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("host_id", name=op.f("pk_reenroll_allowances")),
    )


def downgrade() -> None:
    op.drop_table("reenroll_allowances")
