"""The runner's tables on SQLAlchemy 2 (async Core), portable across SQLite and PostgreSQL."""

from __future__ import annotations

import functools
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agentpress.safe_text import clean
from agentry.servicekit.db import autocommit
from agentry.servicekit.db_direct import DirectStatement

from ..domain import (
    ACTIVE_STATUSES,
    RESUME_HANDED_BACK,
    RESUME_USER_INPUT,
    RESUME_WORKER_LOST,
    TERMINAL_STATUSES,
    THREAD_HOLDING_STATUSES,
    ClaimedRun,
    DispatchJob,
    MultitaskStrategy,
    NewMessage,
    Phase,
    Run,
    RunStatus,
    StoredEvent,
    StoredMessage,
    Thread,
)
from ..errors import LeaseLost, RunAlreadyActive, TooManyActiveRuns

metadata = sa.MetaData()
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# The status predicates are spelled as literal SQL, exactly as the partial indexes spell them, so
# PostgreSQL's planner can use those indexes whatever the bind parameters.
_HOLDING_SQL = "status IN ('queued', 'running', 'cancelling', 'requires_action')"
_ACTIVE_SQL = "status IN ('pending', 'queued', 'running', 'cancelling', 'requires_action')"
_PENDING_SQL = "status = 'pending'"
# pg_advisory_xact_lock(namespace, key): the namespace keeps these locks apart from other users'.
_ACCOUNT_LOCK_NAMESPACE = zlib.crc32(b"agentry.runner.active-runs-per-account") - 2**31

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("project_id", sa.String(36), primary_key=True),
    sa.Column("account_id", sa.String(64), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
threads = sa.Table(
    "threads",
    metadata,
    sa.Column("thread_id", sa.String(36), primary_key=True),
    sa.Column("project_id", sa.String(36), sa.ForeignKey("projects.project_id"), nullable=False),
    sa.Column("account_id", sa.String(64), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
messages = sa.Table(
    "messages",
    metadata,
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
    "agent_runs",
    metadata,
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
    sa.Column("user_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("worker_id", sa.String(64)),
    sa.Column("lease_expires_at", sa.Float),
    sa.Column("lease_epoch", sa.Integer, nullable=False, server_default="0"),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("dispatched_at", sa.Float),
    sa.Column("phase", sa.String(40), nullable=False, server_default="waiting_for_worker"),
    sa.Column("phase_detail", sa.String(200), nullable=False, server_default=""),
    sa.Column("phase_since", sa.Float),
    sa.Column("last_event_at", sa.Float),
    sa.Column("pending_json", sa.Text, nullable=False, server_default=""),
    sa.Column("resolution_json", sa.Text, nullable=False, server_default=""),
    sa.Column("paused_at", sa.Float),
    # Per-thread run policies (migration 0004). A pending run waits for its thread in
    # `queue_order` (lowest first); its prompt waits in `prompt_json` and joins the thread when
    # the run gets it. `start_position`: the thread's last message position once the run held the
    # thread (its prompt included): a rollback deletes the messages after it.
    sa.Column("multitask_strategy", sa.String(20), nullable=False, server_default="reject"),
    sa.Column("interrupts_run_id", sa.String(36)),
    sa.Column("queue_order", sa.BigInteger),
    sa.Column("prompt_json", sa.Text),
    sa.Column("start_position", sa.BigInteger),
    # The run's place on its thread (migration 0006): 1, 2, ... in the order runs got the thread
    # (or ended without getting it), NULL while it waits; assigned under the thread's lock.
    sa.Column("thread_seq", sa.BigInteger),
    # One run holds a thread at a time, enforced by the database so concurrent starts cannot race.
    sa.Index(
        "ux_agent_runs_one_active_per_thread",
        "thread_id",
        unique=True,
        postgresql_where=sa.text(_HOLDING_SQL),
        sqlite_where=sa.text(_HOLDING_SQL),
    ),
    sa.Index(
        "ix_agent_runs_pending_per_thread",
        "thread_id",
        "queue_order",
        postgresql_where=sa.text(_PENDING_SQL),
        sqlite_where=sa.text(_PENDING_SQL),
    ),
    sa.Index(
        "ix_agent_runs_active_per_account",
        "account_id",
        postgresql_where=sa.text(_ACTIVE_SQL),
        sqlite_where=sa.text(_ACTIVE_SQL),
    ),
    sa.Index("ux_agent_runs_thread_seq", "thread_id", "thread_seq", unique=True),
    # The sweeper's scan for lapsed leases (migration 0003).
    sa.Index("ix_agent_runs_status_lease", "status", "lease_expires_at"),
)
run_events = sa.Table(
    "run_events",
    metadata,
    sa.Column("run_id", sa.String(36), sa.ForeignKey("agent_runs.run_id"), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("terminal", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.Float, nullable=False),
)


def _event_rows(run_id: str, events: Sequence[StoredEvent], now: float) -> list[dict[str, object]]:
    return [{"run_id": run_id, "seq": e.seq, "data": e.data, "terminal": e.terminal, "created_at": now} for e in events]


@functools.cache
def _insert_events_statement() -> sa.TextClause:
    """PostgreSQL: a batch of a run's events as one statement over arrays (one execution, its
    parameters bound once), not one execution per row with a parameter set each."""
    return sa.text(
        "INSERT INTO run_events (run_id, seq, data, terminal, created_at) "
        "SELECT CAST(:p_run_id AS VARCHAR), e.seq, e.data, e.terminal, CAST(:p_now AS DOUBLE PRECISION) "
        "FROM unnest(CAST(:p_seqs AS BIGINT[]), CAST(:p_datas AS BYTEA[]), CAST(:p_terminals AS BOOLEAN[])) "
        "AS e(seq, data, terminal)"
    )


async def _insert_events(conn: AsyncConnection, run_id: str, events: Sequence[StoredEvent], now: float) -> None:
    """Stores `events` of `run_id` (in one statement on PostgreSQL)."""
    if not events:
        return
    if conn.dialect.name == "postgresql":
        await conn.execute(
            _insert_events_statement(),
            {
                "p_run_id": run_id,
                "p_now": now,
                "p_seqs": [e.seq for e in events],
                "p_datas": [e.data for e in events],
                "p_terminals": [e.terminal for e in events],
            },
        )
    else:
        await conn.execute(run_events.insert(), _event_rows(run_id, events, now))


# --- Statements on every run's path, built once --------------------------------------------------
# Building a statement (and its cache key) costs more CPU than executing it: those below take
# their values as bound parameters, so SQLAlchemy compiles each once and reuses it.


@functools.cache
def _claim_update() -> sa.Update:
    """The claim (see claim_run): p_run_id, p_now, p_worker_id, p_expires; RETURNING the row."""
    c = agent_runs.c
    now = sa.bindparam("p_now", type_=sa.Float)
    fresh = c.status == RunStatus.QUEUED.value
    # A queued run with a resolution continues after the user answered (human in the loop): the
    # same attempt goes on. Any other claim is the next attempt.
    answered = sa.and_(fresh, c.resolution_json != "")
    return (
        agent_runs.update()
        .where(
            c.run_id == sa.bindparam("p_run_id"),
            sa.or_(fresh, sa.and_(_is_leased(c.status), sa.func.coalesce(c.lease_expires_at, 0) < now)),
        )
        .values(
            status=sa.case((fresh, RunStatus.RUNNING.value), else_=c.status),
            started_at=sa.func.coalesce(c.started_at, now),
            worker_id=sa.bindparam("p_worker_id"),
            lease_epoch=c.lease_epoch + 1,
            lease_expires_at=sa.bindparam("p_expires", type_=sa.Float),
            attempt=sa.case((answered, c.attempt), else_=c.attempt + 1),
            phase=sa.case((sa.and_(fresh, ~answered), Phase.STARTING.value), else_=Phase.RESUMED.value),
            phase_detail=sa.case(
                (answered, RESUME_USER_INPUT),
                (fresh, ""),
                (c.worker_id.is_(None), RESUME_HANDED_BACK),
                else_=RESUME_WORKER_LOST,
            ),
            phase_since=now,
            last_event_at=now,
        )
        .returning(*agent_runs.c)
    )


@functools.cache
def _claim_statement(with_history: bool = False) -> sa.Select:
    """PostgreSQL: the claim and its thread's project, in one statement; `with_history` adds the
    thread's messages as four arrays in position order (h_ids, h_types, h_contents, h_created;
    NULL for a thread without messages)."""
    claimed = _claim_update().cte("claimed")
    query = sa.select(claimed, threads.c.project_id).join(threads, threads.c.thread_id == claimed.c.thread_id)
    if not with_history:
        return query
    m = messages.c

    def in_order(column: sa.ColumnElement) -> sa.ColumnElement:
        return sa.func.array_agg(postgresql.aggregate_order_by(column, m.position))

    history = (
        sa.select(
            in_order(m.message_id).label("h_ids"),
            in_order(m.type).label("h_types"),
            in_order(m.content_json).label("h_contents"),
            in_order(m.created_at).label("h_created"),
        )
        .where(m.thread_id == claimed.c.thread_id)
        .lateral("history")
    )
    return query.add_columns(history).join(history, sa.true())


@functools.cache
def _finish_statement(fenced: bool, report_waiting: bool) -> sa.Update:
    """The end of a run (see finish_run); with `report_waiting` (PostgreSQL only) it also answers
    whether the thread has runs waiting for it, read after the thread's lock was taken."""
    c = agent_runs.c
    now = sa.bindparam("p_now", type_=sa.Float)
    # PostgreSQL compares with an array parameter: an expanding IN list is rendered afresh at
    # every execution.
    from_ = (
        c.status == sa.any_(sa.bindparam("p_from", type_=postgresql.ARRAY(sa.String)))
        if report_waiting
        else c.status.in_(sa.bindparam("p_from", expanding=True))
    )
    conditions = [c.run_id == sa.bindparam("p_run_id"), from_]
    if fenced:
        conditions.append(c.lease_epoch == sa.bindparam("p_epoch"))
    returning: list[sa.ColumnElement] = [c.thread_id]
    if report_waiting:
        waiting = agent_runs.alias("waiting")
        returning.append(
            sa.select(waiting.c.run_id)
            .where(waiting.c.thread_id == c.thread_id, waiting.c.status == RunStatus.PENDING.value)
            .exists()
            .label("has_waiting")
        )
    return (
        agent_runs.update()
        .where(*conditions)
        .values(
            status=sa.bindparam("p_to"),
            completed_at=now,
            error=sa.bindparam("p_error"),
            finish_reason=sa.bindparam("p_finish_reason"),
            worker_id=None,
            lease_expires_at=None,
            phase=Phase.FINISHED.value,
            phase_detail="",
            phase_since=now,
            last_event_at=now,
            pending_json="",
            resolution_json="",
            # A run that waited and ends without having held the thread takes its place now.
            thread_seq=sa.func.coalesce(c.thread_seq, _next_thread_seq(c.thread_id)),
        )
        .returning(*returning)
    )


@functools.cache
def _lock_thread_of_run_statement() -> sa.Select:
    owner = sa.select(agent_runs.c.thread_id).where(agent_runs.c.run_id == sa.bindparam("p_run_id")).scalar_subquery()
    return sa.select(threads.c.thread_id).where(threads.c.thread_id == owner).with_for_update()


@functools.cache
def _fence_statement(with_phase: bool) -> sa.Update:
    """The statement that proves, inside a write's transaction, that the writer still holds the
    run's lease: it touches the run's row only at the writer's epoch (and locks it until commit,
    so a takeover waits for the write or the write sees the takeover). Parameters: p_run_id,
    p_epoch, p_now (and, `with_phase`, p_phase, p_detail, p_since: the run's current phase)."""
    c = agent_runs.c
    extra = (
        {
            "phase": sa.bindparam("p_phase"),
            "phase_detail": sa.bindparam("p_detail"),
            "phase_since": sa.bindparam("p_since"),
        }
        if with_phase
        else {}
    )
    return (
        agent_runs.update()
        .where(c.run_id == sa.bindparam("p_run_id"), c.lease_epoch == sa.bindparam("p_epoch"), _is_leased(c.status))
        .values(last_event_at=sa.bindparam("p_now", type_=sa.Float), **extra)
    )


@functools.cache
def _fenced_append_statement(with_phase: bool) -> sa.Select:
    """PostgreSQL: `_fence_statement` and a batch's insert as ONE statement (run in autocommit,
    so it is its own transaction): the events (`unnest` over p_seqs, p_datas, p_terminals) are
    inserted only for the run row the fence updated, and the statement answers how many rows that
    was (1, or 0 when the lease is no longer held: then nothing is stored). The fence's UPDATE
    locks the row as before, and PostgreSQL re-checks its WHERE on the newest row version when
    it had to wait for a takeover. Parameters: the fence's, and the three arrays."""
    fence = _fence_statement(with_phase).returning(agent_runs.c.run_id).cte("fence")
    batch = (
        sa.func.unnest(
            sa.bindparam("p_seqs", type_=postgresql.ARRAY(sa.BigInteger)),
            sa.bindparam("p_datas", type_=postgresql.ARRAY(sa.LargeBinary)),
            sa.bindparam("p_terminals", type_=postgresql.ARRAY(sa.Boolean)),
        )
        .table_valued("seq", "data", "terminal")
        .render_derived(name="batch")
    )
    rows = sa.select(
        fence.c.run_id, batch.c.seq, batch.c.data, batch.c.terminal, sa.bindparam("p_now", type_=sa.Float)
    ).select_from(fence.join(batch, sa.true()))
    stored = run_events.insert().from_select(["run_id", "seq", "data", "terminal", "created_at"], rows).cte("stored")
    return sa.select(sa.func.count()).select_from(fence).add_cte(stored)


@functools.cache
def _thread_messages_statement() -> sa.Select:
    return messages.select().where(messages.c.thread_id == sa.bindparam("p_thread_id")).order_by(messages.c.position)


@functools.cache
def _run_statement() -> sa.Select:
    return agent_runs.select().where(agent_runs.c.run_id == sa.bindparam("p_run_id"))


@functools.cache
def _thread_statement() -> sa.Select:
    return threads.select().where(threads.c.thread_id == sa.bindparam("p_thread_id"))


def _message_rows(new: Sequence[NewMessage]) -> list[dict[str, object]]:
    return [
        {
            "message_id": m.message_id,
            "thread_id": m.thread_id,
            "account_id": m.account_id,
            "type": m.type,
            "content_json": m.content_json,
            "created_at": m.created_at,
        }
        for m in new
    ]


async def _insert_messages(conn: AsyncConnection, new: Sequence[NewMessage]) -> None:
    # Executed row by row in list order, so each takes the next position.
    if new:
        await conn.execute(messages.insert(), _message_rows(new))


def _thread(row) -> Thread:
    return Thread(row.thread_id, row.project_id, row.account_id, row.name, row.created_at)


def _message(row) -> StoredMessage:
    return StoredMessage(row.message_id, row.thread_id, row.type, row.content_json, row.created_at)


def _run(row) -> Run:
    return Run(
        run_id=row.run_id,
        thread_id=row.thread_id,
        account_id=row.account_id,
        status=RunStatus(row.status),
        model=row.model,
        error=row.error or "",
        finish_reason=row.finish_reason or "",
        created_at=row.created_at,
        started_at=row.started_at,
        completed_at=row.completed_at,
        reasoning_effort=row.reasoning_effort or "",
        attempt=row.attempt,
        phase=row.phase,
        phase_detail=row.phase_detail or "",
        phase_since=row.phase_since,
        lease_epoch=row.lease_epoch,
        worker_id=row.worker_id,
        lease_expires_at=row.lease_expires_at,
        multitask_strategy=row.multitask_strategy,
        interrupts_run_id=row.interrupts_run_id,
        thread_seq=row.thread_seq,
        user_id=row.user_id or "",
        pending=orjson.loads(row.pending_json) if row.pending_json else None,
        resolution=orjson.loads(row.resolution_json) if row.resolution_json else None,
    )


_LEASED = (RunStatus.RUNNING.value, RunStatus.CANCELLING.value)


def _is_leased(status: sa.ColumnElement) -> sa.ColumnElement[bool]:
    """`status IN ('running', 'cancelling')` for the statements built once: written as two
    comparisons, since SQLAlchemy renders an IN list afresh at every execution ("post-compile")."""
    return sa.or_(*(status == value for value in _LEASED))


def _last_position(thread_id: str | sa.BindParameter) -> sa.ScalarSelect:
    """The position of the thread's newest message (0 when it has none)."""
    return (
        sa.select(sa.func.coalesce(sa.func.max(messages.c.position), 0))
        .where(messages.c.thread_id == thread_id)
        .scalar_subquery()
    )


def _next_thread_seq(thread_id: str | sa.ColumnElement) -> sa.ScalarSelect:
    """The next place on the thread (`thread_id`: a value, or the updated row's column). Taken
    under the thread's lock, so no two runs of a thread get the same place."""
    other = agent_runs.alias("thread_run")
    return (
        sa.select(sa.func.coalesce(sa.func.max(other.c.thread_seq), 0) + 1)
        .where(other.c.thread_id == thread_id)
        .scalar_subquery()
    )


async def _lock_thread(conn: AsyncConnection, thread_id: str) -> None:
    """Serialises the run bookkeeping of one thread (starts, ends, promotions) until commit.

    PostgreSQL: a row lock on the thread. SQLite: a no-op write, which takes the database's write
    lock (SQLite begins the transaction at its first write, so the reads that follow see a state
    no other writer can change before commit). Every path takes the thread first, then run rows.
    """
    await conn.execute(_lock_thread_statement(conn.dialect.name == "postgresql"), {"p_thread_id": thread_id})


@functools.cache
def _lock_thread_statement(postgres: bool) -> sa.Select | sa.Update:
    on_thread = threads.c.thread_id == sa.bindparam("p_thread_id")
    if postgres:
        return sa.select(threads.c.thread_id).where(on_thread).with_for_update()
    return threads.update().where(on_thread).values(name=threads.c.name)


@functools.cache
def _start_state_statement(capped: bool) -> sa.Select:
    """What a start must know of its thread (and account, when `capped`), under their locks:
    the run holding the thread, the account's active runs, the first and last place in the
    thread's waiting line and the thread's newest run number. p_thread_id (p_account_id)."""
    c = agent_runs.c
    on_thread = c.thread_id == sa.bindparam("p_thread_id")
    active: sa.ColumnElement = (
        sa.select(sa.func.count())
        .select_from(agent_runs)
        .where(c.account_id == sa.bindparam("p_account_id"), sa.text(_ACTIVE_SQL))
        .scalar_subquery()
        if capped
        else sa.literal(0)
    )
    return sa.select(
        sa.select(c.run_id).where(on_thread, sa.text(_HOLDING_SQL)).limit(1).scalar_subquery().label("holder"),
        active.label("active"),
        sa.select(sa.func.min(c.queue_order)).where(on_thread, sa.text(_PENDING_SQL)).scalar_subquery().label("first"),
        sa.select(sa.func.max(c.queue_order)).where(on_thread, sa.text(_PENDING_SQL)).scalar_subquery().label("last"),
        sa.select(sa.func.max(c.thread_seq)).where(on_thread).scalar_subquery().label("top"),
    )


@functools.cache
def _insert_queued_run_statement() -> sa.Insert:
    """A run that gets its thread at once; its start position is the thread's newest message
    (its prompt, inserted just before). The row's other columns come as parameters."""
    return agent_runs.insert().values(start_position=_last_position(sa.bindparam("p_thread_id")))


async def _lock_thread_of_run(conn: AsyncConnection, run_id: str) -> None:
    """`_lock_thread` for the thread of `run_id`, taken before the run's row is updated. On SQLite
    nothing: the run's UPDATE that follows takes the write lock as the first statement."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_lock_thread_of_run_statement(), {"p_run_id": run_id})


async def _lock_account(conn: AsyncConnection, account_id: str) -> None:
    """Serialises the starts of one account until commit, so counting its active runs and
    inserting one cannot interleave with another start (PostgreSQL: a transaction-scoped
    advisory lock; SQLite: the write lock `_lock_thread` took already serialises every start)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:ns, :key)"),
            {"ns": _ACCOUNT_LOCK_NAMESPACE, "key": _account_lock_key(account_id)},
        )


def _account_lock_key(account_id: str) -> int:
    """The account's advisory lock key: an int4, so a collision only makes two accounts take turns."""
    return zlib.crc32(account_id.encode()) - 2**31


_DIRECT: dict[int, DirectStatement] = {}


def _direct(statement: sa.ClauseElement) -> DirectStatement:
    """PostgreSQL: `statement` (one of those built once, below) run past SQLAlchemy's execution
    layer on the pooled asyncpg connection (servicekit.db_direct: a third of the CPU per statement)."""
    direct = _DIRECT.get(id(statement))
    if direct is None:
        direct = _DIRECT[id(statement)] = DirectStatement(statement)
    return direct


# PostgreSQL: migration 0008's functions (its docstring says what each outcome means).
_FINISH_RUN_SQL = sa.text(
    "SELECT agentry_finish_run(:p_run_id, CAST(:p_from AS TEXT[]), :p_to, :p_error, :p_finish_reason, :p_now, "
    ":p_epoch, :m_ids, :m_thread_ids, :m_account_ids, :m_types, :m_contents, :m_created, "
    ":e_seqs, :e_datas, :e_terminals)"
)
_START_RUN_SQL = sa.text(
    "SELECT o_outcome, o_holder, o_active, o_thread_seq FROM agentry_start_run("
    ":run_id, :thread_id, :account_id, :model, :created_at, :reasoning_effort, :multitask_strategy, "
    ":user_id, :max_active, :lock_namespace, :lock_key, :message_id, :message_type, :message_json, "
    ":message_at)"
)


class SqlRunnerRepository:
    """RunnerRepository on an AsyncEngine (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine, *, clock=time.time) -> None:
        self._engine = engine
        # Reads and single-statement writes: one round trip each, no BEGIN/ROLLBACK around them.
        self._reads = autocommit(engine)
        self._postgres = engine.dialect.name == "postgresql"
        self._clock = clock
        self._promotion_listeners: list[Callable[[], None]] = []

    def add_promotion_listener(self, listener: Callable[[], None]) -> None:
        """`listener` is called (after commit) whenever this repository gave a waiting run its
        thread: the run is queued with no job yet, and the sweeper publishes it."""
        self._promotion_listeners.append(listener)

    def _promoted(self, run_ids: Iterable[str | None]) -> None:
        if any(run_ids):
            for listener in self._promotion_listeners:
                listener()

    async def create_thread(self, *, account_id: str, name: str) -> Thread:
        now = self._clock()
        project_id, thread_id = str(uuid.uuid4()), str(uuid.uuid4())
        async with self._engine.begin() as conn:
            await conn.execute(
                projects.insert().values(project_id=project_id, account_id=account_id, name=name, created_at=now)
            )
            await conn.execute(
                threads.insert().values(
                    thread_id=thread_id, project_id=project_id, account_id=account_id, name=name, created_at=now
                )
            )
        return Thread(thread_id, project_id, account_id, name, now)

    async def get_thread(self, thread_id: str) -> Thread | None:
        params = {"p_thread_id": thread_id}
        if self._postgres:
            row = await _direct(_thread_statement()).row(self._engine, params)
        else:
            async with self._reads.connect() as conn:
                row = (await conn.execute(_thread_statement(), params)).first()
        return _thread(row) if row else None

    async def add_message(
        self,
        *,
        thread_id: str,
        account_id: str,
        type: str,
        content_json: str,
        message_id: str,
        created_at: float,
        fence: tuple[str, int] | None = None,
    ) -> StoredMessage:
        async with self._engine.begin() as conn:
            if fence is not None:
                fenced = {"p_run_id": fence[0], "p_epoch": fence[1], "p_now": self._clock()}
                if (await conn.execute(_fence_statement(False), fenced)).rowcount != 1:
                    raise LeaseLost(f"run {fence[0]}: lease epoch {fence[1]} is no longer held")
            await _insert_messages(
                conn, [NewMessage(message_id, thread_id, account_id, type, content_json, created_at)]
            )
        return StoredMessage(message_id, thread_id, type, content_json, created_at)

    async def list_messages(self, thread_id: str) -> list[StoredMessage]:
        if self._postgres:  # a run's history, read as it starts: on the time-to-first-token path
            return [
                _message(row)
                for row in await _direct(_thread_messages_statement()).rows(self._engine, {"p_thread_id": thread_id})
            ]
        async with self._reads.connect() as conn:
            return [
                _message(row) for row in await conn.execute(_thread_messages_statement(), {"p_thread_id": thread_id})
            ]

    async def page_messages(
        self, thread_id: str, *, limit: int, after: tuple[float, int] | None = None, descending: bool = False
    ) -> list[tuple[StoredMessage, int]]:
        """A page of the thread's messages with their positions, ordered by (created_at,
        position) ascending or descending, after the key `after` (exclusive): stable when
        timestamps tie, and under inserts."""
        key = sa.tuple_(messages.c.created_at, messages.c.position)
        query = messages.select().where(messages.c.thread_id == thread_id)
        if after is not None:
            query = query.where(key < sa.tuple_(*after) if descending else key > sa.tuple_(*after))
        order = (
            (messages.c.created_at.desc(), messages.c.position.desc())
            if descending
            else (messages.c.created_at, messages.c.position)
        )
        query = query.order_by(*order).limit(limit)
        async with self._reads.connect() as conn:
            return [(_message(row), row.position) for row in await conn.execute(query)]

    async def delete_message(self, thread_id: str, message_id: str) -> bool:
        """Deletes one message of the thread; RunAlreadyActive while a run holds the thread (it
        reads and writes the thread's messages). False when the thread has no such message."""
        async with self._engine.begin() as conn:
            await _lock_thread(conn, thread_id)
            holding = (
                await conn.execute(
                    sa.select(agent_runs.c.run_id)
                    .where(agent_runs.c.thread_id == thread_id, sa.text(_HOLDING_SQL))
                    .limit(1)
                )
            ).first()
            if holding is not None:
                raise RunAlreadyActive(f"run {holding.run_id} is active on this thread; stop it first")
            deleted = await conn.execute(
                messages.delete().where(messages.c.thread_id == thread_id, messages.c.message_id == message_id)
            )
            return deleted.rowcount == 1

    async def list_threads(
        self, account_id: str, *, limit: int, after: tuple[float, str] | None = None, thread_id: str | None = None
    ) -> list[Thread]:
        """The account's threads newest first (created_at, thread_id), after the key `after`, with
        their message count, last run status and updated_at; or the one `thread_id`."""
        message_count = (
            sa.select(sa.func.count())
            .select_from(messages)
            .where(messages.c.thread_id == threads.c.thread_id)
            .scalar_subquery()
        )
        last_message = (
            sa.select(sa.func.max(messages.c.created_at))
            .where(messages.c.thread_id == threads.c.thread_id)
            .scalar_subquery()
        )
        newest_run = (
            sa.select(agent_runs.c.status)
            .where(agent_runs.c.thread_id == threads.c.thread_id)
            .order_by(agent_runs.c.created_at.desc(), agent_runs.c.run_id.desc())
            .limit(1)
            .scalar_subquery()
        )
        last_run = (
            sa.select(sa.func.max(agent_runs.c.created_at))
            .where(agent_runs.c.thread_id == threads.c.thread_id)
            .scalar_subquery()
        )
        query = sa.select(
            threads,
            message_count.label("message_count"),
            last_message.label("last_message"),
            newest_run.label("last_run_status"),
            last_run.label("last_run"),
        )
        if thread_id is not None:
            query = query.where(threads.c.thread_id == thread_id)
        else:
            query = query.where(threads.c.account_id == account_id)
            if after is not None:
                query = query.where(sa.tuple_(threads.c.created_at, threads.c.thread_id) < sa.tuple_(*after))
            query = query.order_by(threads.c.created_at.desc(), threads.c.thread_id.desc()).limit(limit)
        async with self._reads.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            Thread(
                row.thread_id,
                row.project_id,
                row.account_id,
                row.name,
                row.created_at,
                updated_at=max(row.created_at, row.last_message or 0.0, row.last_run or 0.0),
                message_count=int(row.message_count or 0),
                last_run_status=row.last_run_status or "",
            )
            for row in rows
        ]

    async def rename_thread(self, thread_id: str, name: str) -> bool:
        async with self._engine.begin() as conn:
            return (
                await conn.execute(threads.update().where(threads.c.thread_id == thread_id).values(name=name))
            ).rowcount == 1

    async def delete_thread(self, thread_id: str) -> tuple[str, bool, list[str]] | None:
        """Deletes the thread with its messages, runs and run events (one transaction, under the
        thread's lock); the project too when this was its last thread. (project_id,
        project_deleted, run ids) or None when there is no such thread. A worker still driving one
        of the runs finds its lease gone (LeaseLost) at its next fenced write."""
        async with self._engine.begin() as conn:
            await _lock_thread(conn, thread_id)
            project_id = (
                await conn.execute(sa.select(threads.c.project_id).where(threads.c.thread_id == thread_id))
            ).scalar_one_or_none()
            if project_id is None:
                return None
            run_ids = list(
                (
                    await conn.execute(sa.select(agent_runs.c.run_id).where(agent_runs.c.thread_id == thread_id))
                ).scalars()
            )
            if run_ids:
                await conn.execute(run_events.delete().where(run_events.c.run_id.in_(run_ids)))
            await conn.execute(agent_runs.delete().where(agent_runs.c.thread_id == thread_id))
            await conn.execute(messages.delete().where(messages.c.thread_id == thread_id))
            await conn.execute(threads.delete().where(threads.c.thread_id == thread_id))
            others = (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(threads).where(threads.c.project_id == project_id)
                )
            ).scalar_one()
            if not others:
                await conn.execute(projects.delete().where(projects.c.project_id == project_id))
        return project_id, not others, run_ids

    async def list_runs(self, thread_id: str, *, limit: int, after: tuple[float, str] | None = None) -> list[Run]:
        """The thread's runs newest first (created_at, run_id), after the key `after`."""
        query = agent_runs.select().where(agent_runs.c.thread_id == thread_id)
        if after is not None:
            query = query.where(sa.tuple_(agent_runs.c.created_at, agent_runs.c.run_id) < sa.tuple_(*after))
        query = query.order_by(agent_runs.c.created_at.desc(), agent_runs.c.run_id.desc()).limit(limit)
        async with self._reads.connect() as conn:
            return [_run(row) for row in await conn.execute(query)]

    async def create_run(
        self,
        *,
        run_id: str,
        thread_id: str,
        account_id: str,
        model: str,
        first_message: StoredMessage | None,
        reasoning_effort: str = "",
        multitask: MultitaskStrategy | str = MultitaskStrategy.REJECT,
        max_active_runs: int = 0,
        user_id: str = "",
    ) -> Run:
        """Inserts the run under the thread's lock (and the account's, with a cap).

        A run that gets the thread at once is `queued`, its prompt added now; otherwise (enqueue,
        interrupt, rollback while another run holds the thread) it is `pending`, its prompt kept
        on the row until it gets the thread (`_promote_next`): last in line for enqueue, first for
        interrupt and rollback, which also record the holder in `interrupts_run_id` (the caller
        stops it). RunAlreadyActive for reject while a run holds the thread; TooManyActiveRuns
        when the account already has `max_active_runs` active runs (0: no cap).
        """
        strategy = MultitaskStrategy(multitask)
        now = self._clock()
        c = agent_runs.c
        promoted: str | None = None
        values = dict(
            run_id=run_id,
            thread_id=thread_id,
            account_id=account_id,
            model=model,
            error="",
            finish_reason="",
            created_at=now,
            reasoning_effort=reasoning_effort,
            phase_since=now,
            multitask_strategy=strategy.value,
            user_id=user_id,
        )

        def queued(thread_seq: int) -> Run:
            """The run as its row now holds it, when it got its thread at once."""
            return Run(
                run_id,
                thread_id,
                account_id,
                RunStatus.QUEUED,
                model,
                "",
                "",
                now,
                None,
                None,
                reasoning_effort,
                phase_since=now,
                multitask_strategy=strategy.value,
                thread_seq=thread_seq,
                user_id=user_id,
            )

        if self._postgres:
            # The common case in one round trip (migration 0008's function): a run that gets its
            # thread at once. One that must wait is started below, in a transaction of its own.
            try:
                done = await _direct(_START_RUN_SQL).row(
                    self._engine,
                    {
                        **values,
                        "max_active": max_active_runs,
                        "lock_namespace": _ACCOUNT_LOCK_NAMESPACE,
                        "lock_key": _account_lock_key(account_id),
                        "message_id": None if first_message is None else first_message.message_id,
                        "message_type": None if first_message is None else first_message.type,
                        "message_json": None if first_message is None else first_message.content_json,
                        "message_at": None if first_message is None else first_message.created_at,
                    },
                )
                assert done is not None  # a function's call answers one row
            except IntegrityError as exc:
                raise RunAlreadyActive("this thread already has an active run; stop it or wait for it to end") from exc
            if done.o_outcome == "busy":
                raise RunAlreadyActive("this thread already has an active run; stop it or wait for it to end")
            if done.o_outcome == "capped":
                raise TooManyActiveRuns(
                    f"this account has {done.o_active} active runs, the most it may have at once; wait for one to end"
                )
            if done.o_outcome == "queued":
                return queued(done.o_thread_seq)
        try:
            async with self._engine.begin() as conn:
                await _lock_thread(conn, thread_id)
                capped = max_active_runs > 0
                if capped:
                    await _lock_account(conn, account_id)
                state = (
                    await conn.execute(
                        _start_state_statement(capped),
                        {"p_thread_id": thread_id, **({"p_account_id": account_id} if capped else {})},
                    )
                ).one()
                if state.holder is not None and strategy is MultitaskStrategy.REJECT:
                    raise RunAlreadyActive("this thread already has an active run; stop it or wait for it to end")
                if max_active_runs > 0 and state.active >= max_active_runs:
                    raise TooManyActiveRuns(
                        f"this account has {state.active} active runs, the most it may have "
                        "at once; wait for one to end"
                    )
                waits = strategy is not MultitaskStrategy.REJECT and (
                    state.holder is not None or state.first is not None
                )
                if not waits:
                    run_values = {
                        **values,
                        "status": RunStatus.QUEUED.value,
                        "dispatched_at": now,
                        "thread_seq": (state.top or 0) + 1,
                    }
                    if first_message is not None:
                        # On PostgreSQL this path is rare (the common start is the function
                        # above): the prompt, then the run, which starts at the prompt's position.
                        first = first_message
                        await _insert_messages(
                            conn,
                            [
                                NewMessage(
                                    first.message_id,
                                    thread_id,
                                    account_id,
                                    first.type,
                                    first.content_json,
                                    first.created_at,
                                )
                            ],
                        )
                    await conn.execute(_insert_queued_run_statement(), {**run_values, "p_thread_id": thread_id})
                    return queued((state.top or 0) + 1)
                if strategy is MultitaskStrategy.ENQUEUE:
                    order = 1 if state.last is None else state.last + 1
                else:
                    order = 0 if state.first is None else state.first - 1
                await conn.execute(
                    agent_runs.insert().values(
                        **values,
                        status=RunStatus.PENDING.value,
                        phase=Phase.WAITING_FOR_THREAD.value,
                        queue_order=order,
                        interrupts_run_id=None if strategy is MultitaskStrategy.ENQUEUE else state.holder,
                        prompt_json=None if first_message is None else first_message.content_json,
                    )
                )
                if state.holder is None:  # only runs left waiting by an earlier failure: line up behind them
                    promoted = await self._promote_next(conn, thread_id, ended_run_id=None, now=now)
                row = (await conn.execute(agent_runs.select().where(c.run_id == run_id))).one()
        except IntegrityError as exc:
            raise RunAlreadyActive("this thread already has an active run; stop it or wait for it to end") from exc
        self._promoted([promoted])
        return _run(row)

    async def _promote_next(
        self, conn: AsyncConnection, thread_id: str, *, ended_run_id: str | None, now: float
    ) -> str | None:
        """Gives the thread to its first pending run when no run holds it (inside the caller's
        transaction, under the thread's lock): for a rollback of the run that just ended
        (`ended_run_id`), the messages that run added after its prompt are deleted first; the
        waiting prompt joins the thread now; the run becomes `queued` with no job
        (`dispatched_at` NULL), which the sweeper publishes. Returns the promoted run's id."""
        c = agent_runs.c
        waiting = (
            await conn.execute(
                sa.select(c.run_id, c.account_id, c.prompt_json, c.multitask_strategy, c.interrupts_run_id)
                .where(c.thread_id == thread_id, sa.text(_PENDING_SQL))
                .order_by(c.queue_order, c.created_at, c.run_id)
                .limit(1)
            )
        ).first()
        if waiting is None:
            return None
        holder = sa.select(c.run_id).where(c.thread_id == thread_id, sa.text(_HOLDING_SQL)).limit(1)
        if (await conn.execute(holder)).first() is not None:
            return None
        if (
            waiting.multitask_strategy == MultitaskStrategy.ROLLBACK.value
            and ended_run_id is not None
            and waiting.interrupts_run_id == ended_run_id
        ):
            start = (await conn.execute(sa.select(c.start_position).where(c.run_id == ended_run_id))).scalar()
            if start is not None:  # runs started before migration 0004 have no start position
                await conn.execute(
                    messages.delete().where(messages.c.thread_id == thread_id, messages.c.position > start)
                )
        if waiting.prompt_json:
            content = orjson.loads(waiting.prompt_json)
            if "created_at" in content:
                content["created_at"] = now  # the prompt joins the thread now, not when it was sent
            await conn.execute(
                messages.insert().values(
                    message_id=content.get("message_id") or str(uuid.uuid4()),
                    thread_id=thread_id,
                    account_id=waiting.account_id,
                    type="user",
                    content_json=orjson.dumps(content).decode(),
                    created_at=now,
                )
            )
        await conn.execute(
            agent_runs.update()
            .where(c.run_id == waiting.run_id, sa.text(_PENDING_SQL))
            .values(
                status=RunStatus.QUEUED.value,
                phase=Phase.WAITING_FOR_WORKER.value,
                phase_since=now,
                dispatched_at=None,
                queue_order=None,
                prompt_json=None,
                start_position=_last_position(thread_id),
                thread_seq=_next_thread_seq(thread_id),
            )
        )
        return waiting.run_id

    async def get_run(self, run_id: str) -> Run | None:
        if self._postgres:
            row = await _direct(_run_statement()).row(self._engine, {"p_run_id": run_id})
        else:
            async with self._reads.connect() as conn:
                row = (await conn.execute(_run_statement(), {"p_run_id": run_id})).first()
        return _run(row) if row else None

    async def transition(
        self,
        run_id: str,
        *,
        from_: Iterable[RunStatus],
        to: RunStatus,
        error: str | None = None,
        finish_reason: str | None = None,
    ) -> bool:
        values: dict[str, object] = {"status": to.value}
        now = self._clock()
        if to is RunStatus.RUNNING:
            values["started_at"] = now
        if to in TERMINAL_STATUSES:
            values["completed_at"] = now
        if error is not None:
            values["error"] = clean(error)  # may quote a provider's or a model's text
        if finish_reason is not None:
            values["finish_reason"] = finish_reason
        query = (
            agent_runs.update()
            .where(agent_runs.c.run_id == run_id, agent_runs.c.status.in_([s.value for s in from_]))
            .values(**values)
            .returning(agent_runs.c.thread_id)
        )
        promoted = None
        async with self._engine.begin() as conn:
            ends = to in TERMINAL_STATUSES
            if ends:
                await _lock_thread_of_run(conn, run_id)
            row = (await conn.execute(query)).first()
            if row is not None and ends:
                promoted = await self._promote_next(conn, row.thread_id, ended_run_id=run_id, now=now)
        self._promoted([promoted])
        return row is not None

    async def claim_run(
        self, run_id: str, *, worker_id: str = "", lease_seconds: float = 10.0, with_history: bool = False
    ) -> ClaimedRun | None:
        # One statement takes a queued run, or a running one whose lease lapsed (its worker died
        # or shut down): the epoch moves on, so the previous holder can write nothing more. It is
        # on the time-to-first-token path. RETURNING needs PostgreSQL or SQLite >= 3.35.
        now = self._clock()
        params = {"p_run_id": run_id, "p_now": now, "p_worker_id": worker_id or None, "p_expires": now + lease_seconds}
        history: tuple[StoredMessage, ...] | None = None
        if self._postgres:
            # One statement, one round trip, committed on its own: the claim and its thread's
            # project (a thread never changes project), and with_history the thread's messages,
            # read in the claim's snapshot (the run's prompt was committed before its job was
            # published) instead of in a round trip of their own on the time-to-first-token path.
            row = await _direct(_claim_statement(with_history)).row(self._engine, params)
            if row is None:
                return None
            project_id = row.project_id
            if with_history:
                history = tuple(
                    StoredMessage(message_id, row.thread_id, type_, content, created_at)
                    for message_id, type_, content, created_at in zip(
                        row.h_ids or (), row.h_types or (), row.h_contents or (), row.h_created or (), strict=True
                    )
                )
        else:
            async with self._engine.begin() as conn:
                row = (await conn.execute(_claim_update(), params)).first()
                if row is None:
                    return None
                # Not a subquery in RETURNING: SQLite renders its columns unqualified there, so
                # `thread_id = thread_id` matched every thread and the run got the first thread's
                # project (and so another project's sandbox).
                project_id = (
                    await conn.execute(sa.select(threads.c.project_id).where(threads.c.thread_id == row.thread_id))
                ).scalar_one()
                if with_history:
                    found = await conn.execute(_thread_messages_statement(), {"p_thread_id": row.thread_id})
                    history = tuple(_message(message) for message in found)
        run = _run(row)
        resume_reason = run.phase_detail if run.phase == Phase.RESUMED.value else ""
        return ClaimedRun(run, project_id, resume_reason=resume_reason, history=history)

    async def pause_run(
        self,
        run_id: str,
        epoch: int,
        pending: dict,
        events: Sequence[StoredEvent] = (),
        *,
        messages: Sequence[NewMessage] = (),
    ) -> bool:
        """The run waits for the user (requires_action) and gives its lease up: no worker holds
        it while it waits; `events` are stored in the same transaction. Only at `epoch` and from
        running; False otherwise (nothing written)."""
        now = self._clock()
        query = (
            agent_runs.update()
            .where(
                agent_runs.c.run_id == run_id,
                agent_runs.c.lease_epoch == epoch,
                agent_runs.c.status == RunStatus.RUNNING.value,
            )
            .values(
                status=RunStatus.REQUIRES_ACTION.value,
                pending_json=orjson.dumps(pending).decode(),
                resolution_json="",
                paused_at=now,
                worker_id=None,
                lease_expires_at=None,
                phase=Phase.WAITING_FOR_USER.value,
                phase_detail="",
                phase_since=now,
                last_event_at=now,
            )
        )
        async with self._engine.begin() as conn:
            if (await conn.execute(query)).rowcount != 1:
                return False
            await _insert_messages(conn, messages)
            await _insert_events(conn, run_id, events, now)
        return True

    async def resume_paused(self, run_id: str, resolution: dict) -> bool:
        """Hands a paused run the user's input and queues it for a worker (dispatched now: the
        caller publishes its job); False when the run is not waiting for the user."""
        now = self._clock()
        query = (
            agent_runs.update()
            .where(agent_runs.c.run_id == run_id, agent_runs.c.status == RunStatus.REQUIRES_ACTION.value)
            .values(
                status=RunStatus.QUEUED.value,
                resolution_json=orjson.dumps(resolution).decode(),
                dispatched_at=now,
                phase=Phase.WAITING_FOR_WORKER.value,
                phase_detail="",
                phase_since=now,
            )
        )
        async with self._engine.begin() as conn:
            return (await conn.execute(query)).rowcount == 1

    async def paused_before(self, before: float, limit: int = 500) -> list[str]:
        """Runs that have waited for the user since before `before` (epoch seconds)."""
        query = (
            sa.select(agent_runs.c.run_id)
            .where(agent_runs.c.status == RunStatus.REQUIRES_ACTION.value, agent_runs.c.paused_at < before)
            .limit(limit)
        )
        async with self._reads.connect() as conn:
            return [row.run_id for row in await conn.execute(query)]

    async def renew_leases(
        self, worker_id: str, lease_seconds: float, run_ids: Iterable[str] | None = None
    ) -> dict[str, int]:
        """Extends every lease `worker_id` still holds (of `run_ids` only, when given: a run its
        worker stopped must lapse, not be renewed with the others), in one statement; returns run
        id -> epoch of the runs it holds (a run missing from the answer was taken over or ended)."""
        now = self._clock()
        held = [agent_runs.c.worker_id == worker_id, agent_runs.c.status.in_(_LEASED)]
        if run_ids is not None:
            held.append(agent_runs.c.run_id.in_(list(run_ids)))
        query = (
            agent_runs.update()
            .where(*held)
            .values(lease_expires_at=now + lease_seconds)
            .returning(agent_runs.c.run_id, agent_runs.c.lease_epoch)
        )
        async with self._engine.begin() as conn:
            return {row.run_id: row.lease_epoch for row in await conn.execute(query)}

    async def release_lease(self, run_id: str, epoch: int) -> bool:
        """Gives the run back (worker shutting down): its lease ends now, so the next claim takes
        it over at once. False when this epoch no longer held it."""
        query = (
            agent_runs.update()
            .where(agent_runs.c.run_id == run_id, agent_runs.c.lease_epoch == epoch, agent_runs.c.status.in_(_LEASED))
            .values(worker_id=None, lease_expires_at=0.0, dispatched_at=self._clock())
        )
        async with self._engine.begin() as conn:
            return (await conn.execute(query)).rowcount == 1

    async def queue_stats(self) -> tuple[int, float | None]:
        """Runs waiting for a worker (queued) and when the oldest was created (metrics)."""
        c = agent_runs.c
        query = sa.select(sa.func.count(), sa.func.min(c.created_at)).where(c.status == RunStatus.QUEUED.value)
        async with self._reads.connect() as conn:
            count, oldest = (await conn.execute(query)).one()
        return int(count), (float(oldest) if oldest is not None else None)

    async def mark_undispatched(self, run_id: str) -> None:
        """The broker did not take the run's job: the sweeper publishes it on its next pass."""
        async with self._engine.begin() as conn:
            await conn.execute(agent_runs.update().where(agent_runs.c.run_id == run_id).values(dispatched_at=None))

    async def dispatch_candidates(self, *, redispatch_after: float, limit: int = 500) -> list[DispatchJob]:
        """Runs whose job must be (re)published, marked dispatched now: queued runs whose job
        never reached the broker (or long ago: it may have been lost) - among them runs that just
        got their thread from a run that ended (`_promote_next`) -, and leased runs whose lease
        lapsed and that were not handed to the broker since. Waiting runs of a thread nobody
        holds are promoted first."""
        await self._promote_orphans()
        now = self._clock()
        c = agent_runs.c
        stale = sa.or_(c.dispatched_at.is_(None), c.dispatched_at < now - redispatch_after)
        lapsed = sa.func.coalesce(c.lease_expires_at, 0)
        due = (
            sa.select(c.run_id)
            .where(
                sa.or_(
                    sa.and_(c.status == RunStatus.QUEUED.value, stale),
                    sa.and_(c.status.in_(_LEASED), lapsed < now, sa.or_(stale, c.dispatched_at < lapsed)),
                )
            )
            .order_by(c.created_at)
            .limit(limit)
            # Rows another transaction holds (a run ending, a lease renewal) are left for the
            # next pass: the sweeper never waits on a row lock, so it cannot deadlock.
            .with_for_update(skip_locked=True)
        )
        query = (
            agent_runs.update()
            .where(c.run_id.in_(due.scalar_subquery()))
            .values(dispatched_at=now)
            .returning(c.run_id, c.thread_id, c.account_id)
        )
        async with self._engine.begin() as conn:
            return [DispatchJob(r.run_id, r.thread_id, r.account_id) for r in await conn.execute(query)]

    async def _promote_orphans(self, limit: int = 100) -> None:
        """A safety net for the sweeper: threads with waiting runs but no run holding them (a run
        ended by a path that does not promote) give the thread to their first waiting run."""
        p, h = agent_runs.alias("p"), agent_runs.alias("h")
        held = (
            sa.select(h.c.run_id)
            .where(h.c.thread_id == p.c.thread_id, h.c.status.in_([s.value for s in THREAD_HOLDING_STATUSES]))
            .exists()
        )
        query = sa.select(p.c.thread_id).where(p.c.status == RunStatus.PENDING.value, ~held).distinct().limit(limit)
        async with self._reads.connect() as conn:
            orphaned = [r.thread_id for r in await conn.execute(query)]
        for thread_id in orphaned:
            async with self._engine.begin() as conn:
                await _lock_thread(conn, thread_id)
                promoted = await self._promote_next(conn, thread_id, ended_run_id=None, now=self._clock())
            self._promoted([promoted])

    async def finish_run(
        self,
        run_id: str,
        *,
        from_: Iterable[RunStatus],
        to: RunStatus,
        error: str,
        finish_reason: str,
        events: Sequence[StoredEvent],
        epoch: int | None = None,
        messages: Sequence[NewMessage] = (),
    ) -> bool:
        """Ends the run and stores its last messages and durable events (the terminal one
        included) in one transaction; only from `from_`, and only at `epoch` when given. True
        when it ended."""
        now = self._clock()
        query = _finish_statement(epoch is not None, self._postgres)
        params: dict[str, object] = {
            "p_run_id": run_id,
            "p_from": [s.value for s in from_],
            "p_now": now,
            "p_to": to.value,
            "p_error": clean(error),
            "p_finish_reason": finish_reason,
        }
        if epoch is not None:
            params["p_epoch"] = epoch
        if self._postgres:
            # The common end in one round trip (migration 0008's function): no run waits for the
            # thread. Otherwise the end and the promotion of the next run are the transaction below.
            outcome = await _direct(_FINISH_RUN_SQL).value(
                self._engine,
                {
                    **params,
                    "p_epoch": epoch,
                    "m_ids": [m.message_id for m in messages],
                    "m_thread_ids": [m.thread_id for m in messages],
                    "m_account_ids": [m.account_id for m in messages],
                    "m_types": [m.type for m in messages],
                    "m_contents": [m.content_json for m in messages],
                    "m_created": [m.created_at for m in messages],
                    "e_seqs": [e.seq for e in events],
                    "e_datas": [e.data for e in events],
                    "e_terminals": [e.terminal for e in events],
                },
            )
            if outcome != "waits":
                return outcome == "ended"
        promoted = None
        async with self._engine.begin() as conn:
            # The thread's lock first (the order every start takes): the end and the promotion of
            # the thread's next waiting run commit together, and a start that lines a run up
            # behind this one either commits before (and is promoted here) or sees it ended.
            await _lock_thread_of_run(conn, run_id)
            row = (await conn.execute(query, params)).first()
            if row is None:
                return False
            await _insert_messages(conn, messages)  # before a promoted run's prompt joins the thread
            await _insert_events(conn, run_id, events, now)
            # PostgreSQL told (under the lock) whether any run waits for the thread.
            if not self._postgres or row.has_waiting:
                promoted = await self._promote_next(conn, row.thread_id, ended_run_id=run_id, now=now)
        self._promoted([promoted])
        return True

    async def append_events(
        self,
        run_id: str,
        events: Sequence[StoredEvent],
        *,
        epoch: int | None = None,
        phase: tuple[str, str, float] | None = None,
        messages: Sequence[NewMessage] = (),
    ) -> None:
        """Stores durable events and thread `messages` (in order) in one transaction. With
        `epoch`, only while that lease is held (LeaseLost otherwise), and `phase` (name, detail,
        since) becomes the run's current phase."""
        if not events and not messages:
            return
        now = self._clock()
        if self._postgres and epoch is not None and events and not messages:
            # The common batch (a run's events, no message): fence and insert as one statement,
            # one round trip instead of BEGIN, fence, insert, COMMIT.
            params = {
                "p_run_id": run_id,
                "p_epoch": epoch,
                "p_now": now,
                "p_seqs": [e.seq for e in events],
                "p_datas": [e.data for e in events],
                "p_terminals": [e.terminal for e in events],
            }
            if phase is not None:
                params.update(p_phase=phase[0], p_detail=clean(phase[1])[:200], p_since=phase[2])
            fenced = await _direct(_fenced_append_statement(phase is not None)).value(self._engine, params)
            if fenced != 1:
                raise LeaseLost(f"run {run_id}: lease epoch {epoch} is no longer held")
            return
        async with self._engine.begin() as conn:
            if epoch is not None:
                # The detail is a tool name as the model wrote it: NUL or an unpaired surrogate
                # would fail the write (PostgreSQL text, UTF-8), so they are replaced.
                params: dict[str, object] = {"p_run_id": run_id, "p_epoch": epoch, "p_now": now}
                if phase is not None:
                    params.update(p_phase=phase[0], p_detail=clean(phase[1])[:200], p_since=phase[2])
                if (await conn.execute(_fence_statement(phase is not None), params)).rowcount != 1:
                    raise LeaseLost(f"run {run_id}: lease epoch {epoch} is no longer held")
            await _insert_messages(conn, messages)
            await _insert_events(conn, run_id, events, now)

    async def list_events(self, run_id: str, after_seq: int, limit: int = 1000) -> list[StoredEvent]:
        query = (
            sa.select(run_events.c.seq, run_events.c.data, run_events.c.terminal)
            .where(run_events.c.run_id == run_id, run_events.c.seq > after_seq)
            .order_by(run_events.c.seq)
            .limit(limit)
        )
        async with self._reads.connect() as conn:
            return [StoredEvent(r.seq, bytes(r.data), bool(r.terminal)) for r in await conn.execute(query)]

    async def max_event_seq(self, run_id: str) -> int:
        query = sa.select(sa.func.coalesce(sa.func.max(run_events.c.seq), 0)).where(run_events.c.run_id == run_id)
        async with self._reads.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def list_thread_runs(self, thread_id: str, after_thread_seq: int, limit: int = 100) -> list[Run]:
        """The thread's runs placed after `after_thread_seq`, in the order they held the thread
        (waiting runs have no place yet and are left out)."""
        query = (
            agent_runs.select()
            .where(agent_runs.c.thread_id == thread_id, agent_runs.c.thread_seq > after_thread_seq)
            .order_by(agent_runs.c.thread_seq)
            .limit(limit)
        )
        async with self._reads.connect() as conn:
            return [_run(row) for row in await conn.execute(query)]


# The literal SQL predicates above spell these sets.
assert {s.value for s in THREAD_HOLDING_STATUSES} == {"queued", "running", "cancelling", "requires_action"}
assert {s.value for s in ACTIVE_STATUSES} == {"pending", "queued", "running", "cancelling", "requires_action"}
