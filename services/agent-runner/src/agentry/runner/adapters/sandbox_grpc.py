"""agentpress's sandbox port, served by the sandbox service over gRPC."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import grpc

from agentpress import ExecResult, FileEntry, ProcessState
from agentry.api.sandbox.v1 import sandbox_pb2 as pb
from agentry.api.sandbox.v1 import sandbox_pb2_grpc
from agentry.servicekit.client import is_store_unavailable, is_unavailable
from agentry.servicekit.db import retrying

logger = logging.getLogger(__name__)

MAX_TOOL_OUTPUT_BYTES = 64 * 1024
# A sandbox service whose database is away (restarting) is waited for this long before the tool
# fails. Calls are sent again only when they cannot have had an effect: CreateSandbox is
# get-or-create, and the others are refused before they act (their sandbox is looked up first).
RETRY_SECONDS = 30.0


class SandboxToolError(Exception):
    """A sandbox call failed; the message goes back to the model as the tool's error."""


def _translate(exc: grpc.aio.AioRpcError) -> SandboxToolError:
    return SandboxToolError(exc.details() or exc.code().name)


# Charges of cancelled execs, held until billing answered (the loop keeps only weak references).
_charging: set[asyncio.Future[object]] = set()


def _charged(charge: asyncio.Future[object]) -> None:
    _charging.discard(charge)
    if not charge.cancelled() and (exc := charge.exception()) is not None:
        logger.error("the sandbox time of a stopped command was not charged: %r", exc)


async def drain_charges(timeout: float = 10.0) -> None:
    """Waits up to `timeout` seconds for the charges of cancelled commands still in flight (a
    worker shutting down calls it before closing its billing channel); logs what is left."""
    if not _charging:
        return
    _, left = await asyncio.wait(set(_charging), timeout=timeout)
    if left:
        logger.error("%d sandbox time charges were still in flight at shutdown", len(left))


class GrpcSandbox:
    """The project's sandbox, created on first use, seen with the run's account."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        account_id: str,
        project_id: str,
        on_start: Callable[[], Awaitable[None]] | None = None,
        on_ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`on_start` / `on_ready` are awaited around the first use's CreateSandbox (the run's
        starting_sandbox phase)."""
        self._stub = sandbox_pb2_grpc.SandboxServiceStub(channel)
        self._account_id = account_id
        self._project_id = project_id
        self._sandbox_id: str | None = None
        self._lock = asyncio.Lock()
        self._on_start = on_start
        self._on_ready = on_ready

    async def _id(self) -> str:
        async with self._lock:
            if self._sandbox_id is None:
                if self._on_start is not None:
                    await self._on_start()
                request = pb.CreateSandboxRequest(account_id=self._account_id, project_id=self._project_id)
                try:
                    box = await retrying(
                        lambda: self._stub.CreateSandbox(request), deadline=RETRY_SECONDS, is_transient=is_unavailable
                    )
                except grpc.aio.AioRpcError as exc:
                    raise _translate(exc) from exc
                self._sandbox_id = sandbox_id = box.sandbox_id
                if self._on_ready is not None:
                    await self._on_ready()
                return sandbox_id
            return self._sandbox_id

    # Set by the worker to the run's usage sink: each exec's wall-clock seconds are billed.
    on_exec: Callable[[float], Awaitable[object]] | None = None

    async def exec(self, command: str, *, timeout: float, cwd: str | None = None) -> ExecResult:
        started = time.monotonic()
        try:
            result = await self._exec(command, timeout=timeout, cwd=cwd)
        except asyncio.CancelledError:
            # A stopped (or handed back) run does not wait for billing, which may be slow or away
            # (its retries take seconds): the charge goes on by itself, and the stop is prompt.
            self._charge_in_background(time.monotonic() - started)
            raise
        except BaseException:
            await self._charge(time.monotonic() - started)
            raise
        await self._charge(time.monotonic() - started)
        return result

    async def _charge(self, seconds: float) -> None:
        if self.on_exec is not None:
            await asyncio.shield(self.on_exec(seconds))

    def _charge_in_background(self, seconds: float) -> None:
        if self.on_exec is None:
            return
        charge = asyncio.ensure_future(self.on_exec(seconds))
        _charging.add(charge)
        charge.add_done_callback(_charged)

    async def _exec(self, command: str, *, timeout: float, cwd: str | None = None) -> ExecResult:
        request = pb.ExecRequest(
            account_id=self._account_id,
            sandbox_id=await self._id(),
            command=command,
            cwd=cwd or "",
            timeout_seconds=timeout,
        )
        output = bytearray()
        exit_code, timed_out = -1, False
        loop = asyncio.get_running_loop()
        give_up_at, delay = loop.time() + RETRY_SECONDS, 0.05
        while True:
            # The call is bounded by the command's own timeout plus slack; cancelling this
            # coroutine cancels the RPC, and the sandbox kills the process.
            call = self._stub.Exec(request, timeout=timeout + 30)
            answered = False
            try:
                async for chunk in call:
                    answered = True
                    if chunk.HasField("output"):
                        if len(output) < MAX_TOOL_OUTPUT_BYTES:
                            output += chunk.output[: MAX_TOOL_OUTPUT_BYTES - len(output)]
                    else:
                        exit_code, timed_out = chunk.exit.exit_code, chunk.exit.timed_out
            except grpc.aio.AioRpcError as exc:
                # Refused before the command started (the sandbox's store is away): send it again.
                if answered or not is_store_unavailable(exc) or loop.time() + delay > give_up_at:
                    raise _translate(exc) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            except asyncio.CancelledError:
                call.cancel()
                raise
            break
        return ExecResult(exit_code=exit_code, output=output.decode("utf-8", "replace"), timed_out=timed_out)

    async def read_file(self, path: str) -> bytes:
        return (await self._call("ReadFile", pb.ReadFileRequest(path=path))).content

    async def write_file(self, path: str, content: bytes) -> None:
        await self._call("WriteFile", pb.WriteFileRequest(path=path, content=content))

    async def list_files(self, path: str) -> list[FileEntry]:
        reply = await self._call("ListFiles", pb.ListFilesRequest(path=path))
        return [FileEntry(name=f.name, path=f.path, is_dir=f.is_dir, size=f.size) for f in reply.files]

    async def delete_file(self, path: str) -> None:
        await self._call("DeleteFile", pb.DeleteFileRequest(path=path, recursive=False))

    async def start_process(self, command: str) -> str:
        return (await self._call("StartProcess", pb.StartProcessRequest(command=command))).process_id

    async def read_process(self, process_id: str, offset: int) -> ProcessState:
        reply = await self._call("ReadProcess", pb.ReadProcessRequest(process_id=process_id, offset=offset))
        process = reply.process
        return ProcessState(
            output=reply.output.decode("utf-8", "replace"),
            next_offset=reply.next_offset,
            running=process.running,
            exit_code=process.exit_code if process.HasField("exit_code") else None,
        )

    async def stop_process(self, process_id: str) -> None:
        await self._call("StopProcess", pb.StopProcessRequest(process_id=process_id))

    async def kill_run_processes(self, run_id: str, *, find: bool = False) -> int:
        """Kills the background processes `run_id` started in the project's sandbox. Only when this
        attempt used the sandbox, or with `find` (an earlier attempt may have: a takeover) by
        looking it up; never creates or starts the sandbox for it."""
        sandbox_id = self._sandbox_id
        if sandbox_id is None and not find:
            return 0
        try:
            if sandbox_id is None:
                found = await self._stub.ListSandboxes(
                    pb.ListSandboxesRequest(account_id=self._account_id, project_id=self._project_id)
                )
                if not found.sandboxes:
                    return 0
                sandbox_id = found.sandboxes[0].sandbox_id
            reply = await self._stub.KillRunProcesses(
                pb.KillRunProcessesRequest(account_id=self._account_id, sandbox_id=sandbox_id, run_id=run_id)
            )
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc
        return reply.killed

    async def _call(self, method: str, request):
        request.account_id = self._account_id
        request.sandbox_id = await self._id()
        try:
            return await retrying(
                lambda: getattr(self._stub, method)(request), deadline=RETRY_SECONDS, is_transient=is_store_unavailable
            )
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc
