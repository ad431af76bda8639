"""The local provider: a directory per sandbox on this host, commands as bubblewrapped processes with limits.

Split along its sections: sandboxes on disk (local_boxes), one-shot commands (local_exec), background
processes (local_processes) and files (local_files); this module puts them behind the provider port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from pathlib import Path

from ..domain import ExecOutcome, FileInfo, PreviewLink, ProcessInfo, ProcessOutput, SandboxSpec
from ..errors import (
    FileNotFound,
    InvalidSandboxRequest,
    IsolationUnavailable,
    NoNetwork,
    NotADirectory,
    SandboxNotFound,
)
from .isolation import Isolation, Launch, launch
from .local_boxes import Box, BoxStore, LocalLimits
from .local_exec import kill_group, run_command
from .local_files import WorkspaceFiles, disk_usage
from .local_processes import STOP_GRACE_SECONDS, ProcessTable

__all__ = ["STOP_GRACE_SECONDS", "LocalLimits", "LocalSandboxProvider"]

logger = logging.getLogger(__name__)


class LocalSandboxProvider:
    """Sandboxes under `root_dir/<sandbox_id>/`: `workspace/` is theirs, `processes/` and `meta.json` ours."""

    name = "local"

    def __init__(
        self,
        root_dir: Path,
        *,
        isolation: Isolation = "none",
        bwrap: str = "bwrap",
        allow_unisolated: bool = False,
        max_output_bytes: int = 1_000_000,
        max_file_bytes: int = 16 * 1024 * 1024,
        max_upload_bytes: int = 1 << 30,
        limits: LocalLimits | None = None,
    ) -> None:
        self.isolation: Isolation = isolation
        self._bwrap = bwrap
        self.allow_unisolated = allow_unisolated
        self.max_output_bytes = max_output_bytes
        self.max_file_bytes = max_file_bytes
        self.max_upload_bytes = max_upload_bytes
        self.limits = limits or LocalLimits()
        self._store = BoxStore(root_dir, self.limits, isolation)
        self.root_dir = self._store.root_dir
        self.dedicated_users = self._store.dedicated_users
        self._boxes = self._store.boxes
        self._processes = ProcessTable(max_output_bytes=max_output_bytes)
        self._watcher: asyncio.Task[None] | None = None
        self._prlimit = shutil.which("prlimit") or "prlimit"
        self._setpriv = shutil.which("setpriv") or "setpriv"

    # Lifecycle

    async def create(self, sandbox_id: str, spec: SandboxSpec) -> str:
        return self._store.create(sandbox_id, spec)

    async def start(self, ref: str) -> None:
        self._box(ref)

    async def stop(self, ref: str) -> None:
        box = self._box(ref)
        await self._processes.kill_all(ref)
        for pid in list(box.execs):
            box.killed[pid] = "the sandbox was stopped"
            kill_group(pid)

    async def archive(self, ref: str) -> None:
        # A local sandbox's workspace stays where it is: archived means stopped for long.
        self._box(ref)

    async def destroy(self, ref: str) -> None:
        with contextlib.suppress(SandboxNotFound):
            await self.stop(ref)
        self._boxes.pop(ref, None)
        await asyncio.to_thread(shutil.rmtree, self._store.base(ref), ignore_errors=True)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self._processes.kill_all()
        for box in self._boxes.values():
            for pid in list(box.execs):
                kill_group(pid)

    async def preview_link(self, ref: str, port: int) -> PreviewLink:
        box = self._box(ref)
        if self.isolation == "bwrap" and not box.spec.network:
            raise NoNetwork("the sandbox was created without network; nothing outside it can reach its ports")
        return PreviewLink(url="", upstream_url=f"http://127.0.0.1:{port}")

    # Commands

    async def exec(
        self, ref: str, command: str, *, cwd: str = "", timeout: float, env: Mapping[str, str] | None = None
    ) -> AsyncGenerator[bytes | ExecOutcome, None]:
        box = self._box(ref)
        spec = self._launch(box, command, cwd, env)
        self._watch()
        stream = run_command(
            spec,
            timeout=timeout,
            max_output_bytes=self.max_output_bytes,
            on_start=box.execs.add,
            on_end=box.execs.discard,
            killed_because=lambda pid: box.killed.pop(pid, None),
        )
        async with contextlib.aclosing(stream):
            async for item in stream:
                yield item

    # Background processes

    async def start_process(
        self, ref: str, command: str, *, cwd: str = "", env: Mapping[str, str] | None = None, run_id: str = ""
    ) -> ProcessInfo:
        box = self._box(ref)
        spec = self._launch(box, command, cwd, env)
        info = await self._processes.start(ref, command, spec, box.base / "processes", run_id)
        self._watch()
        return info

    async def list_processes(self, ref: str) -> list[ProcessInfo]:
        self._box(ref)
        return [p.info() for p in self._processes.of(ref)]

    async def read_process(self, ref: str, process_id: str, offset: int = 0) -> ProcessOutput:
        return await self._processes.read(ref, process_id, offset)

    async def send_input(self, ref: str, process_id: str, data: bytes, *, close: bool = False) -> ProcessInfo:
        return await self._processes.send_input(ref, process_id, data, close=close)

    async def stop_process(self, ref: str, process_id: str) -> ProcessInfo:
        return await self._processes.stop(ref, process_id)

    async def kill_run_processes(self, ref: str, run_id: str) -> int:
        return await self._processes.kill_run(ref, run_id)

    # Files

    async def read_file(self, ref: str, path: str) -> bytes:
        return await self._files(ref).read(path)

    async def write_file(self, ref: str, path: str, content: bytes) -> int:
        return await self._files(ref).write(path, content)

    async def download(self, ref: str, path: str) -> AsyncGenerator[bytes, None]:
        stream = self._files(ref).download(path)
        async with contextlib.aclosing(stream):
            async for chunk in stream:
                yield chunk

    async def upload(self, ref: str, path: str, chunks: AsyncIterator[bytes]) -> int:
        return await self._files(ref).upload(path, chunks)

    async def list_files(self, ref: str, path: str = "") -> list[FileInfo]:
        return await self._files(ref).list(path)

    async def delete_file(self, ref: str, path: str, *, recursive: bool = False) -> None:
        await self._files(ref).delete(path, recursive)

    async def make_dir(self, ref: str, path: str) -> FileInfo:
        return await self._files(ref).make_dir(path)

    async def move(self, ref: str, source: str, destination: str) -> FileInfo:
        return await self._files(ref).move(source, destination)

    # Internals

    def _box(self, ref: str) -> Box:
        return self._store.get(ref)

    def _files(self, ref: str) -> WorkspaceFiles:
        box = self._box(ref)
        return WorkspaceFiles(
            box.workspace,
            owner=box.uid,
            max_file_bytes=self.max_file_bytes,
            max_upload_bytes=self.max_upload_bytes,
            quota_bytes=self._store.quota(box),
        )

    def _launch(self, box: Box, command: str, cwd: str, env: Mapping[str, str] | None) -> Launch:
        if self.isolation == "none" and not self.allow_unisolated:
            raise IsolationUnavailable(
                "bubblewrap is not available, and running sandbox commands unisolated on the host is not "
                "allowed (set AGENTRY_SANDBOX_ALLOW_UNISOLATED=true only on a machine you do not mind the "
                "agent using)"
            )
        if not command.strip():
            raise InvalidSandboxRequest("the command is empty")
        workspace = box.workspace
        directory = workspace.resolve(cwd)
        if not directory.exists():
            raise FileNotFound(f"working directory {cwd!r} does not exist")
        if not directory.is_dir():
            raise NotADirectory(f"working directory {cwd!r} is not a directory")
        env = {**box.spec.env, **(env or {})}  # the sandbox's own variables, then the call's
        return launch(
            self.isolation,
            command,
            workspace=workspace.root,
            cwd=directory,
            env=env,
            bwrap=self._bwrap,
            network=box.spec.network,
            limits=self._store.limits_for(box),
            uid=box.uid,
            prlimit=self._prlimit,
            setpriv=self._setpriv,
        )

    def _watch(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.ensure_future(self._enforce_quotas())

    async def _enforce_quotas(self) -> None:
        """While anything runs, checks each busy sandbox's disk use and kills what runs in one
        that went past its quota (a single file is already bounded by RLIMIT_FSIZE)."""
        while True:
            await asyncio.sleep(self.limits.quota_check_seconds)
            busy = self._processes.busy_refs()
            busy |= {ref for ref, box in self._boxes.items() if box.execs}
            if not busy:
                return
            for ref in busy:
                box = self._boxes.get(ref)
                if box is None:
                    continue
                quota = self._store.quota(box)
                used = await asyncio.to_thread(disk_usage, box.workspace.root)
                if used <= quota:
                    continue
                logger.warning("sandbox %s is over its disk quota (%d bytes): killing its processes", ref, used)
                await self._processes.kill_all(ref)
                for pid in list(box.execs):
                    box.killed[pid] = f"the sandbox went past its disk quota of {quota} bytes"
                    kill_group(pid)
