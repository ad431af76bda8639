"""POST /api/agent/initiate: a new project and thread, the user's files in its sandbox, the first
message and the run, from one multipart form, the files streamed (never held whole)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import unicodedata
from collections.abc import AsyncIterator
from typing import Any

import grpc
from fastapi import APIRouter, Depends, Request
from python_multipart.multipart import MultipartParser, parse_options_header

from agentry.api.billing.v1 import billing_pb2
from agentry.api.runner.v1 import runner_pb2 as pb
from agentry.api.sandbox.v1 import sandbox_pb2

from . import schemas
from .auth_routes import run_start_limit
from .deps import CallerDep, UpstreamsDep
from .errors import ApiError
from .sandbox_routes import MULTIPART_SLACK, UPLOAD_QUEUE_CHUNKS, _code, _put, _too_large, project_sandbox
from .schemas import unstorable
from .upstreams import StartedRun, Upstreams

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api")

UPLOAD_DIR = "uploads"  # under the workspace: what the agent sees as /workspace/uploads/<name>
MAX_FILES = 20
MAX_NAME_CHARS = 200
TEXT_LIMITS = {"prompt": 100_000, "model_name": 200, "reasoning_effort": 10}
REASONING_EFFORTS = ("low", "medium", "high")

_FORM = {
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "required": ["prompt"],
            "properties": {
                "prompt": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 100_000,
                    "description": "The first user message (not empty or only spaces).",
                },
                "model_name": {"type": "string", "maxLength": 200, "description": "A LiteLLM model string."},
                "reasoning_effort": {"type": "string", "enum": list(REASONING_EFFORTS)},
                "files": {
                    "type": "array",
                    "items": {"type": "string", "format": "binary"},
                    "maxItems": MAX_FILES,
                    "description": "Repeated `files` parts, each with a filename; sent after the text fields.",
                },
            },
        },
        "encoding": {"files": {"contentType": "application/octet-stream"}},
    }
}


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(
        422,
        "validation_error",
        f"invalid request: body.{field}: {message}",
        fields=[{"field": f"body.{field}", "message": message}],
    )


def safe_name(raw: str) -> str:
    """A file name that stays in the upload folder: the last path segment, printable, no leading
    dots (no `..`, no hidden files), at most MAX_NAME_CHARS; "file" when nothing is left."""
    name = unicodedata.normalize("NFC", raw.replace("\\", "/").rsplit("/", 1)[-1])
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '<>:"|?*')
    name = name.strip().lstrip(".").strip()
    return name[:MAX_NAME_CHARS] or "file"


class _FileUpload:
    """One file streamed into the sandbox through one UploadFile call (as sandbox_routes' upload)."""

    def __init__(self, stub, account_id: str, sandbox_id: str, path: str) -> None:
        self.path = path
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(UPLOAD_QUEUE_CHUNKS)

        async def messages() -> AsyncIterator[sandbox_pb2.UploadFileChunk]:
            yield sandbox_pb2.UploadFileChunk(
                header=sandbox_pb2.UploadFileHeader(account_id=account_id, sandbox_id=sandbox_id, path=path)
            )
            while (chunk := await self._queue.get()) is not None:
                yield sandbox_pb2.UploadFileChunk(data=chunk)

        self._answer = asyncio.ensure_future(stub.UploadFile(messages()))

    async def write(self, chunk: bytes) -> None:
        await _put(self._queue, chunk, self._answer)

    async def close(self) -> int:
        await _put(self._queue, None, self._answer)
        try:
            return (await self._answer).size
        except grpc.aio.AioRpcError as exc:
            if _code(exc) == "file_too_large":
                raise _too_large(exc.details() or "the file is too large") from exc
            if _code(exc) == "disk_quota_exceeded":
                raise ApiError(507, "disk_quota_exceeded", exc.details() or "disk quota exceeded") from exc
            raise

    async def abort(self) -> None:
        if not self._answer.done():
            self._answer.cancel()  # the sandbox drops the partial file
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError, ApiError):
            await self._answer


class _Form:
    """Parses the multipart body as it arrives into events: ("part", name, filename),
    ("data", bytes), ("end",)."""

    def __init__(self, boundary: bytes) -> None:
        self.events: list[tuple[Any, ...]] = []
        self._header_field = b""
        self._header_value = b""
        self._name = ""
        self._filename: str | None = None
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._begin,
                "on_header_field": self._hfield,
                "on_header_value": self._hvalue,
                "on_header_end": self._hend,
                "on_headers_finished": self._headers_done,
                "on_part_data": self._data,
                "on_part_end": self._end,
            },
        )

    def _begin(self) -> None:
        self._name, self._filename = "", None

    def _hfield(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _hvalue(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _hend(self) -> None:
        if self._header_field.lower() == b"content-disposition":
            _, options = parse_options_header(self._header_value)
            self._name = options.get(b"name", b"").decode("utf-8", "replace")
            if b"filename" in options:
                self._filename = options[b"filename"].decode("utf-8", "replace")
        self._header_field, self._header_value = b"", b""

    def _headers_done(self) -> None:
        self.events.append(("part", self._name, self._filename))

    def _data(self, data: bytes, start: int, end: int) -> None:
        self.events.append(("data", bytes(data[start:end])))

    def _end(self) -> None:
        self.events.append(("end",))

    def write(self, chunk: bytes) -> list[tuple[Any, ...]]:
        self._parser.write(chunk)
        events, self.events = self.events, []
        return events

    def finalize(self) -> list[tuple[Any, ...]]:
        self._parser.finalize()
        events, self.events = self.events, []
        return events


class _Initiation:
    """The state of one initiate request: text fields, the thread once made, the files written."""

    def __init__(self, up: Upstreams, account_id: str, limit: int) -> None:
        self.up, self.account_id, self.limit = up, account_id, limit
        self.text: dict[str, bytearray] = {}
        self.thread: pb.Thread | None = None
        self.sandbox_id: str | None = None
        self.paths: list[str] = []
        self.total = 0
        self._field: str | None = None
        self._file: _FileUpload | None = None
        self._checked = False

    async def check_billing(self) -> None:
        if self._checked:
            return
        self._checked = True
        model = self.value("model_name")
        check = await self.up.billing.CheckRun(billing_pb2.CheckRunRequest(account_id=self.account_id, model=model))
        if not check.allowed:
            status = 402 if check.reason == "insufficient_credits" else 403
            raise ApiError(status, check.reason or "not_allowed", check.message or "this run is not allowed")

    async def ensure_thread(self) -> None:
        if self.thread is None:
            await self.check_billing()
            thread = await self.up.runner.CreateThread(pb.CreateThreadRequest(account_id=self.account_id))
            self.thread = thread
            self.sandbox_id = await project_sandbox(self.up, self.account_id, thread.project_id, reserve=True)

    def value(self, name: str) -> str:
        return self.text.get(name, bytearray()).decode("utf-8", "replace")

    async def handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "part":
            _, name, filename = event
            if name == "files":
                await self._open_file(filename)
            elif name in TEXT_LIMITS:
                if name in self.text:
                    raise _invalid(name, "sent more than once")
                self.text[name] = bytearray()
            else:
                raise _invalid(
                    name or "(unnamed)", "not a field of this form (prompt, model_name, reasoning_effort, files)"
                )
            self._field = name
        elif kind == "data":
            if self._file is not None:
                self.total += len(event[1])
                if self.total > self.limit:
                    raise _too_large(f"files: the upload is over the limit of {self.limit} bytes")
                await self._file.write(event[1])
            elif self._field is not None:
                buffer = self.text[self._field]
                buffer += event[1]
                if len(buffer) > 4 * TEXT_LIMITS[self._field]:  # UTF-8: at most 4 bytes a character
                    raise _invalid(self._field, f"at most {TEXT_LIMITS[self._field]} characters")
        elif kind == "end":
            if self._file is not None:
                file, self._file = self._file, None
                await file.close()
                self.paths.append(file.path)
            elif self._field == "prompt" and not self.value("prompt").strip():
                raise _invalid("prompt", "must not be empty")  # before any file is written
            self._field = None

    async def _open_file(self, filename: str | None) -> None:
        if filename is None:
            raise _invalid("files", "each part must carry a filename")
        if len(self.paths) >= MAX_FILES:
            raise _invalid("files", f"at most {MAX_FILES} files")
        await self.ensure_thread()
        if self.sandbox_id is None or self.up.sandbox is None:
            raise ApiError(
                503, "unavailable", "the sandbox service cannot take files now; try again", headers={"Retry-After": "1"}
            )
        name, n = safe_name(filename), 1
        stem, dot, ext = name.rpartition(".")
        while f"{UPLOAD_DIR}/{name}" in self.paths:
            n += 1
            name = f"{stem}-{n}.{ext}" if dot and stem else f"{name.split('-')[0]}-{n}"
        self._file = _FileUpload(self.up.sandbox, self.account_id, self.sandbox_id, f"{UPLOAD_DIR}/{name}")

    async def abort(self) -> None:
        """Undoes what was made: the partial file, the thread and its project's sandbox."""
        if self._file is not None:
            await self._file.abort()
        if self.thread is None:
            return
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self.up.runner.DeleteThread(
                pb.DeleteThreadRequest(account_id=self.account_id, thread_id=self.thread.thread_id)
            )
            if self.sandbox_id and self.up.sandbox is not None:
                await self.up.sandbox.DeleteSandbox(
                    sandbox_pb2.SandboxRequest(account_id=self.account_id, sandbox_id=self.sandbox_id)
                )


def _checked_text(form: _Initiation) -> tuple[str, str, str]:
    values = {name: form.value(name) for name in TEXT_LIMITS}
    for name, value in values.items():
        if len(value) > TEXT_LIMITS[name]:
            raise _invalid(name, f"at most {TEXT_LIMITS[name]} characters")
        if problem := unstorable(value):
            raise _invalid(name, problem)
    if not values["prompt"].strip():
        raise _invalid("prompt", "must not be empty")
    if values["reasoning_effort"] and values["reasoning_effort"] not in REASONING_EFFORTS:
        raise _invalid("reasoning_effort", "must be one of low, medium, high")
    return values["prompt"], values["model_name"], values["reasoning_effort"]


def first_message(prompt: str, paths: list[str]) -> str:
    """The prompt, then the uploaded files where the agent finds them."""
    if not paths:
        return prompt
    listed = "\n".join(f"- /workspace/{path}" for path in paths)
    return f"{prompt}\n\nUploaded files:\n{listed}"


@router.post(
    "/agent/initiate",
    status_code=201,
    response_model=schemas.Initiated,
    tags=["runs"],
    operation_id="initiateAgent",
    dependencies=[Depends(run_start_limit)],
    openapi_extra={"requestBody": {"required": True, "content": _FORM}},
)
async def initiate(request: Request, caller: CallerDep, up: UpstreamsDep):
    """Creates a project and its thread, writes the `files` parts into the project's sandbox under
    `uploads/` (names reduced to a safe last segment; a repeated name gets `-2`, `-3`), stores
    the first user message (the prompt and the files' paths) and starts the run. Send the text
    fields before the files. 413 `file_too_large` when the files together pass the upload limit;
    422 naming the field for an empty prompt or a bad field; 402 when the account has no credit.
    Nothing is left behind when it fails."""
    limit = request.app.state.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + MULTIPART_SLACK:
        raise _too_large(f"the upload is over the limit of {limit} bytes")
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise ApiError(415, "unsupported_media_type", "send multipart/form-data with prompt and files")
    parser, form = _Form(boundary), _Initiation(up, caller.account_id, limit)
    try:
        async for chunk in request.stream():
            for event in parser.write(chunk):
                await form.handle(event)
        for event in parser.finalize():
            await form.handle(event)
        prompt, model, effort = _checked_text(form)
        await form.ensure_thread()
        assert form.thread is not None
        run = await up.runner.StartRun(
            pb.StartRunRequest(
                account_id=caller.account_id,
                thread_id=form.thread.thread_id,
                model_name=model,
                prompt=first_message(prompt, form.paths),
                reasoning_effort=effort,
            )
        )
    except BaseException:
        await asyncio.shield(form.abort())
        raise
    up.started_runs.put(run.agent_run_id, StartedRun(caller.account_id, run.status))
    return schemas.Initiated(
        thread_id=form.thread.thread_id,
        project_id=form.thread.project_id,
        agent_run_id=run.agent_run_id,
        sandbox_id=form.sandbox_id,
        files=form.paths,
    )
