"""Every ledger write gets an idempotency key; more entry kinds; subscriptions; processed events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

KINDS = ("grant", "monthly_allowance", "top_up", "usage", "refund", "expiration", "adjustment")


def upgrade() -> None:
    with op.batch_alter_table("credit_ledger") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(512), nullable=True))
        batch.add_column(sa.Column("source", sa.String(16), nullable=True))
        batch.add_column(sa.Column("quantity", sa.Double, nullable=False, server_default="0"))
        batch.add_column(sa.Column("note", sa.String(255), nullable=False, server_default=""))
    # Keys for what was written before keys existed: usage by (run, step), the first grant of an
    # account is its opening grant, anything else keyed by its own entry id.
    op.execute(
        "UPDATE credit_ledger SET idempotency_key = 'usage:' || run_id || ':' || step, source = 'model' "
        "WHERE kind = 'usage'"
    )
    op.execute(
        "UPDATE credit_ledger SET idempotency_key = 'open:' || account_id WHERE kind = 'grant' AND "
        "entry_id = (SELECT l2.entry_id FROM credit_ledger l2 WHERE l2.account_id = credit_ledger.account_id "
        "AND l2.kind = 'grant' ORDER BY l2.created_at, l2.entry_id LIMIT 1)"
    )
    op.execute("UPDATE credit_ledger SET idempotency_key = 'legacy:' || entry_id WHERE idempotency_key IS NULL")
    with op.batch_alter_table("credit_ledger") as batch:
        batch.alter_column("idempotency_key", existing_type=sa.String(512), nullable=False)
        batch.alter_column("kind", existing_type=sa.String(16), type_=sa.String(24))
        batch.drop_constraint("uq_credit_ledger_run_id_step", type_="unique")
        batch.drop_constraint("ck_credit_ledger_kind", type_="check")
        batch.create_check_constraint("ck_credit_ledger_kind", "kind IN (" + ", ".join(f"'{k}'" for k in KINDS) + ")")
        batch.create_unique_constraint("uq_credit_ledger_account_id_idempotency_key", ["account_id", "idempotency_key"])
    op.create_index("ix_credit_ledger_account_created", "credit_ledger", ["account_id", "created_at"])
    op.create_table(
        "subscriptions",
        sa.Column("account_id", sa.String(255), nullable=False),
        sa.Column("plan_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("current_period_start", sa.Double, nullable=True),
        sa.Column("current_period_end", sa.Double, nullable=True),
        sa.Column("stripe_customer_id", sa.String(255), nullable=True),
        sa.Column("stripe_subscription_id", sa.String(255), nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("event_created", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("account_id", name="pk_subscriptions"),
        sa.UniqueConstraint("stripe_customer_id", name="uq_subscriptions_stripe_customer_id"),
    )
    op.create_table(
        "processed_events",
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(128), nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("processed_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_processed_events"),
    )


def downgrade() -> None:
    op.drop_table("processed_events")
    op.drop_table("subscriptions")
    op.drop_index("ix_credit_ledger_account_created", table_name="credit_ledger")
    with op.batch_alter_table("credit_ledger") as batch:
        batch.drop_constraint("uq_credit_ledger_account_id_idempotency_key", type_="unique")
        batch.drop_constraint("ck_credit_ledger_kind", type_="check")
        batch.create_check_constraint("ck_credit_ledger_kind", "kind IN ('grant', 'usage', 'adjustment')")
        batch.create_unique_constraint("uq_credit_ledger_run_id_step", ["run_id", "step"])
        batch.drop_column("note")
        batch.drop_column("quantity")
        batch.drop_column("source")
        batch.drop_column("idempotency_key")
