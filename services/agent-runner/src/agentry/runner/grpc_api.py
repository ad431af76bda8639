"""The runner's gRPC servicer: protobuf <-> domain, nothing else."""

from __future__ import annotations

import orjson

from agentry.api.runner.v1 import runner_pb2 as pb
from agentry.api.runner.v1 import runner_pb2_grpc
from agentry.servicekit.errors import ERROR_CODE_KEY
from agentry.servicekit.grpc_status import grpc_status

from .domain import Run, StoredMessage, Thread
from .errors import TooManyActiveRuns
from .service import RunnerService

# Trailing metadata: whole seconds a caller should wait before retrying a RESOURCE_EXHAUSTED.
RETRY_AFTER_KEY = "retry-after"


def _thread(t: Thread) -> pb.Thread:
    return pb.Thread(
        thread_id=t.thread_id,
        project_id=t.project_id,
        account_id=t.account_id,
        name=t.name,
        created_at=t.created_at,
        updated_at=t.updated_at or t.created_at,
        message_count=t.message_count,
        last_run_status=t.last_run_status,
    )


def _message(m: StoredMessage) -> pb.Message:
    return pb.Message(
        message_id=m.message_id,
        thread_id=m.thread_id,
        type=m.type,
        content_json=m.content_json,
        created_at=m.created_at,
    )


def _run(r: Run) -> pb.Run:
    return pb.Run(
        agent_run_id=r.run_id,
        thread_id=r.thread_id,
        account_id=r.account_id,
        status=r.status.value,
        error=r.error,
        model=r.model,
        created_at=r.created_at,
        started_at=r.started_at,
        completed_at=r.completed_at,
        reasoning_effort=r.reasoning_effort,
        phase=r.phase,
        phase_detail=r.phase_detail,
        phase_since=r.phase_since,
        attempt=r.attempt,
        finish_reason=r.finish_reason,
        pending_json=orjson.dumps(r.pending).decode() if r.pending else "",
    )


class RunnerServicer(runner_pb2_grpc.RunnerServiceServicer):
    def __init__(self, service: RunnerService) -> None:
        self._service = service

    async def CreateThread(self, request, context):
        return _thread(await self._service.create_thread(request.account_id, request.name))

    async def GetThread(self, request, context):
        return _thread(await self._service.describe_thread(request.account_id, request.thread_id))

    async def ListThreads(self, request, context):
        threads, cursor = await self._service.list_threads(request.account_id, request.limit, request.cursor)
        return pb.ListThreadsResponse(threads=[_thread(t) for t in threads], next_cursor=cursor)

    async def UpdateThread(self, request, context):
        return _thread(await self._service.rename_thread(request.account_id, request.thread_id, request.name))

    async def DeleteThread(self, request, context):
        project_id, deleted = await self._service.delete_thread(request.account_id, request.thread_id)
        return pb.DeleteThreadResponse(project_id=project_id, project_deleted=deleted)

    async def DeleteMessage(self, request, context):
        await self._service.delete_message(request.account_id, request.thread_id, request.message_id)
        return pb.DeleteMessageResponse()

    async def ListRuns(self, request, context):
        runs, cursor = await self._service.list_runs(
            request.account_id, request.thread_id, request.limit, request.cursor
        )
        return pb.ListRunsResponse(runs=[_run(r) for r in runs], next_cursor=cursor)

    async def AddMessage(self, request, context):
        return _message(await self._service.add_message(request.account_id, request.thread_id, request.content))

    async def ListMessages(self, request, context):
        if not request.limit and not request.cursor and not request.order:  # every message, in thread order
            messages = await self._service.list_messages(request.account_id, request.thread_id)
            return pb.ListMessagesResponse(messages=[_message(m) for m in messages])
        messages, cursor = await self._service.page_messages(
            request.account_id, request.thread_id, request.limit, request.cursor, request.order
        )
        return pb.ListMessagesResponse(messages=[_message(m) for m in messages], next_cursor=cursor)

    async def StartRun(self, request, context):
        try:
            run = await self._service.start_run(
                request.account_id,
                request.thread_id,
                request.model_name,
                request.prompt,
                request.reasoning_effort,
                request.multitask_strategy,
                user_id=request.user_id,
            )
            return _run(run)
        except TooManyActiveRuns as exc:
            # The interceptor's mapping plus the seconds to wait (the gateway's Retry-After).
            await context.abort(
                grpc_status(exc),
                exc.message,
                trailing_metadata=((ERROR_CODE_KEY, exc.code), (RETRY_AFTER_KEY, str(exc.retry_after_seconds))),
            )

    async def GetRun(self, request, context):
        return _run(await self._service.get_run(request.account_id, request.agent_run_id))

    async def StopRun(self, request, context):
        return _run(await self._service.stop_run(request.account_id, request.agent_run_id))

    async def ListRunEvents(self, request, context):
        events = await self._service.list_run_events(request.account_id, request.agent_run_id, request.after_seq)
        return pb.ListRunEventsResponse(
            events=[pb.RunEvent(seq=e.seq, data=e.data, terminal=e.terminal) for e in events]
        )

    async def ListThreadRuns(self, request, context):
        runs = await self._service.list_thread_runs(
            request.account_id, request.thread_id, request.after_thread_seq, request.limit
        )
        return pb.ListThreadRunsResponse(runs=[pb.ThreadRun(thread_seq=r.thread_seq or 0, run=_run(r)) for r in runs])

    async def ResumeRun(self, request, context):
        return _run(
            await self._service.resume_run(
                request.account_id,
                request.agent_run_id,
                content=request.content if request.HasField("content") else None,
                decision=request.decision or None,
            )
        )
