"""The local provider: a directory per sandbox on this host, commands as (bubblewrapped) processes."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..domain import TIMEOUT_EXIT_CODE, ExecOutcome, FileInfo, ProcessInfo, ProcessOutput
from ..errors import (
    DirectoryNotEmpty,
    FileNotFound,
    FileTooLarge,
    InvalidSandboxRequest,
    IsADirectory,
    NotADirectory,
    ProcessNotFound,
    SandboxNotFound,
)
from .isolation import Isolation, launch
from .workspace import Workspace

READ_CHUNK = 64 * 1024
# After the shell exits, how long stragglers that escaped its process group may hold the pipe.
DRAIN_SECONDS = 0.5
STOP_GRACE_SECONDS = 2.0
_SANDBOX_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
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


@dataclass
class _Background:
    process_id: str
    sandbox_id: str
    process: asyncio.subprocess.Process
    log_path: Path
    waiter: asyncio.Task[int]

    def info(self) -> ProcessInfo:
        code = self.process.returncode
        return ProcessInfo(process_id=self.process_id, running=code is None, exit_code=code)


class LocalSandboxProvider:
    """Sandboxes under `root_dir/<sandbox_id>/`: `workspace/` is theirs, `processes/` is ours."""

    name = "local"

    def __init__(
        self,
        root_dir: Path,
        *,
        isolation: Isolation = "none",
        bwrap: str = "bwrap",
        max_output_bytes: int = 1_000_000,
        max_file_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.root_dir = Path(root_dir).resolve()
        self.isolation: Isolation = isolation
        self._bwrap = bwrap
        self.max_output_bytes = max_output_bytes
        self.max_file_bytes = max_file_bytes
        self._processes: dict[str, _Background] = {}

    # Sandboxes

    async def create(self, sandbox_id: str) -> str:
        base = self._base(sandbox_id)
        (base / "workspace").mkdir(parents=True, exist_ok=True)
        (base / "processes").mkdir(mode=0o700, exist_ok=True)
        return str(base)

    async def destroy(self, sandbox_id: str) -> None:
        for process in [p for p in self._processes.values() if p.sandbox_id == sandbox_id]:
            await self._kill(process)
            del self._processes[process.process_id]
        await asyncio.to_thread(shutil.rmtree, self._base(sandbox_id), ignore_errors=True)

    async def close(self) -> None:
        for process in list(self._processes.values()):
            await self._kill(process)
        self._processes.clear()

    # Commands

    async def exec(
        self,
        sandbox_id: str,
        command: str,
        *,
        cwd: str = "",
        timeout: float,
        env: Mapping[str, str] | None = None,
    ) -> AsyncIterator[bytes | ExecOutcome]:
        spec = self._launch(sandbox_id, command, cwd, env)
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
                    _kill_group(pid)
                if reading not in done:
                    continue
                chunk = reading.result()
                reading = None
                if not chunk:
                    break
                if truncated:
                    continue
                if sent + len(chunk) > self.max_output_bytes:
                    chunk = chunk[: self.max_output_bytes - sent]
                    truncated = True
                    chunk += f"\n[output truncated: more than {self.max_output_bytes} bytes]\n".encode()
                sent += len(chunk)
                yield chunk
            if timed_out:
                _kill_group(pid)
            await exited
            exit_code = transport.get_returncode()
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
            _kill_group(pid)
            if not output.exited.is_set():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(exited)
            exited.cancel()
            transport.close()

    # Background processes

    async def start_process(
        self, sandbox_id: str, command: str, *, cwd: str = "", env: Mapping[str, str] | None = None
    ) -> ProcessInfo:
        spec = self._launch(sandbox_id, command, cwd, env)
        process_id = secrets.token_urlsafe(12)
        log_path = self._base(sandbox_id) / "processes" / f"{process_id}.log"
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            process = await asyncio.create_subprocess_exec(
                *spec.argv,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                cwd=spec.cwd,
                env=spec.env,
                start_new_session=True,
            )
        finally:
            os.close(fd)
        background = _Background(process_id, sandbox_id, process, log_path, asyncio.ensure_future(process.wait()))
        self._processes[process_id] = background
        return background.info()

    async def read_process(self, sandbox_id: str, process_id: str, offset: int = 0) -> ProcessOutput:
        background = self._process(sandbox_id, process_id)
        if offset < 0:
            raise InvalidSandboxRequest("offset must not be negative")
        # Read the state first: output read after seeing "exited" is then complete.
        info = background.info()
        with open(background.log_path, "rb") as log:
            log.seek(offset)
            output = log.read(self.max_output_bytes)
        return ProcessOutput(process=info, output=output, next_offset=offset + len(output))

    async def stop_process(self, sandbox_id: str, process_id: str) -> ProcessInfo:
        background = self._process(sandbox_id, process_id)
        if background.process.returncode is None:
            _kill_group(background.process.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(background.waiter), STOP_GRACE_SECONDS)
            # bwrap's in-namespace init ignores SIGTERM and may outlive the launcher: finish the group.
            _kill_group(background.process.pid)
        await self._kill(background)
        return background.info()

    # Files

    async def read_file(self, sandbox_id: str, path: str) -> bytes:
        target = self._workspace(sandbox_id).resolve(path)
        return await asyncio.to_thread(self._read, target, path)

    async def write_file(self, sandbox_id: str, path: str, content: bytes) -> int:
        workspace = self._workspace(sandbox_id)
        target = workspace.resolve(path)
        if target == workspace.root:
            raise IsADirectory(f"{path!r} is a directory")
        return await asyncio.to_thread(self._write, target, path, content)

    async def list_files(self, sandbox_id: str, path: str = "") -> list[FileInfo]:
        workspace = self._workspace(sandbox_id)
        target = workspace.resolve(path)
        return await asyncio.to_thread(self._list, workspace, target, path)

    async def delete_file(self, sandbox_id: str, path: str, *, recursive: bool = False) -> None:
        workspace = self._workspace(sandbox_id)
        target = workspace.resolve(path, follow_final=False)
        if target == workspace.root:
            raise InvalidSandboxRequest("the workspace root cannot be deleted")
        await asyncio.to_thread(self._delete, target, path, recursive)

    # Internals

    def _base(self, sandbox_id: str) -> Path:
        if not _SANDBOX_ID.match(sandbox_id):
            raise SandboxNotFound(f"sandbox {sandbox_id!r} not found")
        return self.root_dir / sandbox_id

    def _workspace(self, sandbox_id: str) -> Workspace:
        directory = self._base(sandbox_id) / "workspace"
        if not directory.is_dir():
            raise SandboxNotFound(f"sandbox {sandbox_id!r} not found")
        return Workspace(directory)

    def _launch(self, sandbox_id: str, command: str, cwd: str, env: Mapping[str, str] | None):
        if not command.strip():
            raise InvalidSandboxRequest("the command is empty")
        workspace = self._workspace(sandbox_id)
        directory = workspace.resolve(cwd)
        if not directory.exists():
            raise FileNotFound(f"working directory {cwd!r} does not exist")
        if not directory.is_dir():
            raise NotADirectory(f"working directory {cwd!r} is not a directory")
        return launch(self.isolation, command, workspace=workspace.root, cwd=directory, env=env, bwrap=self._bwrap)

    def _process(self, sandbox_id: str, process_id: str) -> _Background:
        background = self._processes.get(process_id)
        if background is None or background.sandbox_id != sandbox_id:
            raise ProcessNotFound(f"process {process_id!r} not found")
        return background

    async def _kill(self, background: _Background) -> None:
        if background.process.returncode is None:
            _kill_group(background.process.pid)
        await asyncio.shield(background.waiter)

    def _read(self, target: Path, path: str) -> bytes:
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError as exc:
            raise FileNotFound(f"{path!r} does not exist") from exc
        try:
            status = os.fstat(fd)
            if stat.S_ISDIR(status.st_mode):
                raise IsADirectory(f"{path!r} is a directory")
            if status.st_size > self.max_file_bytes:
                raise FileTooLarge(f"{path!r} is {status.st_size} bytes; the limit is {self.max_file_bytes}")
            with os.fdopen(os.dup(fd), "rb") as file:
                return file.read(self.max_file_bytes + 1)[: self.max_file_bytes]
        finally:
            os.close(fd)

    def _write(self, target: Path, path: str, content: bytes) -> int:
        if len(content) > self.max_file_bytes:
            raise FileTooLarge(f"{len(content)} bytes is over the limit of {self.max_file_bytes}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        except IsADirectoryError as exc:
            raise IsADirectory(f"{path!r} is a directory") from exc
        except (NotADirectoryError, FileExistsError) as exc:
            raise NotADirectory(f"a parent of {path!r} is not a directory") from exc
        with os.fdopen(fd, "wb") as file:
            file.write(content)
        return len(content)

    def _list(self, workspace: Workspace, target: Path, path: str) -> list[FileInfo]:
        try:
            entries = sorted(os.scandir(target), key=lambda e: e.name)
        except FileNotFoundError as exc:
            raise FileNotFound(f"{path!r} does not exist") from exc
        except NotADirectoryError as exc:
            raise NotADirectory(f"{path!r} is not a directory") from exc
        files = []
        for entry in entries:
            status = entry.stat(follow_symlinks=False)
            files.append(
                FileInfo(
                    name=entry.name,
                    path=workspace.relative(target / entry.name),
                    is_dir=entry.is_dir(follow_symlinks=False),
                    size=status.st_size,
                    modified_at=status.st_mtime,
                )
            )
        return files

    def _delete(self, target: Path, path: str, recursive: bool) -> None:
        try:
            if target.is_dir() and not target.is_symlink():
                if recursive:
                    shutil.rmtree(target)
                else:
                    target.rmdir()
            else:
                target.unlink()
        except FileNotFoundError as exc:
            raise FileNotFound(f"{path!r} does not exist") from exc
        except OSError as exc:
            if exc.errno == errno.ENOTEMPTY:
                raise DirectoryNotEmpty(f"{path!r} is not empty; delete it recursively") from exc
            raise
