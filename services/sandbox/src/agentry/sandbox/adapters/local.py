"""The local provider: a directory per sandbox on this host, commands as bubblewrapped processes with limits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from ..domain import ExecOutcome, FileInfo, PreviewLink, ProcessInfo, ProcessOutput, SandboxSpec
from ..errors import (
    FileNotFound,
    InvalidSandboxRequest,
    IsolationUnavailable,
    NoNetwork,
    NotADirectory,
    ProcessNotFound,
    SandboxNotFound,
)
from .isolation import Isolation, Launch, Limits, launch
from .local_exec import kill_group, run_command
from .local_files import WorkspaceFiles, disk_usage
from .workspace import Workspace

logger = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 2.0
_SANDBOX_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _sandbox_id(ref: str) -> str:
    # Early records kept the sandbox's whole directory as their reference.
    return ref.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class LocalLimits:
    """Defaults for every sandbox; a sandbox's spec may ask for less memory or disk, or more up to the max."""

    cpu_seconds: int = 600
    memory_mb: int = 2048
    max_memory_mb: int = 8192
    processes: int = 256
    disk_mb: int = 5120
    max_disk_mb: int = 51200
    open_files: int = 4096
    # Run each sandbox as a host user of its own (uid_base + a hash of its id), so the process
    # limit is the sandbox's own and its files are not the service's. Needs root; ignored otherwise.
    dedicated_users: bool = True
    uid_base: int = 1_000_000
    uid_range: int = 1_000_000
    quota_check_seconds: float = 1.0


@dataclass
class _Background:
    process_id: str
    ref: str
    command: str
    run_id: str
    process: asyncio.subprocess.Process
    log_path: Path
    waiter: asyncio.Task[int]

    def info(self) -> ProcessInfo:
        code = self.process.returncode
        return ProcessInfo(process_id=self.process_id, running=code is None, exit_code=code,
                           command=self.command, run_id=self.run_id)


@dataclass
class _Box:
    """What the provider knows about one sandbox: its files on disk and what runs in it now."""

    ref: str
    base: Path
    spec: SandboxSpec
    uid: int | None
    execs: set[int] = field(default_factory=set)
    # pid -> why the provider killed it (shown at the end of the command's output)
    killed: dict[int, str] = field(default_factory=dict)

    @property
    def workspace(self) -> Workspace:
        return Workspace(self.base / "workspace")


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
        self.root_dir = Path(root_dir).resolve()
        self.isolation: Isolation = isolation
        self._bwrap = bwrap
        self.allow_unisolated = allow_unisolated
        self.max_output_bytes = max_output_bytes
        self.max_file_bytes = max_file_bytes
        self.max_upload_bytes = max_upload_bytes
        self.limits = limits or LocalLimits()
        self._processes: dict[str, _Background] = {}
        self._boxes: dict[str, _Box] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._prlimit = shutil.which("prlimit") or "prlimit"
        self._setpriv = shutil.which("setpriv") or "setpriv"
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self.dedicated_users = self._can_use_dedicated_users()

    # Lifecycle

    async def create(self, sandbox_id: str, spec: SandboxSpec) -> str:
        base = self._base(sandbox_id)
        workspace = base / "workspace"
        workspace.mkdir(parents=True, exist_ok=True)
        (base / "processes").mkdir(mode=0o700, exist_ok=True)
        uid = self._uid_for(sandbox_id)
        if uid is not None:
            os.chmod(base, 0o711)
            os.chown(workspace, uid, uid)
        meta = base / "meta.json"
        if not meta.exists():
            meta.write_bytes(orjson.dumps({"spec": spec.to_json(), "uid": uid}))
        self._boxes.pop(sandbox_id, None)
        return sandbox_id

    async def start(self, ref: str) -> None:
        self._box(ref)

    async def stop(self, ref: str) -> None:
        box = self._box(ref)
        for process in [p for p in self._processes.values() if p.ref == ref]:
            await self._kill(process)
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
        await asyncio.to_thread(shutil.rmtree, self._base(ref), ignore_errors=True)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for process in list(self._processes.values()):
            await self._kill(process)
        self._processes.clear()
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
    ) -> AsyncIterator[bytes | ExecOutcome]:
        box = self._box(ref)
        spec = self._launch(box, command, cwd, env)
        self._watch()
        stream = run_command(
            spec, timeout=timeout, max_output_bytes=self.max_output_bytes,
            on_start=box.execs.add, on_end=box.execs.discard, killed_because=lambda pid: box.killed.pop(pid, None),
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
        process_id = secrets.token_urlsafe(12)
        log_path = box.base / "processes" / f"{process_id}.log"
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            process = await asyncio.create_subprocess_exec(
                *spec.argv, stdin=subprocess.PIPE, stdout=fd, stderr=subprocess.STDOUT, cwd=spec.cwd,
                env=spec.env, start_new_session=True,
            )
        finally:
            os.close(fd)
        background = _Background(process_id, ref, command, run_id, process, log_path,
                                 asyncio.ensure_future(process.wait()))
        self._processes[process_id] = background
        self._watch()
        return background.info()

    async def list_processes(self, ref: str) -> list[ProcessInfo]:
        self._box(ref)
        return [p.info() for p in self._processes.values() if p.ref == ref]

    async def read_process(self, ref: str, process_id: str, offset: int = 0) -> ProcessOutput:
        background = self._process(ref, process_id)
        if offset < 0:
            raise InvalidSandboxRequest("offset must not be negative")
        # Read the state first: output read after seeing "exited" is then complete.
        info = background.info()
        with open(background.log_path, "rb") as log:
            log.seek(offset)
            output = log.read(self.max_output_bytes)
        return ProcessOutput(process=info, output=output, next_offset=offset + len(output))

    async def send_input(self, ref: str, process_id: str, data: bytes, *, close: bool = False) -> ProcessInfo:
        background = self._process(ref, process_id)
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

    async def stop_process(self, ref: str, process_id: str) -> ProcessInfo:
        background = self._process(ref, process_id)
        if background.process.returncode is None:
            kill_group(background.process.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(background.waiter), STOP_GRACE_SECONDS)
            # bwrap's in-namespace init ignores SIGTERM and may outlive the launcher: finish the group.
        await self._kill(background)
        return background.info()

    async def kill_run_processes(self, ref: str, run_id: str) -> int:
        killed = 0
        for background in [p for p in self._processes.values() if p.ref == ref and p.run_id == run_id]:
            killed += background.process.returncode is None
            await self._kill(background)
        return killed

    # Files

    async def read_file(self, ref: str, path: str) -> bytes:
        return await self._files(ref).read(path)

    async def write_file(self, ref: str, path: str, content: bytes) -> int:
        return await self._files(ref).write(path, content)

    async def download(self, ref: str, path: str) -> AsyncIterator[bytes]:
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

    def _base(self, ref: str) -> Path:
        sandbox_id = _sandbox_id(ref)
        if not _SANDBOX_ID.match(sandbox_id) or ("/" in ref and Path(ref) != self.root_dir / sandbox_id):
            raise SandboxNotFound(f"sandbox {ref!r} not found")
        return self.root_dir / sandbox_id

    def _box(self, ref: str) -> _Box:
        sandbox_id = _sandbox_id(ref)
        box = self._boxes.get(sandbox_id)
        if box is not None:
            return box
        base = self._base(ref)
        if not (base / "workspace").is_dir():
            raise SandboxNotFound(f"sandbox {ref!r} not found")
        try:
            meta = orjson.loads((base / "meta.json").read_bytes())
        except FileNotFoundError:
            meta = {}
        box = _Box(ref=sandbox_id, base=base, spec=SandboxSpec.from_json(meta.get("spec")), uid=meta.get("uid"))
        self._boxes[sandbox_id] = box
        return box

    def _files(self, ref: str) -> WorkspaceFiles:
        box = self._box(ref)
        return WorkspaceFiles(box.workspace, owner=box.uid, max_file_bytes=self.max_file_bytes,
                              max_upload_bytes=self.max_upload_bytes, quota_bytes=self._quota(box))

    def _uid_for(self, sandbox_id: str) -> int | None:
        if not self.dedicated_users:
            return None
        return self.limits.uid_base + zlib.crc32(sandbox_id.encode()) % self.limits.uid_range

    def _can_use_dedicated_users(self) -> bool:
        if not self.limits.dedicated_users or self.isolation != "bwrap" or os.geteuid() != 0:
            return False
        # The sandbox's user must be able to reach its workspace: every directory above it needs o+x.
        blocked = [str(p) for p in [self.root_dir, *self.root_dir.parents]
                   if p.exists() and not os.stat(p).st_mode & 0o001]
        if blocked:
            logger.warning("sandboxes share this service's user (so the process limit is not per sandbox): "
                           "%s cannot be traversed by other users", ", ".join(blocked))
            return False
        return True

    def _quota(self, box: _Box) -> int:
        disk_mb = min(box.spec.disk_mb or self.limits.disk_mb, self.limits.max_disk_mb)
        return disk_mb * 1024 * 1024

    def _sandbox_limits(self, box: _Box) -> Limits:
        memory_mb = min(box.spec.memory_mb or self.limits.memory_mb, self.limits.max_memory_mb)
        return Limits(
            cpu_seconds=self.limits.cpu_seconds,
            memory_bytes=memory_mb * 1024 * 1024,
            processes=self.limits.processes if box.uid is not None else 0,
            file_bytes=self._quota(box),
            open_files=self.limits.open_files,
        )

    def _launch(self, box: _Box, command: str, cwd: str, env: Mapping[str, str] | None) -> Launch:
        if self.isolation == "none" and not self.allow_unisolated:
            raise IsolationUnavailable(
                "bubblewrap is not available, and running sandbox commands unisolated on the host is not "
                "allowed (set AGENTRY_SANDBOX_ALLOW_UNISOLATED=true only on a machine you do not mind the "
                "agent using)")
        if not command.strip():
            raise InvalidSandboxRequest("the command is empty")
        workspace = box.workspace
        directory = workspace.resolve(cwd)
        if not directory.exists():
            raise FileNotFound(f"working directory {cwd!r} does not exist")
        if not directory.is_dir():
            raise NotADirectory(f"working directory {cwd!r} is not a directory")
        env = {**box.spec.env, **(env or {})}  # the sandbox's own variables, then the call's
        return launch(self.isolation, command, workspace=workspace.root, cwd=directory, env=env, bwrap=self._bwrap,
                      network=box.spec.network, limits=self._sandbox_limits(box), uid=box.uid,
                      prlimit=self._prlimit, setpriv=self._setpriv)

    def _process(self, ref: str, process_id: str) -> _Background:
        background = self._processes.get(process_id)
        if background is None or background.ref != _sandbox_id(ref):
            raise ProcessNotFound(f"process {process_id!r} not found")
        return background

    async def _kill(self, background: _Background) -> None:
        if background.process.returncode is None:
            kill_group(background.process.pid)
        await asyncio.shield(background.waiter)

    def _watch(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.ensure_future(self._enforce_quotas())

    async def _enforce_quotas(self) -> None:
        """While anything runs, checks each busy sandbox's disk use and kills what runs in one
        that went past its quota (a single file is already bounded by RLIMIT_FSIZE)."""
        while True:
            await asyncio.sleep(self.limits.quota_check_seconds)
            busy = {p.ref for p in self._processes.values() if p.process.returncode is None}
            busy |= {ref for ref, box in self._boxes.items() if box.execs}
            if not busy:
                return
            for ref in busy:
                box = self._boxes.get(ref)
                if box is None:
                    continue
                used = await asyncio.to_thread(disk_usage, box.workspace.root)
                if used <= self._quota(box):
                    continue
                logger.warning("sandbox %s is over its disk quota (%d bytes): killing its processes", ref, used)
                for background in [p for p in self._processes.values() if p.ref == ref]:
                    await self._kill(background)
                for pid in list(box.execs):
                    box.killed[pid] = f"the sandbox went past its disk quota of {self._quota(box)} bytes"
                    kill_group(pid)
