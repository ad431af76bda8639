"""SandboxService over gRPC: protobuf in, domain calls, protobuf out. Errors map in the interceptor."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from agentry.api.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc

from .domain import ExecOutcome, FileInfo, ProcessInfo, SandboxRecord
from .service import SandboxService

SERVICE_NAME = sandbox_pb2.DESCRIPTOR.services_by_name["SandboxService"].full_name


def _sandbox(record: SandboxRecord) -> sandbox_pb2.Sandbox:
    return sandbox_pb2.Sandbox(
        sandbox_id=record.sandbox_id,
        account_id=record.account_id,
        project_id=record.project_id,
        provider=record.provider,
        state=record.state.value,
    )


def _process(info: ProcessInfo) -> sandbox_pb2.Process:
    message = sandbox_pb2.Process(process_id=info.process_id, running=info.running)
    if info.exit_code is not None:
        message.exit_code = info.exit_code
    return message


def _file(info: FileInfo) -> sandbox_pb2.FileInfo:
    return sandbox_pb2.FileInfo(
        name=info.name, path=info.path, is_dir=info.is_dir, size=info.size, modified_at=info.modified_at
    )


def _exit(outcome: ExecOutcome) -> sandbox_pb2.ExecChunk:
    return sandbox_pb2.ExecChunk(
        exit=sandbox_pb2.ExecExit(
            exit_code=outcome.exit_code, timed_out=outcome.timed_out, duration_seconds=outcome.duration_seconds
        )
    )


class SandboxServicer(sandbox_pb2_grpc.SandboxServiceServicer):
    def __init__(self, service: SandboxService) -> None:
        self._service = service

    async def CreateSandbox(self, request, context) -> sandbox_pb2.Sandbox:
        return _sandbox(await self._service.create_sandbox(request.account_id, request.project_id))

    async def GetSandbox(self, request, context) -> sandbox_pb2.Sandbox:
        return _sandbox(await self._service.get_sandbox(request.account_id, request.sandbox_id))

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

    async def ReadFile(self, request, context) -> sandbox_pb2.ReadFileResponse:
        content = await self._service.read_file(request.account_id, request.sandbox_id, request.path)
        return sandbox_pb2.ReadFileResponse(content=content)

    async def WriteFile(self, request, context) -> sandbox_pb2.WriteFileResponse:
        size = await self._service.write_file(request.account_id, request.sandbox_id, request.path, request.content)
        return sandbox_pb2.WriteFileResponse(size=size)

    async def ListFiles(self, request, context) -> sandbox_pb2.ListFilesResponse:
        files = await self._service.list_files(request.account_id, request.sandbox_id, request.path)
        return sandbox_pb2.ListFilesResponse(files=[_file(f) for f in files])

    async def DeleteFile(self, request, context) -> sandbox_pb2.DeleteFileResponse:
        await self._service.delete_file(
            request.account_id, request.sandbox_id, request.path, recursive=request.recursive
        )
        return sandbox_pb2.DeleteFileResponse()

    async def StartProcess(self, request, context) -> sandbox_pb2.Process:
        info = await self._service.start_process(
            request.account_id, request.sandbox_id, request.command, cwd=request.cwd
        )
        return _process(info)

    async def ReadProcess(self, request, context) -> sandbox_pb2.ReadProcessResponse:
        result = await self._service.read_process(
            request.account_id, request.sandbox_id, request.process_id, request.offset
        )
        return sandbox_pb2.ReadProcessResponse(
            process=_process(result.process), output=result.output, next_offset=result.next_offset
        )

    async def StopProcess(self, request, context) -> sandbox_pb2.Process:
        return _process(await self._service.stop_process(request.account_id, request.sandbox_id, request.process_id))


def register(service: SandboxService):
    """The `register` callback servicekit's start_grpc_server expects."""

    def _register(server: grpc.aio.Server) -> None:
        sandbox_pb2_grpc.add_SandboxServiceServicer_to_server(SandboxServicer(service), server)

    return _register
