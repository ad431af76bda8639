"""The credit ledger on SQLAlchemy Core: one code path for SQLite (dev) and PostgreSQL (production)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..domain import Charge, EntryKind, LedgerEntry, Usage
from ..errors import AccountNotFound

# Named constraints, so migrations can refer to them the same way on both databases.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s_%(column_1_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

credit_accounts = sa.Table(
    "credit_accounts",
    metadata,
    sa.Column("account_id", sa.String(255), primary_key=True),
    sa.Column("balance_micros", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)

credit_ledger = sa.Table(
    "credit_ledger",
    metadata,
    sa.Column("entry_id", sa.String(32), primary_key=True),
    sa.Column(
        "account_id", sa.String(255), sa.ForeignKey("credit_accounts.account_id"), nullable=False, index=True
    ),
    sa.Column("amount_micros", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("run_id", sa.String(255), nullable=True),
    sa.Column("step", sa.Integer, nullable=True),
    sa.Column("model", sa.String(255), nullable=True),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("created_at", sa.Double, nullable=False),
    # The idempotency key of usage; grants and adjustments carry no run, and NULLs never collide.
    sa.UniqueConstraint("run_id", "step"),
    sa.CheckConstraint("kind IN ('grant', 'usage', 'adjustment')", name="kind"),
)


class SqlCreditLedger:
    """CreditLedger over an AsyncEngine.

    Races are settled by the database, not by reading first: accounts and usage entries are
    inserted with ON CONFLICT DO NOTHING, and balances move with one atomic UPDATE. Every
    transaction starts with a write, so SQLite takes its write lock up front instead of failing
    to upgrade a read snapshot.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database dialect: {engine.dialect.name}")
        self._engine = engine
        self._clock = clock
        self._new_id = new_id

    def _insert(self, table: sa.Table):
        dialect = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(table)

    async def open_account(self, account_id: str, opening_grant_micros: int) -> int:
        existing = await self.balance(account_id)
        if existing is not None:
            return existing
        now = self._clock()
        async with self._engine.begin() as conn:
            opened = await conn.execute(
                self._insert(credit_accounts)
                .values(account_id=account_id, balance_micros=opening_grant_micros, created_at=now)
                .on_conflict_do_nothing(index_elements=["account_id"])
                .returning(credit_accounts.c.account_id)
            )
            if opened.first() is None:
                # Another caller opened it between our read and our insert; theirs is the grant.
                return await _balance_in(conn, account_id)
            await conn.execute(
                credit_ledger.insert().values(
                    entry_id=self._new_id(),
                    account_id=account_id,
                    amount_micros=opening_grant_micros,
                    kind="grant",
                    created_at=now,
                )
            )
        return opening_grant_micros

    async def balance(self, account_id: str) -> int | None:
        async with self._engine.connect() as conn:
            return await conn.scalar(
                sa.select(credit_accounts.c.balance_micros).where(credit_accounts.c.account_id == account_id)
            )

    async def charge(self, usage: Usage) -> Charge:
        try:
            async with self._engine.begin() as conn:
                recorded = await conn.execute(
                    self._insert(credit_ledger)
                    .values(
                        entry_id=self._new_id(),
                        account_id=usage.account_id,
                        amount_micros=-usage.cost_micros,
                        kind="usage",
                        run_id=usage.run_id,
                        step=usage.step,
                        model=usage.model,
                        prompt_tokens=usage.prompt_tokens,
                        completion_tokens=usage.completion_tokens,
                        created_at=self._clock(),
                    )
                    .on_conflict_do_nothing(index_elements=["run_id", "step"])
                    .returning(credit_ledger.c.entry_id)
                )
                if recorded.first() is None:
                    return Charge(balance_micros=await _balance_in(conn, usage.account_id), charged=False)
                balance = await _add(conn, usage.account_id, -usage.cost_micros)
                return Charge(balance_micros=balance, charged=True)
        except sa_exc.IntegrityError as exc:
            # ON CONFLICT covers the idempotency key only; what is left is the account foreign key.
            raise AccountNotFound(f"account {usage.account_id!r} has not been opened") from exc

    async def credit(self, account_id: str, amount_micros: int, *, kind: EntryKind) -> int:
        async with self._engine.begin() as conn:
            balance = await _add(conn, account_id, amount_micros)
            await conn.execute(
                credit_ledger.insert().values(
                    entry_id=self._new_id(),
                    account_id=account_id,
                    amount_micros=amount_micros,
                    kind=kind,
                    created_at=self._clock(),
                )
            )
        return balance

    async def entries(self, account_id: str) -> list[LedgerEntry]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(credit_ledger)
                .where(credit_ledger.c.account_id == account_id)
                .order_by(credit_ledger.c.created_at, credit_ledger.c.entry_id)
            )
            return [_entry(row) for row in rows]


async def _add(conn: AsyncConnection, account_id: str, amount_micros: int) -> int:
    # Relative to the stored value, so concurrent charges never overwrite each other.
    balance = await conn.scalar(
        sa.update(credit_accounts)
        .where(credit_accounts.c.account_id == account_id)
        .values(balance_micros=credit_accounts.c.balance_micros + amount_micros)
        .returning(credit_accounts.c.balance_micros)
    )
    if balance is None:
        raise AccountNotFound(f"account {account_id!r} has not been opened")
    return balance


async def _balance_in(conn: AsyncConnection, account_id: str) -> int:
    balance = await conn.scalar(
        sa.select(credit_accounts.c.balance_micros).where(credit_accounts.c.account_id == account_id)
    )
    if balance is None:
        raise AccountNotFound(f"account {account_id!r} has not been opened")
    return balance


def _entry(row: Row) -> LedgerEntry:
    return LedgerEntry(
        entry_id=row.entry_id,
        account_id=row.account_id,
        amount_micros=row.amount_micros,
        kind=row.kind,
        created_at=row.created_at,
        run_id=row.run_id,
        step=row.step,
        model=row.model,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
    )
