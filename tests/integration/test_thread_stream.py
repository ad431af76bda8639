"""GET /api/threads/{id}/stream: every run of a thread on one SSE stream, runs started after the
stream opened included; `id:` is `<thread_seq>.<seq>`, `data:` the run's event with its run_id.
Embedded and split (PostgreSQL, Redis, RabbitMQ, a separate worker process)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from agentry.cli.devstack import start_dev_stack

from .test_run_end_to_end import sign_up_and_in, stream

pytestmark = pytest.mark.integration

KEEPALIVE_SECONDS = 1
DURABLE = {
    "run_started",
    "message_completed",
    "tool_call_finished",
    "phase",
    "run_resumed",
    "requires_action",
    "run_finished",
}


@pytest.fixture(autouse=True)
def short_keepalive(monkeypatch):
    # Read by the gateway's settings, in this process (embedded) and in the split processes.
    monkeypatch.setenv("AGENTRY_GATEWAY_KEEPALIVE_SECONDS", str(KEEPALIVE_SECONDS))


async def litellm_imported() -> None:
    """Embedded: the runner imports LiteLLM in a thread as it starts, and a run that needs it before
    that import ends blocks the stack's one event loop until it has (many seconds on a busy
    machine), so requests made meanwhile time out. Wait for the import here, off the loop."""
    await asyncio.to_thread(importlib.import_module, "litellm")


async def read_thread_sse(
    response: httpx.Response,
    *,
    runs: int,
    keepalives: list[str] | None = None,
) -> list[tuple[str, bytes]]:
    """(id, data) of each event until `runs` runs have finished."""
    events: list[tuple[str, bytes]] = []
    event_id, data, finished = None, None, 0
    async for line in response.aiter_lines():
        if line.startswith(":") and keepalives is not None:
            keepalives.append(line)
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip().encode()
        elif line == "" and data is not None:
            events.append((event_id, data))
            finished += orjson.loads(data)["type"] == "run_finished"
            event_id, data = None, None
            if finished >= runs:
                break
    return events


@contextlib.asynccontextmanager
async def thread_stream(
    client: httpx.AsyncClient, thread_id: str, headers: dict, *, last_event_id: str | None = None
) -> AsyncIterator[httpx.Response]:
    extra = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    async with client.stream("GET", f"/api/threads/{thread_id}/stream", headers={**headers, **extra}) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield response


async def replay(client, thread_id, headers, *, runs: int, last_event_id: str | None = None):
    async with thread_stream(client, thread_id, headers, last_event_id=last_event_id) as response:
        return await asyncio.wait_for(read_thread_sse(response, runs=runs), 30)


async def new_thread(client: httpx.AsyncClient, headers: dict) -> str:
    response = await client.post("/api/threads", json={}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["thread_id"]


async def start(client, thread_id, headers, model: str, prompt: str, strategy: str | None = None) -> dict:
    body = {"prompt": prompt, "model_name": f"openai/{model}"}
    if strategy:
        body["multitask_strategy"] = strategy
    response = await client.post(f"/api/threads/{thread_id}/agent/start", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()


def check_spliced(
    events: list[tuple[str, bytes]], run_id: str, thread_seq: int, run_stream: list[tuple[int, bytes]]
) -> None:
    """The thread stream carries the run's events byte for byte, its run_id spliced in first
    (run_started names its run already and is carried as it is)."""

    def spliced(data: bytes) -> bytes:
        if b'"type":"run_started"' in data:
            return data
        return b'{"run_id":"%s",' % run_id.encode() + data[1:]

    assert [(f"{thread_seq}.{seq}", spliced(data)) for seq, data in run_stream] == events


async def test_one_stream_sees_every_run_of_the_thread_in_order_and_resumes_across_runs(system):
    if system.mode == "embedded":
        await litellm_imported()
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=60) as client:
        headers = (await sign_up_and_in(client, f"watcher-{system.mode}@example.com"))["headers"]
        thread = await new_thread(client, headers)

        keepalives: list[str] = []
        async with thread_stream(client, thread, headers) as response:
            # Opened before either run exists: the stream learns of them as they start.
            reading = asyncio.create_task(read_thread_sse(response, runs=2, keepalives=keepalives))
            await asyncio.sleep(KEEPALIVE_SECONDS * 1.5)  # idle: kept alive, not ended
            first = await start(client, thread, headers, "it-slow", "first")
            second = await start(client, thread, headers, "it-script", "second", "enqueue")
            assert second["status"] == "pending"
            live = await asyncio.wait_for(reading, 60)
        assert keepalives, "an idle thread stream gets keep-alive comments"

        ids = [event_id for event_id, _ in live]
        decoded = [orjson.loads(data) for _, data in live]
        one = [e for e in decoded if e["run_id"] == first["agent_run_id"]]
        two = [e for e in decoded if e["run_id"] == second["agent_run_id"]]
        assert decoded == one + two, "the first run's events, then the second's"
        assert ids == [f"1.{e['seq']}" for e in one] + [f"2.{e['seq']}" for e in two]
        assert [e["seq"] for e in one] == list(range(1, len(one) + 1))
        assert [e["seq"] for e in two] == list(range(1, len(two) + 1))
        assert (one[0]["type"], one[-1]["type"], two[0]["type"], two[-1]["type"]) == (
            "run_started",
            "run_finished",
            "run_started",
            "run_finished",
        )
        assert any(e["type"] == "tool_call_finished" for e in two)
        check_spliced(live[: len(one)], first["agent_run_id"], 1, await stream(client, first["agent_run_id"], headers))
        check_spliced(
            live[len(one) :], second["agent_run_id"], 2, await stream(client, second["agent_run_id"], headers)
        )

        # Resume from the middle of the first run: exactly the rest, the second run included.
        middle = len(one) // 2
        assert await replay(client, thread, headers, runs=2, last_event_id=ids[middle]) == live[middle + 1 :]
        # From the first run's last event: exactly the second run.
        assert await replay(client, thread, headers, runs=1, last_event_id=ids[len(one) - 1]) == live[len(one) :]
        # Opened after both ended: both replayed, in order.
        assert await replay(client, thread, headers, runs=2) == live

        # Both ended, yet the stream stays open for the thread's next run.
        async with thread_stream(client, thread, headers, last_event_id=ids[-1]) as response:
            third_reading = asyncio.create_task(read_thread_sse(response, runs=1))
            await asyncio.sleep(KEEPALIVE_SECONDS * 1.5)
            assert not third_reading.done()
            third = await start(client, thread, headers, "it-script", "third")
            third_events = await asyncio.wait_for(third_reading, 60)
        assert {orjson.loads(data)["run_id"] for _, data in third_events} == {third["agent_run_id"]}
        assert third_events[0][0] == "3.1" and orjson.loads(third_events[-1][1])["type"] == "run_finished"


@pytest.mark.parametrize("system", ["embedded"], indirect=True)
async def test_thread_stream_tenancy_tokens_and_cursors(system):
    await litellm_imported()
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=60) as client:
        owner = (await sign_up_and_in(client, "thread-owner@example.com"))["headers"]
        other = (await sign_up_and_in(client, "thread-other@example.com"))["headers"]
        thread = await new_thread(client, owner)
        run = await start(client, thread, owner, "it-script", "hello")
        events = await replay(client, thread, owner, runs=1)
        assert {orjson.loads(data)["run_id"] for _, data in events} == {run["agent_run_id"]}

        # Another account's thread is indistinguishable from a missing one.
        for headers, thread_id in ((other, thread), (owner, "00000000-0000-0000-0000-000000000000")):
            response = await client.get(f"/api/threads/{thread_id}/stream", headers=headers)
            assert response.status_code == 404, response.text
            assert response.json()["error"]["code"] == "thread_not_found"
        assert (await client.get(f"/api/threads/{thread}/stream")).status_code == 401

        # EventSource cannot set headers: a stream token in ?access_token= works here as on the run stream.
        issued = await client.post(f"/api/threads/{thread}/stream-token", headers=owner)
        assert issued.status_code == 200, issued.text
        token = issued.json()["token"]
        assert (await client.post(f"/api/threads/{thread}/stream-token", headers=other)).status_code == 404
        async with client.stream(
            "GET",
            f"/api/threads/{thread}/stream",
            params={"access_token": token},
            headers={"Last-Event-ID": events[0][0]},
        ) as response:
            assert response.status_code == 200
            assert await asyncio.wait_for(read_thread_sse(response, runs=1), 30) == events[1:]

        for bad in (
            "5",
            "1.x",
            "0.1",
            "1.-1",
            "1.\u00b2".encode("latin-1"),
            "1." + "9" * 20,
            "2.1",
        ):  # 2.1: the thread has one run
            response = await client.get(f"/api/threads/{thread}/stream", headers={**owner, "Last-Event-ID": bad})
            assert response.status_code == 422, (bad, response.text)
            assert response.json()["error"]["code"] == "invalid_last_event_id"


@pytest.fixture
async def dev(fake_llm, tmp_path):
    async with contextlib.AsyncExitStack() as stack:
        dev = await start_dev_stack(
            stack,
            data_dir=tmp_path,
            llm_api_base=fake_llm.base_url,
            ports={"auth": 0, "billing": 0, "sandbox": 0, "runner": 0, "gateway": 0},
        )
        await litellm_imported()
        yield dev


async def test_runs_whose_live_buffer_expired_are_replayed_from_the_database(dev):
    async with httpx.AsyncClient(base_url=dev.gateway_url, timeout=60) as client:
        headers = (await sign_up_and_in(client, "expired@example.com"))["headers"]
        thread = await new_thread(client, headers)
        first = await start(client, thread, headers, "it-script", "first")
        second = await start(client, thread, headers, "it-script", "second", "enqueue")
        live = await replay(client, thread, headers, runs=2)

        for run in (first, second):  # as if their buffers had expired (TTL) in the event stream
            dev.events._runs.pop(run["agent_run_id"])  # noqa: SLF001

        durable = [(event_id, data) for event_id, data in live if orjson.loads(data)["type"] in DURABLE]
        assert await replay(client, thread, headers, runs=2) == durable
        resume_at = next(i for i, (event_id, _) in enumerate(durable) if event_id.startswith("2."))
        assert (
            await replay(client, thread, headers, runs=2, last_event_id=durable[resume_at - 2][0])
            == durable[resume_at - 1 :]
        )
