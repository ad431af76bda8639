"""Running one command of the local provider: output streamed as produced, the whole group killed at the end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import AsyncGenerator, Callable

from ..domain import TIMEOUT_EXIT_CODE, ExecOutcome
from .isolation import Launch

# After the shell exits, how long stragglers that escaped its process group may hold the pipe.
DRAIN_SECONDS = 0.5


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class _OutputProtocol(asyncio.SubprocessProtocol):
    """Collects a command's merged output and notices its exit as soon as it happens.

    asyncio's Process.wait() waits for the pipes to close as well, which a leftover background
    child can hold open; the exit itself is what decides when to stop.
    """

    HIGH_WATER = 256 * 1024

    def __init__(self) -> None:
        self.exited = asyncio.Event()
        self._buffer = bytearray()
        self._eof = False
        self._ready = asyncio.Event()
        self._transport: asyncio.SubprocessTransport | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._buffer += data
        self._ready.set()
        if len(self._buffer) > self.HIGH_WATER and not self._paused:
            self._pipe().pause_reading()
            self._paused = True

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._eof = True
        self._ready.set()

    def process_exited(self) -> None:
        self.exited.set()

    async def read(self) -> bytes:
        """The output so far (at least one byte), or b"" once the pipe is closed."""
        while not self._buffer and not self._eof:
            self._ready.clear()
            await self._ready.wait()
        chunk = bytes(self._buffer)
        self._buffer.clear()
        if self._paused:
            self._paused = False
            self._pipe().resume_reading()
        return chunk

    def _pipe(self) -> asyncio.ReadTransport:
        assert self._transport is not None
        pipe = self._transport.get_pipe_transport(1)
        assert isinstance(pipe, asyncio.ReadTransport)
        return pipe


async def run_command(
    spec: Launch,
    *,
    timeout: float,
    max_output_bytes: int,
    on_start: Callable[[int], None] = lambda pid: None,
    on_end: Callable[[int], None] = lambda pid: None,
    killed_because: Callable[[int], str | None] = lambda pid: None,
) -> AsyncGenerator[bytes | ExecOutcome, None]:
    """Output chunks as the command produces them (never more than the pipe's high-water mark
    is held), then one ExecOutcome. `killed_because(pid)` names why the provider killed it (a
    stopped sandbox, a quota), which ends the output."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    transport, output = await loop.subprocess_exec(
        _OutputProtocol,
        *spec.argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=spec.cwd,
        env=spec.env,
        start_new_session=True,
    )
    pid = transport.get_pid()
    on_start(pid)
    exited = asyncio.ensure_future(output.exited.wait())
    reading: asyncio.Future[bytes] | None = None
    deadline = started + timeout
    exited_at: float | None = None
    timed_out = False
    sent = 0
    truncated = False
    try:
        while True:
            limit = deadline if exited_at is None else min(deadline, exited_at + DRAIN_SECONDS)
            remaining = limit - loop.time()
            if remaining <= 0:
                timed_out = exited_at is None
                break
            if reading is None:
                reading = asyncio.ensure_future(output.read())
            waiting = {reading} if exited_at is not None else {reading, exited}
            done, _ = await asyncio.wait(waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            if exited in done and exited_at is None:
                # The shell is done: what it left running in its group goes too, so the pipe closes.
                exited_at = loop.time()
                kill_group(pid)
            if reading not in done:
                continue
            chunk = reading.result()
            reading = None
            if not chunk:
                break
            if truncated:
                continue
            if sent + len(chunk) > max_output_bytes:
                chunk = chunk[: max_output_bytes - sent]
                truncated = True
                chunk += f"\n[output truncated: more than {max_output_bytes} bytes]\n".encode()
            sent += len(chunk)
            yield chunk
        if timed_out:
            kill_group(pid)
        await exited
        exit_code = transport.get_returncode()
        reason = killed_because(pid)
        if reason:
            yield f"\n[killed: {reason}]\n".encode()
        yield ExecOutcome(
            exit_code=TIMEOUT_EXIT_CODE if timed_out or exit_code is None else exit_code,
            timed_out=timed_out,
            duration_seconds=loop.time() - started,
            truncated=truncated,
        )
    finally:
        if reading is not None:
            reading.cancel()
        # Nothing the command started outlives it, however it ended.
        kill_group(pid)
        if not output.exited.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(exited)
        exited.cancel()
        transport.close()
        on_end(pid)
