"""What a frontend lists and deletes: threads (newest first, with their summary), runs of a thread,
messages paged both ways (stable when timestamps tie), renaming and deleting. RunnerService over
the SQL repository, on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid

import pytest

from agentpress import AssistantMessage
from agentry.runner.errors import InvalidInput, MessageNotFound, RunAlreadyActive, ThreadNotFound
from agentry.servicekit.eventstream import thread_log_id

from . import test_multitask
from .test_multitask import ALICE, Env

env = test_multitask.env  # the fixture, shared with test_multitask

MALLORY = "acct-mallory"


async def _tied_messages(env: Env, thread_id: str, count: int, at: float) -> list[str]:
    """`count` messages all stamped `at` (ties on the timestamp), in insertion order."""
    ids = []
    for n in range(count):
        message = AssistantMessage(text=f"m{n}")
        await env.repo.add_message(
            thread_id=thread_id,
            account_id=ALICE,
            type="assistant",
            content_json=message.to_json().decode(),
            message_id=message.message_id,
            created_at=at,
        )
        ids.append(message.message_id)
    return ids


async def _pages(env: Env, thread_id: str, order: str, limit: int) -> list[list[str]]:
    pages, cursor = [], ""
    while True:
        page, cursor = await env.service.page_messages(ALICE, thread_id, limit, cursor, order)
        pages.append([m.message_id for m in page])
        if not cursor:
            return pages


async def test_threads_list_newest_first_in_pages_with_their_summary(env: Env) -> None:
    made = [await env.thread() for _ in range(5)]
    run = await env.start(made[2], "hello")
    await env.service.create_thread(MALLORY, "not alice's")

    first, cursor = await env.service.list_threads(ALICE, 2, "")
    second, cursor2 = await env.service.list_threads(ALICE, 2, cursor)
    third, end = await env.service.list_threads(ALICE, 2, cursor2)

    listed = [t.thread_id for t in first + second + third]
    assert listed == list(reversed(made)) and end == ""
    summary = next(t for t in first + second + third if t.thread_id == made[2])
    assert (summary.message_count, summary.last_run_status) == (1, run.status.value)
    assert summary.updated_at >= summary.created_at
    assert (second[0].message_count, second[0].last_run_status) in ((0, ""), (1, "queued"))


async def test_message_pages_both_ways_are_stable_when_timestamps_tie(env: Env) -> None:
    thread = await env.thread()
    ids = await _tied_messages(env, thread, 7, at=1_000.0) + await _tied_messages(env, thread, 2, at=2_000.0)

    forward = await _pages(env, thread, "asc", 3)
    backward = await _pages(env, thread, "desc", 4)

    assert [len(p) for p in forward] == [3, 3, 3] and [m for p in forward for m in p] == ids
    assert [len(p) for p in backward] == [4, 4, 1] and [m for p in backward for m in p] == ids[::-1]


async def test_runs_list_newest_first_in_pages(env: Env) -> None:
    thread = await env.thread()
    runs = [await env.start(thread, f"p{n}", "enqueue") for n in range(3)]

    first, cursor = await env.service.list_runs(ALICE, thread, 2, "")
    rest, end = await env.service.list_runs(ALICE, thread, 2, cursor)

    ordered = sorted(runs, key=lambda r: (r.created_at, r.run_id), reverse=True)
    assert [r.run_id for r in first + rest] == [r.run_id for r in ordered] and end == ""


@pytest.mark.parametrize("cursor", ["garbage!", "W10", "WyJ4IiwieSJd", "x" * 600])
async def test_a_cursor_that_is_not_ours_is_invalid_input(env: Env, cursor: str) -> None:
    thread = await env.thread()
    for call in (
        env.service.list_threads(ALICE, 5, cursor),
        env.service.list_runs(ALICE, thread, 5, cursor),
        env.service.page_messages(ALICE, thread, 5, cursor, "asc"),
    ):
        with pytest.raises(InvalidInput, match="cursor"):
            await call


@pytest.mark.parametrize("limit", [-1, 101])
async def test_a_limit_out_of_range_is_invalid_input(env: Env, limit: int) -> None:
    with pytest.raises(InvalidInput, match="limit"):
        await env.service.list_threads(ALICE, limit, "")


async def test_rename_trims_and_refuses_empty_names(env: Env) -> None:
    thread = await env.thread()
    assert (await env.service.rename_thread(ALICE, thread, "  Plans  ")).name == "Plans"
    with pytest.raises(InvalidInput, match="name"):
        await env.service.rename_thread(ALICE, thread, "   ")
    with pytest.raises(ThreadNotFound):
        await env.service.rename_thread(MALLORY, thread, "mine now")


async def test_deleting_a_message_is_refused_while_a_run_holds_the_thread(env: Env) -> None:
    thread = await env.thread()
    run = await env.start(thread, "hello")
    [prompt] = await env.service.list_messages(ALICE, thread)
    with pytest.raises(RunAlreadyActive):
        await env.service.delete_message(ALICE, thread, prompt.message_id)

    await env.end(run.run_id, await env.claim(run.run_id))
    await env.service.delete_message(ALICE, thread, prompt.message_id)
    assert await env.service.list_messages(ALICE, thread) == []
    with pytest.raises(MessageNotFound):
        await env.service.delete_message(ALICE, thread, prompt.message_id)
    with pytest.raises(ThreadNotFound):
        await env.service.delete_message(MALLORY, thread, str(uuid.uuid4()))


async def test_delete_stops_the_active_run_and_removes_everything_and_the_project_with_its_last_thread(
    env: Env,
) -> None:
    thread = await env.thread()
    project = (await env.service.get_thread(ALICE, thread)).project_id
    done = await env.start(thread, "first")
    await env.end(done.run_id, await env.claim(done.run_id))
    waiting = await env.start(thread, "second")  # queued: no worker took it yet

    with pytest.raises(ThreadNotFound):
        await env.service.delete_thread(MALLORY, thread)
    assert await env.service.delete_thread(ALICE, thread) == (project, True)

    for call in (env.service.get_thread(ALICE, thread), env.service.list_messages(ALICE, thread)):
        with pytest.raises(ThreadNotFound):
            await call
    for run_id in (done.run_id, waiting.run_id):
        assert await env.repo.get_run(run_id) is None
        assert await env.repo.list_events(run_id, 0) == []
        assert await env.events.read(run_id, 0) == []
    assert await env.events.read(thread_log_id(thread), 0) == []
    assert await env.stops.is_stop_requested(waiting.run_id)


async def test_a_claimed_run_carries_its_own_threads_project(env: Env) -> None:
    # Regression: the project came from a subquery in RETURNING, which SQLite renders unqualified
    # (`thread_id = thread_id`): every run got the account's first thread's project and sandbox.
    await env.thread()
    second = await env.service.get_thread(ALICE, await env.thread())
    run = await env.start(second.thread_id, "hello")
    claimed = await env.repo.claim_run(run.run_id, worker_id="w")
    assert claimed is not None and claimed.project_id == second.project_id
