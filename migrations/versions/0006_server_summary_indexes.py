"""indexes for the incremental pass's per-cluster counts (store/server_summary_sql.py)

An incremental pass reads the cluster and forest rules' inputs with GROUP BY queries limited to
the clusters and forests the changed hosts are or were in:

- ix_hosts_forest_server_version: the servers of a forest without visiting its clients (the
  bulk of a forest's hosts);
- ix_hosts_server_root_cluster: the licensing clusters whose root is a changed cluster (D6);
- ix_hosts_client_cluster_client_version: the RTM clients of a cluster (D14) without visiting
  its SP1 and later clients.

Purely additive: collectors of the previous release keep working during a rolling upgrade. On
PostgreSQL each CREATE INDEX blocks writes to `hosts` while it builds (about a second per
100,000 hosts); run it when a short pause of ingest is acceptable.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 08:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_hosts_forest_server_version", ["forest", "server_version"]),
    ("ix_hosts_server_root_cluster", ["server_root_cluster"]),
    ("ix_hosts_client_cluster_client_version", ["client_cluster", "client_version"]),
)


def upgrade() -> None:
    for name, columns in INDEXES:
        op.create_index(name, "hosts", columns)


def downgrade() -> None:
    for name, _columns in reversed(INDEXES):
        op.drop_index(name, table_name="hosts")
