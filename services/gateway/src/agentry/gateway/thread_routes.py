"""Threads as a frontend lists them: newest first in pages, renamed, deleted (with their runs,
events and, with the project's last thread, its sandbox); a thread's runs and messages in pages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import grpc
import orjson
from fastapi import APIRouter, Query, Response

from agentry.api.runner.v1 import runner_pb2 as pb
from agentry.api.sandbox.v1 import sandbox_pb2

from . import schemas
from .deps import CallerDep, UpstreamsDep
from .sandbox_routes import project_sandbox
from .upstreams import Upstreams

router = APIRouter(prefix="/api")

Limit = Annotated[int, Query(ge=1, le=100, description="Items per page (1 to 100).")]
Cursor = Annotated[
    str | None,
    Query(max_length=512, description=("`next_cursor` of the previous page, as given; absent for the first page.")),
]


def _time(value: float) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value else None


def thread_answer(thread: pb.Thread, sandbox_id: str | None) -> schemas.ThreadAnswer:
    return schemas.ThreadAnswer(
        thread_id=thread.thread_id,
        project_id=thread.project_id,
        sandbox_id=sandbox_id,
        name=thread.name,
        created_at=_time(thread.created_at),
        updated_at=_time(thread.updated_at or thread.created_at),
        last_run_status=thread.last_run_status or None,
        message_count=thread.message_count,
    )


def message_out(m: pb.Message) -> schemas.MessageOut:
    return schemas.MessageOut(
        message_id=m.message_id,
        type=m.type,
        content=orjson.loads(m.content_json),
        created_at=datetime.fromtimestamp(m.created_at, UTC),
    )


async def _account_sandboxes(up: Upstreams, account_id: str) -> dict[str, str]:
    """project id -> sandbox id for the account, in one call ({} when the sandbox service is away)."""
    if up.sandbox is None:
        return {}
    try:
        found = await up.sandbox.ListSandboxes(sandbox_pb2.ListSandboxesRequest(account_id=account_id))
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return {}
        raise
    return {box.project_id: box.sandbox_id for box in found.sandboxes}


@router.get("/threads", response_model=schemas.ThreadList, tags=["threads"], operation_id="listThreads")
async def list_threads(caller: CallerDep, up: UpstreamsDep, limit: Limit = 20, cursor: Cursor = None):
    """The account's threads, newest first (by creation), a page at a time."""
    reply = await up.runner.ListThreads(
        pb.ListThreadsRequest(account_id=caller.account_id, limit=limit, cursor=cursor or "")
    )
    boxes = await _account_sandboxes(up, caller.account_id) if reply.threads else {}
    return schemas.ThreadList(
        threads=[thread_answer(t, boxes.get(t.project_id)) for t in reply.threads],
        next_cursor=reply.next_cursor or None,
    )


@router.get("/threads/{thread_id}", response_model=schemas.ThreadAnswer, tags=["threads"], operation_id="getThread")
async def get_thread(thread_id: str, caller: CallerDep, up: UpstreamsDep):
    thread = await up.runner.GetThread(pb.GetThreadRequest(account_id=caller.account_id, thread_id=thread_id))
    return thread_answer(thread, await project_sandbox(up, caller.account_id, thread.project_id, reserve=False))


@router.patch(
    "/threads/{thread_id}", response_model=schemas.ThreadAnswer, tags=["threads"], operation_id="renameThread"
)
async def rename_thread(thread_id: str, body: schemas.RenameThread, caller: CallerDep, up: UpstreamsDep):
    thread = await up.runner.UpdateThread(
        pb.UpdateThreadRequest(account_id=caller.account_id, thread_id=thread_id, name=body.name)
    )
    return thread_answer(thread, await project_sandbox(up, caller.account_id, thread.project_id, reserve=False))


@router.delete(
    "/threads/{thread_id}", status_code=204, response_class=Response, tags=["threads"], operation_id="deleteThread"
)
async def delete_thread(thread_id: str, caller: CallerDep, up: UpstreamsDep):
    """Stops the thread's active run (waiting a few seconds for it to end), then deletes its
    messages, runs and events, live streams included. With the project's last thread the
    project's sandbox and its files are deleted too."""
    reply = await up.runner.DeleteThread(pb.DeleteThreadRequest(account_id=caller.account_id, thread_id=thread_id))
    if reply.project_deleted and up.sandbox is not None:
        found = await up.sandbox.ListSandboxes(
            sandbox_pb2.ListSandboxesRequest(account_id=caller.account_id, project_id=reply.project_id)
        )
        for box in found.sandboxes:
            await up.sandbox.DeleteSandbox(
                sandbox_pb2.SandboxRequest(account_id=caller.account_id, sandbox_id=box.sandbox_id)
            )
    return Response(status_code=204)


@router.get("/threads/{thread_id}/runs", response_model=schemas.RunList, tags=["runs"], operation_id="listThreadRuns")
async def list_runs(thread_id: str, caller: CallerDep, up: UpstreamsDep, limit: Limit = 20, cursor: Cursor = None):
    """The thread's runs, newest first, a page at a time."""
    from .routes import _run_out

    reply = await up.runner.ListRuns(
        pb.ListRunsRequest(account_id=caller.account_id, thread_id=thread_id, limit=limit, cursor=cursor or "")
    )
    return schemas.RunList(runs=[_run_out(r) for r in reply.runs], next_cursor=reply.next_cursor or None)


@router.get(
    "/threads/{thread_id}/messages", response_model=schemas.MessageList, tags=["threads"], operation_id="listMessages"
)
async def list_messages(
    thread_id: str,
    caller: CallerDep,
    up: UpstreamsDep,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Messages per page (1 to 1000).")] = 100,
    order: Annotated[
        Literal["asc", "desc"],
        Query(
            description=(
                "`asc`: oldest first; `desc`: newest first. Ordered by (created_at, the message's position "
                "in the thread): stable when timestamps tie."
            )
        ),
    ] = "asc",
):
    """The thread's messages, a page at a time, in either order."""
    reply = await up.runner.ListMessages(
        pb.ListMessagesRequest(
            account_id=caller.account_id, thread_id=thread_id, limit=limit, cursor=cursor or "", order=order
        )
    )
    return schemas.MessageList(messages=[message_out(m) for m in reply.messages], next_cursor=reply.next_cursor or None)


@router.delete(
    "/threads/{thread_id}/messages/{message_id}",
    status_code=204,
    response_class=Response,
    tags=["threads"],
    operation_id="deleteMessage",
)
async def delete_message(thread_id: str, message_id: str, caller: CallerDep, up: UpstreamsDep):
    """Deletes one message. 409 `run_active` while a run is active on the thread (stop it first)."""
    await up.runner.DeleteMessage(
        pb.DeleteMessageRequest(account_id=caller.account_id, thread_id=thread_id, message_id=message_id)
    )
    return Response(status_code=204)
