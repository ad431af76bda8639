"""Use cases: each project's sandbox, and what its owner may do in it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime

from .domain import ExecOutcome, FileInfo, ProcessInfo, ProcessOutput, SandboxRecord, SandboxState
from .errors import InvalidSandboxRequest, SandboxAlreadyExists, SandboxNotFound
from .ports import SandboxProvider, SandboxRepository


def _now() -> datetime:
    return datetime.now(UTC)


def _new_sandbox_id() -> str:
    return f"sbx_{uuid.uuid4().hex}"


class SandboxService:
    """Every call names the calling account; another account's sandbox looks like no sandbox."""

    def __init__(
        self,
        repository: SandboxRepository,
        provider: SandboxProvider,
        *,
        default_timeout: float = 60.0,
        max_timeout: float = 600.0,
        clock: Callable[[], datetime] = _now,
        new_id: Callable[[], str] = _new_sandbox_id,
    ) -> None:
        self._repository = repository
        self._provider = provider
        self._default_timeout = default_timeout
        self._max_timeout = max_timeout
        self._clock = clock
        self._new_id = new_id

    async def create_sandbox(self, account_id: str, project_id: str) -> SandboxRecord:
        """The project's sandbox, made on first use; concurrent first calls get the same one."""
        _require("account_id", account_id)
        _require("project_id", project_id)
        record = await self._repository.find_by_project(account_id, project_id)
        if record is None:
            now = self._clock()
            sandbox_id = self._new_id()
            record = SandboxRecord(
                sandbox_id=sandbox_id,
                account_id=account_id,
                project_id=project_id,
                provider=self._provider.name,
                provider_ref="",
                state=SandboxState.CREATING,
                created_at=now,
                last_used_at=now,
            )
            try:
                await self._repository.add(record)
            except SandboxAlreadyExists:
                record = await self._repository.find_by_project(account_id, project_id)
                if record is None:  # pragma: no cover - the winner's row cannot vanish
                    raise
        if record.state is not SandboxState.READY:
            # Also finishes a creation that failed half way: provider.create is idempotent.
            provider_ref = await self._provider.create(record.sandbox_id)
            await self._repository.mark_ready(record.sandbox_id, provider_ref)
            record = record.ready(provider_ref)
        return record

    async def get_sandbox(self, account_id: str, sandbox_id: str) -> SandboxRecord:
        _require("account_id", account_id)
        record = await self._repository.get(sandbox_id) if sandbox_id else None
        if record is None or record.account_id != account_id or record.state is not SandboxState.READY:
            raise SandboxNotFound(f"sandbox {sandbox_id!r} not found")
        return record

    async def exec(
        self,
        account_id: str,
        sandbox_id: str,
        command: str,
        *,
        cwd: str = "",
        timeout: float = 0.0,
        env: Mapping[str, str] | None = None,
    ) -> AsyncIterator[bytes | ExecOutcome]:
        """Output chunks, then the outcome. Closing the iterator early kills the command."""
        await self._use(account_id, sandbox_id)
        if timeout < 0:
            raise InvalidSandboxRequest("timeout_seconds must not be negative")
        effective = min(timeout or self._default_timeout, self._max_timeout)
        stream = self._provider.exec(sandbox_id, command, cwd=cwd, timeout=effective, env=env)
        async with contextlib.aclosing(stream):
            async for item in stream:
                yield item

    async def read_file(self, account_id: str, sandbox_id: str, path: str) -> bytes:
        await self.get_sandbox(account_id, sandbox_id)
        return await self._provider.read_file(sandbox_id, path)

    async def write_file(self, account_id: str, sandbox_id: str, path: str, content: bytes) -> int:
        await self._use(account_id, sandbox_id)
        return await self._provider.write_file(sandbox_id, path, content)

    async def list_files(self, account_id: str, sandbox_id: str, path: str = "") -> list[FileInfo]:
        await self.get_sandbox(account_id, sandbox_id)
        return await self._provider.list_files(sandbox_id, path)

    async def delete_file(self, account_id: str, sandbox_id: str, path: str, *, recursive: bool = False) -> None:
        await self._use(account_id, sandbox_id)
        await self._provider.delete_file(sandbox_id, path, recursive=recursive)

    async def start_process(
        self, account_id: str, sandbox_id: str, command: str, *, cwd: str = "", env: Mapping[str, str] | None = None
    ) -> ProcessInfo:
        await self._use(account_id, sandbox_id)
        return await self._provider.start_process(sandbox_id, command, cwd=cwd, env=env)

    async def read_process(self, account_id: str, sandbox_id: str, process_id: str, offset: int = 0) -> ProcessOutput:
        await self.get_sandbox(account_id, sandbox_id)
        return await self._provider.read_process(sandbox_id, process_id, offset)

    async def stop_process(self, account_id: str, sandbox_id: str, process_id: str) -> ProcessInfo:
        await self.get_sandbox(account_id, sandbox_id)
        return await self._provider.stop_process(sandbox_id, process_id)

    async def _use(self, account_id: str, sandbox_id: str) -> SandboxRecord:
        record = await self.get_sandbox(account_id, sandbox_id)
        await self._repository.touch(sandbox_id, self._clock())
        return record


def _require(name: str, value: str) -> None:
    if not value:
        raise InvalidSandboxRequest(f"{name} is required")
