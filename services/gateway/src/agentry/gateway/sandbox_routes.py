"""The sandbox API under /api: files streamed both ways, lifecycle, preview links; every route tenant-checked."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated
from urllib.parse import quote

import grpc
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from python_multipart.multipart import MultipartParser, parse_options_header

from agentry.api.sandbox.v1 import sandbox_pb2 as pb
from agentry.api.sandbox.v1 import sandbox_pb2_grpc
from agentry.servicekit.errors import ERROR_CODE_KEY

from . import schemas
from .deps import CallerDep, StreamCallerDep, UpstreamsDep
from .errors import ApiError
from .sse_docs import STREAM_EXTRA
from .upstreams import Upstreams

router = APIRouter(prefix="/api", tags=["sandboxes"])

PathParam = Annotated[str, Query(max_length=4096, description="Relative to the workspace (or under /workspace).")]
# Bytes of multipart framing (boundaries, part headers, the path field) allowed beyond the file itself.
MULTIPART_SLACK = 64 * 1024
# Upload chunks queued between the HTTP body and the gRPC stream: memory stays bounded.
UPLOAD_QUEUE_CHUNKS = 8


def _stub(up: Upstreams) -> sandbox_pb2_grpc.SandboxServiceStub:
    if up.sandbox is None:
        raise ApiError(503, "unavailable", "the sandbox service is not configured")
    return up.sandbox


def _code(exc: grpc.aio.AioRpcError) -> str:
    return str(dict(exc.trailing_metadata() or ()).get(ERROR_CODE_KEY) or "")


def _too_large(message: str) -> ApiError:
    return ApiError(413, "file_too_large", message)


async def project_sandbox(up: Upstreams, account_id: str, project_id: str, *, reserve: bool) -> str | None:
    """The project's sandbox id; with `reserve` the sandbox is reserved now (made on its first use).
    None when the sandbox service cannot answer: a thread does not fail for it."""
    if up.sandbox is None:
        return None
    try:
        if reserve:
            box = await up.sandbox.CreateSandbox(
                pb.CreateSandboxRequest(account_id=account_id, project_id=project_id, lazy=True)
            )
            return box.sandbox_id
        found = await up.sandbox.ListSandboxes(pb.ListSandboxesRequest(account_id=account_id, project_id=project_id))
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return None
        raise
    return found.sandboxes[0].sandbox_id if found.sandboxes else None


def _sandbox_out(box: pb.Sandbox) -> schemas.SandboxOut:
    return schemas.SandboxOut(
        sandbox_id=box.sandbox_id,
        project_id=box.project_id,
        provider=box.provider,
        state=box.state,
        network=box.spec.network,
        error=box.error or None,
        created_at=box.created_at or None,
        last_used_at=box.last_used_at or None,
    )


def _file_out(info: pb.FileInfo) -> schemas.FileOut:
    return schemas.FileOut(
        name=info.name, path=info.path, is_dir=info.is_dir, size=info.size, mode=info.mode, modified_at=info.modified_at
    )


@router.get("/sandboxes", response_model=schemas.SandboxList)
async def list_sandboxes(caller: CallerDep, up: UpstreamsDep, project_id: Annotated[str, Query(max_length=128)] = ""):
    reply = await _stub(up).ListSandboxes(pb.ListSandboxesRequest(account_id=caller.account_id, project_id=project_id))
    return schemas.SandboxList(sandboxes=[_sandbox_out(b) for b in reply.sandboxes])


@router.get("/sandboxes/{sandbox_id}", response_model=schemas.SandboxOut)
async def get_sandbox(sandbox_id: str, caller: CallerDep, up: UpstreamsDep):
    return _sandbox_out(
        await _stub(up).GetSandbox(pb.GetSandboxRequest(account_id=caller.account_id, sandbox_id=sandbox_id))
    )


@router.delete("/sandboxes/{sandbox_id}", status_code=204, response_class=Response)
async def delete_sandbox(sandbox_id: str, caller: CallerDep, up: UpstreamsDep):
    """Deletes the sandbox with its files; the project gets a new, empty one on its next use."""
    await _stub(up).DeleteSandbox(pb.SandboxRequest(account_id=caller.account_id, sandbox_id=sandbox_id))
    return Response(status_code=204)


@router.post("/projects/{project_id}/sandbox/ensure-active", response_model=schemas.SandboxOut)
async def ensure_active(project_id: str, caller: CallerDep, up: UpstreamsDep):
    """Starts the project's sandbox (made on first use, started again when stopped or archived)."""
    stub = _stub(up)
    found = await stub.ListSandboxes(pb.ListSandboxesRequest(account_id=caller.account_id, project_id=project_id))
    if not found.sandboxes:  # another account's project, or none: the same answer
        raise ApiError(404, "sandbox_not_found", f"project {project_id!r} has no sandbox")
    box = found.sandboxes[0]
    return _sandbox_out(
        await stub.StartSandbox(pb.SandboxRequest(account_id=caller.account_id, sandbox_id=box.sandbox_id))
    )


@router.get("/sandboxes/{sandbox_id}/preview/{port}", response_model=schemas.PreviewOut)
async def preview(sandbox_id: str, port: int, request: Request, caller: CallerDep, up: UpstreamsDep):
    """A URL for a port served inside the sandbox. Daytona: its preview link and token. Local: this
    gateway's proxy route, which only the owner's credentials open."""
    if not 1 <= port <= 65535:
        raise ApiError(422, "invalid_port", "port must be between 1 and 65535")
    link = await _stub(up).GetPreviewLink(
        pb.GetPreviewLinkRequest(account_id=caller.account_id, sandbox_id=sandbox_id, port=port)
    )
    if link.url:
        return schemas.PreviewOut(url=link.url, token=link.token or None)
    base = str(request.base_url).rstrip("/")
    return schemas.PreviewOut(url=f"{base}/api/sandboxes/{sandbox_id}/preview/{port}/proxy/", token=None)


@router.get(
    "/sandboxes/{sandbox_id}/preview/{port}/proxy/{path:path}",
    response_class=StreamingResponse,
    openapi_extra=STREAM_EXTRA,
)
async def preview_proxy(
    sandbox_id: str, port: int, path: str, request: Request, caller: StreamCallerDep, up: UpstreamsDep
):
    """GET through to the port inside a local sandbox (bearer header or ?access_token=)."""
    import httpx

    if not 1 <= port <= 65535:
        raise ApiError(422, "invalid_port", "port must be between 1 and 65535")
    link = await _stub(up).GetPreviewLink(
        pb.GetPreviewLinkRequest(account_id=caller.account_id, sandbox_id=sandbox_id, port=port)
    )
    if not link.upstream_url:
        raise ApiError(404, "not_found", "this sandbox's ports are served by its provider's preview link")
    params: list[tuple[str, str | int | float | bool | None]] = [
        (k, v) for k, v in request.query_params.multi_items() if k != "access_token"
    ]
    client = httpx.AsyncClient(timeout=httpx.Timeout(30.0))
    try:
        upstream = await client.send(
            client.build_request("GET", f"{link.upstream_url}/{quote(path)}", params=params), stream=True
        )
    except httpx.HTTPError as exc:
        await client.aclose()
        raise ApiError(502, "preview_unreachable", f"nothing answered on port {port} in the sandbox") from exc

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await upstream.aclose()
            await client.aclose()

    headers = {
        k: v
        for k, v in upstream.headers.items()
        if k.lower() in ("content-type", "content-encoding", "cache-control", "etag", "last-modified")
    }
    return StreamingResponse(body(), status_code=upstream.status_code, headers=headers)


@router.get("/sandboxes/{sandbox_id}/files", response_model=schemas.FileList)
async def list_files(sandbox_id: str, caller: CallerDep, up: UpstreamsDep, path: PathParam = ""):
    reply = await _stub(up).ListFiles(
        pb.ListFilesRequest(account_id=caller.account_id, sandbox_id=sandbox_id, path=path)
    )
    return schemas.FileList(files=[_file_out(f) for f in reply.files])


@router.get(
    "/sandboxes/{sandbox_id}/files/content",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The file, streamed."}},
)
async def download(
    sandbox_id: str,
    caller: CallerDep,
    up: UpstreamsDep,
    path: Annotated[str, Query(min_length=1, max_length=4096, description="The file, relative to the workspace.")],
):
    call = _stub(up).DownloadFile(pb.ReadFileRequest(account_id=caller.account_id, sandbox_id=sandbox_id, path=path))
    try:
        # The first chunk decides the status: a missing file or a refused path is a 4xx, not a cut 200.
        first = await call.read()
    except BaseException:
        call.cancel()
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            if first is not grpc.aio.EOF:  # pyright: ignore[reportAttributeAccessIssue] - typeshed's grpc stubs omit EOF
                yield first.data
                async for chunk in call:
                    yield chunk.data
        finally:
            call.cancel()

    name = path.rstrip("/").rsplit("/", 1)[-1] or "file"
    return StreamingResponse(
        body(),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"},
    )


@router.delete("/sandboxes/{sandbox_id}/files", status_code=204, response_class=Response)
async def delete_file(
    sandbox_id: str,
    caller: CallerDep,
    up: UpstreamsDep,
    path: Annotated[str, Query(min_length=1, max_length=4096)],
    recursive: bool = False,
):
    await _stub(up).DeleteFile(
        pb.DeleteFileRequest(account_id=caller.account_id, sandbox_id=sandbox_id, path=path, recursive=recursive)
    )
    return Response(status_code=204)


@router.post(
    "/sandboxes/{sandbox_id}/files",
    status_code=201,
    response_model=schemas.FileWritten,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["path", "file"],
                        "properties": {
                            "path": {"type": "string", "description": "Where to write it (sent before `file`)."},
                            "file": {"type": "string", "format": "binary"},
                        },
                    }
                }
            },
        }
    },
)
async def upload(sandbox_id: str, request: Request, caller: CallerDep, up: UpstreamsDep):
    """Writes a file into the sandbox from a multipart form (`path`, then `file`), streamed: the
    file is never held whole. Over the size limit: 413."""
    limit = request.app.state.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + MULTIPART_SLACK:
        raise _too_large(f"the upload is over the limit of {limit} bytes")
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise ApiError(415, "unsupported_media_type", "send multipart/form-data with the fields path and file")
    upload = _MultipartUpload(boundary, limit)
    result = await upload.run(request.stream(), _stub(up), caller.account_id, sandbox_id)
    return schemas.FileWritten(path=upload.path, size=result)


class _MultipartUpload:
    """Parses the form as it arrives and feeds the file's bytes into one UploadFile call."""

    def __init__(self, boundary: bytes, limit: int) -> None:
        self.limit = limit
        self.path = ""
        self._field = ""
        self._header_field = b""
        self._header_value = b""
        self._disposition = b""
        self._value = bytearray()
        self._pending: list[bytes] = []  # file bytes parsed from the current body chunk
        self._file_started = False
        self._file_done = False
        self.size = 0
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field_data,
                "on_header_value": self._header_value_data,
                "on_header_end": self._header_end,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )

    def _part_begin(self) -> None:
        self._field, self._disposition, self._value = "", b"", bytearray()

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_field.lower() == b"content-disposition":
            _, options = parse_options_header(self._header_value)
            self._field = options.get(b"name", b"").decode("utf-8", "replace")
        self._header_field, self._header_value = b"", b""

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._field == "file":
            if not self.path:
                raise ApiError(422, "invalid_upload", "path: send the path field before the file")
            if self._file_done:
                raise ApiError(422, "invalid_upload", "file: send one file per upload")
            self._file_started = True
            self.size += end - start
            if self.size > self.limit:
                raise _too_large(f"file: the upload is over the limit of {self.limit} bytes")
            self._pending.append(bytes(data[start:end]))
        elif self._field == "path":
            self._value += data[start:end]
            if len(self._value) > 4096:
                raise ApiError(422, "invalid_upload", "path: longer than 4096 characters")

    def _part_end(self) -> None:
        if self._field == "path":
            self.path = self._value.decode("utf-8", "replace")
            if not self.path:
                raise ApiError(422, "invalid_upload", "path: must not be empty")
        elif self._field == "file":
            self._file_started = True
            self._file_done = True

    async def run(self, body: AsyncIterator[bytes], stub, account_id: str, sandbox_id: str) -> int:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(UPLOAD_QUEUE_CHUNKS)

        async def messages() -> AsyncIterator[pb.UploadFileChunk]:
            yield pb.UploadFileChunk(
                header=pb.UploadFileHeader(account_id=account_id, sandbox_id=sandbox_id, path=self.path)
            )
            while (chunk := await queue.get()) is not None:
                yield pb.UploadFileChunk(data=chunk)

        call = None
        answer: asyncio.Task | None = None
        try:
            async for chunk in body:
                self._parser.write(chunk)
                if self._file_started and call is None:
                    call = stub.UploadFile(messages())
                    answer = asyncio.ensure_future(call)
                for piece in self._pending:
                    await _put(queue, piece, answer)
                self._pending.clear()
            self._parser.finalize()
            if not self._file_done:
                raise ApiError(422, "invalid_upload", "file: the form has no complete file part")
            await _put(queue, None, answer)
            assert answer is not None
            try:
                reply = await answer
            except grpc.aio.AioRpcError as exc:
                if _code(exc) == "file_too_large":
                    raise _too_large(exc.details() or "the file is too large") from exc
                if _code(exc) == "disk_quota_exceeded":
                    raise ApiError(507, "disk_quota_exceeded", exc.details() or "disk quota exceeded") from exc
                raise
            return reply.size
        finally:
            if answer is not None and not answer.done():
                answer.cancel()  # the sandbox drops the partial file
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await answer


async def _put(queue: asyncio.Queue, item, answer: asyncio.Task | None) -> None:
    """Queues a chunk for the upload call; an upload refused early (its answer came) stops here."""
    put = asyncio.ensure_future(queue.put(item))
    if answer is None:
        await put
        return
    done, _ = await asyncio.wait({put, answer}, return_when=asyncio.FIRST_COMPLETED)
    if put not in done:
        put.cancel()
        await answer  # raises the refusal
        raise ApiError(422, "invalid_upload", "the sandbox ended the upload early")
