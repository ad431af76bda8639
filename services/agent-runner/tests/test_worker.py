"""RunWorker.handle driven for real: agentpress with test models, sandbox and billing over gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from agentpress import (
    Agent,
    AssistantMessage,
    ContextConfig,
    FunctionModel,
    MessageCompleted,
    ModelRequest,
    PhaseChanged,
    RunFinished,
    RunStarted,
    ScriptedCall,
    ScriptedModel,
    ScriptedReply,
    TextDelta,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
    default_tools,
    message_from_json,
)
from agentry.api.billing.v1 import billing_pb2, billing_pb2_grpc
from agentry.billing.config import BillingSettings
from agentry.billing.main import start as start_billing
from agentry.runner.adapters.billing_grpc import GrpcUsageSink
from agentry.runner.adapters.queue_memory import MemoryRunQueue
from agentry.runner.adapters.sandbox_grpc import GrpcSandbox
from agentry.runner.adapters.sql import SqlRunnerRepository
from agentry.runner.adapters.stop_memory import MemoryStopSignal
from agentry.runner.domain import DURABLE_EVENT_TYPES, Run, RunStatus, StoredEvent, StoredMessage
from agentry.runner.errors import InvalidInput
from agentry.runner.queue import RequeueJob, RunJob
from agentry.runner.service import RunnerService
from agentry.runner.sinks import EventStoreFailed, Lease, RunEventSink, ThreadMessageStore, encode_event
from agentry.runner.worker import RunWorker, WorkerPolicy
from agentry.sandbox.config import SandboxSettings
from agentry.sandbox.main import start as start_sandbox
from agentry.servicekit import DEV_INTERNAL_TOKEN, open_channel
from agentry.servicekit.eventstream import MemoryEventStream, StreamEntry
from agentry.servicekit.server import RunningServer

ACCOUNT = "acct-worker"
WAIT = 10.0
STOP_DEADLINE = 2.0


async def within_stop_deadline(task: asyncio.Future) -> None:
    """Waits STOP_DEADLINE for `task`; past it, fails naming where every task of the loop waits
    (a stop that stalls is otherwise a bare TimeoutError, hard to read from a CI log)."""
    done, _ = await asyncio.wait({task}, timeout=STOP_DEADLINE)
    if done:
        return task.result()
    task.cancel()  # first: printing the stacks must not be what keeps the run going
    raise AssertionError(f"not done within {STOP_DEADLINE} s; the loop's tasks:\n{loop_tasks()}")


def loop_tasks() -> str:
    """Where every task of the running loop waits, as text."""
    stacks = io.StringIO()
    for other in asyncio.all_tasks():
        print(f"--- {other!r}", file=stacks)
        # The whole await chain (Task.get_stack shows a suspended task's top frame only), and not
        # Task.print_stack: it fails on a frame without a line number (grpc's Cython ones).
        awaited = other.get_coro()
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
            if frame is not None:
                print(f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}", file=stacks)
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    return stacks.getvalue()


# Counting tokens without LiteLLM keeps its multi-second import out of the suite.
OFFLINE_CONTEXT = ContextConfig(
    context_window=32_000, token_counter=lambda model, messages: len(orjson.dumps(messages)) // 4
)


@dataclass
class World:
    service: RunnerService
    repo: SqlRunnerRepository
    events: MemoryEventStream
    stops: MemoryStopSignal
    worker: RunWorker
    billing: billing_pb2_grpc.BillingServiceStub
    billing_channel: grpc.aio.Channel
    billing_server: RunningServer
    build_agent: Callable[[Run], Agent] = field(default=lambda run: pytest.fail("no agent for this test"))
    agents_built: list[Run] = field(default_factory=list)

    def use(self, model, **kwargs) -> None:
        def build(run: Run) -> Agent:
            self.agents_built.append(run)
            return Agent(
                model=model,
                system_prompt="You are a test agent.",
                tools=default_tools(),
                context=OFFLINE_CONTEXT,
                **kwargs,
            )

        self.build_agent = build

    async def start(self, prompt: str = "do the thing") -> tuple[Run, RunJob]:
        thread = await self.service.create_thread(ACCOUNT, "t")
        run = await self.service.start_run(ACCOUNT, thread.thread_id, "", prompt)
        return run, RunJob(run_id=run.run_id, thread_id=thread.thread_id, account_id=ACCOUNT)

    async def stream(self, run_id: str) -> list[StreamEntry]:
        return await self.events.read(run_id, 0, count=100_000)

    async def run_row(self, run_id: str) -> Run:
        run = await self.repo.get_run(run_id)
        assert run is not None
        return run

    async def wait_for_event(self, run_id: str, event_type: str) -> None:
        """Tails the run's live stream until an event of `event_type` arrives."""
        after = 0
        async with asyncio.timeout(WAIT):
            while True:
                for entry in await self.events.read(run_id, after, block_ms=1000):
                    after = entry.seq
                    if orjson.loads(entry.data)["type"] == event_type:
                        return


@pytest.fixture
def billing_credit() -> int:
    return 5_000_000


@pytest.fixture
async def world(tmp_path: Path, sqlite_engine: AsyncEngine, billing_credit: int) -> AsyncIterator[World]:
    async with contextlib.AsyncExitStack() as stack:
        sandbox = await start_sandbox(
            SandboxSettings(
                port=0,
                database_url=f"sqlite+aiosqlite:///{tmp_path / 'sandbox.db'}",
                root_dir=tmp_path / "sandboxes",
                isolation="none",
                allow_unisolated=True,
                grace_seconds=1,
            ),
            stack,
        )
        billing = await start_billing(
            BillingSettings(
                port=0,
                database_url=f"sqlite+aiosqlite:///{tmp_path / 'billing.db'}",
                # Sandbox exec seconds are free here, so balances are the model calls' cost exactly.
                initial_credit_micros=billing_credit,
                sandbox_usd_per_hour=0,
                grace_seconds=1,
            ),
            stack,
        )
        sandbox_channel = open_channel(sandbox.target, DEV_INTERNAL_TOKEN)
        billing_channel = open_channel(billing.target, DEV_INTERNAL_TOKEN)
        stack.push_async_callback(sandbox_channel.close)
        stack.push_async_callback(billing_channel.close)

        repo, events, stops, queue = (
            SqlRunnerRepository(sqlite_engine),
            MemoryEventStream(),
            MemoryStopSignal(),
            MemoryRunQueue(),
        )
        stack.push_async_callback(queue.close)
        service = RunnerService(repo, queue, events, stops, default_model="unused")
        holder: list[World] = []
        worker = RunWorker(
            repo=repo,
            events=events,
            stops=stops,
            sandboxes=lambda account_id, project_id, on_start=None, on_ready=None: GrpcSandbox(
                sandbox_channel, account_id=account_id, project_id=project_id, on_start=on_start, on_ready=on_ready
            ),
            usage=lambda account_id, run_id, attempt=1: GrpcUsageSink(
                billing_channel, account_id=account_id, run_id=run_id, attempt=attempt
            ),
            agent_factory=lambda run: holder[0].build_agent(run),
            policy=WorkerPolicy(lease_seconds=2.0, write_retry_seconds=0.2),
        )
        world = World(
            service,
            repo,
            events,
            stops,
            worker,
            billing_pb2_grpc.BillingServiceStub(billing_channel),
            billing_channel,
            billing,
        )
        holder.append(world)
        yield world


def decoded(entries: list[StreamEntry] | list[StoredEvent]) -> list[dict]:
    return [orjson.loads(e.data) for e in entries]


async def test_a_run_with_a_tool_call_completes_with_numbered_events_and_stored_messages(world: World) -> None:
    model = ScriptedModel(
        [
            ScriptedReply(
                text="Let me look.", tool_calls=[ScriptedCall("run_command", {"command": "echo hello-sandbox"})]
            ),
            "All done.",
        ],
        chunk_size=4,
    )
    world.use(model)
    run, job = await world.start("say hello")

    await world.worker.handle(job)

    stream = await world.stream(run.run_id)
    assert [e.seq for e in stream] == list(range(1, len(stream) + 1))
    assert [e.terminal for e in stream] == [False] * (len(stream) - 1) + [True]
    events = decoded(stream)
    assert [e["seq"] for e in events] == [e.seq for e in stream]
    assert events[0] == {
        "seq": 1,
        "type": "run_started",
        "run_id": run.run_id,
        "thread_id": run.thread_id,
        "model": "scripted",
    }
    assert events[-1] == {"seq": len(stream), "type": "run_finished", "reason": "completed", "error": None}
    assert {"text_delta", "tool_call_started", "usage"} <= {e["type"] for e in events}
    [finished_call] = [e for e in events if e["type"] == "tool_call_finished"]
    assert finished_call["error"] is None
    assert "hello-sandbox" in finished_call["output"]

    # The durable subset is in the database with the same numbers and the very same bytes.
    durable = [
        StoredEvent(e.seq, e.data, e.terminal) for e in stream if orjson.loads(e.data)["type"] in DURABLE_EVENT_TYPES
    ]
    assert await world.repo.list_events(run.run_id, 0) == durable
    # Tools run while the model streams, so where tool_call_finished falls among the first
    # messages depends on how fast the sandbox answers.
    durable_types = [e["type"] for e in decoded(durable) if e["type"] != "phase"]
    assert (durable_types[0], durable_types[-1]) == ("run_started", "run_finished")
    assert sorted(durable_types[1:-1]) == ["message_completed"] * 3 + ["tool_call_finished"]
    # Phases: the model, the sandbox starting for the tool, the tool, the model again.
    phases = [(e["phase"], e["tool"]) for e in events if e["type"] == "phase"]
    assert phases == [
        ("calling_model", None),
        ("running_tool", "run_command"),
        ("starting_sandbox", None),
        ("running_tool", "run_command"),
        ("calling_model", None),
    ]
    [announced] = [e for e in events if e["type"] == "phase" and e["call"]]
    assert announced["call"]["name"] == "run_command" and announced["seq"] < finished_call["seq"]

    ended = await world.run_row(run.run_id)
    assert (ended.status, ended.finish_reason, ended.error) == (RunStatus.COMPLETED, "completed", "")
    assert ended.started_at is not None and ended.completed_at is not None
    assert ended.created_at <= ended.started_at <= ended.completed_at

    messages = [message_from_json(m.content_json) for m in await world.repo.list_messages(run.thread_id)]
    assert [m.kind for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[0].text == "say hello"  # type: ignore[union-attr]
    assert messages[1].tool_calls[0].name == "run_command"  # type: ignore[union-attr]
    assert "hello-sandbox" in messages[2].output  # type: ignore[union-attr]
    assert messages[3].text == "All done."  # type: ignore[union-attr]
    # The stored messages are the ones the message_completed events carried.
    completed = [e["message"]["message_id"] for e in events if e["type"] == "message_completed"]
    assert completed == [m.message_id for m in messages[1:]]


async def test_a_job_for_a_run_cancelled_while_queued_is_skipped(world: World) -> None:
    model = ScriptedModel(["never said"])
    world.use(model)
    run, job = await world.start()
    await world.service.stop_run(ACCOUNT, run.run_id)
    before = await world.stream(run.run_id)

    await world.worker.handle(job)

    assert await world.stream(run.run_id) == before
    assert [e.seq for e in await world.repo.list_events(run.run_id, 0)] == [1]
    assert (await world.run_row(run.run_id)).status is RunStatus.CANCELLED
    assert world.agents_built == []
    assert model.requests == []


async def lost_worker(world: World, run: Run) -> None:
    """A worker claimed the run with a lease that has lapsed by now: it died."""
    assert await world.repo.claim_run(run.run_id, worker_id="dead-worker", lease_seconds=0.01)
    await asyncio.sleep(0.05)


async def test_a_redelivered_job_of_a_run_whose_worker_died_resumes_it_after_the_last_event(world: World) -> None:
    world.use(ScriptedModel(["Resumed and done."]))
    run, job = await world.start()
    # A worker took the run, streamed three events (one durable), and died.
    await lost_worker(world, run)
    started = StoredEvent(1, b'{"seq":1,"type":"run_started"}', False)
    await world.repo.append_events(run.run_id, [started])
    await world.events.append(run.run_id, 1, started.data)
    for seq in (2, 3):
        await world.events.append(run.run_id, seq, encode_event(seq, TextDelta(text="partial")))

    await world.worker.handle(job)

    stream = await world.stream(run.run_id)
    assert [e.seq for e in stream] == list(range(1, len(stream) + 1))
    events = decoded(stream)
    # The same run's stream goes on: run_resumed next, no second run_started, one terminal event.
    assert events[3] == {"seq": 4, "type": "run_resumed", "attempt": 2, "reason": "worker_lost"}
    assert events[4]["type"] == "phase" and events[4]["phase"] == "resumed"
    assert [e["type"] for e in events].count("run_started") == 1
    assert events[-1] == {"seq": len(stream), "type": "run_finished", "reason": "completed", "error": None}
    assert [e.terminal for e in stream].count(True) == 1
    ended = await world.run_row(run.run_id)
    assert (ended.status, ended.attempt, ended.worker_id) == (RunStatus.COMPLETED, 2, None)
    [agent_run] = world.agents_built
    assert agent_run.attempt == 2
    kinds = [message_from_json(m.content_json).kind for m in await world.repo.list_messages(run.thread_id)]
    assert kinds == ["user", "assistant"]

    # A further redelivery of the now finished run changes nothing.
    await world.worker.handle(job)
    assert await world.stream(run.run_id) == stream


async def test_a_redelivered_job_continues_after_durable_events_the_stream_no_longer_holds(world: World) -> None:
    world.use(ScriptedModel(["done"]))
    run, job = await world.start()
    await lost_worker(world, run)
    await world.repo.append_events(run.run_id, [StoredEvent(1, b"{}", False), StoredEvent(5, b"{}", False)])

    await world.worker.handle(job)

    stored = [(e.seq, e.terminal) for e in await world.repo.list_events(run.run_id, 0)]
    assert stored[:3] == [(1, False), (5, False), (6, False)] and stored[-1][1]
    assert [e.seq for e in await world.stream(run.run_id)][0] == 6


async def test_a_run_interrupted_too_often_ends_failed(world: World) -> None:
    world.use(ScriptedModel(["never said"]))
    run, job = await world.start()
    for _ in range(3):  # attempts 1..3 all lost their worker
        await lost_worker(world, run)

    await world.worker.handle(job)

    ended = await world.run_row(run.run_id)
    assert (ended.status, ended.finish_reason) == (RunStatus.FAILED, "error")
    assert ended.error == "the run was interrupted 3 times (its worker was lost); giving up"
    assert world.agents_built == []  # given up before any work
    events = decoded(await world.stream(run.run_id))
    assert [e["type"] for e in events] == ["run_finished"]


async def test_a_tool_call_interrupted_by_a_lost_worker_is_closed_not_run_again(world: World) -> None:
    """The dead worker announced a shell call (durably) and died before its result was stored:
    the resumed run tells the model it was interrupted and never runs it again."""
    from agentpress import PhaseChanged, ToolCall

    model = ScriptedModel(["I will check the file before trying again."])
    world.use(model)
    run, job = await world.start()
    await lost_worker(world, run)
    call = ToolCall(call_id="call-1", name="run_command", arguments='{"command": "echo once >> f"}')
    marker = encode_event(2, PhaseChanged(phase="running_tool", tool="run_command", call=call))
    await world.repo.append_events(
        run.run_id, [StoredEvent(1, b'{"seq":1,"type":"run_started"}', False), StoredEvent(2, marker, False)]
    )

    await world.worker.handle(job)

    messages = [message_from_json(m.content_json) for m in await world.repo.list_messages(run.thread_id)]
    assert [m.kind for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[1].tool_calls == (call,)  # type: ignore[union-attr]
    assert messages[2].error == "interrupted" and messages[2].call_id == "call-1"  # type: ignore[union-attr]
    # The model saw the interrupted call and its result, and was not asked to run anything twice.
    [request] = model.requests
    assert any(m.get("tool_call_id") == "call-1" for m in request.messages)
    assert (await world.run_row(run.run_id)).status is RunStatus.COMPLETED


async def slow_model_and_signal() -> tuple[FunctionModel, asyncio.Event]:
    called = asyncio.Event()

    async def never_answers(request: ModelRequest) -> str:
        called.set()
        await asyncio.Event().wait()
        return "unreachable"

    return FunctionModel(never_answers), called


async def test_stopping_a_run_while_the_model_is_slow_cancels_it_promptly(world: World) -> None:
    model, called = await slow_model_and_signal()
    world.use(model)
    run, job = await world.start()
    handling = asyncio.create_task(world.worker.handle(job))
    await asyncio.wait_for(called.wait(), WAIT)

    assert (await world.service.stop_run(ACCOUNT, run.run_id)).status is RunStatus.CANCELLING
    await within_stop_deadline(handling)

    stream = await world.stream(run.run_id)
    assert decoded(stream)[-1] == {"seq": len(stream), "type": "run_finished", "reason": "cancelled", "error": None}
    assert [e.terminal for e in stream].count(True) == 1
    assert (await world.repo.list_events(run.run_id, 0))[-1] == StoredEvent(stream[-1].seq, stream[-1].data, True)
    ended = await world.run_row(run.run_id)
    assert (ended.status, ended.finish_reason, ended.error) == (RunStatus.CANCELLED, "cancelled", "")


async def start_a_long_sandbox_command(world: World) -> tuple[Run, asyncio.Task[None]]:
    """A run driven by the worker (the task) whose agent is running `sleep 30` in the sandbox."""
    world.use(
        ScriptedModel(
            [
                ScriptedReply(tool_calls=[ScriptedCall("run_command", {"command": "sleep 30"})]),
                "unreachable",
            ]
        )
    )
    run, job = await world.start()
    handling = asyncio.create_task(world.worker.handle(job))
    await world.wait_for_event(run.run_id, "tool_call_started")
    return run, handling


async def test_stopping_a_run_during_a_long_sandbox_command_cancels_it_promptly(world: World) -> None:
    run, handling = await start_a_long_sandbox_command(world)

    await world.service.stop_run(ACCOUNT, run.run_id)
    await within_stop_deadline(handling)

    ended = await world.run_row(run.run_id)
    assert (ended.status, ended.finish_reason) == (RunStatus.CANCELLED, "cancelled")
    messages = [message_from_json(m.content_json) for m in await world.repo.list_messages(run.thread_id)]
    assert [m.kind for m in messages] == ["user", "assistant", "tool"]
    assert messages[2].error == "cancelled"  # type: ignore[union-attr]
    events = decoded(await world.stream(run.run_id))
    assert events[-1]["type"] == "run_finished" and events[-1]["reason"] == "cancelled"


async def test_stopping_a_run_during_a_sandbox_command_is_prompt_while_billing_is_away(world: World) -> None:
    # The command's sandbox seconds are charged when it ends; billing's client retries for up to
    # a minute. A stop must not wait for that: the charge goes on by itself.
    run, handling = await start_a_long_sandbox_command(world)
    await world.billing_server.server.stop(0)

    await world.service.stop_run(ACCOUNT, run.run_id)
    await within_stop_deadline(handling)

    ended = await world.run_row(run.run_id)
    assert (ended.status, ended.finish_reason) == (RunStatus.CANCELLED, "cancelled")


@pytest.mark.parametrize("billing_credit", [0, 1])
async def test_a_run_that_uses_up_the_credit_ends_failed(world: World, billing_credit: int) -> None:
    # At most one micro-dollar of credit; every token costs one, so the first step crosses zero.
    model = ScriptedModel(
        [
            ScriptedReply(text="Working.", tool_calls=[ScriptedCall("run_command", {"command": "echo step"})]),
            "never reached",
        ],
        cost_per_token=1e-6,
    )
    world.use(model)
    run, job = await world.start()

    await world.worker.handle(job)

    ended = await world.run_row(run.run_id)
    assert (ended.status, ended.finish_reason, ended.error) == (
        RunStatus.FAILED,
        "budget_exceeded",
        "credit balance used up",
    )
    assert model.remaining == 1
    events = decoded(await world.stream(run.run_id))
    assert events[-1]["type"] == "run_finished" and events[-1]["reason"] == "budget_exceeded"
    [usage] = [e for e in events if e["type"] == "usage"]
    charged = round(usage["cost_usd"] * 1_000_000)
    assert charged >= 1
    balance = await world.billing.GetBalance(billing_pb2.GetBalanceRequest(account_id=ACCOUNT))
    assert balance.balance_micros == billing_credit - charged
    # The step's tool still ran and its result was stored before the run ended.
    kinds = [message_from_json(m.content_json).kind for m in await world.repo.list_messages(run.thread_id)]
    assert kinds == ["user", "assistant", "tool"]


@pytest.mark.parametrize("billing_credit", [100])
async def test_usage_sink_charges_billing_once_per_step_and_reports_the_balance(world: World) -> None:
    sink = GrpcUsageSink(world.billing_channel, account_id=ACCOUNT, run_id="run-1")

    assert await sink.record(Usage(model="m", prompt_tokens=10, completion_tokens=5, cost_usd=40e-6, step=1))
    # The same step again (a retried call) is not charged twice.
    assert await sink.record(Usage(model="m", prompt_tokens=10, completion_tokens=5, cost_usd=40e-6, step=1))
    assert not await sink.record(Usage(model="m", prompt_tokens=10, completion_tokens=5, cost_usd=60e-6, step=2))

    balance = await world.billing.GetBalance(billing_pb2.GetBalanceRequest(account_id=ACCOUNT))
    assert balance.balance_micros == 0


async def test_an_agent_that_cannot_be_built_ends_the_run_failed(world: World) -> None:
    def broken(run: Run) -> Agent:
        raise RuntimeError("bad model configuration")

    world.build_agent = broken
    run, job = await world.start()

    await world.worker.handle(job)

    ended = await world.run_row(run.run_id)
    assert (ended.status, ended.finish_reason) == (RunStatus.FAILED, "error")
    assert ended.error == "the worker failed while running the agent"
    stream = await world.stream(run.run_id)
    assert [(e.seq, e.terminal) for e in stream] == [(1, True)]
    assert await world.repo.list_events(run.run_id, 0) == [StoredEvent(1, stream[0].data, True)]


async def test_a_worker_shutdown_mid_run_hands_the_run_back_and_another_worker_resumes_it(world: World) -> None:
    model, called = await slow_model_and_signal()
    world.use(model)
    run, job = await world.start()
    handling = asyncio.create_task(world.worker.handle(job))
    await asyncio.wait_for(called.wait(), WAIT)

    await within_stop_deadline(asyncio.ensure_future(world.worker.hand_back_all()))
    with pytest.raises(RequeueJob):
        await within_stop_deadline(handling)

    # Not cancelled: still running, its lease released so the next worker takes it at once.
    released = await world.run_row(run.run_id)
    assert (released.status, released.worker_id) == (RunStatus.RUNNING, None)
    assert [e.terminal for e in await world.stream(run.run_id)].count(True) == 0
    # Nothing the stopped agent did afterwards was written (no "cancelled" tool results or end).
    assert [message_from_json(m.content_json).kind for m in await world.repo.list_messages(run.thread_id)] == ["user"]

    world.use(ScriptedModel(["finished on the next worker"]))
    successor = RunWorker(
        repo=world.repo,
        events=world.events,
        stops=world.stops,
        sandboxes=world.worker._sandboxes,
        usage=world.worker._usage,
        agent_factory=lambda r: world.build_agent(r),
        policy=WorkerPolicy(lease_seconds=2.0),
    )
    await asyncio.wait_for(successor.handle(job), WAIT)
    events = decoded(await world.stream(run.run_id))
    assert {"type": "run_resumed", "attempt": 2, "reason": "handed_back"}.items() <= [
        e for e in events if e["type"] == "run_resumed"
    ][0].items()
    assert events[-1]["reason"] == "completed"
    assert (await world.run_row(run.run_id)).status is RunStatus.COMPLETED


async def test_a_job_that_arrives_during_shutdown_goes_back_to_the_queue(world: World) -> None:
    world.use(ScriptedModel(["never said"]))
    run, job = await world.start()
    world.worker.stop_accepting()
    with pytest.raises(RequeueJob):
        await world.worker.handle(job)
    assert (await world.run_row(run.run_id)).status is RunStatus.QUEUED


async def test_a_job_for_an_unknown_run_is_dropped(world: World) -> None:
    await world.worker.handle(RunJob(run_id="00000000-0000-0000-0000-000000000000", thread_id="t", account_id="a"))
    assert world.agents_built == []


class GatedRepo:
    """Stores events only once `gate` is open; fails instead when `fail` is set."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.fail = False
        self.stored: list[StoredEvent] = []
        self.finished: list[tuple] = []
        self.messages: list[str] = []  # message ids, in the order stored
        self.transactions: list[tuple[list[int], list[str]]] = []  # (event seqs, message ids) each

    async def append_events(
        self, run_id: str, events: list[StoredEvent], *, epoch=None, phase=None, messages=()
    ) -> None:
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("database down")
        self.stored.extend(events)
        self.messages.extend(m.message_id for m in messages)
        self.transactions.append(([e.seq for e in events], [m.message_id for m in messages]))

    async def finish_run(
        self, run_id: str, *, from_, to, error, finish_reason, events, epoch=None, messages=()
    ) -> bool:
        self.finished.append((to, finish_reason, error, [e.seq for e in self.stored]))
        self.stored.extend(events)
        self.messages.extend(m.message_id for m in messages)
        self.transactions.append(([e.seq for e in events], [m.message_id for m in messages]))
        return True


async def test_with_delta_coalescing_a_run_streams_fewer_deltas_with_its_text_intact(world: World) -> None:
    reply = "The quick brown fox jumps over the lazy dog, twice over, and then once more."
    world.use(ScriptedModel([reply], chunk_size=3))
    world.worker._policy = replace(world.worker._policy, delta_coalesce=float("inf"))  # never runs out
    run, job = await world.start()

    await world.worker.handle(job)

    stream = await world.stream(run.run_id)
    body = decoded(stream)
    assert [e.seq for e in stream] == list(range(1, len(stream) + 1))
    deltas = [e for e in body if e["type"] == "text_delta"]
    assert "".join(e["text"] for e in deltas) == reply
    assert deltas[0]["text"] == reply[:3]  # the first chunk at once
    assert len(deltas) == 2  # the rest in one event, written before the message completed
    types = [e["type"] for e in body]
    assert types.index("text_delta") < types.index("message_completed")
    assert types[-1] == "run_finished"
    assert (await world.run_row(run.run_id)).status.value == "completed"
    for cut in range(len(stream) + 1):
        assert await world.events.read(run.run_id, cut, count=100_000) == stream[cut:]


async def test_the_live_stream_does_not_wait_for_the_database_but_the_end_does() -> None:
    repo, events = GatedRepo(), MemoryEventStream()
    sink = RunEventSink("r", repo, events, last_seq=0)  # type: ignore[arg-type]
    await asyncio.wait_for(sink.emit(RunStarted(run_id="r", thread_id="t", model="m")), WAIT)
    await asyncio.wait_for(sink.emit(TextDelta(text="hi")), WAIT)
    assert [e.seq for e in await events.read("r", 0)] == [1, 2]
    assert repo.stored == []

    finishing = asyncio.create_task(sink.emit(RunFinished(reason="completed")))
    await asyncio.sleep(0.05)
    assert not finishing.done() and repo.finished == []  # the end waits for the durable events
    repo.gate.set()
    await asyncio.wait_for(finishing, WAIT)

    # Stored before the run's status was recorded (with the terminal event, in one transaction).
    assert repo.finished == [(RunStatus.COMPLETED, "completed", "", [1])]
    stream = await events.read("r", 0)
    assert [(e.seq, e.terminal) for e in stream] == [(1, False), (2, False), (3, True)]
    assert repo.stored == [StoredEvent(1, stream[0].data, False), StoredEvent(3, stream[2].data, True)]


async def test_with_a_write_delay_a_short_run_stores_its_durable_events_with_its_end() -> None:
    repo, events = GatedRepo(), MemoryEventStream()
    repo.gate.set()
    calls: list[list[int]] = []
    append = repo.append_events

    async def counted(run_id, batch, **kw):
        calls.append([e.seq for e in batch])
        await append(run_id, batch, **kw)

    repo.append_events = counted  # type: ignore[method-assign]
    sink = RunEventSink("r", repo, events, last_seq=0, write_delay=30.0)  # type: ignore[arg-type]
    await sink.emit(RunStarted(run_id="r", thread_id="t", model="m"))
    await sink.emit(PhaseChanged(phase="calling_model"))
    await sink.emit(TextDelta(text="hi"))
    await asyncio.wait_for(sink.emit(RunFinished(reason="completed")), WAIT)  # no 30 s wait

    assert calls == []  # no separate transaction: everything went with the end
    assert repo.finished == [(RunStatus.COMPLETED, "completed", "", [])]
    assert [e.seq for e in repo.stored] == [1, 2, 4]


async def test_with_a_write_delay_a_call_that_is_not_idempotent_is_still_stored_before_it_runs() -> None:
    repo, events = GatedRepo(), MemoryEventStream()
    repo.gate.set()
    sink = RunEventSink("r", repo, events, last_seq=0, write_delay=30.0)  # type: ignore[arg-type]
    await sink.emit(RunStarted(run_id="r", thread_id="t", model="m"))
    call = ToolCall(call_id="c1", name="run_command", arguments='{"command": "rm -rf x"}')
    await asyncio.wait_for(sink.emit(PhaseChanged(phase="running_tool", tool="run_command", call=call)), WAIT)
    assert [e.seq for e in repo.stored] == [1, 2] and repo.finished == []


async def test_a_short_runs_messages_are_stored_with_its_end_in_one_transaction() -> None:
    # The assistant's reply is queued with the durable events: a run that ends within the write
    # delay stores its messages, events and end in one transaction, and a load meanwhile sees it.
    repo, events, sink, store = _batching_sink_and_store()
    repo.list_messages = _no_stored_messages  # type: ignore[attr-defined]
    await sink.emit(RunStarted(run_id="r", thread_id="t", model="m"))
    reply = AssistantMessage(text="hello")
    await store.append(reply)
    await sink.emit(MessageCompleted(message=reply))
    assert repo.transactions == []  # nothing written yet
    assert [m.message_id for m in await store.load()] == [reply.message_id]
    await asyncio.wait_for(sink.emit(RunFinished(reason="completed")), WAIT)
    assert repo.transactions == [([1, 2, 3], [reply.message_id])]
    assert store._sink is sink and sink.queued_messages() == []


async def test_a_message_is_stored_before_a_call_that_is_not_idempotent_runs() -> None:
    repo, events, sink, store = _batching_sink_and_store()
    call = ToolCall(call_id="c1", name="run_command", arguments='{"command": "rm -rf x"}')
    asks = AssistantMessage(text="", tool_calls=(call,))
    await store.append(asks)
    await sink.emit(MessageCompleted(message=asks))
    await asyncio.wait_for(sink.emit(PhaseChanged(phase="running_tool", tool="run_command", call=call)), WAIT)
    assert repo.messages == [asks.message_id] and [e.seq for e in repo.stored] == [1, 2]


async def test_a_message_is_stored_before_any_event_after_its_completion_goes_out() -> None:
    repo, events, sink, store = _batching_sink_and_store()
    result = AssistantMessage(text="a tool result, say")
    await store.append(result)
    await sink.emit(MessageCompleted(message=result))
    assert repo.messages == []
    await asyncio.wait_for(sink.emit(PhaseChanged(phase="calling_model")), WAIT)
    assert repo.transactions == [([1], [result.message_id])]  # stored before seq 2 went out
    assert [e.seq for e in await events.read("r", 0)] == [1, 2]


async def test_a_tool_result_is_stored_before_its_message_completed_goes_out() -> None:
    repo, events, sink, store = _batching_sink_and_store()
    result = ToolResultMessage(call_id="c1", name="run_command", output="done")
    await store.append(result)
    assert repo.messages == []
    await asyncio.wait_for(sink.emit(MessageCompleted(message=result)), WAIT)
    assert repo.transactions == [([], [result.message_id])]  # stored before seq 1 went out
    assert [e.seq for e in await events.read("r", 0)] == [1]


async def test_messages_of_a_run_whose_lease_is_lost_are_dropped() -> None:
    repo, events = GatedRepo(), MemoryEventStream()
    repo.gate.set()
    lease = Lease("r", 1)
    sink = RunEventSink("r", repo, events, last_seq=0, lease=lease, write_delay=30.0)  # type: ignore[arg-type]
    store = ThreadMessageStore(repo, thread_id="t", account_id="a", lease=lease, sink=sink)  # type: ignore[arg-type]
    await store.append(AssistantMessage(text="one"))
    lease.mark_lost()
    await store.append(AssistantMessage(text="two"))
    await sink.emit(RunFinished(reason="completed"))
    assert repo.messages == [] and repo.finished == []


async def test_the_history_read_with_the_claim_answers_the_first_load_only() -> None:
    class Thread:
        def __init__(self) -> None:
            self.reads = 0

        async def list_messages(self, thread_id: str) -> list:
            self.reads += 1
            return []

        async def add_message(self, **row) -> None:
            pass

    repo = Thread()
    first = UserMessage(text="from the claim")
    history = [StoredMessage(first.message_id, "t", "user", first.to_json().decode(), first.created_at)]
    store = ThreadMessageStore(repo, thread_id="t", account_id="a", history=history)  # type: ignore[arg-type]
    assert [m.message_id for m in await store.load()] == [first.message_id] and repo.reads == 0
    assert await store.load() == [] and repo.reads == 1  # later loads read the thread

    # A message appended before the first load may be written by then: the thread is read.
    store = ThreadMessageStore(repo, thread_id="t", account_id="a", history=history)  # type: ignore[arg-type]
    await store.append(AssistantMessage(text="written at once"))
    await store.load()
    assert repo.reads == 2


async def _no_stored_messages(thread_id: str) -> list:
    return []


def _batching_sink_and_store() -> tuple[GatedRepo, MemoryEventStream, RunEventSink, ThreadMessageStore]:
    """An open repository, a run's sink that batches its writes for 30 s, and the thread's store
    writing through it."""
    repo, events = GatedRepo(), MemoryEventStream()
    repo.gate.set()
    sink = RunEventSink("r", repo, events, last_seq=0, write_delay=30.0)  # type: ignore[arg-type]
    store = ThreadMessageStore(repo, thread_id="t", account_id="a", sink=sink)  # type: ignore[arg-type]
    return repo, events, sink, store


async def test_a_failed_durable_write_fails_the_run_visibly() -> None:
    repo, events = GatedRepo(), MemoryEventStream()
    repo.fail = True
    repo.gate.set()
    sink = RunEventSink("r", repo, events, last_seq=0, write_retry_seconds=0.0)  # type: ignore[arg-type]
    await sink.emit(RunStarted(run_id="r", thread_id="t", model="m"))
    await asyncio.sleep(0.01)  # the background write fails
    with pytest.raises(EventStoreFailed):
        await sink.emit(TextDelta(text="hi"))
    await sink.emit(RunFinished(reason="completed"))

    assert repo.finished == [(RunStatus.FAILED, "error", "the run's events could not be stored", [])]
    stream = await events.read("r", 0)
    assert [(e.seq, e.terminal) for e in stream] == [(1, False), (2, True)]
    assert decoded(stream)[-1] == {
        "seq": 2,
        "type": "run_finished",
        "reason": "error",
        "error": "the run's events could not be stored",
    }
    # The failed event gets one more try together with the terminal event.
    assert repo.stored == [StoredEvent(1, stream[0].data, False), StoredEvent(2, stream[1].data, True)]


async def test_a_run_whose_events_cannot_be_stored_ends_failed(world: World, monkeypatch) -> None:
    world.use(ScriptedModel(["Hello there."], chunk_size=2))
    run, job = await world.start()
    store = world.repo.append_events

    async def failing(run_id: str, events, **kwargs) -> None:
        raise RuntimeError("database down")

    monkeypatch.setattr(world.repo, "append_events", failing)

    await world.worker.handle(job)

    ended = await world.run_row(run.run_id)
    assert (ended.status, ended.finish_reason, ended.error) == (
        RunStatus.FAILED,
        "error",
        "the run's events could not be stored",
    )
    stream = await world.stream(run.run_id)
    assert [e.terminal for e in stream].count(True) == 1 and stream[-1].terminal
    stored = await world.repo.list_events(run.run_id, 0)
    assert stored[-1] == StoredEvent(stream[-1].seq, stream[-1].data, True)
    del store


# -- human in the loop -------------------------------------------------------------------------


async def test_ask_pauses_the_run_without_a_worker_and_an_answer_continues_the_same_run(world: World) -> None:
    from agentry.runner.errors import RunNotWaiting

    model = ScriptedModel(
        [ScriptedReply(tool_calls=[ScriptedCall("ask", {"question": "Which file?"})]), "Editing b.py."]
    )
    world.use(model, pause_on_ask=True)
    run, job = await world.start()

    await world.worker.handle(job)  # returns: the paused run holds no worker slot

    paused = await world.run_row(run.run_id)
    assert (paused.status, paused.phase, paused.worker_id) == (RunStatus.REQUIRES_ACTION, "waiting_for_user", None)
    assert paused.pending == {"kind": "question", "question": "Which file?", "call_id": paused.pending["call_id"]}
    before = decoded(await world.stream(run.run_id))
    assert before[-2]["type"] == "requires_action" and before[-2]["pending"] == paused.pending
    assert before[-1]["type"] == "phase" and before[-1]["phase"] == "waiting_for_user"
    assert "run_finished" not in [e["type"] for e in before]
    # Durable: a client that reconnects sees what the run waits for.
    assert [orjson.loads(e.data)["type"] for e in await world.repo.list_events(run.run_id, 0)][-2] == "requires_action"

    with pytest.raises(InvalidInput):
        await world.service.resume_run(ACCOUNT, run.run_id, content=None, decision="approve")
    resumed = await world.service.resume_run(ACCOUNT, run.run_id, content="b.py", decision=None)
    assert resumed.status is RunStatus.QUEUED
    with pytest.raises(RunNotWaiting):  # resume of a run that is not waiting: 409
        await world.service.resume_run(ACCOUNT, run.run_id, content="b.py", decision=None)
    await world.worker.handle(job)

    stream = await world.stream(run.run_id)
    assert [e.seq for e in stream] == list(range(1, len(stream) + 1))  # one continuous sequence
    events = decoded(stream)
    assert [e["type"] for e in events].count("run_started") == 1
    assert {"type": "run_resumed", "attempt": 1, "reason": "user_input"}.items() <= events[len(before)].items()
    assert events[-1]["type"] == "run_finished" and events[-1]["reason"] == "completed"
    ended = await world.run_row(run.run_id)
    assert (ended.status, ended.pending, ended.attempt) == (RunStatus.COMPLETED, None, 1)
    messages = [message_from_json(m.content_json) for m in await world.repo.list_messages(run.thread_id)]
    assert [m.kind for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[2].output == "b.py"  # type: ignore[union-attr]


@pytest.mark.parametrize("decision", ["approve", "reject"])
async def test_a_call_waiting_for_approval_runs_or_is_refused(world: World, decision: str) -> None:
    world.use(
        ScriptedModel(
            [ScriptedReply(tool_calls=[ScriptedCall("run_command", {"command": "echo approved-ran"})]), "Done."]
        ),
        approval_tools=["run_command"],
    )
    run, job = await world.start()
    await world.worker.handle(job)
    paused = await world.run_row(run.run_id)
    assert paused.pending["kind"] == "approval" and paused.pending["tool"] == "run_command"
    assert paused.pending["arguments"] == {"command": "echo approved-ran"}

    await world.service.resume_run(
        ACCOUNT, run.run_id, content="not now" if decision == "reject" else None, decision=decision
    )
    await world.worker.handle(job)

    assert (await world.run_row(run.run_id)).status is RunStatus.COMPLETED
    messages = [message_from_json(m.content_json) for m in await world.repo.list_messages(run.thread_id)]
    result = messages[2]
    if decision == "approve":
        assert "approved-ran" in result.output and result.error is None  # type: ignore[union-attr]
    else:
        assert (result.error, result.output) == ("rejected", "the user rejected this call: not now")  # type: ignore[union-attr]


async def test_a_paused_run_can_be_stopped_and_expires(world: World) -> None:
    world.use(
        ScriptedModel([ScriptedReply(tool_calls=[ScriptedCall("ask", {"question": "?"})])] * 2), pause_on_ask=True
    )
    stopped, job = await world.start()
    await world.worker.handle(job)
    assert (await world.service.stop_run(ACCOUNT, stopped.run_id)).status is RunStatus.CANCELLED
    assert (await world.service.stop_run(ACCOUNT, stopped.run_id)).status is RunStatus.CANCELLED  # idempotent
    assert decoded(await world.stream(stopped.run_id))[-1]["reason"] == "cancelled"

    expiring, job = await world.start()
    await world.worker.handle(job)
    assert await world.service.expire_paused(3600) == 0
    assert await world.service.expire_paused(0) == 1
    ended = await world.run_row(expiring.run_id)
    assert (ended.status, ended.finish_reason) == (RunStatus.CANCELLED, "expired")
    events = decoded(await world.stream(expiring.run_id))
    assert events[-1]["type"] == "run_finished" and events[-1]["reason"] == "expired"


# -- deadlines --------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["max_run_seconds", "max_idle_seconds"])
async def test_a_run_past_its_deadline_ends_failed_with_reason_timeout(world: World, limit: str) -> None:
    model, called = await slow_model_and_signal()  # never answers: no event after the call starts
    world.use(model)
    world.worker._policy = WorkerPolicy(lease_seconds=2.0, **{limit: 0.5})
    run, job = await world.start()

    await asyncio.wait_for(world.worker.handle(job), WAIT)

    ended = await world.run_row(run.run_id)
    assert (ended.status, ended.finish_reason) == (RunStatus.FAILED, "timeout")
    what = "maximum duration" if limit == "max_run_seconds" else "maximum idle time"
    assert ended.error == f"the run exceeded its {what} (0.5 s)"
    events = decoded(await world.stream(run.run_id))
    assert events[-1] == {"seq": len(events), "type": "run_finished", "reason": "timeout", "error": ended.error}


async def test_a_job_for_a_run_this_worker_leased_but_no_longer_drives_takes_it_again(world: World) -> None:
    world.use(ScriptedModel(["done"]))
    run, job = await world.start()
    # This worker claimed the run, and the attempt failed before it started driving it.
    assert await world.repo.claim_run(run.run_id, worker_id=world.worker.worker_id, lease_seconds=60)

    await asyncio.wait_for(world.worker.handle(job), WAIT)

    assert (await world.run_row(run.run_id)).status is RunStatus.COMPLETED


def _host_processes(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\x00", b" ")
                state = Path(f"/proc/{entry}/stat").read_text().split(") ", 1)[1][0]
            except OSError:
                continue
            if marker.encode() in cmdline and state != "Z":
                pids.append(int(entry))
    return pids


async def test_a_background_process_left_running_when_the_run_is_stopped_is_killed(world: World) -> None:
    marker = "sleep 3599.25"
    world.use(
        ScriptedModel(
            [
                ScriptedReply(tool_calls=[ScriptedCall("start_process", {"command": marker})]),
                ScriptedReply(tool_calls=[ScriptedCall("run_command", {"command": "sleep 30"})]),
                "unreachable",
            ]
        )
    )
    run, job = await world.start()
    handling = asyncio.create_task(world.worker.handle(job))
    await world.wait_for_event(run.run_id, "tool_call_finished")
    assert _host_processes(marker), "the background process should be running"

    await world.service.stop_run(ACCOUNT, run.run_id)
    await within_stop_deadline(handling)
    assert (await world.run_row(run.run_id)).status is RunStatus.CANCELLED
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while _host_processes(marker):
        assert loop.time() < deadline, "the run's background process outlived the stop"
        await asyncio.sleep(0.05)


async def test_the_background_process_of_a_run_whose_worker_died_is_killed_when_it_is_taken_over(world: World) -> None:
    from agentry.servicekit.context import run_id_var

    marker = "sleep 3599.75"
    world.use(ScriptedModel(["Resumed and done."]))
    run, job = await world.start()
    thread = await world.service.get_thread(ACCOUNT, run.thread_id)
    # The dead worker's attempt started a background process in the project's sandbox.
    token = run_id_var.set(run.run_id)
    try:
        await world.worker._sandboxes(ACCOUNT, thread.project_id).start_process(marker)
    finally:
        run_id_var.reset(token)
    await lost_worker(world, run)
    assert _host_processes(marker)

    await world.worker.handle(job)

    assert (await world.run_row(run.run_id)).status is RunStatus.COMPLETED
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while _host_processes(marker):
        assert loop.time() < deadline, "the dead worker's background process outlived the takeover"
        await asyncio.sleep(0.05)
