"""A run's place on its thread (`thread_seq`): the order a thread's event stream follows its runs.

1, 2, 3, ... per thread in the order runs got the thread (a run that waited and ended without
getting it: when it ended); NULL while a run waits. A unique index on (thread_id, thread_seq)
keeps the places distinct and lists a thread's runs in order. Runs that exist already are placed
in the order they were created (waiting ones get their place when they get the thread).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("agent_runs", sa.Column("thread_seq", sa.BigInteger))
    op.execute(
        "UPDATE agent_runs SET thread_seq = ("
        " SELECT count(*) FROM agent_runs AS earlier"
        " WHERE earlier.thread_id = agent_runs.thread_id AND earlier.status <> 'pending'"
        " AND (earlier.created_at < agent_runs.created_at"
        "      OR (earlier.created_at = agent_runs.created_at AND earlier.run_id <= agent_runs.run_id)))"
        " WHERE status <> 'pending'"
    )
    op.create_index("ux_agent_runs_thread_seq", "agent_runs", ["thread_id", "thread_seq"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_agent_runs_thread_seq", "agent_runs")
    op.drop_column("agent_runs", "thread_seq")
