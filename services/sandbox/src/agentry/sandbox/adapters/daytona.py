"""The Daytona provider: sandboxes in Daytona through its `daytona` SDK (AsyncDaytona), vendor errors translated to ours.

Lifecycle calls go to DAYTONA_API_URL; process and file calls go to the toolbox proxy URL each
sandbox record carries (the SDK does that). Paths are confined here, before any call: the
workspace is `workspace_dir` inside the sandbox (also reachable as /workspace).
"""

from __future__ import annotations

import contextlib
import math
import posixpath
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from daytona import (
    AsyncDaytona,
    CreateSandboxFromImageParams,
    CreateSandboxFromSnapshotParams,
    DaytonaAuthenticationError,
    DaytonaAuthorizationError,
    DaytonaConfig,
    DaytonaError,
    DaytonaNotFoundError,
    DaytonaTimeoutError,
    Resources,
)
from daytona.common.process import SessionExecuteRequest

from ..domain import TIMEOUT_EXIT_CODE, ExecOutcome, FileInfo, PreviewLink, ProcessInfo, ProcessOutput, SandboxSpec
from ..errors import (
    FileExists,
    FileNotFound,
    FileTooLarge,
    InvalidSandboxRequest,
    PathOutsideSandbox,
    ProcessNotFound,
    SandboxNotFound,
    SandboxProviderError,
)
from .workspace import SANDBOX_MOUNT

SESSION_PREFIX = "agentry"
KILLED_EXIT_CODE = 137


@contextlib.contextmanager
def _translated(what: str = "sandbox"):
    """Daytona's errors as ours: a missing thing is NotFound, the rest is the provider failing."""
    try:
        yield
    except DaytonaNotFoundError as exc:
        if what == "sandbox":
            raise SandboxNotFound("sandbox not found") from exc
        if what == "process":
            raise ProcessNotFound("process not found") from exc
        raise FileNotFound(f"{what} does not exist") from exc
    except (DaytonaAuthenticationError, DaytonaAuthorizationError) as exc:
        raise SandboxProviderError("Daytona refused the API key (DAYTONA_API_KEY)") from exc
    except DaytonaTimeoutError as exc:
        raise SandboxProviderError(f"Daytona timed out: {exc}") from exc
    except DaytonaError as exc:
        if getattr(exc, "status_code", None) == 404:
            raise (
                SandboxNotFound("sandbox not found") if what == "sandbox" else FileNotFound(f"{what} does not exist")
            ) from exc
        status = getattr(exc, "status_code", None)
        if status is not None and 400 <= status < 500 and status not in (401, 403, 408, 429):
            raise InvalidSandboxRequest(f"Daytona refused the request: {exc}") from exc
        raise SandboxProviderError(f"Daytona failed: {exc}") from exc


class DaytonaSandboxProvider:
    name = "daytona"

    def __init__(
        self,
        *,
        api_key: str,
        api_url: str,
        target: str = "",
        snapshot: str = "",
        workspace_dir: str = "/home/daytona/workspace",
        auto_stop_minutes: float = 15,
        auto_archive_minutes: float = 120,
        max_output_bytes: int = 1_000_000,
        max_file_bytes: int = 16 * 1024 * 1024,
        max_upload_bytes: int = 1 << 30,
    ) -> None:
        # Explicit configuration: the SDK never reads DAYTONA_* from .env files in the working directory.
        self._config = DaytonaConfig(api_key=api_key, api_url=api_url, target=target or None)
        self._client: AsyncDaytona | None = None
        self._snapshot = snapshot
        self.root = PurePosixPath(workspace_dir)
        self._auto_stop = int(auto_stop_minutes)
        self._auto_archive = int(auto_archive_minutes)
        self.max_output_bytes = max_output_bytes
        self.max_file_bytes = max_file_bytes
        self.max_upload_bytes = max_upload_bytes
        self._sandboxes: dict = {}

    # Lifecycle

    async def create(self, sandbox_id: str, spec: SandboxSpec) -> str:
        client = self._daytona()
        with contextlib.suppress(SandboxNotFound):
            with _translated():
                existing = await client.get(sandbox_id)  # made before, by name: idempotent
            self._sandboxes[existing.id] = existing
            return existing.id
        common: dict[str, Any] = dict(
            name=sandbox_id,
            env_vars=dict(spec.env),
            labels={**spec.labels, "agentry.sandbox_id": sandbox_id},
            network_block_all=not spec.network,
            auto_stop_interval=self._auto_stop or 0,
            auto_archive_interval=self._auto_archive or None,
        )
        if spec.image:
            resources = Resources(cpu=spec.cpu or None, memory=_gib(spec.memory_mb), disk=_gib(spec.disk_mb))
            params = CreateSandboxFromImageParams(image=spec.image, resources=resources, **common)
        else:
            params = CreateSandboxFromSnapshotParams(snapshot=spec.snapshot or self._snapshot or None, **common)
        with _translated():
            sandbox = await client.create(params, timeout=120)
            await sandbox.fs.create_folder(str(self.root), "755")
        self._sandboxes[sandbox.id] = sandbox
        return sandbox.id

    async def start(self, ref: str) -> None:
        sandbox = await self._sandbox(ref)
        with _translated():
            await sandbox.start(timeout=120)

    async def stop(self, ref: str) -> None:
        sandbox = await self._sandbox(ref)
        with _translated():
            await sandbox.stop(timeout=120)

    async def archive(self, ref: str) -> None:
        sandbox = await self._sandbox(ref)
        with _translated():
            await sandbox.archive()

    async def destroy(self, ref: str) -> None:
        with contextlib.suppress(SandboxNotFound):
            sandbox = await self._sandbox(ref)
            with _translated():
                await sandbox.delete()
        self._sandboxes.pop(ref, None)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def preview_link(self, ref: str, port: int) -> PreviewLink:
        sandbox = await self._sandbox(ref)
        with _translated():
            link = await sandbox.get_preview_link(port)
        return PreviewLink(url=link.url, token=link.token or "")

    # Commands

    async def exec(
        self, ref: str, command: str, *, cwd: str = "", timeout: float, env: Mapping[str, str] | None = None
    ) -> AsyncGenerator[bytes | ExecOutcome, None]:
        if not command.strip():
            raise InvalidSandboxRequest("the command is empty")
        sandbox = await self._sandbox(ref)
        loop_started = datetime.now()
        try:
            with _translated():
                response = await sandbox.process.exec(
                    command, cwd=self._remote(cwd), env=dict(env or {}), timeout=max(1, math.ceil(timeout))
                )
        except SandboxProviderError as exc:
            if isinstance(exc.__cause__, DaytonaTimeoutError):
                yield ExecOutcome(
                    exit_code=TIMEOUT_EXIT_CODE,
                    timed_out=True,
                    duration_seconds=(datetime.now() - loop_started).total_seconds(),
                )
                return
            raise
        output = (response.result or "").encode()
        truncated = len(output) > self.max_output_bytes
        if truncated:
            output = output[: self.max_output_bytes] + (
                f"\n[output truncated: more than {self.max_output_bytes} bytes]\n".encode()
            )
        if output:
            yield output
        yield ExecOutcome(
            exit_code=response.exit_code if response.exit_code is not None else -1,
            timed_out=False,
            duration_seconds=(datetime.now() - loop_started).total_seconds(),
            truncated=truncated,
        )

    # Background processes (one Daytona session each; its id carries the run)

    async def start_process(
        self, ref: str, command: str, *, cwd: str = "", env: Mapping[str, str] | None = None, run_id: str = ""
    ) -> ProcessInfo:
        if not command.strip():
            raise InvalidSandboxRequest("the command is empty")
        sandbox = await self._sandbox(ref)
        session_id = f"{SESSION_PREFIX}.{secrets.token_hex(6)}.{run_id}"
        prefix = f"cd {_quote(self._remote(cwd))} && " + "".join(
            f"export {name}={_quote(value)}; " for name, value in (env or {}).items()
        )
        with _translated():
            await sandbox.process.create_session(session_id)
            answer = await sandbox.process.execute_session_command(
                session_id, SessionExecuteRequest(command=prefix + command, run_async=True)
            )
        return ProcessInfo(process_id=f"{session_id}~{answer.cmd_id}", running=True, command=command, run_id=run_id)

    async def list_processes(self, ref: str) -> list[ProcessInfo]:
        sandbox = await self._sandbox(ref)
        with _translated():
            sessions = await sandbox.process.list_sessions()
        return [
            _process(session.session_id, command)
            for session in sessions
            if session.session_id.startswith(SESSION_PREFIX + ".")
            for command in session.commands or []
        ]

    async def read_process(self, ref: str, process_id: str, offset: int = 0) -> ProcessOutput:
        if offset < 0:
            raise InvalidSandboxRequest("offset must not be negative")
        sandbox = await self._sandbox(ref)
        session_id, command_id = _split(process_id)
        with _translated("process"):
            command = await sandbox.process.get_session_command(session_id, command_id)
            logs = await sandbox.process.get_session_command_logs(session_id, command_id)
        output = (logs.output or "").encode()[offset : offset + self.max_output_bytes]
        return ProcessOutput(process=_process(session_id, command), output=output, next_offset=offset + len(output))

    async def send_input(self, ref: str, process_id: str, data: bytes, *, close: bool = False) -> ProcessInfo:
        sandbox = await self._sandbox(ref)
        session_id, command_id = _split(process_id)
        with _translated("process"):
            if data:
                await sandbox.process.send_session_command_input(
                    session_id, command_id, data.decode("utf-8", "replace")
                )
            command = await sandbox.process.get_session_command(session_id, command_id)
        return _process(session_id, command)

    async def stop_process(self, ref: str, process_id: str) -> ProcessInfo:
        sandbox = await self._sandbox(ref)
        session_id, command_id = _split(process_id)
        with _translated("process"):
            command = await sandbox.process.get_session_command(session_id, command_id)
            await sandbox.process.delete_session(session_id)
        info = _process(session_id, command)
        return ProcessInfo(
            process_id=info.process_id,
            running=False,
            exit_code=info.exit_code if info.exit_code is not None else KILLED_EXIT_CODE,
            command=info.command,
            run_id=info.run_id,
        )

    async def kill_run_processes(self, ref: str, run_id: str) -> int:
        sandbox = await self._sandbox(ref)
        killed = 0
        with _translated():
            for session in await sandbox.process.list_sessions():
                if session.session_id.startswith(SESSION_PREFIX + ".") and _run_of(session.session_id) == run_id:
                    killed += sum(1 for c in session.commands or [] if c.exit_code is None)
                    await sandbox.process.delete_session(session.session_id)
        return killed

    # Files

    async def read_file(self, ref: str, path: str) -> bytes:
        sandbox, remote = await self._sandbox(ref), self._remote(path)
        with _translated(repr(path)):
            info = await sandbox.fs.get_file_info(remote)
            if info.is_dir:
                raise InvalidSandboxRequest(f"{path!r} is a directory")
            if info.size > self.max_file_bytes:
                raise FileTooLarge(f"{path!r} is {info.size} bytes; the limit is {self.max_file_bytes}")
            return await sandbox.fs.download_file(remote)

    async def write_file(self, ref: str, path: str, content: bytes) -> int:
        if len(content) > self.max_file_bytes:
            raise FileTooLarge(f"{len(content)} bytes is over the limit of {self.max_file_bytes}")
        sandbox, remote = await self._sandbox(ref), self._remote(path, file=True)
        with _translated(repr(path)):
            await sandbox.fs.upload_file(content, remote)
        return len(content)

    async def download(self, ref: str, path: str) -> AsyncGenerator[bytes, None]:
        sandbox, remote = await self._sandbox(ref), self._remote(path, file=True)
        with _translated(repr(path)):
            stream = await sandbox.fs.download_file_stream(remote)
            async for chunk in stream:
                yield chunk

    async def upload(self, ref: str, path: str, chunks: AsyncIterator[bytes]) -> int:
        sandbox, remote = await self._sandbox(ref), self._remote(path, file=True)
        size = 0

        async def limited() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                size += len(chunk)
                if size > self.max_upload_bytes:
                    raise FileTooLarge(f"{path!r} is over the upload limit of {self.max_upload_bytes} bytes")
                yield chunk

        with _translated(repr(path)):
            await sandbox.fs.upload_file_stream(limited(), remote)
        return size

    async def list_files(self, ref: str, path: str = "") -> list[FileInfo]:
        sandbox, remote = await self._sandbox(ref), self._remote(path)
        with _translated(repr(path)):
            entries = await sandbox.fs.list_files(remote)
        base = self._relative(remote)
        return sorted(
            (_file(e, posixpath.join(base, e.name) if base else e.name) for e in entries), key=lambda f: f.name
        )

    async def delete_file(self, ref: str, path: str, *, recursive: bool = False) -> None:
        sandbox, remote = await self._sandbox(ref), self._remote(path, file=True)
        with _translated(repr(path)):
            await sandbox.fs.delete_file(remote, recursive=recursive)

    async def make_dir(self, ref: str, path: str) -> FileInfo:
        sandbox, remote = await self._sandbox(ref), self._remote(path, file=True)
        with _translated(repr(path)):
            await sandbox.fs.create_folder(remote, "755")
            info = await sandbox.fs.get_file_info(remote)
        return _file(info, self._relative(remote))

    async def move(self, ref: str, source: str, destination: str) -> FileInfo:
        sandbox = await self._sandbox(ref)
        origin, target = self._remote(source, file=True), self._remote(destination, file=True)
        with contextlib.suppress(FileNotFound), _translated(repr(destination)):
            await sandbox.fs.get_file_info(target)
            raise FileExists(f"{destination!r} already exists")
        with _translated(repr(source)):
            await sandbox.fs.move_files(origin, target)
            info = await sandbox.fs.get_file_info(target)
        return _file(info, self._relative(target))

    # Internals

    def _daytona(self) -> AsyncDaytona:
        if self._client is None:
            self._client = AsyncDaytona(self._config)
        return self._client

    async def _sandbox(self, ref: str):
        sandbox = self._sandboxes.get(ref)
        if sandbox is None:
            if not ref:
                raise SandboxNotFound("sandbox not found")
            with _translated():
                sandbox = await self._daytona().get(ref)
            self._sandboxes[ref] = sandbox
        return sandbox

    def _remote(self, path: str, *, file: bool = False) -> str:
        """The sandbox path for a workspace path; anything that leaves the workspace is refused."""
        if "\x00" in path:
            raise InvalidSandboxRequest("a path may not contain NUL characters")
        pure = PurePosixPath(path or ".")
        if pure.is_absolute():
            for base in (SANDBOX_MOUNT, self.root):
                if pure == base or base in pure.parents:
                    pure = pure.relative_to(base)
                    break
            else:
                raise PathOutsideSandbox(f"path {path!r} is outside the sandbox")
        relative = posixpath.normpath(str(pure))
        if relative == ".." or relative.startswith("../"):
            raise PathOutsideSandbox(f"path {path!r} is outside the sandbox")
        if relative == "." and file:
            raise InvalidSandboxRequest("the workspace root is a directory")
        return str(self.root) if relative == "." else f"{self.root}/{relative}"

    def _relative(self, remote: str) -> str:
        return "" if remote == str(self.root) else remote[len(str(self.root)) + 1 :]


def _gib(mb: int) -> int | None:
    return max(1, math.ceil(mb / 1024)) if mb else None


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def _split(process_id: str) -> tuple[str, str]:
    session_id, _, command_id = process_id.partition("~")
    if not session_id.startswith(SESSION_PREFIX + ".") or not command_id:
        raise ProcessNotFound(f"process {process_id!r} not found")
    return session_id, command_id


def _run_of(session_id: str) -> str:
    return session_id.split(".", 2)[2] if session_id.count(".") >= 2 else ""


def _process(session_id: str, command) -> ProcessInfo:
    return ProcessInfo(
        process_id=f"{session_id}~{command.id}",
        running=command.exit_code is None,
        exit_code=command.exit_code,
        command=command.command,
        run_id=_run_of(session_id),
    )


def _file(entry, path: str) -> FileInfo:
    modified = getattr(entry, "modified_at", None)
    try:
        stamp = datetime.fromisoformat(modified).timestamp() if modified else 0.0
    except ValueError:
        stamp = 0.0
    try:
        mode = int(entry.permissions, 8) & 0o7777
    except (TypeError, ValueError):
        mode = 0
    return FileInfo(
        name=entry.name, path=path, is_dir=bool(entry.is_dir), size=int(entry.size or 0), modified_at=stamp, mode=mode
    )
