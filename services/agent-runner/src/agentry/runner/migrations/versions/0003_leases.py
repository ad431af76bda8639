"""Durable runs: leases with a fencing epoch, attempts, dispatch bookkeeping and the run's phase.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COLUMNS = (
    # The worker process holding the run's lease, the lease's end (epoch seconds) and its epoch:
    # every claim increments the epoch, and every write of the run's messages and events is
    # fenced on it, so a worker that lost its lease can never write again.
    sa.Column("worker_id", sa.String(64)),
    sa.Column("lease_expires_at", sa.Float),
    sa.Column("lease_epoch", sa.Integer, nullable=False, server_default="0"),
    # How many times a worker has taken the run (1 = the first worker; more = resumed).
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    # When a job for the run was last handed to the broker; NULL = never confirmed.
    sa.Column("dispatched_at", sa.Float),
    sa.Column("phase", sa.String(40), nullable=False, server_default="waiting_for_worker"),
    sa.Column("phase_detail", sa.String(200), nullable=False, server_default=""),
    sa.Column("phase_since", sa.Float),
    # The last time the run wrote a durable event (idle deadline).
    sa.Column("last_event_at", sa.Float),
)


def upgrade() -> None:
    # Plain ADD COLUMNs: batch mode would rebuild the table on SQLite and could drop the partial
    # unique index's WHERE clause.
    for column in _COLUMNS:
        op.add_column("agent_runs", column)
    op.create_index("ix_agent_runs_status_lease", "agent_runs", ["status", "lease_expires_at"])


def downgrade() -> None:
    op.drop_index("ix_agent_runs_status_lease", "agent_runs")
    for column in reversed(_COLUMNS):
        op.drop_column("agent_runs", column.name)
