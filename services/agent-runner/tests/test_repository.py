"""Contract of the runner's SQL repository, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from agentpress import UserMessage
from agentry.runner.adapters.sql import SqlRunnerRepository
from agentry.runner.domain import NewMessage, Run, RunStatus, StoredEvent, StoredMessage, Thread
from agentry.runner.errors import LeaseLost, RunAlreadyActive

from .conftest import FakeClock

ACCOUNT = "acct-a"


@pytest.fixture
def repo(engine: AsyncEngine, clock: FakeClock) -> SqlRunnerRepository:
    return SqlRunnerRepository(engine, clock=clock)


def prompt(thread: Thread, text: str, created_at: float | None = None) -> StoredMessage:
    message = UserMessage(text=text)
    return StoredMessage(
        message.message_id,
        thread.thread_id,
        "user",
        message.to_json().decode(),
        message.created_at if created_at is None else created_at,
    )


async def add(repo: SqlRunnerRepository, message: StoredMessage) -> StoredMessage:
    return await repo.add_message(
        thread_id=message.thread_id,
        account_id=ACCOUNT,
        type=message.type,
        content_json=message.content_json,
        message_id=message.message_id,
        created_at=message.created_at,
    )


async def new_run(repo: SqlRunnerRepository, thread: Thread, first: StoredMessage | None = None) -> Run:
    return await repo.create_run(
        run_id=str(uuid.uuid4()), thread_id=thread.thread_id, account_id=ACCOUNT, model="scripted", first_message=first
    )


async def test_created_thread_reads_back_identically(repo: SqlRunnerRepository, clock: FakeClock) -> None:
    thread = await repo.create_thread(account_id=ACCOUNT, name="Fix the build")

    assert await repo.get_thread(thread.thread_id) == thread
    assert (thread.account_id, thread.name, thread.created_at) == (ACCOUNT, "Fix the build", clock.now)
    assert thread.project_id != thread.thread_id
    assert await repo.get_thread(str(uuid.uuid4())) is None


async def test_messages_come_back_in_insertion_order_even_with_identical_timestamps(
    repo: SqlRunnerRepository,
) -> None:
    thread = await repo.create_thread(account_id=ACCOUNT, name="t")
    other = await repo.create_thread(account_id=ACCOUNT, name="other")
    # Random uuids and one timestamp: neither can explain the order, only insertion can.
    written = [await add(repo, prompt(thread, f"m{n}", created_at=1234.5)) for n in range(12)]
    await add(repo, prompt(other, "elsewhere"))

    assert await repo.list_messages(thread.thread_id) == written


async def test_create_run_stores_the_queued_run_and_its_prompt(repo: SqlRunnerRepository, clock: FakeClock) -> None:
    thread = await repo.create_thread(account_id=ACCOUNT, name="t")
    first = prompt(thread, "list the files")

    run = await new_run(repo, thread, first)

    assert run.status is RunStatus.QUEUED
    assert (run.created_at, run.started_at, run.completed_at, run.error, run.finish_reason) == (
        clock.now,
        None,
        None,
        "",
        "",
    )
    assert await repo.get_run(run.run_id) == run
    assert await repo.list_messages(thread.thread_id) == [first]


async def test_prompt_is_not_stored_when_the_thread_already_has_an_active_run(repo: SqlRunnerRepository) -> None:
    thread = await repo.create_thread(account_id=ACCOUNT, name="t")
    first = prompt(thread, "first")
    await new_run(repo, thread, first)
    run_id = str(uuid.uuid4())

    with pytest.raises(RunAlreadyActive):
        await repo.create_run(
            run_id=run_id,
            thread_id=thread.thread_id,
            account_id=ACCOUNT,
            model="m",
            first_message=prompt(thread, "second"),
        )

    assert await repo.get_run(run_id) is None
    assert await repo.list_messages(thread.thread_id) == [first]


@pytest.mark.parametrize(
    "path",
    [
        [RunStatus.RUNNING],
        [RunStatus.RUNNING, RunStatus.CANCELLING],
    ],
)
async def test_a_run_that_is_still_active_blocks_a_new_one(repo: SqlRunnerRepository, path: list[RunStatus]) -> None:
    thread = await repo.create_thread(account_id=ACCOUNT, name="t")
    run = await new_run(repo, thread)
    previous = RunStatus.QUEUED
    for status in path:
        assert await repo.transition(run.run_id, from_=[previous], to=status)
        previous = status

    with pytest.raises(RunAlreadyActive):
        await new_run(repo, thread)


@pytest.mark.parametrize(
    "path",
    [
        [RunStatus.CANCELLED],
        [RunStatus.RUNNING, RunStatus.COMPLETED],
        [RunStatus.RUNNING, RunStatus.FAILED],
        [RunStatus.RUNNING, RunStatus.CANCELLING, RunStatus.CANCELLED],
    ],
)
async def test_a_new_run_may_start_once_the_previous_one_ended(
    repo: SqlRunnerRepository,
    path: list[RunStatus],
) -> None:
    thread = await repo.create_thread(account_id=ACCOUNT, name="t")
    first = await new_run(repo, thread)
    previous = RunStatus.QUEUED
    for status in path:
        assert await repo.transition(first.run_id, from_=[previous], to=status)
        previous = status

    second = await new_run(repo, thread, prompt(thread, "again"))

    assert (await repo.get_run(second.run_id)).status is RunStatus.QUEUED  # type: ignore[union-attr]
    assert (await repo.get_run(first.run_id)).status is path[-1]  # type: ignore[union-attr]


async def test_concurrent_starts_on_one_thread_let_exactly_one_through(repo: SqlRunnerRepository) -> None:
    thread = await repo.create_thread(account_id=ACCOUNT, name="t")
    prompts = [prompt(thread, f"attempt {n}") for n in range(20)]

    outcomes = await asyncio.gather(*(new_run(repo, thread, p) for p in prompts), return_exceptions=True)

    winners = [(o, p) for o, p in zip(outcomes, prompts, strict=True) if isinstance(o, Run)]
    losers = [o for o in outcomes if not isinstance(o, Run)]
    assert len(winners) == 1
    assert all(isinstance(o, RunAlreadyActive) for o in losers), losers
    run, its_prompt = winners[0]
    assert await repo.get_run(run.run_id) == run
    assert await repo.list_messages(thread.thread_id) == [its_prompt]


@contextlib.asynccontextmanager
async def recorded_statements(engine: AsyncEngine) -> AsyncIterator[list[str]]:
    """Every statement sent meanwhile: through SQLAlchemy's execution, and (PostgreSQL) straight
    on a pooled asyncpg connection (servicekit.db_direct), as asyncpg's query logger sees them
    (it reports each with `call_soon`: one turn of the loop before the block ends)."""
    statements: list[str] = []
    logged: list[object] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    def log(record) -> None:
        # Not asyncpg's own type introspection (the first use of a type on a connection).
        if "jit" not in record.query and "pg_catalog.pg_type" not in record.query:
            statements.append(record.query)

    def checkout(dbapi_connection, connection_record, proxy) -> None:
        driver = dbapi_connection.driver_connection
        if driver not in logged:
            driver.add_query_logger(log)
            logged.append(driver)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    event.listen(engine.sync_engine.pool, "checkout", checkout)
    try:
        yield statements
        await asyncio.sleep(0)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
        event.remove(engine.sync_engine.pool, "checkout", checkout)
        for driver in logged:
            driver.remove_query_logger(log)  # type: ignore[attr-defined]


async def test_a_start_and_an_end_with_no_run_waiting_are_one_statement_each_on_postgresql(
    postgres_engine: AsyncEngine, clock: FakeClock
) -> None:
    # The start is on the time-to-first-token path: on PostgreSQL the lock, the checks and both
    # inserts are one call (migration 0008), committed on its own. The run row it writes is the
    # one the general path writes (its place on the thread and its start position included).
    # (SQLite keeps its transaction of several statements: in process, there is no round trip.)
    engine = postgres_engine
    repo = SqlRunnerRepository(engine, clock=clock)
    thread = await repo.create_thread(account_id=ACCOUNT, name="t")
    first = prompt(thread, "first")
    ended = await new_run(repo, thread, first)
    await repo.transition(ended.run_id, from_=[RunStatus.QUEUED], to=RunStatus.CANCELLED)
    async with recorded_statements(engine) as statements:
        second = prompt(thread, "second")
        with_prompt = await repo.create_run(
            run_id=str(uuid.uuid4()),
            thread_id=thread.thread_id,
            account_id=ACCOUNT,
            model="m",
            first_message=second,
            max_active_runs=5,
        )

    assert len(statements) == 1 and "agentry_start_run" in statements[0], statements
    assert with_prompt.thread_seq == 2
    assert await repo.get_run(with_prompt.run_id) == with_prompt
    assert await repo.list_messages(thread.thread_id) == [first, second]

    # Its end, with no run waiting for the thread, is one call too: the run, its messages (in
    # order) and its events, or nothing at a lease epoch that no longer holds.
    claimed = await repo.claim_run(with_prompt.run_id, worker_id="w")
    assert claimed is not None
    replies = [
        NewMessage(str(uuid.uuid4()), thread.thread_id, ACCOUNT, "assistant", f'{{"n": {n}}}', clock.now)
        for n in range(3)
    ]
    events = [StoredEvent(1, b"a", False), StoredEvent(2, b"end", True)]
    end = dict(from_=[RunStatus.RUNNING], to=RunStatus.COMPLETED, error="", finish_reason="stop", events=events)
    async with recorded_statements(engine) as statements:
        stale = await repo.finish_run(with_prompt.run_id, epoch=claimed.run.lease_epoch - 1, messages=replies, **end)
        ended = await repo.finish_run(with_prompt.run_id, epoch=claimed.run.lease_epoch, messages=replies, **end)

    assert (stale, ended) == (False, True)
    assert len(statements) == 2 and all("agentry_finish_run" in s for s in statements), statements
    finished = await repo.get_run(with_prompt.run_id)
    assert finished is not None and (finished.status, finished.finish_reason) == (RunStatus.COMPLETED, "stop")
    assert [m.message_id for m in await repo.list_messages(thread.thread_id)] == [
        first.message_id,
        second.message_id,
        *(r.message_id for r in replies),
    ]
    assert await repo.list_events(with_prompt.run_id, 0) == events


async def test_transition_moves_only_from_the_expected_statuses(repo: SqlRunnerRepository, clock: FakeClock) -> None:
    thread = await repo.create_thread(account_id=ACCOUNT, name="t")
    run = await new_run(repo, thread)

    assert not await repo.transition(
        run.run_id, from_=[RunStatus.RUNNING], to=RunStatus.COMPLETED, error="x", finish_reason="completed"
    )
    assert await repo.get_run(run.run_id) == run

    started = clock.advance(5)
    assert await repo.transition(run.run_id, from_=[RunStatus.QUEUED], to=RunStatus.RUNNING)
    running = await repo.get_run(run.run_id)
    assert running is not None
    assert (running.status, running.started_at, running.completed_at) == (RunStatus.RUNNING, started, None)

    ended = clock.advance(7)
    assert await repo.transition(
        run.run_id,
        from_=[RunStatus.RUNNING, RunStatus.CANCELLING],
        to=RunStatus.FAILED,
        error="agent error",
        finish_reason="error",
    )
    failed = await repo.get_run(run.run_id)
    assert failed is not None
    assert (failed.status, failed.started_at, failed.completed_at, failed.error, failed.finish_reason) == (
        RunStatus.FAILED,
        started,
        ended,
        "agent error",
        "error",
    )

    clock.advance(1)
    assert not await repo.transition(run.run_id, from_=[RunStatus.RUNNING], to=RunStatus.COMPLETED)
    assert await repo.get_run(run.run_id) == failed


async def test_transition_of_an_unknown_run_moves_nothing(repo: SqlRunnerRepository) -> None:
    assert not await repo.transition(str(uuid.uuid4()), from_=[RunStatus.QUEUED], to=RunStatus.RUNNING)
    assert await repo.get_run(str(uuid.uuid4())) is None


async def test_events_are_listed_by_sequence_after_a_position(repo: SqlRunnerRepository) -> None:
    thread = await repo.create_thread(account_id=ACCOUNT, name="t")
    run = await new_run(repo, thread)
    # The bytes must survive exactly: non-ASCII, a NUL, and JSON the database must not reparse.
    events = [StoredEvent(n, b'{"seq":%d,"text":"\xc3\xa9\x00 \\u00e9"}' % n, False) for n in range(1, 4)]
    await repo.append_events(run.run_id, events[:2])
    await repo.append_events(run.run_id, [])
    await repo.append_events(run.run_id, [events[2], StoredEvent(7, b"{}", True)])

    every = await repo.list_events(run.run_id, 0)
    assert every == [*events, StoredEvent(7, b"{}", True)]
    assert await repo.list_events(run.run_id, 2) == every[2:]
    assert await repo.list_events(run.run_id, 0, limit=2) == every[:2]
    assert await repo.list_events(run.run_id, 7) == []
    assert await repo.max_event_seq(run.run_id) == 7

    assert await repo.transition(run.run_id, from_=[RunStatus.QUEUED], to=RunStatus.CANCELLED)
    other = await new_run(repo, thread)
    assert await repo.list_events(other.run_id, 0) == []
    assert await repo.max_event_seq(other.run_id) == 0


async def test_an_event_sequence_number_is_stored_once(repo: SqlRunnerRepository) -> None:
    thread = await repo.create_thread(account_id=ACCOUNT, name="t")
    run = await new_run(repo, thread)
    original = StoredEvent(1, b'{"seq":1}', False)
    await repo.append_events(run.run_id, [original])

    with pytest.raises(IntegrityError):
        await repo.append_events(run.run_id, [StoredEvent(2, b'{"seq":2}', False), StoredEvent(1, b"dup", True)])

    # The batch is all or nothing: seq 2 of the rejected batch is not kept either.
    assert await repo.list_events(run.run_id, 0) == [original]
    assert await repo.max_event_seq(run.run_id) == 1


async def test_events_under_a_lease_are_stored_only_while_its_epoch_holds(
    repo: SqlRunnerRepository, clock: FakeClock
) -> None:
    thread = await repo.create_thread(account_id=ACCOUNT, name="t")
    run = await new_run(repo, thread)
    claimed = await repo.claim_run(run.run_id, worker_id="w1")
    assert claimed is not None
    epoch = claimed.run.lease_epoch
    first = [StoredEvent(1, b'{"seq":1}', False), StoredEvent(2, b'{"seq":2}', False)]
    await repo.append_events(run.run_id, first, epoch=epoch, phase=("running_tool", "shell\x00", 5.0))
    stored = await repo.get_run(run.run_id)
    assert stored is not None
    assert (stored.phase, stored.phase_detail, stored.phase_since) == ("running_tool", "shell\ufffd", 5.0)

    # A batch that breaks a constraint stores nothing, the phase included.
    with pytest.raises(IntegrityError):
        await repo.append_events(
            run.run_id, [StoredEvent(3, b"{}", False), StoredEvent(1, b"dup", False)], epoch=epoch, phase=("x", "", 6.0)
        )
    assert (await repo.get_run(run.run_id)).phase == "running_tool"  # type: ignore[union-attr]

    # Another worker takes the run over (its lease lapsed): the old epoch writes nothing more.
    clock.advance(60)
    taken = await repo.claim_run(run.run_id, worker_id="w2")
    assert taken is not None and taken.run.lease_epoch == epoch + 1
    with pytest.raises(LeaseLost):
        await repo.append_events(run.run_id, [StoredEvent(3, b'{"seq":3}', False)], epoch=epoch, phase=("y", "", 7.0))
    assert await repo.list_events(run.run_id, 0) == first
    assert (await repo.get_run(run.run_id)).phase == taken.run.phase != "y"  # type: ignore[union-attr]
    await repo.append_events(run.run_id, [StoredEvent(3, b'{"seq":3}', False)], epoch=epoch + 1)
    assert [e.seq for e in await repo.list_events(run.run_id, 0)] == [1, 2, 3]


async def test_claim_run_moves_a_queued_run_to_running_once_and_returns_its_project(
    repo: SqlRunnerRepository,
    clock: FakeClock,
) -> None:
    thread = await repo.create_thread(account_id=ACCOUNT, name="t")
    run = await new_run(repo, thread)
    clock.advance(2)

    claimed = await repo.claim_run(run.run_id)

    assert claimed is not None
    assert claimed.project_id == thread.project_id
    assert claimed.run == await repo.get_run(run.run_id)
    assert (claimed.run.status, claimed.run.started_at, claimed.run.model) == (RunStatus.RUNNING, clock.now, "scripted")
    # A second claim (a duplicate delivery) and a claim of an unknown run get nothing.
    assert await repo.claim_run(run.run_id) is None
    assert await repo.claim_run(str(uuid.uuid4())) is None


async def test_a_claim_with_history_returns_the_threads_messages_as_list_messages_does(
    repo: SqlRunnerRepository, engine: AsyncEngine
) -> None:
    thread = await repo.create_thread(account_id=ACCOUNT, name="t")
    other = await repo.create_thread(account_id=ACCOUNT, name="other")
    earlier = await add(repo, prompt(thread, "earlier", created_at=5.0))
    await new_run(repo, other, prompt(other, "not this thread's"))
    run = await new_run(repo, thread, prompt(thread, "now", created_at=1.0))  # an older timestamp: order is position

    if engine.dialect.name == "postgresql":
        # The claim and the history are one statement: one round trip less before the model call.
        async with recorded_statements(engine) as statements:
            claimed = await repo.claim_run(run.run_id, with_history=True)
        assert len(statements) == 1, statements
    else:
        claimed = await repo.claim_run(run.run_id, with_history=True)

    assert claimed is not None and claimed.run == await repo.get_run(run.run_id)
    assert claimed.history == tuple(await repo.list_messages(thread.thread_id))
    assert [m.message_id for m in claimed.history][0] == earlier.message_id and len(claimed.history) == 2

    # A thread without messages has an empty history; without asking, none is read.
    bare = await repo.create_thread(account_id=ACCOUNT, name="bare")
    silent = await new_run(repo, bare)
    again = await new_run(repo, await repo.create_thread(account_id=ACCOUNT, name="x"))
    assert (await repo.claim_run(silent.run_id, with_history=True)).history == ()  # type: ignore[union-attr]
    assert (await repo.claim_run(again.run_id)).history is None  # type: ignore[union-attr]


async def test_claim_run_leaves_a_run_that_is_no_longer_queued_alone(repo: SqlRunnerRepository) -> None:
    thread = await repo.create_thread(account_id=ACCOUNT, name="t")
    run = await new_run(repo, thread)
    assert await repo.transition(run.run_id, from_=[RunStatus.QUEUED], to=RunStatus.CANCELLED)

    assert await repo.claim_run(run.run_id) is None
    assert (await repo.get_run(run.run_id)).status is RunStatus.CANCELLED  # type: ignore[union-attr]
