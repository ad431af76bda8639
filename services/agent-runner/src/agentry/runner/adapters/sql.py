"""The runner's tables on SQLAlchemy 2 (async Core), portable across SQLite and PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..domain import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    ClaimedRun,
    Run,
    RunStatus,
    StoredEvent,
    StoredMessage,
    Thread,
)
from ..errors import RunAlreadyActive

metadata = sa.MetaData()
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ACTIVE_SQL = "status IN ('queued', 'running', 'cancelling')"

projects = sa.Table(
    "projects", metadata,
    sa.Column("project_id", sa.String(36), primary_key=True),
    sa.Column("account_id", sa.String(64), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
threads = sa.Table(
    "threads", metadata,
    sa.Column("thread_id", sa.String(36), primary_key=True),
    sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.project_id"), nullable=False),
    sa.Column("account_id", sa.String(64), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
messages = sa.Table(
    "messages", metadata,
    sa.Column("position", _BigId, primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.String(36), nullable=False, unique=True),
    sa.Column("thread_id", sa.String(36), sa.ForeignKey("threads.thread_id"), nullable=False),
    sa.Column("account_id", sa.String(64), nullable=False),
    sa.Column("type", sa.String(20), nullable=False),
    sa.Column("content_json", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_messages_thread_position", "thread_id", "position"),
)
agent_runs = sa.Table(
    "agent_runs", metadata,
    sa.Column("run_id", sa.String(36), primary_key=True),
    sa.Column("thread_id", sa.String(36), sa.ForeignKey("threads.thread_id"), nullable=False),
    sa.Column("account_id", sa.String(64), nullable=False, index=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("error", sa.Text, nullable=False, default=""),
    sa.Column("finish_reason", sa.String(40), nullable=False, default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("completed_at", sa.Float),
    sa.Column("reasoning_effort", sa.String(10), nullable=False, server_default=""),
    # One active run per thread, enforced by the database so concurrent starts cannot race.
    sa.Index("ux_agent_runs_one_active_per_thread", "thread_id", unique=True,
             postgresql_where=sa.text(_ACTIVE_SQL), sqlite_where=sa.text(_ACTIVE_SQL)),
)
run_events = sa.Table(
    "run_events", metadata,
    sa.Column("run_id", sa.String(36), sa.ForeignKey("agent_runs.run_id"), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("terminal", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

def _thread(row) -> Thread:
    return Thread(row.thread_id, row.project_id, row.account_id, row.name, row.created_at)

def _message(row) -> StoredMessage:
    return StoredMessage(row.message_id, row.thread_id, row.type, row.content_json, row.created_at)

def _run(row) -> Run:
    return Run(
        run_id=row.run_id, thread_id=row.thread_id, account_id=row.account_id,
        status=RunStatus(row.status), model=row.model, error=row.error or "",
        finish_reason=row.finish_reason or "", created_at=row.created_at,
        started_at=row.started_at, completed_at=row.completed_at, reasoning_effort=row.reasoning_effort or "",
    )

class SqlRunnerRepository:
    """RunnerRepository on an AsyncEngine (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine, *, clock=time.time) -> None:
        self._engine = engine
        self._clock = clock

    async def create_thread(self, *, account_id: str, name: str) -> Thread:
        now = self._clock()
        project_id, thread_id = str(uuid.uuid4()), str(uuid.uuid4())
        async with self._engine.begin() as conn:
            await conn.execute(projects.insert().values(
                project_id=project_id, account_id=account_id, name=name, created_at=now))
            await conn.execute(threads.insert().values(
                thread_id=thread_id, project_id=project_id, account_id=account_id, name=name, created_at=now))
        return Thread(thread_id, project_id, account_id, name, now)

    async def get_thread(self, thread_id: str) -> Thread | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(threads.select().where(threads.c.thread_id == thread_id))).first()
        return _thread(row) if row else None

    async def add_message(self, *, thread_id: str, account_id: str, type: str, content_json: str,
                          message_id: str, created_at: float) -> StoredMessage:
        async with self._engine.begin() as conn:
            await conn.execute(messages.insert().values(
                message_id=message_id, thread_id=thread_id, account_id=account_id,
                type=type, content_json=content_json, created_at=created_at))
        return StoredMessage(message_id, thread_id, type, content_json, created_at)

    async def list_messages(self, thread_id: str) -> list[StoredMessage]:
        query = messages.select().where(messages.c.thread_id == thread_id).order_by(messages.c.position)
        async with self._engine.connect() as conn:
            return [_message(row) for row in await conn.execute(query)]

    async def create_run(self, *, run_id: str, thread_id: str, account_id: str, model: str,
                         first_message: StoredMessage | None, reasoning_effort: str = "") -> Run:
        now = self._clock()
        try:
            async with self._engine.begin() as conn:
                await conn.execute(agent_runs.insert().values(
                    run_id=run_id, thread_id=thread_id, account_id=account_id,
                    status=RunStatus.QUEUED.value, model=model, error="", finish_reason="", created_at=now,
                    reasoning_effort=reasoning_effort))
                if first_message is not None:
                    await conn.execute(messages.insert().values(
                        message_id=first_message.message_id, thread_id=thread_id, account_id=account_id,
                        type=first_message.type, content_json=first_message.content_json,
                        created_at=first_message.created_at))
        except IntegrityError as exc:
            raise RunAlreadyActive("this thread already has an active run; stop it or wait for it to end") from exc
        return Run(run_id, thread_id, account_id, RunStatus.QUEUED, model, "", "", now, None, None,
                   reasoning_effort)

    async def get_run(self, run_id: str) -> Run | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(agent_runs.select().where(agent_runs.c.run_id == run_id))).first()
        return _run(row) if row else None

    async def transition(self, run_id: str, *, from_: Iterable[RunStatus], to: RunStatus,
                         error: str | None = None, finish_reason: str | None = None) -> bool:
        values: dict[str, object] = {"status": to.value}
        now = self._clock()
        if to is RunStatus.RUNNING:
            values["started_at"] = now
        if to in TERMINAL_STATUSES:
            values["completed_at"] = now
        if error is not None:
            values["error"] = error
        if finish_reason is not None:
            values["finish_reason"] = finish_reason
        query = (
            agent_runs.update()
            .where(agent_runs.c.run_id == run_id, agent_runs.c.status.in_([s.value for s in from_]))
            .values(**values)
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(query)
        return result.rowcount == 1

    async def claim_run(self, run_id: str) -> ClaimedRun | None:
        # One statement instead of get_run + transition + get_thread: the worker's start is on
        # the time-to-first-token path. RETURNING needs PostgreSQL or SQLite >= 3.35.
        project_id = (sa.select(threads.c.project_id).where(threads.c.thread_id == agent_runs.c.thread_id)
                      .scalar_subquery().label("project_id"))
        query = (
            agent_runs.update()
            .where(agent_runs.c.run_id == run_id, agent_runs.c.status == RunStatus.QUEUED.value)
            .values(status=RunStatus.RUNNING.value, started_at=self._clock())
            .returning(*agent_runs.c, project_id)
        )
        async with self._engine.begin() as conn:
            row = (await conn.execute(query)).first()
        return ClaimedRun(_run(row), row.project_id) if row else None

    async def append_events(self, run_id: str, events: Sequence[StoredEvent]) -> None:
        if not events:
            return
        now = self._clock()
        rows = [{"run_id": run_id, "seq": e.seq, "data": e.data, "terminal": e.terminal, "created_at": now}
                for e in events]
        async with self._engine.begin() as conn:
            await conn.execute(run_events.insert(), rows)

    async def list_events(self, run_id: str, after_seq: int, limit: int = 1000) -> list[StoredEvent]:
        query = (
            sa.select(run_events.c.seq, run_events.c.data, run_events.c.terminal)
            .where(run_events.c.run_id == run_id, run_events.c.seq > after_seq)
            .order_by(run_events.c.seq).limit(limit)
        )
        async with self._engine.connect() as conn:
            return [StoredEvent(r.seq, bytes(r.data), bool(r.terminal)) for r in await conn.execute(query)]

    async def max_event_seq(self, run_id: str) -> int:
        query = sa.select(sa.func.coalesce(sa.func.max(run_events.c.seq), 0)).where(run_events.c.run_id == run_id)
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

assert ACTIVE_STATUSES  # the partial index above spells the same set in SQL
