"""A worker's plug-ins across infrastructure faults: a database or service that is away for a
moment is waited for, and a tool call never runs without being on record."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from agentpress import AssistantMessage, PhaseChanged, RunFinished, ToolCall, Usage
from agentry.api.billing.v1 import billing_pb2
from agentry.api.sandbox.v1 import sandbox_pb2
from agentry.runner.adapters.billing_grpc import GrpcUsageSink, UsageUnavailable
from agentry.runner.adapters.sandbox_grpc import GrpcSandbox, SandboxToolError
from agentry.runner.adapters.sql import SqlRunnerRepository
from agentry.runner.domain import RunStatus
from agentry.runner.errors import LeaseLost
from agentry.runner.sinks import Lease, RunEventSink, ThreadMessageStore, end_run
from agentry.servicekit.errors import ERROR_CODE_KEY
from agentry.servicekit.eventstream import MemoryEventStream

REFUSED = ConnectionRefusedError(111, "Connect call failed")  # what asyncpg raises while PostgreSQL restarts


def _rpc_error(code: grpc.StatusCode, *, store: bool = False) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata((ERROR_CODE_KEY, "unavailable")) if store else grpc.aio.Metadata()
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details="away")


class _FlakyRepo:
    """A repository whose writes are refused `failures` times, as while the database restarts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.messages: list[str] = []
        self.finished: list[tuple[str, RunStatus]] = []

    def _maybe_fail(self) -> None:
        if self.failures:
            self.failures -= 1
            raise REFUSED

    async def add_message(self, *, message_id: str, **_: object) -> None:
        self._maybe_fail()
        self.messages.append(message_id)

    async def list_messages(self, thread_id: str) -> list:
        self._maybe_fail()
        return []

    async def finish_run(self, run_id: str, *, to: RunStatus, **_: object) -> bool:
        self._maybe_fail()
        self.finished.append((run_id, to))
        return True


async def test_messages_are_stored_and_loaded_once_the_database_is_back() -> None:
    repo = _FlakyRepo(failures=3)
    store = ThreadMessageStore(repo, thread_id="t1", account_id="a1", lease=Lease("r1", 1))  # type: ignore[arg-type]
    message = AssistantMessage(text="hello")
    await store.append(message)
    assert repo.messages == [message.message_id]
    repo.failures = 2
    assert await store.load() == []


async def test_a_run_ends_once_the_database_is_back_when_asked_to_wait() -> None:
    stream = MemoryEventStream()
    repo = _FlakyRepo(failures=2)
    assert await end_run(
        repo,
        stream,
        "r1",
        seq=1,
        event=RunFinished(reason="completed"),  # type: ignore[arg-type]
        from_=[RunStatus.RUNNING],
        retry_seconds=10,
    )
    assert repo.finished == [("r1", RunStatus.COMPLETED)]
    assert [e.seq for e in await stream.read("r1", 0)] == [1]
    # Without a wait (the API's path, which answers 503 instead) the failure is the caller's.
    repo.failures = 1
    with pytest.raises(ConnectionRefusedError):
        await end_run(
            repo,
            stream,
            "r2",
            seq=1,
            event=RunFinished(reason="completed"),  # type: ignore[arg-type]
            from_=[RunStatus.RUNNING],
        )


async def test_a_tool_call_announced_after_the_lease_was_lost_is_refused() -> None:
    # The lease is lost (the broker connection dropped and the run was handed back, or renewals
    # failed): the running_tool phase cannot be stored, so the call must not run at all, or a
    # resumed attempt would not know it may have had its effect and would run it again.
    lease = Lease("r1", 1)
    sink = RunEventSink("r1", _FlakyRepo(0), MemoryEventStream(), last_seq=0, lease=lease)  # type: ignore[arg-type]
    lease.mark_lost()
    call = ToolCall(call_id="c1", name="run_command", arguments='{"command": "echo once >> f"}')
    with pytest.raises(LeaseLost):
        await sink.emit(PhaseChanged(phase="running_tool", tool="run_command", call=call))
    # An idempotent tool is not on record first, so nothing is refused for it.
    sink.idempotent_tools = frozenset({"read_file"})
    await sink.emit(
        PhaseChanged(
            phase="running_tool",
            tool="read_file",
            call=ToolCall(call_id="c2", name="read_file", arguments='{"path": "f"}'),
        )
    )


class _FlakyBilling:
    def __init__(self, failures: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self.failures, self.code, self.calls = failures, code, 0

    async def RecordUsage(self, request: billing_pb2.RecordUsageRequest):  # noqa: N802
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise _rpc_error(self.code)
        return billing_pb2.RecordUsageResponse(may_continue=True)


async def test_usage_is_recorded_once_billing_is_back() -> None:
    sink = GrpcUsageSink(grpc.aio.insecure_channel("127.0.0.1:1"), account_id="a1", run_id="r1", retry_seconds=10)
    sink._stub = billing = _FlakyBilling(failures=3)  # type: ignore[assignment]
    assert await sink.record(Usage(model="m", prompt_tokens=1, completion_tokens=1, cost_usd=0.0, step=1))
    assert billing.calls == 4
    # A refusal that is not about availability ends the run at once.
    sink._stub = _FlakyBilling(failures=1, code=grpc.StatusCode.INVALID_ARGUMENT)  # type: ignore[assignment]
    with pytest.raises(UsageUnavailable):
        await sink.record(Usage(model="m", prompt_tokens=1, completion_tokens=1, cost_usd=0.0, step=2))


class _Exec:
    """A server-streaming call: fails as told, or yields the command's output and exit."""

    def __init__(self, error: grpc.aio.AioRpcError | None, after_output: bool = False) -> None:
        self._error, self._after_output = error, after_output

    def cancel(self) -> None:
        pass

    async def __aiter__(self):
        if self._error is not None and not self._after_output:
            raise self._error
        yield sandbox_pb2.ExecChunk(output=b"once\n")
        if self._error is not None:
            raise self._error
        yield sandbox_pb2.ExecChunk(exit=sandbox_pb2.ExecExit(exit_code=0))


class _FlakySandbox:
    def __init__(self, errors: list[grpc.aio.AioRpcError], *, after_output: bool = False) -> None:
        self.errors, self.after_output, self.execs = errors, after_output, 0

    async def CreateSandbox(self, request):  # noqa: N802
        return sandbox_pb2.Sandbox(sandbox_id="s1")

    def Exec(self, request, timeout=None):  # noqa: N802
        self.execs += 1
        return _Exec(self.errors.pop(0) if self.errors else None, self.after_output)


def _sandbox(stub: _FlakySandbox) -> GrpcSandbox:
    box = GrpcSandbox(grpc.aio.insecure_channel("127.0.0.1:1"), account_id="a1", project_id="p1")
    box._stub = stub  # type: ignore[assignment]
    return box


async def test_a_command_refused_because_the_sandbox_store_is_away_is_sent_again() -> None:
    stub = _FlakySandbox([_rpc_error(grpc.StatusCode.UNAVAILABLE, store=True)] * 2)
    result = await _sandbox(stub).exec("echo once", timeout=5)
    assert (result.exit_code, result.output, stub.execs) == (0, "once\n", 3)


@pytest.mark.parametrize(
    "stub",
    [
        # Lost on the way: the command may have run.
        _FlakySandbox([_rpc_error(grpc.StatusCode.UNAVAILABLE)]),
        # Failed after it started: it ran.
        _FlakySandbox([_rpc_error(grpc.StatusCode.UNAVAILABLE, store=True)], after_output=True),
    ],
)
async def test_a_command_that_may_have_run_is_never_sent_again(stub: _FlakySandbox) -> None:
    with pytest.raises(SandboxToolError):
        await _sandbox(stub).exec("echo once", timeout=5)
    assert stub.execs == 1


async def test_retries_stop_when_the_run_is_cancelled() -> None:
    repo = _FlakyRepo(failures=10_000)
    store = ThreadMessageStore(repo, thread_id="t1", account_id="a1")  # type: ignore[arg-type]
    task = asyncio.create_task(store.append(AssistantMessage(text="x")))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_stored_end_reaches_the_stream_even_if_the_run_is_cancelled_meanwhile() -> None:
    # Redis is away when the run ends: finish_run is committed, the terminal append waits. The
    # heartbeat then no longer finds the ended run's lease and cancels the run's task; the
    # terminal event must still reach the stream once Redis is back, not 15 s later from the
    # database at a client's next status check.
    class _SlowStream(MemoryEventStream):
        def __init__(self) -> None:
            super().__init__()
            self.back = asyncio.Event()

        async def append(self, run_id: str, seq: int, data: bytes, *, terminal: bool = False) -> None:
            await self.back.wait()
            await super().append(run_id, seq, data, terminal=terminal)

    stream = _SlowStream()
    ending = asyncio.create_task(
        end_run(
            _FlakyRepo(0),
            stream,
            "r1",
            seq=1,  # type: ignore[arg-type]
            event=RunFinished(reason="completed"),
            from_=[RunStatus.RUNNING],
        )
    )
    await asyncio.sleep(0.05)
    ending.cancel()
    stream.back.set()
    with pytest.raises(asyncio.CancelledError):
        await ending
    await asyncio.sleep(0.05)
    assert [(e.seq, e.terminal) for e in await stream.read("r1", 0)] == [(1, True)]


async def test_a_heartbeat_renews_only_the_runs_its_worker_still_drives(sqlite_engine, clock) -> None:
    # A worker that stopped a run (its renewals failed while PostgreSQL restarted) must let that
    # run's lease lapse for another worker to resume it, though it renews the runs it still has.
    repo = SqlRunnerRepository(sqlite_engine, clock=clock)
    runs = []
    for _ in range(2):
        thread = await repo.create_thread(account_id="a1", name="t")
        run = await repo.create_run(
            run_id=str(uuid.uuid4()), thread_id=thread.thread_id, account_id="a1", model="m", first_message=None
        )
        assert await repo.claim_run(run.run_id, worker_id="w1", lease_seconds=5) is not None
        runs.append(run.run_id)
    driven, stopped = runs
    clock.advance(3)
    assert set(await repo.renew_leases("w1", 5, run_ids=[driven])) == {driven}
    clock.advance(3)  # the stopped run's lease has lapsed; the other was renewed
    assert (await repo.claim_run(stopped, worker_id="w2", lease_seconds=5)) is not None
    assert (await repo.claim_run(driven, worker_id="w2", lease_seconds=5)) is None
    assert set(await repo.renew_leases("w1", 5)) == {driven}  # without run_ids: every lease it holds
