"""Opening a run's stream: the run a gateway just started for the caller needs no GetRun; any other
open (another account, a second open, a Last-Event-ID resume) asks the runner, so another
account's run is still 404."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import httpx
import pytest

from agentry.api.runner.v1 import runner_pb2 as pb
from agentry.gateway.app import create_app
from agentry.gateway.config import GatewaySettings
from agentry.gateway.tokens import Caller
from agentry.gateway.upstreams import Upstreams
from agentry.servicekit.errors import ERROR_CODE_KEY
from agentry.servicekit.eventstream import MemoryEventStream

FINISHED = b'{"type":"run_finished","seq":2,"reason":"completed"}'


class FakeVerifier:
    """The bearer token is the account id."""

    async def verify(self, token: str) -> Caller:
        return Caller(user_id=f"user-of-{token}", account_id=token, email=f"{token}@example.com")


class FakeRunner:
    """Runs live here with their account; GetRun answers only their own account (else NOT_FOUND)."""

    def __init__(self) -> None:
        self.owners: dict[str, str] = {}
        self.gets: list[tuple[str, str]] = []

    async def StartRun(self, request: pb.StartRunRequest) -> pb.Run:
        run_id = f"run-{len(self.owners) + 1}"
        self.owners[run_id] = request.account_id
        return pb.Run(agent_run_id=run_id, status="queued")

    async def GetRun(self, request: pb.GetRunRequest) -> pb.Run:
        self.gets.append((request.account_id, request.agent_run_id))
        if self.owners.get(request.agent_run_id) != request.account_id:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.NOT_FOUND,
                initial_metadata=grpc.aio.Metadata(),
                trailing_metadata=grpc.aio.Metadata((ERROR_CODE_KEY, "run_not_found")),
                details="agent run not found",
            )
        return pb.Run(agent_run_id=request.agent_run_id, status="completed")

    async def ListRunEvents(self, request: pb.ListRunEventsRequest) -> pb.ListRunEventsResponse:
        return pb.ListRunEventsResponse()


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[httpx.AsyncClient, FakeRunner, MemoryEventStream]]:
    runner, events = FakeRunner(), MemoryEventStream()
    app = create_app(GatewaySettings())
    app.state.upstreams = Upstreams(auth=None, billing=None, runner=runner, events=events, verifier=FakeVerifier())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
    try:
        yield client, runner, events
    finally:
        await client.aclose()
        await events.close()


async def _start(client: httpx.AsyncClient, events: MemoryEventStream, account: str) -> str:
    started = await client.post("/api/threads/t-1/agent/start", json={"prompt": "go"}, headers=_as(account))
    assert started.status_code == 202, started.text
    run_id = started.json()["agent_run_id"]
    await events.append(run_id, 1, b'{"type":"run_started","seq":1}')
    await events.append(run_id, 2, FINISHED, terminal=True)
    return run_id


def _as(account: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {account}"}


async def test_the_stream_of_a_run_just_started_here_opens_without_get_run(gateway) -> None:
    client, runner, events = gateway
    run_id = await _start(client, events, "acct-a")
    stream = await client.get(f"/api/agent-run/{run_id}/stream", headers=_as("acct-a"))
    assert stream.status_code == 200 and stream.text.endswith(f"id: 2\ndata: {FINISHED.decode()}\n\n")
    assert runner.gets == []
    # Remembered for one open: a second one (a reconnect) asks the runner again.
    again = await client.get(f"/api/agent-run/{run_id}/stream", headers=_as("acct-a"))
    assert again.status_code == 200 and runner.gets == [("acct-a", run_id)]


async def test_another_accounts_run_is_404_even_right_after_its_start(gateway) -> None:
    client, runner, events = gateway
    run_id = await _start(client, events, "acct-a")
    other = await client.get(f"/api/agent-run/{run_id}/stream", headers=_as("acct-b"))
    assert (other.status_code, other.json()["error"]["code"]) == (404, "run_not_found")
    assert runner.gets == [("acct-b", run_id)]
    # The owner still gets the stream (asking the runner, since the entry was spent).
    mine = await client.get(f"/api/agent-run/{run_id}/stream", headers=_as("acct-a"))
    assert mine.status_code == 200 and "run_finished" in mine.text


async def test_a_resume_asks_the_runner_for_the_status(gateway) -> None:
    client, runner, events = gateway
    run_id = await _start(client, events, "acct-a")
    resumed = await client.get(f"/api/agent-run/{run_id}/stream", headers={**_as("acct-a"), "Last-Event-ID": "2"})
    assert resumed.status_code == 204  # past the end of a finished run: known from GetRun's status
    assert runner.gets == [("acct-a", run_id)]


async def test_a_stream_whose_run_is_gone_ends_at_its_next_status_refresh() -> None:
    """A run deleted under an open stream (its thread deleted): the keep-alive's status refresh
    finds it gone and the stream ends, rather than sending keep-alives forever."""
    from agentry.gateway.sse import run_entries

    runner, events = FakeRunner(), MemoryEventStream()  # the runner knows no run: GetRun is 404
    try:
        seen = [
            entry
            async for entry in run_entries(
                run=pb.Run(agent_run_id="run-gone", status="queued"),
                account_id="acct-a",
                after_seq=0,
                events=events,
                runner=runner,
                keepalive_seconds=0.05,
            )
        ]
    finally:
        await events.close()
    assert seen == [None]  # one keep-alive, then the end
    assert runner.gets == [("acct-a", "run-gone")]
