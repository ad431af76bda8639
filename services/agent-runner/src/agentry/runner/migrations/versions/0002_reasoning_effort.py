"""Runs remember the reasoning effort they were started with.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (SQLite supports it with a constant default): batch mode would rebuild
    # the table on SQLite and could drop the partial unique index's WHERE clause.
    op.add_column("agent_runs", sa.Column("reasoning_effort", sa.String(10), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("agent_runs", "reasoning_effort")
