"""Credit accounts and the ledger that explains every balance.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credit_accounts",
        sa.Column("account_id", sa.String(255), nullable=False),
        sa.Column("balance_micros", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("account_id", name="pk_credit_accounts"),
    )
    op.create_table(
        "credit_ledger",
        sa.Column("entry_id", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(255), nullable=False),
        sa.Column("amount_micros", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(255), nullable=True),
        sa.Column("step", sa.Integer, nullable=True),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("entry_id", name="pk_credit_ledger"),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["credit_accounts.account_id"],
            name="fk_credit_ledger_account_id_credit_accounts",
        ),
        sa.UniqueConstraint("run_id", "step", name="uq_credit_ledger_run_id_step"),
        sa.CheckConstraint("kind IN ('grant', 'usage', 'adjustment')", name="ck_credit_ledger_kind"),
    )
    op.create_index("ix_credit_ledger_account_id", "credit_ledger", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_credit_ledger_account_id", table_name="credit_ledger")
    op.drop_table("credit_ledger")
    op.drop_table("credit_accounts")
