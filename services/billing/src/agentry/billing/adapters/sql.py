"""The ledger and subscriptions on SQLAlchemy Core: one code path for SQLite (dev) and PostgreSQL.

Races are settled by the database, not by reading first: accounts, entries (by idempotency key)
and processed events are inserted with ON CONFLICT DO NOTHING, and balances move with one atomic
relative UPDATE in the same transaction as their entry, so balance == sum(entries) always.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agentry.servicekit.db import autocommit
from agentry.servicekit.db_direct import DirectStatement

from ..domain import (
    ENTRY_KINDS,
    Charge,
    EntryKind,
    LedgerEntry,
    LedgerWrite,
    Posted,
    Subscription,
    Usage,
    opening_key,
    usage_key,
)
from ..errors import AccountNotFound, InvalidBillingRequest

# Named constraints, so migrations can refer to them the same way on both databases.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
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

_KINDS_SQL = "kind IN (" + ", ".join(f"'{k}'" for k in ENTRY_KINDS) + ")"

credit_ledger = sa.Table(
    "credit_ledger",
    metadata,
    sa.Column("entry_id", sa.String(32), primary_key=True),
    sa.Column("account_id", sa.String(255), sa.ForeignKey("credit_accounts.account_id"), nullable=False, index=True),
    sa.Column("amount_micros", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(24), nullable=False),
    # Every write's idempotency key (usage:<run>:<step>, stripe-event:<id>, checkout:<id>, ...),
    # unique per account: one account's key can never swallow another account's write.
    sa.Column("idempotency_key", sa.String(512), nullable=False),
    sa.Column("run_id", sa.String(255), nullable=True),
    sa.Column("step", sa.Integer, nullable=True),
    sa.Column("model", sa.String(255), nullable=True),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("source", sa.String(16), nullable=True),
    sa.Column("quantity", sa.Double, nullable=False, server_default="0"),
    sa.Column("note", sa.String(255), nullable=False, server_default=""),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.CheckConstraint(_KINDS_SQL, name="kind"),
    sa.UniqueConstraint("account_id", "idempotency_key", name="uq_credit_ledger_account_id_idempotency_key"),
    sa.Index("ix_credit_ledger_account_created", "account_id", "created_at"),
)

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("account_id", sa.String(255), primary_key=True),
    sa.Column("plan_id", sa.String(64), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("current_period_start", sa.Double, nullable=True),
    sa.Column("current_period_end", sa.Double, nullable=True),
    sa.Column("stripe_customer_id", sa.String(255), nullable=True, unique=True),
    sa.Column("stripe_subscription_id", sa.String(255), nullable=True),
    sa.Column("cancel_at_period_end", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("event_created", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.Double, nullable=False),
)

processed_events = sa.Table(
    "processed_events",
    metadata,
    sa.Column("event_id", sa.String(255), primary_key=True),
    sa.Column("event_type", sa.String(128), nullable=False),
    sa.Column("created", sa.BigInteger, nullable=False),
    sa.Column("processed_at", sa.Double, nullable=False),
)


def _ledger_values(write: LedgerWrite, entry_id: str, now: float) -> dict[str, object]:
    """The ledger row of `write`, by column name."""
    return {
        "entry_id": entry_id,
        "account_id": write.account_id,
        "amount_micros": write.amount_micros,
        "kind": write.kind,
        "idempotency_key": write.key,
        "run_id": write.run_id,
        "step": write.step,
        "model": write.model,
        "prompt_tokens": write.prompt_tokens,
        "completion_tokens": write.completion_tokens,
        "source": write.source,
        "quantity": write.quantity,
        "note": write.note[:255],
        "created_at": now,
    }


def _ledger_insert(insert, write: LedgerWrite, entry_id: str, now: float):
    """INSERT of `write` into the ledger, nothing when its (account, key) was written before."""
    return insert.values(**_ledger_values(write, entry_id, now)).on_conflict_do_nothing(
        index_elements=["account_id", "idempotency_key"]
    )


@functools.cache
def _post_now_statement() -> sa.Update:
    """`post_now`'s one statement, built once (building it cost more CPU than running it): the
    ledger row (nothing when its key was written) and the balance moved by it, the new balance
    returned; the row's values (`_ledger_values`: every column) come as `p_<column>` parameters."""
    entry = (
        postgresql.insert(credit_ledger)
        .values({column.name: sa.bindparam(f"p_{column.name}", type_=column.type) for column in credit_ledger.c})
        .on_conflict_do_nothing(index_elements=["account_id", "idempotency_key"])
        .returning(credit_ledger.c.account_id, credit_ledger.c.amount_micros)
        .cte("entry")
    )
    return (
        sa.update(credit_accounts)
        .where(credit_accounts.c.account_id == entry.c.account_id)
        .values(balance_micros=credit_accounts.c.balance_micros + entry.c.amount_micros)
        .returning(credit_accounts.c.balance_micros)
        .add_cte(entry)
    )


@functools.cache
def _post_now_direct() -> DirectStatement:
    return DirectStatement(_post_now_statement())


def _dialect_insert(engine_or_conn, table: sa.Table):
    dialect = postgresql if engine_or_conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


class SqlBillingTx:
    """BillingTx on one open connection inside `engine.begin()` (see SqlBillingStore.transaction)."""

    def __init__(
        self,
        conn: AsyncConnection,
        *,
        clock: Callable[[], float],
        new_id: Callable[[], str],
        known_accounts: set[str] | None = None,
    ) -> None:
        self._conn = conn
        self._clock = clock
        self._new_id = new_id
        self.touched: set[str] = set()
        self.posted: set[str] = set()  # accounts this transaction wrote a ledger row for
        # Accounts seen to exist (they are never deleted): their opening INSERT is skipped.
        self._known = known_accounts if known_accounts is not None else set()  # read-only here

    def _insert(self, table: sa.Table):
        return _dialect_insert(self._conn, table)

    async def ensure_account(self, account_id: str) -> None:
        await self._conn.execute(
            self._insert(credit_accounts)
            .values(account_id=account_id, balance_micros=0, created_at=self._clock())
            .on_conflict_do_nothing(index_elements=["account_id"])
        )

    async def post(self, write: LedgerWrite) -> Posted:
        if write.account_id not in self._known:
            await self.ensure_account(write.account_id)
        recorded = await self._conn.execute(
            _ledger_insert(self._insert(credit_ledger), write, self._new_id(), self._clock()).returning(
                credit_ledger.c.entry_id
            )
        )
        if recorded.first() is None:
            return Posted(balance_micros=await _balance_in(self._conn, write.account_id), applied=False)
        balance = await _add(self._conn, write.account_id, write.amount_micros)
        self.touched.add(write.account_id)
        self.posted.add(write.account_id)
        return Posted(balance_micros=balance, applied=True)

    async def balance(self, account_id: str) -> int | None:
        return await self._conn.scalar(
            sa.select(credit_accounts.c.balance_micros).where(credit_accounts.c.account_id == account_id)
        )

    async def record_event(self, event_id: str, event_type: str, created: int) -> bool:
        inserted = await self._conn.execute(
            self._insert(processed_events)
            .values(event_id=event_id, event_type=event_type[:128], created=int(created), processed_at=self._clock())
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(processed_events.c.event_id)
        )
        return inserted.first() is not None

    async def subscription(self, account_id: str) -> Subscription | None:
        row = (
            await self._conn.execute(sa.select(subscriptions).where(subscriptions.c.account_id == account_id))
        ).first()
        return _subscription(row) if row else None

    async def upsert_subscription(self, sub: Subscription) -> bool:
        values = dict(
            plan_id=sub.plan_id,
            status=sub.status,
            current_period_start=sub.current_period_start,
            current_period_end=sub.current_period_end,
            stripe_customer_id=sub.stripe_customer_id,
            stripe_subscription_id=sub.stripe_subscription_id,
            cancel_at_period_end=sub.cancel_at_period_end,
            event_created=sub.event_created,
            updated_at=self._clock(),
        )
        stmt = self._insert(subscriptions).values(account_id=sub.account_id, **values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["account_id"],
            set_=values,
            where=subscriptions.c.event_created <= sub.event_created,
        ).returning(subscriptions.c.account_id)
        applied = (await self._conn.execute(stmt)).first() is not None
        if applied:
            self.touched.add(sub.account_id)
        return applied

    async def downgrade_to_free(self, account_id: str, *, free_plan_id: str, status: str, event_created: int) -> bool:
        current = await self.subscription(account_id)
        return await self.upsert_subscription(
            Subscription(
                account_id=account_id,
                plan_id=free_plan_id,
                status=status,
                stripe_customer_id=current.stripe_customer_id if current else None,
                event_created=event_created,
            )
        )

    async def set_customer(self, account_id: str, customer_id: str) -> None:
        await self._conn.execute(
            self._insert(subscriptions)
            .values(
                account_id=account_id,
                plan_id="",
                status="free",
                stripe_customer_id=customer_id,
                updated_at=self._clock(),
            )
            .on_conflict_do_update(index_elements=["account_id"], set_={"stripe_customer_id": customer_id})
        )
        self.touched.add(account_id)

    async def account_for_customer(self, customer_id: str) -> str | None:
        return await self._conn.scalar(
            sa.select(subscriptions.c.account_id).where(subscriptions.c.stripe_customer_id == customer_id)
        )


class SqlBillingStore:
    """BillingStore over an AsyncEngine (SQLite or PostgreSQL)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database dialect: {engine.dialect.name}")
        self.engine = engine
        # Reads and one-statement writes: one round trip each, no BEGIN/ROLLBACK around them.
        self._reads = autocommit(engine)
        self._clock = clock
        self._new_id = new_id
        self._known: set[str] = set()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlBillingTx]:
        async with self.engine.begin() as conn:
            tx = SqlBillingTx(conn, clock=self._clock, new_id=self._new_id, known_accounts=self._known)
            yield tx
        # Committed: the accounts it wrote exist for good (a rolled-back one may not).
        self._known |= tx.posted

    async def post_now(self, write: LedgerWrite) -> Posted:
        """`BillingTx.post` in a transaction of its own. On PostgreSQL, for an account known to
        exist, one statement and one round trip: the ledger row and the balance move together
        (a data-modifying WITH commits as one statement), nothing when the key was written."""
        if self.engine.dialect.name != "postgresql" or write.account_id not in self._known:
            async with self.transaction() as tx:
                return await tx.post(write)
        params = {f"p_{name}": value for name, value in _ledger_values(write, self._new_id(), self._clock()).items()}
        # Every run's usage: on the pooled asyncpg connection itself (servicekit.db_direct).
        balance = await _post_now_direct().value(self.engine, params)
        if balance is not None:
            return Posted(balance_micros=balance, applied=True)
        async with self._reads.connect() as conn:  # the key was written before: what it left
            return Posted(balance_micros=await _balance_in(conn, write.account_id), applied=False)

    async def balance(self, account_id: str) -> int | None:
        async with self._reads.connect() as conn:
            return await conn.scalar(
                sa.select(credit_accounts.c.balance_micros).where(credit_accounts.c.account_id == account_id)
            )

    async def snapshot(self, account_id: str) -> tuple[int | None, Subscription | None]:
        """Balance (None: never opened) and subscription, in one statement."""
        query = (
            sa.select(credit_accounts.c.balance_micros, subscriptions)
            .select_from(
                credit_accounts.outerjoin(subscriptions, subscriptions.c.account_id == credit_accounts.c.account_id)
            )
            .where(credit_accounts.c.account_id == account_id)
        )
        async with self._reads.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None, await self.subscription(account_id)
        return row.balance_micros, (_subscription(row) if row.account_id is not None else None)

    async def subscription(self, account_id: str) -> Subscription | None:
        async with self._reads.connect() as conn:
            row = (await conn.execute(sa.select(subscriptions).where(subscriptions.c.account_id == account_id))).first()
        return _subscription(row) if row else None

    async def stripe_customer(self, account_id: str) -> str | None:
        sub = await self.subscription(account_id)
        return sub.stripe_customer_id if sub else None

    async def entries(self, account_id: str) -> list[LedgerEntry]:
        async with self._reads.connect() as conn:
            rows = await conn.execute(
                sa.select(credit_ledger)
                .where(credit_ledger.c.account_id == account_id)
                .order_by(credit_ledger.c.created_at, credit_ledger.c.entry_id)
            )
            return [_entry(row) for row in rows]

    async def usage(
        self, account_id: str, *, group_by: str, cursor: str, limit: int, since: float = 0, until: float = 0
    ) -> tuple[list[dict], str]:
        """Usage grouped by "day" (UTC date), "model" or "run", ordered by last use, newest first.

        Keyset-paginated on (last_at, key): the cursor is opaque base64 JSON of the last row's.
        Costs are positive micro-USD (the ledger stores usage as negative amounts).
        """
        if group_by not in ("day", "model", "run"):
            raise InvalidBillingRequest("group_by must be one of day, model, run")
        t = credit_ledger
        if group_by == "day":
            # Whole UTC days since the epoch: the same integer on SQLite and PostgreSQL.
            key = sa.cast(sa.func.floor(t.c.created_at / 86400), sa.BigInteger)
        elif group_by == "model":
            key = sa.func.coalesce(t.c.model, t.c.source, "")  # sandbox time groups as "sandbox"
        else:
            key = sa.func.coalesce(t.c.run_id, "")
        where = [t.c.account_id == account_id, t.c.kind == "usage"]
        if since:
            where.append(t.c.created_at >= since)
        if until:
            where.append(t.c.created_at < until)
        grouped = (
            sa.select(
                key.label("k"),
                (-sa.func.sum(t.c.amount_micros)).label("cost"),
                sa.func.sum(t.c.prompt_tokens).label("pt"),
                sa.func.sum(t.c.completion_tokens).label("ct"),
                sa.func.count().label("calls"),
                sa.func.sum(sa.case((t.c.source == "sandbox", t.c.quantity), else_=0.0)).label("sbx"),
                sa.func.min(t.c.created_at).label("first_at"),
                sa.func.max(t.c.created_at).label("last_at"),
            )
            .where(*where)
            .group_by(key)
        ).subquery()
        query = sa.select(grouped).order_by(grouped.c.last_at.desc(), grouped.c.k.desc()).limit(limit + 1)
        if cursor:
            try:
                last_at, last_key = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
                last_at = float(last_at)
            except Exception as exc:
                raise InvalidBillingRequest("cursor is not one this API gave out") from exc
            query = query.where(
                sa.or_(grouped.c.last_at < last_at, sa.and_(grouped.c.last_at == last_at, grouped.c.k < last_key))
            )
        async with self._reads.connect() as conn:
            rows = list(await conn.execute(query))
        more = len(rows) > limit
        rows = rows[:limit]
        out = [
            dict(
                key=_day(r.k) if group_by == "day" else str(r.k),
                cost_micros=int(r.cost or 0),
                prompt_tokens=int(r.pt or 0),
                completion_tokens=int(r.ct or 0),
                calls=int(r.calls),
                sandbox_seconds=float(r.sbx or 0),
                first_at=float(r.first_at),
                last_at=float(r.last_at),
            )
            for r in rows
        ]
        next_cursor = ""
        if more and rows:
            last = rows[-1]
            next_cursor = base64.urlsafe_b64encode(orjson.dumps([last.last_at, last.k])).decode()
        return out, next_cursor


def _day(days_since_epoch) -> str:
    return datetime.fromtimestamp(int(days_since_epoch) * 86400, UTC).strftime("%Y-%m-%d")


class SqlCreditLedger:
    """The pre-plans CreditLedger API, kept as a thin layer over SqlBillingStore's transactions."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.store = SqlBillingStore(engine, clock=clock, new_id=new_id)

    async def open_account(self, account_id: str, opening_grant_micros: int) -> int:
        existing = await self.store.balance(account_id)
        if existing is not None:
            return existing
        async with self.store.transaction() as tx:
            posted = await tx.post(
                LedgerWrite(
                    account_id=account_id, amount_micros=opening_grant_micros, kind="grant", key=opening_key(account_id)
                )
            )
        return posted.balance_micros

    async def balance(self, account_id: str) -> int | None:
        return await self.store.balance(account_id)

    async def charge(self, usage: Usage) -> Charge:
        async with self.store.transaction() as tx:
            if await tx.balance(usage.account_id) is None:
                raise AccountNotFound(f"account {usage.account_id!r} has not been opened")
            posted = await tx.post(
                LedgerWrite(
                    account_id=usage.account_id,
                    amount_micros=-usage.cost_micros,
                    kind="usage",
                    key=usage_key(usage.run_id, usage.step),
                    run_id=usage.run_id,
                    step=usage.step,
                    model=usage.model,
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    source="model",
                )
            )
        return Charge(balance_micros=posted.balance_micros, charged=posted.applied)

    async def credit(self, account_id: str, amount_micros: int, *, kind: EntryKind) -> int:
        async with self.store.transaction() as tx:
            if await tx.balance(account_id) is None:
                raise AccountNotFound(f"account {account_id!r} has not been opened")
            posted = await tx.post(
                LedgerWrite(
                    account_id=account_id, amount_micros=amount_micros, kind=kind, key=f"credit:{uuid.uuid4().hex}"
                )
            )
        return posted.balance_micros

    async def entries(self, account_id: str) -> list[LedgerEntry]:
        return await self.store.entries(account_id)


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


def _subscription(row: Row) -> Subscription:
    return Subscription(
        account_id=row.account_id,
        plan_id=row.plan_id,
        status=row.status,
        current_period_start=row.current_period_start,
        current_period_end=row.current_period_end,
        stripe_customer_id=row.stripe_customer_id,
        stripe_subscription_id=row.stripe_subscription_id,
        cancel_at_period_end=bool(row.cancel_at_period_end),
        event_created=int(row.event_created),
        updated_at=row.updated_at,
    )


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
        key=row.idempotency_key,
        source=row.source,
        quantity=row.quantity,
    )
