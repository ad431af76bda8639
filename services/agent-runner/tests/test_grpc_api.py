"""The runner's gRPC API through a real server (main.start, api role) and its error mapping."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import grpc
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from agentry.api.runner.v1 import runner_pb2 as pb
from agentry.api.runner.v1 import runner_pb2_grpc
from agentry.runner.adapters.sql import SqlRunnerRepository
from agentry.runner.adapters.stop_memory import MemoryStopSignal
from agentry.runner.config import RunnerSettings
from agentry.runner.grpc_api import RunnerServicer
from agentry.runner.main import SERVICE_NAME, start
from agentry.runner.queue import QueueUnavailable, RunJob
from agentry.runner.service import RunnerService
from agentry.servicekit import DEV_INTERNAL_TOKEN, RunningServer, open_channel, start_grpc_server
from agentry.servicekit.errors import ERROR_CODE_KEY
from agentry.servicekit.eventstream import MemoryEventStream

ALICE, MALLORY = "acct-alice", "acct-mallory"


@pytest.fixture
async def server(sqlite_url: str) -> AsyncIterator[RunningServer]:
    async with contextlib.AsyncExitStack() as stack:
        yield await start(
            RunnerSettings(port=0, database_url=sqlite_url, role="api", grace_seconds=1, check_billing=False), stack
        )


@pytest.fixture
async def stub(server: RunningServer) -> AsyncIterator[runner_pb2_grpc.RunnerServiceStub]:
    channel = open_channel(server.target, DEV_INTERNAL_TOKEN)
    yield runner_pb2_grpc.RunnerServiceStub(channel)
    await channel.close()


def error_code(error: grpc.aio.AioRpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get(ERROR_CODE_KEY)


async def test_threads_messages_and_runs_round_trip(stub: runner_pb2_grpc.RunnerServiceStub) -> None:
    thread = await stub.CreateThread(pb.CreateThreadRequest(account_id=ALICE, name="Tidy the repo"))
    assert (thread.account_id, thread.name) == (ALICE, "Tidy the repo")
    assert uuid.UUID(thread.thread_id) and uuid.UUID(thread.project_id) and thread.created_at > 0
    assert await stub.GetThread(pb.GetThreadRequest(account_id=ALICE, thread_id=thread.thread_id)) == thread

    added = await stub.AddMessage(
        pb.AddMessageRequest(account_id=ALICE, thread_id=thread.thread_id, content="context first")
    )
    assert (added.thread_id, added.type) == (thread.thread_id, "user")
    assert orjson.loads(added.content_json)["text"] == "context first"

    run = await stub.StartRun(
        pb.StartRunRequest(
            account_id=ALICE, thread_id=thread.thread_id, model_name="openai/some-model", prompt="now do it"
        )
    )
    assert (run.thread_id, run.account_id, run.status, run.model, run.error) == (
        thread.thread_id,
        ALICE,
        "queued",
        "openai/some-model",
        "",
    )
    assert not run.HasField("started_at") and not run.HasField("completed_at")
    assert await stub.GetRun(pb.GetRunRequest(account_id=ALICE, agent_run_id=run.agent_run_id)) == run

    listed = await stub.ListMessages(pb.ListMessagesRequest(account_id=ALICE, thread_id=thread.thread_id))
    assert listed.messages[0] == added
    assert [orjson.loads(m.content_json)["text"] for m in listed.messages] == ["context first", "now do it"]

    stopped = await stub.StopRun(pb.StopRunRequest(account_id=ALICE, agent_run_id=run.agent_run_id))
    assert stopped.status == "cancelled"
    assert stopped.HasField("completed_at") and stopped.completed_at >= run.created_at
    assert await stub.GetRun(pb.GetRunRequest(account_id=ALICE, agent_run_id=run.agent_run_id)) == stopped

    events = await stub.ListRunEvents(pb.ListRunEventsRequest(account_id=ALICE, agent_run_id=run.agent_run_id))
    [event] = events.events
    assert (event.seq, event.terminal) == (1, True)
    assert orjson.loads(event.data) == {"seq": 1, "type": "run_finished", "reason": "cancelled", "error": None}
    after = await stub.ListRunEvents(
        pb.ListRunEventsRequest(account_id=ALICE, agent_run_id=run.agent_run_id, after_seq=1)
    )
    assert list(after.events) == []


async def test_another_accounts_thread_and_run_are_not_found(stub: runner_pb2_grpc.RunnerServiceStub) -> None:
    thread = await stub.CreateThread(pb.CreateThreadRequest(account_id=ALICE, name="mine"))
    run = await stub.StartRun(pb.StartRunRequest(account_id=ALICE, thread_id=thread.thread_id, prompt="go"))
    tid, rid = thread.thread_id, run.agent_run_id

    for call, code in [
        (stub.GetThread(pb.GetThreadRequest(account_id=MALLORY, thread_id=tid)), "thread_not_found"),
        (stub.AddMessage(pb.AddMessageRequest(account_id=MALLORY, thread_id=tid, content="x")), "thread_not_found"),
        (stub.ListMessages(pb.ListMessagesRequest(account_id=MALLORY, thread_id=tid)), "thread_not_found"),
        (stub.StartRun(pb.StartRunRequest(account_id=MALLORY, thread_id=tid, prompt="x")), "thread_not_found"),
        (stub.GetThread(pb.GetThreadRequest(account_id=ALICE, thread_id="garbage")), "thread_not_found"),
        (stub.GetRun(pb.GetRunRequest(account_id=MALLORY, agent_run_id=rid)), "run_not_found"),
        (stub.StopRun(pb.StopRunRequest(account_id=MALLORY, agent_run_id=rid)), "run_not_found"),
        (stub.ListRunEvents(pb.ListRunEventsRequest(account_id=MALLORY, agent_run_id=rid)), "run_not_found"),
        (stub.GetRun(pb.GetRunRequest(account_id=ALICE, agent_run_id="garbage")), "run_not_found"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert (caught.value.code(), error_code(caught.value)) == (grpc.StatusCode.NOT_FOUND, code)

    assert (await stub.GetRun(pb.GetRunRequest(account_id=ALICE, agent_run_id=rid))).status == "queued"


async def test_empty_content_is_invalid_argument(stub: runner_pb2_grpc.RunnerServiceStub) -> None:
    thread = await stub.CreateThread(pb.CreateThreadRequest(account_id=ALICE))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AddMessage(pb.AddMessageRequest(account_id=ALICE, thread_id=thread.thread_id, content=" "))

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_code(caught.value) == "invalid_argument"
    assert (caught.value.details() or "").startswith("content:")


async def test_a_missing_account_is_invalid_argument(stub: runner_pb2_grpc.RunnerServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateThread(pb.CreateThreadRequest(name="anonymous"))

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("account_id:")


async def test_a_second_start_on_a_thread_is_failed_precondition(stub: runner_pb2_grpc.RunnerServiceStub) -> None:
    thread = await stub.CreateThread(pb.CreateThreadRequest(account_id=ALICE))
    await stub.StartRun(pb.StartRunRequest(account_id=ALICE, thread_id=thread.thread_id, prompt="one"))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.StartRun(pb.StartRunRequest(account_id=ALICE, thread_id=thread.thread_id, prompt="two"))

    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_code(caught.value) == "run_active"
    listed = await stub.ListMessages(pb.ListMessagesRequest(account_id=ALICE, thread_id=thread.thread_id))
    assert [orjson.loads(m.content_json)["text"] for m in listed.messages] == ["one"]


async def test_a_call_without_the_internal_credential_is_unauthenticated(server: RunningServer) -> None:
    channel = open_channel(server.target, None)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await runner_pb2_grpc.RunnerServiceStub(channel).CreateThread(
                pb.CreateThreadRequest(account_id=ALICE, name="x")
            )
    finally:
        await channel.close()

    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_a_wrong_internal_credential_is_unauthenticated(server: RunningServer) -> None:
    channel = open_channel(server.target, "not-the-token")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await runner_pb2_grpc.RunnerServiceStub(channel).GetThread(
                pb.GetThreadRequest(account_id=ALICE, thread_id=str(uuid.uuid4()))
            )
    finally:
        await channel.close()

    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


class UnreachableBroker:
    """A run queue whose broker refuses every job."""

    async def publish(self, job: RunJob) -> None:
        raise QueueUnavailable("connection refused")

    async def consume(self, handler, *, concurrency):  # pragma: no cover - the api role never consumes
        raise QueueUnavailable("connection refused")

    async def close(self) -> None:
        return None


async def test_a_start_the_broker_refuses_is_still_accepted_and_left_for_the_sweeper(
    sqlite_engine: AsyncEngine,
) -> None:
    repo = SqlRunnerRepository(sqlite_engine)
    service = RunnerService(repo, UnreachableBroker(), MemoryEventStream(), MemoryStopSignal(), default_model="m")
    async with contextlib.AsyncExitStack() as stack:
        server = await start_grpc_server(
            name="runner-test",
            service_names=[SERVICE_NAME],
            host="127.0.0.1",
            port=0,
            internal_token=DEV_INTERNAL_TOKEN,
            stack=stack,
            grace=1,
            register=lambda s: runner_pb2_grpc.add_RunnerServiceServicer_to_server(RunnerServicer(service), s),
        )
        channel = open_channel(server.target, DEV_INTERNAL_TOKEN)
        stack.push_async_callback(channel.close)
        stub = runner_pb2_grpc.RunnerServiceStub(channel)
        thread = await stub.CreateThread(pb.CreateThreadRequest(account_id=ALICE))

        # The run is in the database, so it is accepted; its job goes out when the broker is back.
        run = await stub.StartRun(pb.StartRunRequest(account_id=ALICE, thread_id=thread.thread_id, prompt="go"))
        assert run.status == "queued"
        [due] = await repo.dispatch_candidates(redispatch_after=60)
        assert due.run_id == run.agent_run_id
