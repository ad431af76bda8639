"""What the sandbox service depends on, in its own words: where sandboxes run and where they are recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Protocol

from .domain import ExecOutcome, FileInfo, ProcessInfo, ProcessOutput, SandboxRecord


class SandboxProvider(Protocol):
    """A place to run commands and keep files, one per sandbox id.

    Paths are relative to the sandbox's workspace root; anything that resolves outside it
    raises PathOutsideSandbox. Unknown sandbox ids raise SandboxNotFound.
    """

    name: str

    async def create(self, sandbox_id: str) -> str:
        """Makes the sandbox (idempotent) and returns the provider's reference to it."""
        ...

    def exec(
        self,
        sandbox_id: str,
        command: str,
        *,
        cwd: str = "",
        timeout: float,
        env: Mapping[str, str] | None = None,
    ) -> AsyncIterator[bytes | ExecOutcome]:
        """Runs `/bin/sh -c command`: output chunks as produced, then one ExecOutcome.

        Closing the iterator early (the caller went away) kills the command.
        """
        ...

    async def read_file(self, sandbox_id: str, path: str) -> bytes: ...

    async def write_file(self, sandbox_id: str, path: str, content: bytes) -> int:
        """Writes the file, creating parent directories; returns the size written."""
        ...

    async def list_files(self, sandbox_id: str, path: str = "") -> list[FileInfo]: ...

    async def delete_file(self, sandbox_id: str, path: str, *, recursive: bool = False) -> None: ...

    async def destroy(self, sandbox_id: str) -> None:
        """Stops the sandbox's processes and removes it with its files (idempotent)."""
        ...

    async def start_process(
        self, sandbox_id: str, command: str, *, cwd: str = "", env: Mapping[str, str] | None = None
    ) -> ProcessInfo: ...

    async def read_process(self, sandbox_id: str, process_id: str, offset: int = 0) -> ProcessOutput: ...

    async def stop_process(self, sandbox_id: str, process_id: str) -> ProcessInfo: ...

    async def close(self) -> None:
        """Stops every process the provider started (service shutdown)."""
        ...


class SandboxRepository(Protocol):
    """The sandboxes table: one row per (account, project)."""

    async def add(self, record: SandboxRecord) -> None:
        """Inserts the row; raises SandboxAlreadyExists when the project already has one."""
        ...

    async def get(self, sandbox_id: str) -> SandboxRecord | None: ...

    async def find_by_project(self, account_id: str, project_id: str) -> SandboxRecord | None: ...

    async def mark_ready(self, sandbox_id: str, provider_ref: str) -> None:
        """Records that the provider made the sandbox, and where it keeps it."""
        ...

    async def touch(self, sandbox_id: str, at: datetime) -> None:
        """Records a use, so idle sandboxes can be found and reclaimed."""
        ...
