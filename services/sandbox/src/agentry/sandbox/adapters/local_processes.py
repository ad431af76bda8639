"""The local provider's background processes: started detached, output to a log file read by offset."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..domain import ProcessInfo, ProcessOutput
from ..errors import InvalidSandboxRequest, ProcessNotFound
from .isolation import Launch
from .local_boxes import sandbox_id_of
from .local_exec import kill_group

STOP_GRACE_SECONDS = 2.0


@dataclass
class BackgroundProcess:
    process_id: str
    ref: str
    command: str
    run_id: str
    process: asyncio.subprocess.Process
    log_path: Path
    waiter: asyncio.Task[int]

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def info(self) -> ProcessInfo:
        code = self.process.returncode
        return ProcessInfo(
            process_id=self.process_id, running=code is None, exit_code=code, command=self.command, run_id=self.run_id
        )


def _read_log(path: Path, offset: int, limit: int) -> bytes:
    with open(path, "rb") as log:
        log.seek(offset)
        return log.read(limit)


class ProcessTable:
    """Every background process of every sandbox, by process id.

    Raises ProcessNotFound for an id that is unknown or belongs to another sandbox, and
    InvalidSandboxRequest for input to a process that no longer reads it or a negative offset.
    """

    def __init__(self, *, max_output_bytes: int) -> None:
        self.max_output_bytes = max_output_bytes
        self.processes: dict[str, BackgroundProcess] = {}

    def of(self, ref: str) -> list[BackgroundProcess]:
        return [p for p in self.processes.values() if p.ref == ref]

    def busy_refs(self) -> set[str]:
        return {p.ref for p in self.processes.values() if p.running}

    async def start(self, ref: str, command: str, launch: Launch, log_dir: Path, run_id: str) -> ProcessInfo:
        process_id = secrets.token_urlsafe(12)
        log_path = log_dir / f"{process_id}.log"
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            process = await asyncio.create_subprocess_exec(
                *launch.argv,
                stdin=subprocess.PIPE,
                stdout=fd,
                stderr=subprocess.STDOUT,
                cwd=launch.cwd,
                env=launch.env,
                start_new_session=True,
            )
        finally:
            os.close(fd)
        background = BackgroundProcess(
            process_id, ref, command, run_id, process, log_path, asyncio.ensure_future(process.wait())
        )
        self.processes[process_id] = background
        return background.info()

    def get(self, ref: str, process_id: str) -> BackgroundProcess:
        background = self.processes.get(process_id)
        if background is None or background.ref != sandbox_id_of(ref):
            raise ProcessNotFound(f"process {process_id!r} not found")
        return background

    async def read(self, ref: str, process_id: str, offset: int = 0) -> ProcessOutput:
        """Output from byte `offset`, at most `max_output_bytes` of it."""
        background = self.get(ref, process_id)
        if offset < 0:
            raise InvalidSandboxRequest("offset must not be negative")
        # Read the state first: output read after seeing "exited" is then complete.
        info = background.info()
        output = await asyncio.to_thread(_read_log, background.log_path, offset, self.max_output_bytes)
        return ProcessOutput(process=info, output=output, next_offset=offset + len(output))

    async def send_input(self, ref: str, process_id: str, data: bytes, *, close: bool = False) -> ProcessInfo:
        background = self.get(ref, process_id)
        stdin = background.process.stdin
        if background.process.returncode is not None or stdin is None or stdin.is_closing():
            raise InvalidSandboxRequest(f"process {process_id!r} no longer reads input")
        try:
            if data:
                stdin.write(data)
                await stdin.drain()
            if close:
                stdin.close()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise InvalidSandboxRequest(f"process {process_id!r} no longer reads input") from exc
        return background.info()

    async def stop(self, ref: str, process_id: str) -> ProcessInfo:
        """SIGTERM, up to STOP_GRACE_SECONDS to exit, then SIGKILL to the whole group."""
        background = self.get(ref, process_id)
        if background.process.returncode is None:
            kill_group(background.process.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(background.waiter), STOP_GRACE_SECONDS)
            # bwrap's in-namespace init ignores SIGTERM and may outlive the launcher: finish the group.
        await self.kill(background)
        return background.info()

    async def kill_run(self, ref: str, run_id: str) -> int:
        """Kills the sandbox's processes that a run started; answers how many were still running."""
        killed = 0
        for background in [p for p in self.of(ref) if p.run_id == run_id]:
            killed += background.running
            await self.kill(background)
        return killed

    async def kill_all(self, ref: str | None = None) -> None:
        """Kills one sandbox's processes, or every process when `ref` is None (then forgets them)."""
        for background in list(self.processes.values()) if ref is None else self.of(ref):
            await self.kill(background)
        if ref is None:
            self.processes.clear()

    async def kill(self, background: BackgroundProcess) -> None:
        if background.process.returncode is None:
            kill_group(background.process.pid)
        await asyncio.shield(background.waiter)
