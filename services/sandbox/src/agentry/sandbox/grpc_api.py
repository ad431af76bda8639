"""SandboxService over gRPC: protobuf in, domain calls, protobuf out. Errors map in the interceptor."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime

import grpc

from agentry.api.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc
from agentry.servicekit.context import run_id_var

from .domain import ExecOutcome, FileInfo, ProcessInfo, SandboxRecord, SandboxSpec
from .errors import InvalidSandboxRequest
from .service import SandboxService

SERVICE_NAME = sandbox_pb2.DESCRIPTOR.services_by_name["SandboxService"].full_name


def _seconds(value: datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0


def _spec_out(spec: SandboxSpec) -> sandbox_pb2.SandboxSpec:
    return sandbox_pb2.SandboxSpec(
        image=spec.image,
        snapshot=spec.snapshot,
        cpu=spec.cpu,
        memory_mb=spec.memory_mb,
        disk_mb=spec.disk_mb,
        env=spec.env,
        labels=spec.labels,
        network=spec.network,
    )


def _spec_in(message: sandbox_pb2.SandboxSpec) -> SandboxSpec:
    return SandboxSpec(
        image=message.image,
        snapshot=message.snapshot,
        cpu=message.cpu,
        memory_mb=message.memory_mb,
        disk_mb=message.disk_mb,
        env=dict(message.env),
        labels=dict(message.labels),
        network=message.network,
    )


def _sandbox(record: SandboxRecord) -> sandbox_pb2.Sandbox:
    return sandbox_pb2.Sandbox(
        sandbox_id=record.sandbox_id,
        account_id=record.account_id,
        project_id=record.project_id,
        provider=record.provider,
        state=record.state.value,
        spec=_spec_out(record.spec),
        created_at=_seconds(record.created_at),
        last_used_at=_seconds(record.last_used_at),
        state_changed_at=_seconds(record.state_changed_at),
        error=record.error,
    )


def _process(info: ProcessInfo) -> sandbox_pb2.Process:
    message = sandbox_pb2.Process(
        process_id=info.process_id, running=info.running, command=info.command, run_id=info.run_id
    )
    if info.exit_code is not None:
        message.exit_code = info.exit_code
    return message


def _file(info: FileInfo) -> sandbox_pb2.FileInfo:
    return sandbox_pb2.FileInfo(
        name=info.name, path=info.path, is_dir=info.is_dir, size=info.size, modified_at=info.modified_at, mode=info.mode
    )


def _exit(outcome: ExecOutcome) -> sandbox_pb2.ExecChunk:
    return sandbox_pb2.ExecChunk(
        exit=sandbox_pb2.ExecExit(
            exit_code=outcome.exit_code,
            timed_out=outcome.timed_out,
            duration_seconds=outcome.duration_seconds,
            truncated=outcome.truncated,
        )
    )


def _caller_run_id() -> str:
    value = run_id_var.get()
    return "" if value == "-" else value


class SandboxServicer(sandbox_pb2_grpc.SandboxServiceServicer):
    def __init__(self, service: SandboxService) -> None:
        self._service = service

    # Lifecycle

    async def CreateSandbox(self, request, context) -> sandbox_pb2.Sandbox:
        spec = _spec_in(request.spec) if request.HasField("spec") else None
        return _sandbox(
            await self._service.create_sandbox(request.account_id, request.project_id, spec, lazy=request.lazy)
        )

    async def GetSandbox(self, request, context) -> sandbox_pb2.Sandbox:
        return _sandbox(await self._service.get_sandbox(request.account_id, request.sandbox_id))

    async def ListSandboxes(self, request, context) -> sandbox_pb2.ListSandboxesResponse:
        records = await self._service.list_sandboxes(request.account_id, request.project_id)
        return sandbox_pb2.ListSandboxesResponse(sandboxes=[_sandbox(r) for r in records])

    async def StartSandbox(self, request, context) -> sandbox_pb2.Sandbox:
        return _sandbox(await self._service.start_sandbox(request.account_id, request.sandbox_id))

    async def StopSandbox(self, request, context) -> sandbox_pb2.Sandbox:
        return _sandbox(await self._service.stop_sandbox(request.account_id, request.sandbox_id))

    async def ArchiveSandbox(self, request, context) -> sandbox_pb2.Sandbox:
        return _sandbox(await self._service.archive_sandbox(request.account_id, request.sandbox_id))

    async def DeleteSandbox(self, request, context) -> sandbox_pb2.DeleteSandboxResponse:
        await self._service.delete_sandbox(request.account_id, request.sandbox_id)
        return sandbox_pb2.DeleteSandboxResponse()

    async def GetPreviewLink(self, request, context) -> sandbox_pb2.PreviewLink:
        link = await self._service.preview_link(request.account_id, request.sandbox_id, request.port)
        return sandbox_pb2.PreviewLink(url=link.url, token=link.token, upstream_url=link.upstream_url)

    # Commands

    async def Exec(self, request, context) -> AsyncIterator[sandbox_pb2.ExecChunk]:
        # A cancelled RPC (client gone, deadline) raises CancelledError here; closing the
        # stream then kills the command.
        stream = self._service.exec(
            request.account_id,
            request.sandbox_id,
            request.command,
            cwd=request.cwd,
            timeout=request.timeout_seconds,
            env=dict(request.env),
        )
        async with contextlib.aclosing(stream):
            async for item in stream:
                if isinstance(item, ExecOutcome):
                    yield _exit(item)
                else:
                    yield sandbox_pb2.ExecChunk(output=item)

    # Files

    async def ReadFile(self, request, context) -> sandbox_pb2.ReadFileResponse:
        content = await self._service.read_file(request.account_id, request.sandbox_id, request.path)
        return sandbox_pb2.ReadFileResponse(content=content)

    async def WriteFile(self, request, context) -> sandbox_pb2.WriteFileResponse:
        size = await self._service.write_file(request.account_id, request.sandbox_id, request.path, request.content)
        return sandbox_pb2.WriteFileResponse(size=size)

    async def DownloadFile(self, request, context) -> AsyncIterator[sandbox_pb2.FileChunk]:
        chunks = await self._service.download(request.account_id, request.sandbox_id, request.path)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield sandbox_pb2.FileChunk(data=chunk)

    async def UploadFile(self, request_iterator, context) -> sandbox_pb2.WriteFileResponse:
        messages = aiter(request_iterator)
        first = await anext(messages, None)
        if first is None or not first.HasField("header"):
            raise InvalidSandboxRequest("an upload starts with its header (account_id, sandbox_id, path)")
        header = first.header

        async def data() -> AsyncIterator[bytes]:
            async for message in messages:
                if message.HasField("header"):
                    raise InvalidSandboxRequest("an upload has one header, first")
                yield message.data

        size = await self._service.upload(header.account_id, header.sandbox_id, header.path, data())
        return sandbox_pb2.WriteFileResponse(size=size)

    async def ListFiles(self, request, context) -> sandbox_pb2.ListFilesResponse:
        files = await self._service.list_files(request.account_id, request.sandbox_id, request.path)
        return sandbox_pb2.ListFilesResponse(files=[_file(f) for f in files])

    async def DeleteFile(self, request, context) -> sandbox_pb2.DeleteFileResponse:
        await self._service.delete_file(
            request.account_id, request.sandbox_id, request.path, recursive=request.recursive
        )
        return sandbox_pb2.DeleteFileResponse()

    async def MakeDirectory(self, request, context) -> sandbox_pb2.FileInfo:
        return _file(await self._service.make_dir(request.account_id, request.sandbox_id, request.path))

    async def MoveFile(self, request, context) -> sandbox_pb2.FileInfo:
        return _file(
            await self._service.move(request.account_id, request.sandbox_id, request.source, request.destination)
        )

    # Background processes

    async def StartProcess(self, request, context) -> sandbox_pb2.Process:
        info = await self._service.start_process(
            request.account_id,
            request.sandbox_id,
            request.command,
            cwd=request.cwd,
            env=dict(request.env),
            run_id=request.run_id or _caller_run_id(),
        )
        return _process(info)

    async def ListProcesses(self, request, context) -> sandbox_pb2.ListProcessesResponse:
        processes = await self._service.list_processes(request.account_id, request.sandbox_id)
        return sandbox_pb2.ListProcessesResponse(processes=[_process(p) for p in processes])

    async def ReadProcess(self, request, context) -> sandbox_pb2.ReadProcessResponse:
        result = await self._service.read_process(
            request.account_id, request.sandbox_id, request.process_id, request.offset
        )
        return sandbox_pb2.ReadProcessResponse(
            process=_process(result.process), output=result.output, next_offset=result.next_offset
        )

    async def SendProcessInput(self, request, context) -> sandbox_pb2.Process:
        return _process(
            await self._service.send_input(
                request.account_id, request.sandbox_id, request.process_id, request.data, close=request.close
            )
        )

    async def StopProcess(self, request, context) -> sandbox_pb2.Process:
        return _process(await self._service.stop_process(request.account_id, request.sandbox_id, request.process_id))

    async def KillRunProcesses(self, request, context) -> sandbox_pb2.KillRunProcessesResponse:
        killed = await self._service.kill_run_processes(request.account_id, request.sandbox_id, request.run_id)
        return sandbox_pb2.KillRunProcessesResponse(killed=killed)


def register(service: SandboxService):
    """The `register` callback servicekit's start_grpc_server expects."""

    def _register(server: grpc.aio.Server) -> None:
        sandbox_pb2_grpc.add_SandboxServiceServicer_to_server(SandboxServicer(service), server)

    return _register
