"""The gRPC sandbox adapter charges a command that a stop cut short without holding up the stop."""

from __future__ import annotations

import asyncio
import time

import grpc

from agentry.runner.adapters import sandbox_grpc
from agentry.runner.adapters.sandbox_grpc import GrpcSandbox, drain_charges


class _CommandThatRunsOn:
    """An Exec stream whose command never ends (a `sleep 30` the stop cuts short)."""

    def __init__(self) -> None:
        self.cancelled = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        await asyncio.Event().wait()

    def cancel(self) -> bool:
        self.cancelled = True
        return True


class _Sandboxes:
    def __init__(self) -> None:
        self.calls: list[_CommandThatRunsOn] = []

    def Exec(self, request, timeout=None):  # noqa: N802 - the stub's method name
        call = _CommandThatRunsOn()
        self.calls.append(call)
        return call


async def test_a_cancelled_command_is_charged_after_the_stop_and_drained_at_shutdown() -> None:
    channel = grpc.aio.insecure_channel("127.0.0.1:9")  # never dialled: the stub is replaced
    sandbox = GrpcSandbox(channel, account_id="a", project_id="p")
    sandbox._sandbox_id, sandbox._stub = "sb", _Sandboxes()  # noqa: SLF001 - no sandbox service here
    charged: list[float] = []

    async def slow_billing(seconds: float) -> bool:
        await asyncio.sleep(3)  # billing answering slowly (or retrying while away)
        charged.append(seconds)
        return True

    sandbox.on_exec = slow_billing
    try:
        command = asyncio.create_task(sandbox.exec("sleep 30", timeout=60))
        await asyncio.sleep(0.2)
        command.cancel()
        await asyncio.wait({command})
        assert command.cancelled()
        # Ended while billing has not answered yet (it takes 3 s): the stop did not wait for it.
        assert charged == [] and len(sandbox_grpc._charging) == 1  # noqa: SLF001 - charging still
        assert sandbox._stub.calls[0].cancelled  # noqa: SLF001 - the RPC was cancelled too

        started = time.monotonic()
        await drain_charges(timeout=30)
        assert len(charged) == 1 and charged[0] >= 0.2  # the command's seconds, up to the stop
        assert time.monotonic() - started < 10
        assert not sandbox_grpc._charging  # noqa: SLF001
    finally:
        await channel.close()


async def test_a_command_that_ends_is_charged_before_its_result_returns() -> None:
    channel = grpc.aio.insecure_channel("127.0.0.1:9")
    sandbox = GrpcSandbox(channel, account_id="a", project_id="p")
    charged: list[float] = []

    async def exec_that_ends(*args, **kwargs):
        return sandbox_grpc.ExecResult(exit_code=0, output="", timed_out=False)

    async def billing(seconds: float) -> bool:
        await asyncio.sleep(0.1)
        charged.append(seconds)
        return True

    sandbox._exec = exec_that_ends  # noqa: SLF001 - the command itself is not what is tested
    sandbox.on_exec = billing
    try:
        result = await sandbox.exec("true", timeout=5)
        assert result.exit_code == 0 and len(charged) == 1
    finally:
        await channel.close()
