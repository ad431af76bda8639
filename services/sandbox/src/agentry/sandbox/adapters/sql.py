"""The sandboxes table on SQLAlchemy 2 (SQLite or PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..domain import SandboxRecord, SandboxSpec, SandboxState
from ..errors import SandboxAlreadyExists

metadata = sa.MetaData()

sandboxes = sa.Table(
    "sandboxes",
    metadata,
    sa.Column("sandbox_id", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.String(128), nullable=False),
    sa.Column("project_id", sa.String(128), nullable=False),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("provider_ref", sa.Text, nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("spec_json", sa.Text, nullable=False, server_default="{}"),
    sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.UniqueConstraint("account_id", "project_id", name="uq_sandboxes_account_project"),
    # Finding idle sandboxes to reclaim.
    sa.Index("ix_sandboxes_last_used_at", "last_used_at"),
)


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else _aware(value)


def _record(row: sa.Row) -> SandboxRecord:
    return SandboxRecord(
        sandbox_id=row.sandbox_id,
        account_id=row.account_id,
        project_id=row.project_id,
        provider=row.provider,
        provider_ref=row.provider_ref,
        state=SandboxState(row.state),
        created_at=_aware(row.created_at),
        last_used_at=_aware(row.last_used_at),
        spec=SandboxSpec.from_json(orjson.loads(row.spec_json or "{}")),
        state_changed_at=_utc(row.state_changed_at),
        error=row.error or "",
    )


class SqlSandboxRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, record: SandboxRecord) -> None:
        values = {
            "sandbox_id": record.sandbox_id,
            "account_id": record.account_id,
            "project_id": record.project_id,
            "provider": record.provider,
            "provider_ref": record.provider_ref,
            "state": record.state.value,
            "created_at": record.created_at,
            "last_used_at": record.last_used_at,
            "spec_json": orjson.dumps(record.spec.to_json()).decode(),
            "state_changed_at": record.state_changed_at or record.created_at,
            "error": record.error,
        }
        try:
            async with self._engine.begin() as conn:
                await conn.execute(sandboxes.insert().values(**values))
        except IntegrityError as exc:
            raise SandboxAlreadyExists(f"project {record.project_id!r} already has a sandbox") from exc

    async def get(self, sandbox_id: str) -> SandboxRecord | None:
        return await self._one(sandboxes.c.sandbox_id == sandbox_id)

    async def find_by_project(self, account_id: str, project_id: str) -> SandboxRecord | None:
        return await self._one(sa.and_(sandboxes.c.account_id == account_id, sandboxes.c.project_id == project_id))

    async def list(self, account_id: str, project_id: str = "") -> list[SandboxRecord]:
        query = sa.select(sandboxes).where(sandboxes.c.account_id == account_id)
        if project_id:
            query = query.where(sandboxes.c.project_id == project_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.order_by(sandboxes.c.created_at, sandboxes.c.sandbox_id))).all()
        return [_record(row) for row in rows]

    async def in_states(self, states: list[SandboxState], limit: int = 500) -> list[SandboxRecord]:
        query = (
            sa.select(sandboxes)
            .where(sandboxes.c.state.in_([s.value for s in states]))
            .order_by(sandboxes.c.last_used_at, sandboxes.c.sandbox_id)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(row) for row in rows]

    async def mark_ready(self, sandbox_id: str, provider_ref: str, at: datetime) -> None:
        await self._update(
            sandbox_id, state=SandboxState.STARTED.value, provider_ref=provider_ref, state_changed_at=at, error=""
        )

    async def set_state(self, sandbox_id: str, state: SandboxState, at: datetime, error: str = "") -> None:
        await self._update(sandbox_id, state=state.value, state_changed_at=at, error=error)

    async def touch(self, sandbox_id: str, at: datetime) -> None:
        await self._update(sandbox_id, last_used_at=at)

    async def delete(self, sandbox_id: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sandboxes.delete().where(sandboxes.c.sandbox_id == sandbox_id))

    async def _update(self, sandbox_id: str, **values) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sandboxes.update().where(sandboxes.c.sandbox_id == sandbox_id).values(**values))

    async def _one(self, condition: sa.ColumnElement[bool]) -> SandboxRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(sandboxes).where(condition))).first()
        return _record(row) if row is not None else None
