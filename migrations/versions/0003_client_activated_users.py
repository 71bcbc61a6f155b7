"""client activated users (D17) and the client built into Windows (D15)

Adds `client_activated_users` to `hosts` and `host_history`: how many user profiles hold a machine
certificate, NULL where the profiles were not read. The new version value `BUILTIN` and the
activation value `unknown` fit the existing string columns, so they need no schema change.
Purely additive, so collectors of the previous release keep working during a rolling upgrade.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 01:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("hosts", "host_history"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("client_activated_users", sa.Integer(), nullable=True))


def downgrade() -> None:
    for table in ("host_history", "hosts"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("client_activated_users")
