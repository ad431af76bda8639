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
    RESUME_HANDED_BACK,
    RESUME_WORKER_LOST,
    ClaimedRun,
    DispatchJob,
    Phase,
    Run,
    RunStatus,
    StoredEvent,
    StoredMessage,
    Thread,
)
from ..errors import LeaseLost, RunAlreadyActive

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
    sa.Column("worker_id", sa.String(64)),
    sa.Column("lease_expires_at", sa.Float),
    sa.Column("lease_epoch", sa.Integer, nullable=False, server_default="0"),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("dispatched_at", sa.Float),
    sa.Column("phase", sa.String(40), nullable=False, server_default="waiting_for_worker"),
    sa.Column("phase_detail", sa.String(200), nullable=False, server_default=""),
    sa.Column("phase_since", sa.Float),
    sa.Column("last_event_at", sa.Float),
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

def _event_rows(run_id: str, events: Sequence[StoredEvent], now: float) -> list[dict[str, object]]:
    return [{"run_id": run_id, "seq": e.seq, "data": e.data, "terminal": e.terminal, "created_at": now}
            for e in events]


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
        attempt=row.attempt, phase=row.phase, phase_detail=row.phase_detail or "", phase_since=row.phase_since,
        lease_epoch=row.lease_epoch, worker_id=row.worker_id, lease_expires_at=row.lease_expires_at,
    )

_LEASED = (RunStatus.RUNNING.value, RunStatus.CANCELLING.value)


def _fence(run_id: str, epoch: int, now: float, **values: object) -> sa.Update:
    """The statement that proves, inside a write's transaction, that the writer still holds the
    run's lease: it touches the run's row only at the writer's epoch (and locks it until commit,
    so a takeover waits for the write or the write sees the takeover)."""
    return (agent_runs.update()
            .where(agent_runs.c.run_id == run_id, agent_runs.c.lease_epoch == epoch,
                   agent_runs.c.status.in_(_LEASED))
            .values(last_event_at=now, **values))

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
                          message_id: str, created_at: float,
                          fence: tuple[str, int] | None = None) -> StoredMessage:
        async with self._engine.begin() as conn:
            if fence is not None and (await conn.execute(_fence(*fence, self._clock()))).rowcount != 1:
                raise LeaseLost(f"run {fence[0]}: lease epoch {fence[1]} is no longer held")
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
                    reasoning_effort=reasoning_effort, dispatched_at=now, phase_since=now))
                if first_message is not None:
                    await conn.execute(messages.insert().values(
                        message_id=first_message.message_id, thread_id=thread_id, account_id=account_id,
                        type=first_message.type, content_json=first_message.content_json,
                        created_at=first_message.created_at))
        except IntegrityError as exc:
            raise RunAlreadyActive("this thread already has an active run; stop it or wait for it to end") from exc
        return Run(run_id, thread_id, account_id, RunStatus.QUEUED, model, "", "", now, None, None,
                   reasoning_effort, phase_since=now)

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

    async def claim_run(self, run_id: str, *, worker_id: str = "", lease_seconds: float = 10.0) -> ClaimedRun | None:
        # One statement takes a queued run, or a running one whose lease lapsed (its worker died
        # or shut down): the epoch moves on, so the previous holder can write nothing more. It is
        # on the time-to-first-token path. RETURNING needs PostgreSQL or SQLite >= 3.35.
        now = self._clock()
        c = agent_runs.c
        project_id = (sa.select(threads.c.project_id).where(threads.c.thread_id == c.thread_id)
                      .scalar_subquery().label("project_id"))
        fresh = c.status == RunStatus.QUEUED.value
        query = (
            agent_runs.update()
            .where(c.run_id == run_id, sa.or_(
                fresh, sa.and_(c.status.in_(_LEASED), sa.func.coalesce(c.lease_expires_at, 0) < now)))
            .values(
                status=sa.case((fresh, RunStatus.RUNNING.value), else_=c.status),
                started_at=sa.func.coalesce(c.started_at, now),
                worker_id=worker_id or None, lease_epoch=c.lease_epoch + 1,
                lease_expires_at=now + lease_seconds, attempt=c.attempt + 1,
                phase=sa.case((fresh, Phase.STARTING.value), else_=Phase.RESUMED.value),
                phase_detail=sa.case((fresh, ""), (c.worker_id.is_(None), RESUME_HANDED_BACK),
                                     else_=RESUME_WORKER_LOST),
                phase_since=now, last_event_at=now,
            )
            .returning(*agent_runs.c, project_id)
        )
        async with self._engine.begin() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        run = _run(row)
        return ClaimedRun(run, row.project_id, resume_reason=run.phase_detail if run.phase == Phase.RESUMED.value else "")

    async def renew_leases(self, worker_id: str, lease_seconds: float) -> dict[str, int]:
        """Extends every lease `worker_id` still holds, in one statement; returns run id -> epoch
        of the runs it holds (a run missing from the answer was taken over or ended)."""
        now = self._clock()
        query = (agent_runs.update()
                 .where(agent_runs.c.worker_id == worker_id, agent_runs.c.status.in_(_LEASED))
                 .values(lease_expires_at=now + lease_seconds)
                 .returning(agent_runs.c.run_id, agent_runs.c.lease_epoch))
        async with self._engine.begin() as conn:
            return {row.run_id: row.lease_epoch for row in await conn.execute(query)}

    async def release_lease(self, run_id: str, epoch: int) -> bool:
        """Gives the run back (worker shutting down): its lease ends now, so the next claim takes
        it over at once. False when this epoch no longer held it."""
        query = (agent_runs.update()
                 .where(agent_runs.c.run_id == run_id, agent_runs.c.lease_epoch == epoch,
                        agent_runs.c.status.in_(_LEASED))
                 .values(worker_id=None, lease_expires_at=0.0, dispatched_at=self._clock()))
        async with self._engine.begin() as conn:
            return (await conn.execute(query)).rowcount == 1

    async def mark_undispatched(self, run_id: str) -> None:
        """The broker did not take the run's job: the sweeper publishes it on its next pass."""
        async with self._engine.begin() as conn:
            await conn.execute(agent_runs.update().where(agent_runs.c.run_id == run_id).values(dispatched_at=None))

    async def dispatch_candidates(self, *, redispatch_after: float, limit: int = 500) -> list[DispatchJob]:
        """Runs whose job must be (re)published, marked dispatched now: queued runs whose job
        never reached the broker (or long ago: it may have been lost), and leased runs whose
        lease lapsed and that were not handed to the broker since."""
        now = self._clock()
        c = agent_runs.c
        stale = sa.or_(c.dispatched_at.is_(None), c.dispatched_at < now - redispatch_after)
        lapsed = sa.func.coalesce(c.lease_expires_at, 0)
        due = (sa.select(c.run_id).where(sa.or_(
            sa.and_(c.status == RunStatus.QUEUED.value, stale),
            sa.and_(c.status.in_(_LEASED), lapsed < now, sa.or_(stale, c.dispatched_at < lapsed)),
        )).order_by(c.created_at).limit(limit))
        query = (agent_runs.update().where(c.run_id.in_(due.scalar_subquery())).values(dispatched_at=now)
                 .returning(c.run_id, c.thread_id, c.account_id))
        async with self._engine.begin() as conn:
            return [DispatchJob(r.run_id, r.thread_id, r.account_id) for r in await conn.execute(query)]

    async def finish_run(self, run_id: str, *, from_: Iterable[RunStatus], to: RunStatus, error: str,
                         finish_reason: str, events: Sequence[StoredEvent], epoch: int | None = None) -> bool:
        """Ends the run and stores its last durable events (the terminal one included) in one
        transaction; only from `from_`, and only at `epoch` when given. True when it ended."""
        now = self._clock()
        c = agent_runs.c
        conditions = [c.run_id == run_id, c.status.in_([s.value for s in from_])]
        if epoch is not None:
            conditions.append(c.lease_epoch == epoch)
        query = agent_runs.update().where(*conditions).values(
            status=to.value, completed_at=now, error=error, finish_reason=finish_reason, worker_id=None,
            lease_expires_at=None, phase=Phase.FINISHED.value, phase_detail="", phase_since=now, last_event_at=now)
        async with self._engine.begin() as conn:
            if (await conn.execute(query)).rowcount != 1:
                return False
            if events:
                await conn.execute(run_events.insert(), _event_rows(run_id, events, now))
        return True

    async def append_events(self, run_id: str, events: Sequence[StoredEvent], *, epoch: int | None = None,
                            phase: tuple[str, str, float] | None = None) -> None:
        """Stores durable events. With `epoch`, only while that lease is held (LeaseLost
        otherwise), and `phase` (name, detail, since) becomes the run's current phase."""
        if not events:
            return
        now = self._clock()
        async with self._engine.begin() as conn:
            if epoch is not None:
                extra = {} if phase is None else {"phase": phase[0], "phase_detail": phase[1][:200],
                                                  "phase_since": phase[2]}
                if (await conn.execute(_fence(run_id, epoch, now, **extra))).rowcount != 1:
                    raise LeaseLost(f"run {run_id}: lease epoch {epoch} is no longer held")
            await conn.execute(run_events.insert(), _event_rows(run_id, events, now))

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
