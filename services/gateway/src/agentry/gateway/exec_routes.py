"""POST /api/sandboxes/{id}/exec: a command in the sandbox, its output streamed as it comes, then
its exit code (NDJSON), through the sandbox service's Exec stream."""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator
from typing import Any, Literal

import grpc
import orjson
from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, field_validator

from agentry.api.sandbox.v1 import sandbox_pb2 as pb

from .deps import CallerDep, UpstreamsDep
from .sandbox_routes import _stub
from .schemas import _Body

router = APIRouter(prefix="/api", tags=["sandboxes"])

MEDIA_TYPE = "application/x-ndjson"


class ExecBody(_Body):
    command: str = Field(min_length=1, max_length=100_000, description="Run with `sh -c` in the sandbox.")
    cwd: str | None = Field(
        default=None, max_length=4096, description="Relative to the workspace; its root when absent."
    )
    timeout_s: float = Field(default=60.0, gt=0, le=3600, description="Seconds; the command is killed after it.")
    env: dict[str, str] | None = Field(default=None, description="Extra environment variables (at most 100).")

    @field_validator("env")
    @classmethod
    def _few(cls, env: dict[str, str] | None) -> dict[str, str] | None:
        if env is not None and len(env) > 100:
            raise ValueError("at most 100 variables")
        return env


class ExecOutputLine(BaseModel):
    type: Literal["output"] = "output"
    data: str = Field(description="Output (stdout and stderr as they came), UTF-8; invalid bytes become U+FFFD.")


class ExecExitLine(BaseModel):
    type: Literal["exit"] = "exit"
    exit_code: int
    timed_out: bool
    duration_seconds: float
    truncated: bool = Field(description="The output passed the sandbox's limit and was cut.")


_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One JSON object a line: `output` lines as the command writes, then one `exit` "
        "line. A 200 always ends with its `exit` line.",
        "content": {
            MEDIA_TYPE: {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/ExecOutputLine"},
                        {"$ref": "#/components/schemas/ExecExitLine"},
                    ]
                },
                "example": '{"type":"output","data":"hi\\n"}\n{"type":"exit","exit_code":0,'
                '"timed_out":false,"duration_seconds":0.004,"truncated":false}\n',
            }
        },
    }
}


@router.post(
    "/sandboxes/{sandbox_id}/exec", response_class=StreamingResponse, responses=_ANSWER, operation_id="execInSandbox"
)
async def exec_command(sandbox_id: str, body: ExecBody, caller: CallerDep, up: UpstreamsDep):
    """Runs a command in the sandbox (started if it was stopped). Another account's sandbox: 404."""
    call = _stub(up).Exec(
        pb.ExecRequest(
            account_id=caller.account_id,
            sandbox_id=sandbox_id,
            command=body.command,
            cwd=body.cwd or "",
            timeout_seconds=body.timeout_s,
            env=body.env or {},
        )
    )
    try:
        first = await call.read()  # decides the status: a refusal is a 4xx, not a cut 200
    except BaseException:
        call.cancel()
        raise

    async def lines() -> AsyncIterator[bytes]:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        chunk = first
        try:
            while chunk is not grpc.aio.EOF:  # pyright: ignore[reportAttributeAccessIssue] - typeshed's grpc stubs omit EOF
                if chunk.HasField("exit"):
                    tail = decoder.decode(b"", final=True)
                    if tail:
                        yield orjson.dumps(ExecOutputLine(data=tail).model_dump()) + b"\n"
                    done = chunk.exit
                    yield (
                        orjson.dumps(
                            ExecExitLine(
                                exit_code=done.exit_code,
                                timed_out=done.timed_out,
                                duration_seconds=done.duration_seconds,
                                truncated=done.truncated,
                            ).model_dump()
                        )
                        + b"\n"
                    )
                    return
                text = decoder.decode(chunk.output)
                if text:
                    yield orjson.dumps(ExecOutputLine(data=text).model_dump()) + b"\n"
                chunk = await call.read()
        finally:
            call.cancel()

    return StreamingResponse(
        lines(), media_type=MEDIA_TYPE, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
