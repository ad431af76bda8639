"""The runner's first tables: projects, threads, messages, agent_runs, run_events.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ACTIVE_SQL = "status IN ('queued', 'running', 'cancelling')"


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("project_id", sa.String(36), primary_key=True),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_projects_account_id", "projects", ["account_id"])
    op.create_table(
        "threads",
        sa.Column("thread_id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.project_id"), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_threads_account_id", "threads", ["account_id"])
    op.create_table(
        "messages",
        sa.Column("position", _BigId, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.String(36), nullable=False, unique=True),
        sa.Column("thread_id", sa.String(36), sa.ForeignKey("threads.thread_id"), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("content_json", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_messages_thread_position", "messages", ["thread_id", "position"])
    op.create_table(
        "agent_runs",
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("thread_id", sa.String(36), sa.ForeignKey("threads.thread_id"), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("finish_reason", sa.String(40), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("completed_at", sa.Float),
    )
    op.create_index("ix_agent_runs_account_id", "agent_runs", ["account_id"])
    op.create_index(
        "ux_agent_runs_one_active_per_thread",
        "agent_runs",
        ["thread_id"],
        unique=True,
        postgresql_where=sa.text(_ACTIVE_SQL),
        sqlite_where=sa.text(_ACTIVE_SQL),
    )
    op.create_table(
        "run_events",
        sa.Column("run_id", sa.String(36), sa.ForeignKey("agent_runs.run_id"), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("terminal", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("run_events", "agent_runs", "messages", "threads", "projects"):
        op.drop_table(table)
