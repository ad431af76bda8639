"""Per-thread run policies (multitask strategies) and the per-account cap on active runs.

A run may now wait for its thread (status `pending`): the one-active-run-per-thread index covers
only the run holding the thread (queued, running, cancelling, requires_action); two partial
indexes find a thread's waiting runs and count an account's active ones.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_OLD_HOLDING_SQL = "status IN ('queued', 'running', 'cancelling')"
_HOLDING_SQL = "status IN ('queued', 'running', 'cancelling', 'requires_action')"
_ACTIVE_SQL = "status IN ('pending', 'queued', 'running', 'cancelling', 'requires_action')"
_PENDING_SQL = "status = 'pending'"

_COLUMNS = (
    # reject, enqueue, interrupt or rollback: how the run was started.
    sa.Column("multitask_strategy", sa.String(20), nullable=False, server_default="reject"),
    # interrupt/rollback: the run that held the thread when this one was started.
    sa.Column("interrupts_run_id", sa.String(36)),
    # A pending run's place in its thread's line (lowest first).
    sa.Column("queue_order", sa.BigInteger),
    # A pending run's prompt (the user message as JSON), added to the thread when it gets it.
    sa.Column("prompt_json", sa.Text),
    # The thread's newest message position once the run held the thread (its prompt included).
    sa.Column("start_position", sa.BigInteger),
)


def _partial_index(name: str, columns: list[str], where: str, *, unique: bool = False) -> None:
    op.create_index(
        name, "agent_runs", columns, unique=unique, postgresql_where=sa.text(where), sqlite_where=sa.text(where)
    )


def upgrade() -> None:
    # Plain ADD COLUMNs: batch mode would rebuild the table on SQLite and could drop the partial
    # indexes' WHERE clauses.
    for column in _COLUMNS:
        op.add_column("agent_runs", column)
    op.drop_index("ux_agent_runs_one_active_per_thread", "agent_runs")
    _partial_index("ux_agent_runs_one_active_per_thread", ["thread_id"], _HOLDING_SQL, unique=True)
    _partial_index("ix_agent_runs_pending_per_thread", ["thread_id", "queue_order"], _PENDING_SQL)
    _partial_index("ix_agent_runs_active_per_account", ["account_id"], _ACTIVE_SQL)


def downgrade() -> None:
    # Waiting runs cannot exist without this revision: they are cancelled.
    op.execute(
        "UPDATE agent_runs SET status = 'cancelled', finish_reason = 'cancelled', "
        "error = 'cancelled by a database downgrade' WHERE status = 'pending'"
    )
    op.drop_index("ix_agent_runs_active_per_account", "agent_runs")
    op.drop_index("ix_agent_runs_pending_per_thread", "agent_runs")
    op.drop_index("ux_agent_runs_one_active_per_thread", "agent_runs")
    _partial_index("ux_agent_runs_one_active_per_thread", ["thread_id"], _OLD_HOLDING_SQL, unique=True)
    for column in reversed(_COLUMNS):
        op.drop_column("agent_runs", column.name)
