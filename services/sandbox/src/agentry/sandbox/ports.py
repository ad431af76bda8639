"""What the sandbox service depends on, in its own words: where sandboxes run and where they are recorded."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from datetime import datetime
from typing import Protocol

from .domain import (
    ExecOutcome,
    FileInfo,
    PreviewLink,
    ProcessInfo,
    ProcessOutput,
    SandboxRecord,
    SandboxSpec,
    SandboxState,
)


class SandboxProvider(Protocol):
    """A place to run commands and keep files, one per sandbox.

    `ref` is what `create` returned. Paths are relative to the sandbox's workspace root (or
    absolute under /workspace); anything that resolves outside it raises PathOutsideSandbox.
    Unknown refs raise SandboxNotFound; vendor failures raise SandboxProviderError.
    """

    name: str

    async def create(self, sandbox_id: str, spec: SandboxSpec) -> str:
        """Makes the sandbox, started (idempotent per sandbox_id), and returns the provider's reference."""
        ...

    async def start(self, ref: str) -> None: ...

    async def stop(self, ref: str) -> None:
        """Ends every process in the sandbox; its files stay."""
        ...

    async def archive(self, ref: str) -> None: ...

    async def destroy(self, ref: str) -> None:
        """Stops the sandbox's processes and removes it with its files (idempotent)."""
        ...

    def exec(
        self, ref: str, command: str, *, cwd: str = "", timeout: float, env: Mapping[str, str] | None = None
    ) -> AsyncGenerator[bytes | ExecOutcome, None]:
        """Runs `/bin/sh -c command`: output chunks as produced, then one ExecOutcome.

        Closing the iterator early (the caller went away) kills the command.
        """
        ...

    async def read_file(self, ref: str, path: str) -> bytes: ...

    async def write_file(self, ref: str, path: str, content: bytes) -> int:
        """Writes the file, creating parent directories; returns the size written."""
        ...

    def download(self, ref: str, path: str) -> AsyncGenerator[bytes, None]:
        """The file in chunks, never whole in memory."""
        ...

    async def upload(self, ref: str, path: str, chunks: AsyncIterator[bytes]) -> int:
        """Writes the file from chunks (creating parent directories); returns its size.

        A failed upload leaves no partial file behind.
        """
        ...

    async def list_files(self, ref: str, path: str = "") -> list[FileInfo]: ...

    async def delete_file(self, ref: str, path: str, *, recursive: bool = False) -> None: ...

    async def make_dir(self, ref: str, path: str) -> FileInfo: ...

    async def move(self, ref: str, source: str, destination: str) -> FileInfo: ...

    async def start_process(
        self, ref: str, command: str, *, cwd: str = "", env: Mapping[str, str] | None = None, run_id: str = ""
    ) -> ProcessInfo: ...

    async def list_processes(self, ref: str) -> list[ProcessInfo]: ...

    async def read_process(self, ref: str, process_id: str, offset: int = 0) -> ProcessOutput: ...

    async def send_input(self, ref: str, process_id: str, data: bytes, *, close: bool = False) -> ProcessInfo: ...

    async def stop_process(self, ref: str, process_id: str) -> ProcessInfo: ...

    async def kill_run_processes(self, ref: str, run_id: str) -> int:
        """Kills the background processes started for `run_id`; returns how many were running."""
        ...

    async def preview_link(self, ref: str, port: int) -> PreviewLink: ...

    async def close(self) -> None:
        """Lets go of what the provider holds (service shutdown)."""
        ...


class SandboxRepository(Protocol):
    """The sandboxes table: one row per (account, project)."""

    async def add(self, record: SandboxRecord) -> None:
        """Inserts the row; raises SandboxAlreadyExists when the project already has one."""
        ...

    async def get(self, sandbox_id: str) -> SandboxRecord | None: ...

    async def find_by_project(self, account_id: str, project_id: str) -> SandboxRecord | None: ...

    async def list(self, account_id: str, project_id: str = "") -> list[SandboxRecord]: ...

    async def in_states(self, states: list[SandboxState], limit: int = 500) -> list[SandboxRecord]:
        """Rows in any of `states`, least recently used first (for the idle reaper)."""
        ...

    async def mark_ready(self, sandbox_id: str, provider_ref: str, at: datetime) -> None:
        """Records that the provider made (and started) the sandbox, and where it keeps it."""
        ...

    async def set_state(self, sandbox_id: str, state: SandboxState, at: datetime, error: str = "") -> None: ...

    async def touch(self, sandbox_id: str, at: datetime) -> None:
        """Records a use, so idle sandboxes can be found and stopped."""
        ...

    async def delete(self, sandbox_id: str) -> None: ...
