"""The user who started a run (`user_id`): Langfuse traces name it (issue 11). "" for older runs.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("agent_runs", sa.Column("user_id", sa.String(64), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("agent_runs", "user_id")
