"""Human in the loop: what a paused run waits for, and the user's answer until it is applied.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # JSON text, "" when none: `pending` while requires_action, `resolution` from the resume
    # request until the worker has applied it.
    op.add_column("agent_runs", sa.Column("pending_json", sa.Text, nullable=False, server_default=""))
    op.add_column("agent_runs", sa.Column("resolution_json", sa.Text, nullable=False, server_default=""))
    op.add_column("agent_runs", sa.Column("paused_at", sa.Float))


def downgrade() -> None:
    for name in ("paused_at", "resolution_json", "pending_json"):
        op.drop_column("agent_runs", name)
