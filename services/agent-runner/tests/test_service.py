"""RunnerService over the SQL repository (SQLite) and the in-process queue, stream and stop signal."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from agentpress import message_from_json
from agentry.runner.adapters.queue_memory import MemoryRunQueue
from agentry.runner.adapters.sql import SqlRunnerRepository
from agentry.runner.adapters.stop_memory import MemoryStopSignal
from agentry.runner.domain import MAX_MESSAGE_CHARS, MAX_THREAD_NAME_CHARS, RunStatus, StoredEvent
from agentry.runner.errors import InvalidInput, RunAlreadyActive, RunNotFound, ThreadNotFound
from agentry.runner.queue import QueueUnavailable, RunJob
from agentry.runner.service import RunnerService
from agentry.servicekit.eventstream import MemoryEventStream

WAIT = 5.0
ALICE, MALLORY = "acct-alice", "acct-mallory"
MALFORMED_IDS = ["", "not-a-uuid", "x" * 500, "' OR 1=1 --", "00000000-0000-0000-0000-00000000000g"]


class FlakyQueue:
    """A run queue whose broker can be switched off; it keeps what it accepted and was offered."""

    def __init__(self) -> None:
        self.available = True
        self.offered: list[RunJob] = []
        self.accepted: list[RunJob] = []

    async def publish(self, job: RunJob) -> None:
        self.offered.append(job)
        if not self.available:
            raise QueueUnavailable("broker unreachable")
        self.accepted.append(job)

    async def consume(self, handler, *, concurrency):  # pragma: no cover - the api role never consumes
        raise NotImplementedError

    async def close(self) -> None:
        self.available = False


@dataclass
class Env:
    service: RunnerService
    repo: SqlRunnerRepository
    queue: MemoryRunQueue
    events: MemoryEventStream
    stops: MemoryStopSignal

    async def published(self) -> list[RunJob]:
        """Every job published so far, in order: drained up to a sentinel published now."""
        sentinel = RunJob(run_id=f"sentinel-{uuid.uuid4()}", thread_id="-", account_id="-")
        await self.queue.publish(sentinel)
        seen: list[RunJob] = []
        reached = asyncio.Event()

        async def record(job: RunJob) -> None:
            if job == sentinel:
                reached.set()
            else:
                seen.append(job)

        consumer = await self.queue.consume(record, concurrency=1)
        await asyncio.wait_for(reached.wait(), WAIT)
        await consumer.stop()
        return seen


@pytest.fixture
async def env(sqlite_engine: AsyncEngine) -> AsyncIterator[Env]:
    repo = SqlRunnerRepository(sqlite_engine)
    queue, events, stops = MemoryRunQueue(), MemoryEventStream(), MemoryStopSignal()
    service = RunnerService(repo, queue, events, stops, default_model="openai/default-model")
    yield Env(service, repo, queue, events, stops)
    await queue.close()
    await events.close()
    await stops.close()


async def test_a_thread_and_run_of_another_account_are_not_found(env: Env) -> None:
    service = env.service
    thread = await service.create_thread(ALICE, "mine")
    run = await service.start_run(ALICE, thread.thread_id, "", "hello")

    thread_calls = [
        service.get_thread(MALLORY, thread.thread_id),
        service.add_message(MALLORY, thread.thread_id, "sneaky"),
        service.list_messages(MALLORY, thread.thread_id),
        service.start_run(MALLORY, thread.thread_id, "", "sneaky"),
    ]
    run_calls = [
        service.get_run(MALLORY, run.run_id),
        service.stop_run(MALLORY, run.run_id),
        service.list_run_events(MALLORY, run.run_id, 0),
    ]
    for call, expected in [*((c, ThreadNotFound) for c in thread_calls), *((c, RunNotFound) for c in run_calls)]:
        with pytest.raises(Exception) as caught:
            await call
        assert type(caught.value) is expected

    # Nothing Mallory did reached Alice's thread or run.
    assert [m.type for m in await service.list_messages(ALICE, thread.thread_id)] == ["user"]
    assert (await service.get_run(ALICE, run.run_id)).status is RunStatus.QUEUED
    assert not await env.stops.is_stop_requested(run.run_id)
    assert await env.events.read(run.run_id, 0) == []
    assert [job.run_id for job in await env.published()] == [run.run_id]


@pytest.mark.parametrize("bad_id", MALFORMED_IDS)
async def test_malformed_ids_are_not_found_too(env: Env, bad_id: str) -> None:
    service = env.service
    await service.create_thread(ALICE, "mine")
    for call, expected in [
        (service.get_thread(ALICE, bad_id), ThreadNotFound),
        (service.add_message(ALICE, bad_id, "hi"), ThreadNotFound),
        (service.list_messages(ALICE, bad_id), ThreadNotFound),
        (service.start_run(ALICE, bad_id, "", "hi"), ThreadNotFound),
        (service.get_run(ALICE, bad_id), RunNotFound),
        (service.stop_run(ALICE, bad_id), RunNotFound),
        (service.list_run_events(ALICE, bad_id, 0), RunNotFound),
    ]:
        with pytest.raises(Exception) as caught:
            await call
        assert type(caught.value) is expected


async def test_a_well_formed_but_unknown_id_is_not_found(env: Env) -> None:
    with pytest.raises(ThreadNotFound):
        await env.service.get_thread(ALICE, str(uuid.uuid4()))
    with pytest.raises(RunNotFound):
        await env.service.get_run(ALICE, str(uuid.uuid4()))


@pytest.mark.parametrize("content", ["", "   \n\t", "x" * (MAX_MESSAGE_CHARS + 1)])
async def test_message_content_is_validated(env: Env, content: str) -> None:
    thread = await env.service.create_thread(ALICE, "t")

    with pytest.raises(InvalidInput, match=r"^content: "):
        await env.service.add_message(ALICE, thread.thread_id, content)

    assert await env.service.list_messages(ALICE, thread.thread_id) == []


async def test_a_prompt_over_the_limit_is_refused_before_any_run_exists(env: Env) -> None:
    thread = await env.service.create_thread(ALICE, "t")

    with pytest.raises(InvalidInput, match=r"^content: "):
        await env.service.start_run(ALICE, thread.thread_id, "", "x" * (MAX_MESSAGE_CHARS + 1))

    # No run was created, so a valid start goes through.
    await env.service.start_run(ALICE, thread.thread_id, "", "ok")


async def test_a_message_at_the_limit_is_accepted(env: Env) -> None:
    thread = await env.service.create_thread(ALICE, "t")
    stored = await env.service.add_message(ALICE, thread.thread_id, "y" * MAX_MESSAGE_CHARS)
    assert message_from_json(stored.content_json).text == "y" * MAX_MESSAGE_CHARS  # type: ignore[union-attr]


async def test_other_inputs_are_validated_with_the_field_named(env: Env) -> None:
    service = env.service
    thread = await service.create_thread(ALICE, "t")
    for call, field in [
        (service.create_thread("", "t"), "account_id"),
        (service.get_thread("", thread.thread_id), "account_id"),
        (service.get_run("", str(uuid.uuid4())), "account_id"),
        (service.stop_run("", str(uuid.uuid4())), "account_id"),
        (service.create_thread(ALICE, "n" * (MAX_THREAD_NAME_CHARS + 1)), "name"),
        (service.start_run(ALICE, thread.thread_id, "m" * 201, "hi"), "model_name"),
    ]:
        with pytest.raises(InvalidInput, match=f"^{field}: "):
            await call


async def test_a_blank_thread_name_gets_a_default(env: Env) -> None:
    thread = await env.service.create_thread(ALICE, "   ")
    assert thread.name == "New thread"


async def test_start_run_stores_the_prompt_and_publishes_the_job(env: Env) -> None:
    thread = await env.service.create_thread(ALICE, "t")

    run = await env.service.start_run(ALICE, thread.thread_id, "  ", "count the files")

    assert (run.status, run.model, run.thread_id, run.account_id) == (
        RunStatus.QUEUED,
        "openai/default-model",
        thread.thread_id,
        ALICE,
    )
    assert await env.service.get_run(ALICE, run.run_id) == run
    [stored] = await env.service.list_messages(ALICE, thread.thread_id)
    assert stored.type == "user"
    assert message_from_json(stored.content_json).text == "count the files"  # type: ignore[union-attr]
    assert await env.published() == [RunJob(run_id=run.run_id, thread_id=thread.thread_id, account_id=ALICE)]


async def test_a_run_without_prompt_stores_no_message(env: Env) -> None:
    thread = await env.service.create_thread(ALICE, "t")
    run = await env.service.start_run(ALICE, thread.thread_id, "openai/other", "")
    assert run.model == "openai/other"
    assert await env.service.list_messages(ALICE, thread.thread_id) == []


async def test_reasoning_effort_is_kept_with_the_run_and_validated(env: Env) -> None:
    thread = await env.service.create_thread(ALICE, "t")
    with pytest.raises(InvalidInput, match="reasoning_effort"):
        await env.service.start_run(ALICE, thread.thread_id, "", "hi", reasoning_effort="extreme")
    assert await env.service.list_messages(ALICE, thread.thread_id) == []
    run = await env.service.start_run(ALICE, thread.thread_id, "", "hi", reasoning_effort="high")
    assert run.reasoning_effort == "high"
    assert (await env.service.get_run(ALICE, run.run_id)).reasoning_effort == "high"


async def test_force_model_overrides_the_request(env: Env) -> None:
    service = RunnerService(env.repo, env.queue, env.events, env.stops, default_model="d", force_model="forced")
    thread = await service.create_thread(ALICE, "t")
    run = await service.start_run(ALICE, thread.thread_id, "openai/asked", "hi")
    assert run.model == "forced"


async def test_one_active_run_per_thread(env: Env) -> None:
    service = env.service
    thread = await service.create_thread(ALICE, "t")
    first = await service.start_run(ALICE, thread.thread_id, "", "first")

    with pytest.raises(RunAlreadyActive):
        await service.start_run(ALICE, thread.thread_id, "", "second")

    texts = [message_from_json(m.content_json).text for m in await service.list_messages(ALICE, thread.thread_id)]
    assert texts == ["first"]
    assert [job.run_id for job in await env.published()] == [first.run_id]

    # Another thread of the same account is unaffected.
    other = await service.create_thread(ALICE, "other")
    await service.start_run(ALICE, other.thread_id, "", "parallel")


async def terminal_events(env: Env, run_id: str) -> tuple[list[StoredEvent], list[dict]]:
    stream = await env.events.read(run_id, 0)
    durable = await env.repo.list_events(run_id, 0)
    assert [(e.seq, e.data, e.terminal) for e in stream] == [(e.seq, e.data, e.terminal) for e in durable]
    return durable, [orjson.loads(e.data) for e in durable]


async def test_stopping_a_queued_run_cancels_it_with_one_terminal_event(env: Env) -> None:
    thread = await env.service.create_thread(ALICE, "t")
    run = await env.service.start_run(ALICE, thread.thread_id, "", "go")

    stopped = await env.service.stop_run(ALICE, run.run_id)

    assert stopped.status is RunStatus.CANCELLED
    assert (stopped.finish_reason, stopped.error) == ("cancelled", "")
    assert stopped.completed_at is not None
    events, decoded = await terminal_events(env, run.run_id)
    assert [(e.seq, e.terminal) for e in events] == [(1, True)]
    assert decoded == [{"seq": 1, "type": "run_finished", "reason": "cancelled", "error": None}]
    assert await env.stops.is_stop_requested(run.run_id)
    assert await env.service.list_run_events(ALICE, run.run_id, 0) == events

    # Stopping again changes nothing and adds no event.
    assert await env.service.stop_run(ALICE, run.run_id) == stopped
    assert (await terminal_events(env, run.run_id))[0] == events

    # The thread is free for the next run.
    await env.service.start_run(ALICE, thread.thread_id, "", "again")


async def test_stopping_a_running_run_hands_it_to_its_worker(env: Env) -> None:
    thread = await env.service.create_thread(ALICE, "t")
    run = await env.service.start_run(ALICE, thread.thread_id, "", "go")
    assert await env.repo.transition(run.run_id, from_=[RunStatus.QUEUED], to=RunStatus.RUNNING)

    async with env.stops.watch(run.run_id) as stop_requested:
        stopped = await env.service.stop_run(ALICE, run.run_id)
        await asyncio.wait_for(stop_requested.wait(), WAIT)

    assert stopped.status is RunStatus.CANCELLING
    assert stopped.completed_at is None
    # The worker writes the terminal event when the agent has stopped, not the API.
    assert await env.repo.list_events(run.run_id, 0) == []
    assert await env.events.read(run.run_id, 0) == []

    assert await env.service.stop_run(ALICE, run.run_id) == stopped
    assert await env.repo.list_events(run.run_id, 0) == []


@pytest.mark.parametrize("status", [RunStatus.COMPLETED, RunStatus.FAILED])
async def test_stopping_an_ended_run_changes_nothing(env: Env, status: RunStatus) -> None:
    thread = await env.service.create_thread(ALICE, "t")
    run = await env.service.start_run(ALICE, thread.thread_id, "", "go")
    assert await env.repo.transition(run.run_id, from_=[RunStatus.QUEUED], to=RunStatus.RUNNING)
    assert await env.repo.transition(run.run_id, from_=[RunStatus.RUNNING], to=status, finish_reason="x")
    ended = await env.service.get_run(ALICE, run.run_id)

    assert await env.service.stop_run(ALICE, run.run_id) == ended
    assert not await env.stops.is_stop_requested(run.run_id)
    assert await env.repo.list_events(run.run_id, 0) == []


async def test_a_run_the_queue_refused_is_accepted_and_the_sweeper_dispatches_it(sqlite_engine: AsyncEngine) -> None:
    from agentry.runner.sweeper import Sweeper

    repo, queue, events, stops = (
        SqlRunnerRepository(sqlite_engine),
        FlakyQueue(),
        MemoryEventStream(),
        MemoryStopSignal(),
    )
    woken: list[bool] = []
    service = RunnerService(repo, queue, events, stops, default_model="m", on_undispatched=lambda: woken.append(True))
    sweeper = Sweeper(repo, queue, sqlite_engine, interval=60, redispatch_after=60)
    thread = await service.create_thread(ALICE, "t")
    queue.available = False

    # Accepted: the run and its prompt are stored; the caller gets its run like any other start.
    run = await service.start_run(ALICE, thread.thread_id, "", "go")
    assert run.status is RunStatus.QUEUED and woken == [True]
    assert (await service.get_run(ALICE, run.run_id)).status is RunStatus.QUEUED

    # While the broker is down the sweeper cannot publish either, and keeps the run due.
    assert await sweeper.sweep_once() == 0
    # Once the broker is back the next pass publishes the job, exactly once.
    queue.available = True
    assert await sweeper.sweep_once() == 1
    assert queue.accepted == [RunJob(run_id=run.run_id, thread_id=thread.thread_id, account_id=ALICE)]
    assert await sweeper.sweep_once() == 0


async def test_runs_a_sweep_could_not_publish_for_an_unexpected_error_are_due_again_at_once(
    sqlite_engine: AsyncEngine,
) -> None:
    # dispatch_candidates marks the runs dispatched as it selects them; a publish that fails with
    # anything but QueueUnavailable (seen: aio-pika's RuntimeError "Connection was not opened" while
    # reconnecting) must not leave them marked, to wait out `redispatch_after`.
    from agentry.runner.sweeper import Sweeper

    class BrokenQueue(FlakyQueue):
        broken = False

        async def publish(self, job: RunJob) -> None:
            if self.broken:
                raise RuntimeError("Connection was not opened")
            await super().publish(job)

    repo, queue = SqlRunnerRepository(sqlite_engine), BrokenQueue()
    service = RunnerService(repo, queue, MemoryEventStream(), MemoryStopSignal(), default_model="m")
    sweeper = Sweeper(repo, queue, sqlite_engine, interval=60, redispatch_after=3600)
    threads = [await service.create_thread(ALICE, f"t{n}") for n in range(3)]
    queue.available = False
    runs = [await service.start_run(ALICE, t.thread_id, "", "go") for t in threads]  # not dispatched

    queue.broken = True
    with pytest.raises(RuntimeError):
        await sweeper.sweep_once()
    queue.broken, queue.available = False, True
    assert await sweeper.sweep_once() == 3  # the next pass, not an hour later
    assert sorted(j.run_id for j in queue.accepted) == sorted(r.run_id for r in runs)


async def test_list_run_events_treats_a_negative_position_as_the_start(env: Env) -> None:
    thread = await env.service.create_thread(ALICE, "t")
    run = await env.service.start_run(ALICE, thread.thread_id, "", "go")
    await env.service.stop_run(ALICE, run.run_id)

    assert [e.seq for e in await env.service.list_run_events(ALICE, run.run_id, -5)] == [1]
    assert await env.service.list_run_events(ALICE, run.run_id, 1) == []


async def test_concurrent_stops_of_a_queued_run_write_one_terminal_event(env: Env) -> None:
    thread = await env.service.create_thread(ALICE, "t")
    run = await env.service.start_run(ALICE, thread.thread_id, "", "go")

    stopped = await asyncio.gather(*(env.service.stop_run(ALICE, run.run_id) for _ in range(8)))

    assert {s.status for s in stopped} == {RunStatus.CANCELLED}
    events, _ = await terminal_events(env, run.run_id)
    assert [(e.seq, e.terminal) for e in events] == [(1, True)]


async def test_inputs_postgresql_cannot_store_are_invalid_on_every_database(engine: AsyncEngine) -> None:
    """NUL characters and over-long account ids used to be stored by SQLite and be an internal
    error on PostgreSQL; now both databases see the same InvalidInput before any write."""
    service = RunnerService(
        SqlRunnerRepository(engine), MemoryRunQueue(), MemoryEventStream(), MemoryStopSignal(), default_model="m"
    )
    thread = await service.create_thread(ALICE, "t")
    for call, field in [
        (service.create_thread(ALICE, "a\x00b"), "name"),
        (service.create_thread("acct\x00", "t"), "account_id"),
        (service.create_thread("a" * 65, "t"), "account_id"),
        (service.start_run(ALICE, thread.thread_id, "model\x00", "hi"), "model_name"),
    ]:
        with pytest.raises(InvalidInput, match=f"^{field}: "):
            await call

    # Message content is stored as JSON, so a NUL in it is fine and comes back intact.
    await service.add_message(ALICE, thread.thread_id, "before\x00after")
    await service.create_thread("a" * 64, "the longest account id fits")
    [stored] = await service.list_messages(ALICE, thread.thread_id)
    assert message_from_json(stored.content_json).text == "before\x00after"  # type: ignore[union-attr]
