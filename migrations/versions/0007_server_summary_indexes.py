"""indexes for the incremental pass's per-cluster counts (store/server_summary_sql.py)

An incremental pass reads the cluster and forest rules' inputs with GROUP BY queries limited to
the clusters and forests the changed hosts are or were in:

- ix_hosts_forest_server_version replaces ix_hosts_forest (its prefix serves every query by
  forest as before) and finds the servers of a forest without visiting its clients, the bulk of
  a forest's hosts;
- ix_hosts_server_root_cluster: the licensing clusters whose root is a changed cluster (D6).

The RTM clients of a cluster (D14) are read through ix_hosts_client_cluster, and only when the
cluster's SP1-or-later versions moved. Every index costs each heartbeat's UPDATE (it changes the
indexed last_seen, so PostgreSQL inserts into every index of `hosts`): one index more in all.

Collectors of the previous release keep working during a rolling upgrade. On PostgreSQL each
CREATE INDEX blocks writes to `hosts` while it builds (longer the larger the fleet); run it when
a short pause of ingest is acceptable.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 08:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_hosts_forest_server_version", "hosts", ["forest", "server_version"])
    op.drop_index("ix_hosts_forest", table_name="hosts")
    op.create_index("ix_hosts_server_root_cluster", "hosts", ["server_root_cluster"])


def downgrade() -> None:
    op.drop_index("ix_hosts_server_root_cluster", table_name="hosts")
    op.create_index("ix_hosts_forest", "hosts", ["forest"])
    op.drop_index("ix_hosts_forest_server_version", table_name="hosts")
