"""Create the sandboxes table.

Revision ID: 0001_sandboxes
Revises:
Create Date: 2025-01-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_sandboxes"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sandboxes",
        sa.Column("sandbox_id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("project_id", sa.String(128), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("provider_ref", sa.Text, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("account_id", "project_id", name="uq_sandboxes_account_project"),
    )
    op.create_index("ix_sandboxes_last_used_at", "sandboxes", ["last_used_at"])


def downgrade() -> None:
    op.drop_index("ix_sandboxes_last_used_at", table_name="sandboxes")
    op.drop_table("sandboxes")
