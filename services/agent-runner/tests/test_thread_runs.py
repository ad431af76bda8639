"""A run's place on its thread (`thread_seq`), the doorbell a start rings, and ListThreadRuns: what
the gateway's thread stream follows. RunnerService over the SQL repository, on SQLite and on
PostgreSQL; migration 0006 on both."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import orjson
import pytest
import sqlalchemy as sa

from agentry.api.runner.v1 import runner_pb2 as pb
from agentry.api.runner.v1 import runner_pb2_grpc
from agentry.runner.config import RunnerSettings
from agentry.runner.domain import RunStatus
from agentry.runner.main import start as start_runner
from agentry.servicekit import DEV_INTERNAL_TOKEN, open_channel
from agentry.servicekit.eventstream import thread_log_id

from . import test_multitask
from .test_multitask import ALICE, Env, _alembic

env = test_multitask.env  # the fixture, shared with test_multitask

WAIT = 5.0


async def places(env: Env, thread: str, after: int = 0) -> list[tuple[int | None, str]]:
    return [(r.thread_seq, r.run_id) for r in await env.service.list_thread_runs(ALICE, thread, after)]


async def doorbell(env: Env, thread: str) -> list[dict]:
    for _ in range(50):  # rung in the background
        entries = await env.events.read(thread_log_id(thread), 0)
        if entries:
            break
        await asyncio.sleep(0.01)
    return [{"seq": e.seq, **orjson.loads(e.data)} for e in entries]


async def test_runs_are_placed_in_the_order_they_get_the_thread(env: Env) -> None:
    thread = await env.thread()
    one = await env.start(thread, "one")
    assert one.thread_seq == 1
    epoch = await env.claim(one.run_id)
    two = await env.start(thread, "two", "enqueue")
    three = await env.start(thread, "three", "interrupt")  # first in line, ahead of two
    assert (two.status, two.thread_seq, three.status, three.thread_seq) == ("pending", None, "pending", None)
    assert await places(env, thread) == [(1, one.run_id)]  # waiting runs have no place yet

    await env.end(one.run_id, epoch, "cancelled")  # interrupted
    assert await places(env, thread) == [(1, one.run_id), (2, three.run_id)]
    await env.end(three.run_id, await env.claim(three.run_id))
    await env.end(two.run_id, await env.claim(two.run_id))

    assert await places(env, thread) == [(1, one.run_id), (2, three.run_id), (3, two.run_id)]
    assert await places(env, thread, after=1) == [(2, three.run_id), (3, two.run_id)]
    assert await places(env, thread, after=3) == []
    four = await env.start(thread, "four")
    assert four.thread_seq == 4 and (await env.run(four.run_id)).thread_seq == 4
    # Only runs that got the thread as they were created ring the doorbell.
    assert [(d["seq"], d["run_id"]) for d in await doorbell(env, thread)] == [(1, one.run_id), (4, four.run_id)]


async def test_a_waiting_run_stopped_before_it_got_the_thread_is_placed_when_it_ends(env: Env) -> None:
    thread = await env.thread()
    one = await env.start(thread, "one")
    two = await env.start(thread, "two", "enqueue")
    three = await env.start(thread, "three", "enqueue")

    await env.service.stop_run(ALICE, two.run_id)
    assert (await env.run(two.run_id)).status is RunStatus.CANCELLED
    await env.end(one.run_id, await env.claim(one.run_id))

    assert await places(env, thread) == [(1, one.run_id), (2, two.run_id), (3, three.run_id)]


async def test_threads_are_numbered_apart_and_listing_is_paged(env: Env) -> None:
    first, second = await env.thread(), await env.thread()
    runs = []
    for i in range(3):
        run = await env.start(first, f"p{i}")
        runs.append(run.run_id)
        await env.end(run.run_id, await env.claim(run.run_id))
    other = await env.start(second, "elsewhere")

    assert other.thread_seq == 1
    assert [r.run_id for r in await env.service.list_thread_runs(ALICE, first, 0, limit=2)] == runs[:2]
    assert [r.run_id for r in await env.service.list_thread_runs(ALICE, first, 2, limit=2)] == runs[2:]


async def test_a_start_is_not_held_up_by_an_event_stream_that_fails(env: Env, caplog) -> None:
    async def broken(*args, **kwargs):
        raise ConnectionError("redis is away")

    env.events.append = broken  # type: ignore[method-assign]
    thread = await env.thread()
    run = await env.start(thread, "hi")

    assert run.status is RunStatus.QUEUED and env.queue.published() == [run.run_id]
    await asyncio.sleep(0.05)
    assert "could not announce" in caplog.text


async def test_list_thread_runs_over_grpc_checks_the_account(sqlite_url: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        server = await start_runner(
            RunnerSettings(port=0, database_url=sqlite_url, role="api", grace_seconds=1, check_billing=False), stack
        )
        channel = open_channel(server.target, DEV_INTERNAL_TOKEN)
        stack.push_async_callback(channel.close)
        stub = runner_pb2_grpc.RunnerServiceStub(channel)
        thread = await stub.CreateThread(pb.CreateThreadRequest(account_id=ALICE, name="t"))
        run = await stub.StartRun(pb.StartRunRequest(account_id=ALICE, thread_id=thread.thread_id, prompt="hi"))

        listed = await stub.ListThreadRuns(pb.ListThreadRunsRequest(account_id=ALICE, thread_id=thread.thread_id))
        assert [(r.thread_seq, r.run.agent_run_id, r.run.status) for r in listed.runs] == [
            (1, run.agent_run_id, "queued")
        ]
        for account, thread_id in (("acct-mallory", thread.thread_id), (ALICE, "not-a-uuid")):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListThreadRuns(pb.ListThreadRunsRequest(account_id=account, thread_id=thread_id))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_migration_0006_places_existing_runs_in_creation_order(database_url: str) -> None:
    from agentry.servicekit.db import create_engine

    thread = "00000000-0000-0000-0000-000000000001"
    runs = [  # run_id, status, created_at
        ("00000000-0000-0000-0000-00000000000b", "completed", 1.0),
        ("00000000-0000-0000-0000-00000000000a", "completed", 2.0),
        ("00000000-0000-0000-0000-00000000000c", "running", 2.0),
        ("00000000-0000-0000-0000-00000000000d", "pending", 3.0),
    ]
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_alembic, "upgrade", "0005")
            await conn.execute(sa.text("INSERT INTO projects VALUES ('p', :a, 'p', 0)"), {"a": ALICE})
            await conn.execute(sa.text("INSERT INTO threads VALUES (:t, 'p', :a, 't', 0)"), {"t": thread, "a": ALICE})
            for run_id, status, created_at in runs:
                await conn.execute(
                    sa.text(
                        "INSERT INTO agent_runs (run_id, thread_id, account_id, status, model, error, finish_reason, "
                        "created_at, queue_order) VALUES (:r, :t, :a, :s, 'm', '', '', :c, :q)"
                    ),
                    {
                        "r": run_id,
                        "t": thread,
                        "a": ALICE,
                        "s": status,
                        "c": created_at,
                        "q": 1 if status == "pending" else None,
                    },
                )
        async with engine.begin() as conn:
            await conn.run_sync(_alembic, "upgrade", "0006")
            placed = (
                await conn.execute(sa.text("SELECT run_id, thread_seq FROM agent_runs ORDER BY created_at, run_id"))
            ).all()
            assert [tuple(row) for row in placed] == [
                (runs[0][0], 1),
                (runs[1][0], 2),
                (runs[2][0], 3),
                (runs[3][0], None),
            ]
            with pytest.raises(sa.exc.IntegrityError):  # one run per place
                async with conn.begin_nested():
                    await conn.execute(
                        sa.text("UPDATE agent_runs SET thread_seq = 1 WHERE run_id = :r"), {"r": runs[3][0]}
                    )
        async with engine.begin() as conn:
            await conn.run_sync(_alembic, "downgrade", "0005")
            await conn.run_sync(_alembic, "upgrade", "head")
    finally:
        await engine.dispose()
