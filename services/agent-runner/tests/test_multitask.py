"""Per-thread run policies (reject, enqueue, interrupt, rollback) and the per-account cap on active
runs: RunnerService over the SQL repository, on SQLite and on PostgreSQL.

A "worker" here is the repository calls a worker makes (claim, fenced messages, end_run), so the
tests decide exactly when each run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from agentpress import AssistantMessage, RunFinished, message_from_json
from agentry.api.runner.v1 import runner_pb2 as pb
from agentry.api.runner.v1 import runner_pb2_grpc
from agentry.runner.adapters.sql import SqlRunnerRepository
from agentry.runner.adapters.stop_memory import MemoryStopSignal
from agentry.runner.config import RunnerSettings
from agentry.runner.domain import Phase, Run, RunStatus
from agentry.runner.errors import InvalidInput, RunAlreadyActive, TooManyActiveRuns
from agentry.runner.main import start as start_runner
from agentry.runner.queue import RunJob
from agentry.runner.service import RunnerService
from agentry.runner.sinks import end_run
from agentry.runner.sweeper import Sweeper
from agentry.servicekit import DEV_INTERNAL_TOKEN, open_channel
from agentry.servicekit.errors import ERROR_CODE_KEY
from agentry.servicekit.eventstream import MemoryEventStream

ALICE = "acct-alice"
WAIT = 5.0


class RecordingQueue:
    """A run queue that keeps every job it was given (the api role only publishes)."""

    def __init__(self) -> None:
        self.jobs: list[RunJob] = []

    async def publish(self, job: RunJob) -> None:
        self.jobs.append(job)

    async def consume(self, handler, *, concurrency):  # pragma: no cover - never consumed here
        raise NotImplementedError

    async def close(self) -> None:
        pass

    def published(self) -> list[str]:
        return [job.run_id for job in self.jobs]


@dataclass
class Env:
    service: RunnerService
    repo: SqlRunnerRepository
    queue: RecordingQueue
    events: MemoryEventStream
    stops: MemoryStopSignal
    sweeper: Sweeper
    woken: list[bool]

    async def thread(self) -> str:
        return (await self.service.create_thread(ALICE, "t")).thread_id

    async def start(self, thread_id: str, prompt: str, strategy: str = "") -> Run:
        return await self.service.start_run(ALICE, thread_id, "", prompt, multitask_strategy=strategy)

    async def run(self, run_id: str) -> Run:
        return await self.service.get_run(ALICE, run_id)

    async def texts(self, thread_id: str) -> list[str]:
        return [
            message_from_json(m.content_json).text  # type: ignore[union-attr]
            for m in await self.service.list_messages(ALICE, thread_id)
        ]

    async def claim(self, run_id: str) -> int:
        """A worker takes the run; returns its lease epoch."""
        claimed = await self.repo.claim_run(run_id, worker_id="worker-1")
        assert claimed is not None, f"run {run_id} could not be claimed"
        return claimed.run.lease_epoch

    async def say(self, run_id: str, epoch: int, text: str) -> None:
        """The worker holding the run persists an assistant message (fenced, as sinks.py does)."""
        run = await self.run(run_id)
        message = AssistantMessage(text=text)
        await self.repo.add_message(
            thread_id=run.thread_id,
            account_id=ALICE,
            type=message.kind,
            content_json=message.to_json().decode(),
            message_id=message.message_id,
            created_at=message.created_at,
            fence=(run_id, epoch),
        )

    async def end(self, run_id: str, epoch: int, reason: str = "completed") -> None:
        """The worker ends the run, as RunEventSink does: end_run with the terminal event."""
        seq = await self.repo.max_event_seq(run_id) + 1
        assert await end_run(
            self.repo,
            self.events,
            run_id,
            seq=seq,
            event=RunFinished(reason=reason),
            from_=[RunStatus.RUNNING, RunStatus.CANCELLING],
            epoch=epoch,
        )


def make_env(engine: AsyncEngine, *, cap: int = 0) -> Env:
    repo, queue = SqlRunnerRepository(engine), RecordingQueue()
    events, stops = MemoryEventStream(), MemoryStopSignal()
    sweeper = Sweeper(repo, queue, engine, interval=60, redispatch_after=60)
    woken: list[bool] = []
    service = RunnerService(
        repo,
        queue,
        events,
        stops,
        default_model="m",
        on_undispatched=lambda: woken.append(True),
        max_active_runs_per_account=cap,
        active_runs_retry_after_seconds=7,
    )
    return Env(service, repo, queue, events, stops, sweeper, woken)


@pytest.fixture
async def env(engine: AsyncEngine) -> AsyncIterator[Env]:
    env = make_env(engine)
    yield env
    await env.sweeper.close()
    await env.events.close()
    await env.stops.close()


# -- reject and validation ---------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["", "reject"])
async def test_reject_refuses_a_second_run_while_one_is_active(env: Env, strategy: str) -> None:
    thread = await env.thread()
    first = await env.start(thread, "first")
    assert first.status is RunStatus.QUEUED and first.multitask_strategy == "reject"

    with pytest.raises(RunAlreadyActive):
        await env.start(thread, "second", strategy)

    assert await env.texts(thread) == ["first"]
    assert env.queue.published() == [first.run_id]


@pytest.mark.parametrize("strategy", ["queue", "REJECT", "enqueue ", "x" * 100])
async def test_an_unknown_strategy_is_invalid_and_stores_nothing(env: Env, strategy: str) -> None:
    thread = await env.thread()

    with pytest.raises(InvalidInput, match=r"^multitask_strategy: "):
        await env.start(thread, "hello", strategy)

    assert await env.texts(thread) == []
    assert env.queue.jobs == []


@pytest.mark.parametrize("strategy", ["enqueue", "interrupt", "rollback"])
async def test_on_a_free_thread_every_strategy_starts_at_once(env: Env, strategy: str) -> None:
    thread = await env.thread()

    run = await env.start(thread, "go", strategy)

    assert (run.status, run.multitask_strategy, run.interrupts_run_id) == (RunStatus.QUEUED, strategy, None)
    assert await env.texts(thread) == ["go"]
    assert env.queue.published() == [run.run_id]


# -- enqueue -----------------------------------------------------------------------------------


async def test_enqueued_runs_wait_and_start_in_order_each_prompt_joining_when_it_starts(env: Env) -> None:
    thread = await env.thread()
    first = await env.start(thread, "one")
    second = await env.start(thread, "two", "enqueue")
    third = await env.start(thread, "three", "enqueue")

    # They wait: pending, no job, and their prompts are not in the thread (the active run would see them).
    for run in (second, third):
        assert (run.status, run.phase) == (RunStatus.PENDING, Phase.WAITING_FOR_THREAD.value)
    assert env.queue.published() == [first.run_id]
    assert await env.texts(thread) == ["one"]
    assert await env.sweeper.sweep_once() == 0
    assert await env.repo.claim_run(second.run_id, worker_id="eager") is None  # a stray job takes nothing

    epoch = await env.claim(first.run_id)
    await env.say(first.run_id, epoch, "answer one")
    await env.end(first.run_id, epoch)

    # The end gave the thread to the second run (in the same transaction): queued, its prompt
    # after the first run's answer, and its job published by the sweeper, which was woken.
    promoted = await env.run(second.run_id)
    assert (promoted.status, promoted.phase) == (RunStatus.QUEUED, Phase.WAITING_FOR_WORKER.value)
    assert (await env.run(third.run_id)).status is RunStatus.PENDING
    assert await env.texts(thread) == ["one", "answer one", "two"]
    assert env.woken
    assert await env.sweeper.sweep_once() == 1
    assert env.queue.published() == [first.run_id, second.run_id]
    assert await env.sweeper.sweep_once() == 0

    epoch = await env.claim(second.run_id)
    await env.say(second.run_id, epoch, "answer two")
    await env.end(second.run_id, epoch, reason="error")  # however it ends, the next one starts

    assert (await env.run(third.run_id)).status is RunStatus.QUEUED
    assert await env.sweeper.sweep_once() == 1
    epoch = await env.claim(third.run_id)
    await env.end(third.run_id, epoch)

    assert await env.texts(thread) == ["one", "answer one", "two", "answer two", "three"]
    assert env.queue.published() == [first.run_id, second.run_id, third.run_id]
    assert [(await env.run(r.run_id)).status for r in (first, second, third)] == [
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.COMPLETED,
    ]


async def test_a_reject_start_is_refused_while_runs_wait(env: Env) -> None:
    thread = await env.thread()
    await env.start(thread, "one")
    await env.start(thread, "two", "enqueue")

    with pytest.raises(RunAlreadyActive):
        await env.start(thread, "three")


async def test_stopping_a_waiting_run_cancels_it_and_takes_it_out_of_line(env: Env) -> None:
    thread = await env.thread()
    first = await env.start(thread, "one")
    second = await env.start(thread, "two", "enqueue")
    third = await env.start(thread, "three", "enqueue")

    stopped = await env.service.stop_run(ALICE, second.run_id)

    assert (stopped.status, stopped.finish_reason) == (RunStatus.CANCELLED, "cancelled")
    [terminal] = await env.events.read(second.run_id, 0)
    assert orjson.loads(terminal.data) == {"seq": 1, "type": "run_finished", "reason": "cancelled", "error": None}
    assert (await env.run(first.run_id)).status is RunStatus.QUEUED  # the active run is untouched

    epoch = await env.claim(first.run_id)
    await env.end(first.run_id, epoch)
    assert (await env.run(third.run_id)).status is RunStatus.QUEUED
    assert await env.texts(thread) == ["one", "three"]  # the cancelled run's prompt never joined


async def test_stopping_the_active_run_hands_the_thread_to_the_next_one(env: Env) -> None:
    thread = await env.thread()
    first = await env.start(thread, "one")
    second = await env.start(thread, "two", "enqueue")

    await env.service.stop_run(ALICE, first.run_id)  # queued: cancelled on the spot

    assert (await env.run(first.run_id)).status is RunStatus.CANCELLED
    assert (await env.run(second.run_id)).status is RunStatus.QUEUED
    assert await env.sweeper.sweep_once() == 1


# -- interrupt and rollback --------------------------------------------------------------------


async def test_interrupt_stops_the_running_run_keeps_what_it_wrote_and_starts_next(env: Env) -> None:
    thread = await env.thread()
    first = await env.start(thread, "one")
    epoch = await env.claim(first.run_id)
    await env.say(first.run_id, epoch, "partial answer")

    async with env.stops.watch(first.run_id) as stop_requested:
        second = await env.start(thread, "two", "interrupt")
        await asyncio.wait_for(stop_requested.wait(), WAIT)

    # The running run was asked to stop (as POST /agent-run/{id}/stop does); the new one waits for it.
    assert (second.status, second.interrupts_run_id) == (RunStatus.PENDING, first.run_id)
    assert (await env.run(first.run_id)).status is RunStatus.CANCELLING
    assert await env.texts(thread) == ["one", "partial answer"]

    await env.end(first.run_id, epoch, reason="cancelled")  # its worker stops the agent

    assert (await env.run(first.run_id)).status is RunStatus.CANCELLED
    assert (await env.run(second.run_id)).status is RunStatus.QUEUED
    assert await env.texts(thread) == ["one", "partial answer", "two"]
    assert await env.sweeper.sweep_once() == 1
    assert env.queue.published() == [first.run_id, second.run_id]


async def test_interrupting_a_run_no_worker_took_yet_starts_the_new_one_at_once(env: Env) -> None:
    thread = await env.thread()
    first = await env.start(thread, "one")

    second = await env.start(thread, "two", "interrupt")

    assert second.status is RunStatus.QUEUED  # the queued run was cancelled in the same call
    assert (await env.run(first.run_id)).status is RunStatus.CANCELLED
    assert await env.texts(thread) == ["one", "two"]
    assert await env.sweeper.sweep_once() == 1


async def test_an_interrupting_run_goes_ahead_of_the_enqueued_ones(env: Env) -> None:
    thread = await env.thread()
    first = await env.start(thread, "one")
    epoch = await env.claim(first.run_id)
    waiting = await env.start(thread, "waits", "enqueue")

    urgent = await env.start(thread, "urgent", "interrupt")
    await env.end(first.run_id, epoch, reason="cancelled")

    assert (await env.run(urgent.run_id)).status is RunStatus.QUEUED
    assert (await env.run(waiting.run_id)).status is RunStatus.PENDING
    epoch = await env.claim(urgent.run_id)
    await env.end(urgent.run_id, epoch)
    assert (await env.run(waiting.run_id)).status is RunStatus.QUEUED
    assert await env.texts(thread) == ["one", "urgent", "waits"]


async def test_rollback_deletes_what_the_stopped_run_added_before_the_new_run_starts(env: Env) -> None:
    thread = await env.thread()
    await env.service.add_message(ALICE, thread, "context")
    earlier = await env.start(thread, "earlier")
    epoch = await env.claim(earlier.run_id)
    await env.say(earlier.run_id, epoch, "earlier answer")
    await env.end(earlier.run_id, epoch)
    first = await env.start(thread, "one")
    epoch = await env.claim(first.run_id)
    await env.say(first.run_id, epoch, "answer to be rolled back")
    await env.say(first.run_id, epoch, "more of it")

    second = await env.start(thread, "two", "rollback")

    assert (second.status, second.interrupts_run_id) == (RunStatus.PENDING, first.run_id)
    # Until the stopped run has ended nothing is deleted (its worker may still be writing).
    assert await env.texts(thread) == [
        "context",
        "earlier",
        "earlier answer",
        "one",
        "answer to be rolled back",
        "more of it",
    ]
    await env.end(first.run_id, epoch, reason="cancelled")

    ended = await env.run(first.run_id)
    assert (ended.status, ended.finish_reason) == (RunStatus.CANCELLED, "cancelled")
    assert (await env.run(second.run_id)).status is RunStatus.QUEUED
    # The stopped run's prompt stays; what it added after it is gone; earlier runs are untouched.
    assert await env.texts(thread) == ["context", "earlier", "earlier answer", "one", "two"]


async def test_rollback_of_a_run_that_ends_after_its_fenced_writes_leaves_nothing_behind(env: Env) -> None:
    thread = await env.thread()
    first = await env.start(thread, "one")
    epoch = await env.claim(first.run_id)
    await env.say(first.run_id, epoch, "written before the stop")
    await env.start(thread, "two", "rollback")
    await env.end(first.run_id, epoch, reason="cancelled")

    # A late write of the old worker is refused by its fence: the run has ended.
    from agentry.runner.errors import LeaseLost

    with pytest.raises(LeaseLost):
        await env.say(first.run_id, epoch, "too late")
    assert await env.texts(thread) == ["one", "two"]


# -- races -------------------------------------------------------------------------------------


async def test_concurrent_enqueues_line_up_and_each_end_starts_exactly_the_next(env: Env) -> None:
    thread = await env.thread()
    first = await env.start(thread, "first")

    waiting = await asyncio.gather(*(env.start(thread, f"w{n}", "enqueue") for n in range(8)))

    assert {r.status for r in waiting} == {RunStatus.PENDING}
    order: list[str] = []
    current = first
    for _ in range(len(waiting)):
        epoch = await env.claim(current.run_id)
        await env.end(current.run_id, epoch)
        queued = [r for r in waiting if (await env.run(r.run_id)).status is RunStatus.QUEUED]
        assert len(queued) == 1, "exactly one run holds the thread"
        current = queued[0]
        order.append(current.run_id)
    assert sorted(order) == sorted(r.run_id for r in waiting)
    texts = await env.texts(thread)
    assert texts[0] == "first" and sorted(texts[1:]) == sorted(f"w{n}" for n in range(8))


async def test_an_enqueue_racing_the_end_of_the_active_run_is_never_stranded(env: Env) -> None:
    """The lost wake-up: a run lined up while the active run ends must still be started."""
    for _ in range(10):
        thread = await env.thread()
        first = await env.start(thread, "first")
        epoch = await env.claim(first.run_id)

        _, second = await asyncio.gather(env.end(first.run_id, epoch), env.start(thread, "second", "enqueue"))

        assert (await env.run(second.run_id)).status is RunStatus.QUEUED
        assert await env.texts(thread) == ["first", "second"]


async def test_the_sweeper_starts_runs_left_waiting_on_a_free_thread(env: Env, engine: AsyncEngine) -> None:
    thread = await env.thread()
    first = await env.start(thread, "one")
    second = await env.start(thread, "two", "enqueue")
    # A path that ends runs without promoting (an older release, a manual fix in the database).
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE agent_runs SET status = 'failed' WHERE run_id = :r"), {"r": first.run_id})

    assert await env.sweeper.sweep_once() == 1

    assert (await env.run(second.run_id)).status is RunStatus.QUEUED
    assert env.queue.published() == [first.run_id, second.run_id]
    assert await env.texts(thread) == ["one", "two"]


# -- the per-account cap -----------------------------------------------------------------------


async def test_the_cap_counts_every_active_run_of_the_account(engine: AsyncEngine) -> None:
    env = make_env(engine, cap=3)
    a, b = await env.thread(), await env.thread()
    first = await env.start(a, "a1")
    await env.start(a, "a2", "enqueue")  # waiting runs count too
    await env.start(b, "b1")

    with pytest.raises(TooManyActiveRuns) as refused:
        await env.start(await env.thread(), "one too many")
    assert refused.value.retry_after_seconds == 7
    assert refused.value.code == "too_many_active_runs"
    with pytest.raises(TooManyActiveRuns):
        await env.start(b, "b2", "enqueue")

    # Another account has its own count.
    other = await env.service.create_thread("acct-bob", "t")
    await env.service.start_run("acct-bob", other.thread_id, "", "bob's run")

    epoch = await env.claim(first.run_id)
    await env.end(first.run_id, epoch)  # a2 takes thread a: still 2 active, so one more fits
    await env.start(await env.thread(), "fits now")
    with pytest.raises(TooManyActiveRuns):
        await env.start(await env.thread(), "full again")


async def test_a_burst_of_starts_cannot_exceed_the_cap(engine: AsyncEngine) -> None:
    env = make_env(engine, cap=5)
    threads = [await env.thread() for _ in range(20)]

    outcomes = await asyncio.gather(*(env.start(t, "go") for t in threads), return_exceptions=True)

    started = [o for o in outcomes if isinstance(o, Run)]
    refused = [o for o in outcomes if not isinstance(o, Run)]
    assert len(started) == 5
    assert all(isinstance(o, TooManyActiveRuns) for o in refused), refused
    async with engine.connect() as conn:
        active = (
            await conn.execute(
                sa.text("SELECT count(*) FROM agent_runs WHERE account_id = :a AND status = 'queued'"), {"a": ALICE}
            )
        ).scalar()
    assert active == 5


async def test_a_cap_of_zero_is_unlimited(engine: AsyncEngine) -> None:
    env = make_env(engine, cap=0)
    for _ in range(5):
        await env.start(await env.thread(), "go")


# -- over gRPC ---------------------------------------------------------------------------------


@pytest.fixture
async def capped_stub(sqlite_url: str) -> AsyncIterator[runner_pb2_grpc.RunnerServiceStub]:
    async with contextlib.AsyncExitStack() as stack:
        server = await start_runner(
            RunnerSettings(
                port=0,
                database_url=sqlite_url,
                role="api",
                grace_seconds=1,
                check_billing=False,
                max_active_runs_per_account=1,
                active_runs_retry_after_seconds=9,
            ),
            stack,
        )
        channel = open_channel(server.target, DEV_INTERNAL_TOKEN)
        stack.push_async_callback(channel.close)
        yield runner_pb2_grpc.RunnerServiceStub(channel)


async def test_grpc_start_run_takes_a_strategy_and_answers_the_cap_with_retry_after(
    capped_stub: runner_pb2_grpc.RunnerServiceStub,
) -> None:
    thread = await capped_stub.CreateThread(pb.CreateThreadRequest(account_id=ALICE, name="t"))
    start = pb.StartRunRequest(account_id=ALICE, thread_id=thread.thread_id, prompt="go")

    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await capped_stub.StartRun(
            pb.StartRunRequest(account_id=ALICE, thread_id=thread.thread_id, prompt="go", multitask_strategy="later")
        )
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad.value.details().startswith("multitask_strategy: ")

    first = await capped_stub.StartRun(start)
    assert first.status == "queued"

    with pytest.raises(grpc.aio.AioRpcError) as full:
        await capped_stub.StartRun(
            pb.StartRunRequest(
                account_id=ALICE, thread_id=thread.thread_id, prompt="more", multitask_strategy="enqueue"
            )
        )
    assert full.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(full.value.trailing_metadata() or ())
    assert (trailers[ERROR_CODE_KEY], trailers["retry-after"]) == ("too_many_active_runs", "9")

    await capped_stub.StopRun(pb.StopRunRequest(account_id=ALICE, agent_run_id=first.agent_run_id))
    second = await capped_stub.StartRun(
        pb.StartRunRequest(account_id=ALICE, thread_id=thread.thread_id, prompt="again", multitask_strategy="enqueue")
    )
    assert second.status == "queued"


async def test_a_waiting_run_reads_back_as_pending_over_grpc(sqlite_url: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        server = await start_runner(
            RunnerSettings(port=0, database_url=sqlite_url, role="api", grace_seconds=1, check_billing=False), stack
        )
        channel = open_channel(server.target, DEV_INTERNAL_TOKEN)
        stack.push_async_callback(channel.close)
        stub = runner_pb2_grpc.RunnerServiceStub(channel)
        thread = await stub.CreateThread(pb.CreateThreadRequest(account_id=ALICE, name="t"))
        await stub.StartRun(pb.StartRunRequest(account_id=ALICE, thread_id=thread.thread_id, prompt="one"))
        waiting = await stub.StartRun(
            pb.StartRunRequest(account_id=ALICE, thread_id=thread.thread_id, prompt="two", multitask_strategy="enqueue")
        )
        assert (waiting.status, waiting.phase) == ("pending", "waiting_for_thread")
        assert await stub.GetRun(pb.GetRunRequest(account_id=ALICE, agent_run_id=waiting.agent_run_id)) == waiting
        assert uuid.UUID(waiting.agent_run_id)


# -- migration 0004 --------------------------------------------------------------------------


def _alembic(connection, action: str, target: str) -> None:
    from alembic import command
    from alembic.config import Config

    from .conftest import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    config.attributes["version_table"] = "alembic_version_runner"
    getattr(command, action)(config, target)


async def test_migration_0004_upgrades_a_0003_database_with_active_runs_and_downgrades(database_url: str) -> None:
    from agentry.servicekit.db import create_engine

    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_alembic, "upgrade", "0003")
            await conn.execute(sa.text("INSERT INTO projects VALUES ('p', :a, 'p', 0)"), {"a": ALICE})
            await conn.execute(
                sa.text("INSERT INTO threads VALUES ('00000000-0000-0000-0000-000000000001', 'p', :a, 't', 0)"),
                {"a": ALICE},
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO agent_runs (run_id, thread_id, account_id, status, model, error, finish_reason, "
                    "created_at) VALUES ('00000000-0000-0000-0000-00000000000a', '00000000-0000-0000-0000-000000000001', "
                    ":a, 'running', 'm', '', '', 0)"
                ),
                {"a": ALICE},
            )
        async with engine.begin() as conn:
            await conn.run_sync(_alembic, "upgrade", "head")

        # The run that was running before the upgrade still holds its thread.
        env = make_env(engine)
        thread = "00000000-0000-0000-0000-000000000001"
        with pytest.raises(RunAlreadyActive):
            await env.start(thread, "second")
        waiting = await env.start(thread, "second", "enqueue")
        assert waiting.status is RunStatus.PENDING

        async with engine.begin() as conn:
            await conn.run_sync(_alembic, "downgrade", "0003")
            status = (
                await conn.execute(sa.text("SELECT status FROM agent_runs WHERE run_id = :r"), {"r": waiting.run_id})
            ).scalar_one()
            assert status == "cancelled"  # no pending runs without 0004
            with pytest.raises(sa.exc.IntegrityError):  # the old index is back: one active run per thread
                async with conn.begin_nested():
                    await conn.execute(
                        sa.text(
                            "INSERT INTO agent_runs (run_id, thread_id, account_id, status, model, error, finish_reason, "
                            "created_at) VALUES ('00000000-0000-0000-0000-00000000000b', :t, :a, 'queued', 'm', '', '', 0)"
                        ),
                        {"t": thread, "a": ALICE},
                    )
        async with engine.begin() as conn:
            await conn.run_sync(_alembic, "upgrade", "head")
    finally:
        await engine.dispose()
