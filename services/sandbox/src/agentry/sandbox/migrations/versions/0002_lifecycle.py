"""Sandbox lifecycle: spec, state changes, errors; `ready` becomes `started`.

Revision ID: 0002_lifecycle
Revises: 0001_sandboxes
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_lifecycle"
down_revision = "0001_sandboxes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sandboxes") as batch:
        batch.add_column(sa.Column("spec_json", sa.Text, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("error", sa.Text, nullable=False, server_default=""))
    op.execute("UPDATE sandboxes SET state = 'started' WHERE state = 'ready'")


def downgrade() -> None:
    op.execute("UPDATE sandboxes SET state = 'ready' WHERE state <> 'creating'")
    with op.batch_alter_table("sandboxes") as batch:
        batch.drop_column("error")
        batch.drop_column("state_changed_at")
        batch.drop_column("spec_json")
