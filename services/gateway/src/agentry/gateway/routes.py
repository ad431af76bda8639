"""The HTTP API under /api: translate HTTP <-> gRPC, authenticate, validate, stream."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import grpc
import orjson
from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import StreamingResponse
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentry.api.runner.v1 import runner_pb2 as pb

from . import schemas, sse_docs
from .auth_routes import run_start_limit
from .deps import CallerDep, StreamCallerDep, UpstreamsDep
from .errors import ApiError
from .idempotency import IDEMPOTENCY_RESPONSES, KEY_DESCRIPTION, KEY_HEADER, MAX_KEY_LENGTH, idempotent
from .metrics import metered_stream
from .sandbox_routes import project_sandbox
from .sse import TERMINAL_STATUSES, run_events
from .thread_routes import thread_answer
from .thread_stream import list_thread_runs, parse_cursor, thread_events
from .upstreams import StartedRun

router = APIRouter(prefix="/api")


# Documented with its limits in the OpenAPI schema, but checked by the route (422
# invalid_idempotency_key) rather than by FastAPI (which would answer 422 validation_error).
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=KEY_HEADER,
        description=KEY_DESCRIPTION,
        json_schema_extra={"minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": "^[\\x20-\\x7E]+$"},
    ),
]


def _time(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value else None


@router.post("/threads", status_code=201, response_model=schemas.ThreadAnswer, tags=["threads"])
async def create_thread(caller: CallerDep, up: UpstreamsDep, body: schemas.NewThread | None = None):
    thread = await up.runner.CreateThread(
        pb.CreateThreadRequest(account_id=caller.account_id, name=(body.name if body and body.name else ""))
    )
    sandbox_id = await project_sandbox(up, caller.account_id, thread.project_id, reserve=True)
    return thread_answer(thread, sandbox_id)


@router.post(
    "/threads/{thread_id}/messages",
    status_code=201,
    response_model=schemas.MessageCreated,
    tags=["threads"],
    responses=IDEMPOTENCY_RESPONSES,
)
async def add_message(
    thread_id: str,
    body: schemas.NewMessage,
    caller: CallerDep,
    up: UpstreamsDep,
    idempotency_key: IdempotencyKey = None,
):
    async def add() -> schemas.MessageCreated:
        message = await up.runner.AddMessage(
            pb.AddMessageRequest(account_id=caller.account_id, thread_id=thread_id, content=body.content)
        )
        return schemas.MessageCreated(message_id=message.message_id)

    return await idempotent(
        up.idempotency,
        key=idempotency_key,
        account_id=caller.account_id,
        route="POST /api/threads/{thread_id}/messages",
        params={"thread_id": thread_id},
        body=body,
        status=201,
        call=add,
    )


@router.post(
    "/threads/{thread_id}/agent/start",
    status_code=202,
    response_model=schemas.RunStarted,
    tags=["runs"],
    responses=IDEMPOTENCY_RESPONSES,
    dependencies=[Depends(run_start_limit)],
)
async def start_run(
    thread_id: str,
    caller: CallerDep,
    up: UpstreamsDep,
    body: schemas.StartRun | None = None,
    idempotency_key: IdempotencyKey = None,
):
    body = body or schemas.StartRun()  # no body and {} are the same request (and fingerprint)
    if body.prompt is not None and not body.prompt.strip():
        await _refuse_blank_prompt(up, caller.account_id, thread_id)

    async def start() -> schemas.RunStarted:
        # Billing is asked by the runner's StartRun, with the model the run will really use (its
        # refusal is 402 insufficient_credits / 403 model_not_allowed with billing's message, as
        # the gateway's own check answered): asking here too only added a round trip.
        run = await up.runner.StartRun(
            pb.StartRunRequest(
                account_id=caller.account_id,
                thread_id=thread_id,
                model_name=body.model_name or "",
                prompt=body.prompt or "",
                reasoning_effort=body.reasoning_effort or "",
                multitask_strategy=body.multitask_strategy or "",
                user_id=caller.user_id or "",
            )
        )
        up.started_runs.put(run.agent_run_id, StartedRun(caller.account_id, run.status))
        return schemas.RunStarted(agent_run_id=run.agent_run_id, status=run.status)

    return await idempotent(
        up.idempotency,
        key=idempotency_key,
        account_id=caller.account_id,
        route="POST /api/threads/{thread_id}/agent/start",
        params={"thread_id": thread_id},
        body=body,
        status=202,
        call=start,
    )


async def _refuse_blank_prompt(up, account_id: str, thread_id: str) -> None:
    """A prompt sent empty or all spaces is a mistake (422 naming it), unless the thread already
    ends with a user message for the run to answer."""
    last = await up.runner.ListMessages(
        pb.ListMessagesRequest(account_id=account_id, thread_id=thread_id, limit=1, order="desc")
    )
    if not last.messages or last.messages[0].type != "user":
        problem = "must not be empty (the thread does not end with a user message to answer)"
        raise ApiError(
            422,
            "validation_error",
            f"invalid request: body.prompt: {problem}",
            fields=[{"field": "body.prompt", "message": problem}],
        )


def _run_out(run: pb.Run) -> schemas.RunOut:
    return schemas.RunOut(
        agent_run_id=run.agent_run_id,
        thread_id=run.thread_id,
        status=run.status,
        error=run.error or None,
        created_at=datetime.fromtimestamp(run.created_at, UTC),
        started_at=_time(run.started_at) if run.HasField("started_at") else None,
        completed_at=_time(run.completed_at) if run.HasField("completed_at") else None,
        finish_reason=run.finish_reason or None,
        phase=run.phase,
        phase_detail=run.phase_detail or None,
        phase_since=_time(run.phase_since) if run.HasField("phase_since") else None,
        attempt=run.attempt,
        pending=orjson.loads(run.pending_json) if run.pending_json else None,
    )


@router.get("/agent-run/{run_id}", response_model=schemas.RunOut, tags=["runs"])
async def get_run(run_id: str, caller: CallerDep, up: UpstreamsDep):
    return _run_out(await up.runner.GetRun(pb.GetRunRequest(account_id=caller.account_id, agent_run_id=run_id)))


@router.post("/agent-run/{run_id}/stop", response_model=schemas.RunStarted, tags=["runs"])
async def stop_run(run_id: str, caller: CallerDep, up: UpstreamsDep):
    run = await up.runner.StopRun(pb.StopRunRequest(account_id=caller.account_id, agent_run_id=run_id))
    return schemas.RunStarted(agent_run_id=run.agent_run_id, status=run.status)


@router.post("/agent-run/{run_id}/resume", response_model=schemas.RunOut, tags=["runs"])
async def resume_run(run_id: str, body: schemas.ResumeRun, caller: CallerDep, up: UpstreamsDep):
    """Continues a run waiting for the user (status requires_action): `content` answers its
    question; `decision` approves or rejects the call it waits on. The same run goes on (its stream
    continues with the next sequence numbers). 409 `run_not_waiting` when it is not waiting; 422
    when the input does not fit what it waits for."""
    request = pb.ResumeRunRequest(account_id=caller.account_id, agent_run_id=run_id, decision=body.decision or "")
    if body.content is not None:
        request.content = body.content
    return _run_out(await up.runner.ResumeRun(request))


_MAX_SEQ = 2**63 - 1  # event sequence numbers are int64 upstream


def _sequence_number(value: str) -> int:
    # str.isdigit() also accepts "²" and other Unicode digits that int() refuses; the length
    # check comes first so int() never sees more digits than it will parse.
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > _MAX_SEQ:
        raise ApiError(422, "invalid_last_event_id", "Last-Event-ID must be a sequence number")
    return int(value)


@router.get(
    "/agent-run/{run_id}/stream",
    tags=["runs"],
    response_class=StreamingResponse,
    operation_id="streamRun",
    responses=sse_docs.RUN_STREAM_RESPONSES,
    openapi_extra=sse_docs.STREAM_EXTRA,
)
async def stream_run(
    run_id: str,
    request: Request,
    caller: StreamCallerDep,
    up: UpstreamsDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", description=sse_docs.RUN_LAST_EVENT_ID)] = None,
):
    """The run's events as server-sent events, ending after its terminal event (`run_finished`).
    See the 200 answer for the frames and `Last-Event-ID` for resuming."""
    after = 0
    if last_event_id:
        after = _sequence_number(last_event_id)
    # A run this gateway started a moment ago for this very account is known to exist and be
    # theirs (the first open after a start, once, and without Last-Event-ID, which needs the
    # run's current status): no GetRun. Anything else asks the runner (404 for another account's).
    started = None if after else up.started_runs.pop(run_id)
    if started is not None and started.account_id == caller.account_id:
        run = pb.Run(agent_run_id=run_id, status=started.status)
    else:
        run = await up.runner.GetRun(pb.GetRunRequest(account_id=caller.account_id, agent_run_id=run_id))
    # The event stream must answer before the stream starts: when it cannot (Redis down past its
    # reconnect window) the client gets 503 with Retry-After, never a 200 cut mid-body. That first
    # read is the stream's own first batch.
    first = await up.events.read(run.agent_run_id, after)
    if (
        after
        and run.status in TERMINAL_STATUSES
        and not first
        and await _nothing_durable_after(up, run, caller.account_id, after)
    ):
        # At or past the end of a finished run: 204 tells an EventSource to stop reconnecting.
        return Response(status_code=204)
    body = run_events(
        run=run,
        account_id=caller.account_id,
        after_seq=after,
        events=up.events,
        runner=up.runner,
        keepalive_seconds=request.app.state.settings.keepalive_seconds,
        first=first,
    )
    return StreamingResponse(
        metered_stream(body, "run"),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _nothing_durable_after(up, run: pb.Run, account_id: str, after: int) -> bool:
    """Whether the finished run (with nothing live after `after`) has no stored event after it."""
    durable = await up.runner.ListRunEvents(
        pb.ListRunEventsRequest(account_id=account_id, agent_run_id=run.agent_run_id, after_seq=after)
    )
    return not durable.events


@router.get(
    "/threads/{thread_id}/stream",
    tags=["threads"],
    response_class=StreamingResponse,
    operation_id="streamThread",
    responses=sse_docs.THREAD_STREAM_RESPONSES,
    openapi_extra=sse_docs.STREAM_EXTRA,
)
async def stream_thread(
    thread_id: str,
    request: Request,
    caller: StreamCallerDep,
    up: UpstreamsDep,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description=sse_docs.THREAD_LAST_EVENT_ID)
    ] = None,
):
    """Live events of every run of the thread (runs started later included), from its first run
    or from just after `Last-Event-ID`."""
    resume = parse_cursor(last_event_id) if last_event_id else None
    after = resume[0] - 1 if resume else 0
    runs = await list_thread_runs(up.runner, caller.account_id, thread_id, after)  # 404 for another account's
    if resume and (not runs or runs[0].thread_seq != resume[0]):
        raise ApiError(422, "invalid_last_event_id", "Last-Event-ID names no run of this thread")
    body = thread_events(
        thread_id=thread_id,
        account_id=caller.account_id,
        runs=runs,
        listed_after=after,
        resume=resume,
        events=up.events,
        runner=up.runner,
        keepalive_seconds=request.app.state.settings.keepalive_seconds,
    )
    return StreamingResponse(
        metered_stream(body, "thread"),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/health/live", tags=["health"])
async def live() -> dict[str, str]:
    """200 while this process serves HTTP: Kubernetes probes it. Unlike /health it asks no
    upstream, so an upstream that is down fails its own requests (503), not every gateway pod."""
    return {"status": "ok"}


@router.get("/health", tags=["health"])
async def health(up: UpstreamsDep):
    """200 when the gateway and every upstream service answer their gRPC health check."""
    results: dict[str, str] = {}
    for name, channel in up.channels.items():
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2.0)  # pyright: ignore[reportAttributeAccessIssue] - typeshed's stub omits it
            results[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status).lower()
        except grpc.aio.AioRpcError as exc:
            results[name] = f"unreachable ({exc.code().name.lower()})"
    healthy = all(v == "serving" for v in results.values())
    from fastapi.responses import JSONResponse

    return JSONResponse(
        {"status": "ok" if healthy else "degraded", "upstreams": results}, status_code=200 if healthy else 503
    )
