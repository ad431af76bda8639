"""Use cases: each project's sandbox, its lifecycle, and what its owner may do in it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from datetime import UTC, datetime

from . import metrics
from .domain import (
    ExecOutcome,
    FileInfo,
    Lifecycle,
    PreviewLink,
    ProcessInfo,
    ProcessOutput,
    SandboxRecord,
    SandboxSpec,
    SandboxState,
    valid_env_name,
    valid_label,
)
from .errors import InvalidSandboxRequest, SandboxAlreadyExists, SandboxError, SandboxNotFound, SandboxProviderError
from .ports import SandboxProvider, SandboxRepository

logger = logging.getLogger(__name__)

# A use is written to the table at most this often per sandbox (auto-stop works in minutes).
TOUCH_EVERY_SECONDS = 5.0


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
        lifecycle: Lifecycle | None = None,
        clock: Callable[[], datetime] = _now,
        new_id: Callable[[], str] = _new_sandbox_id,
    ) -> None:
        self._repository = repository
        self._provider = provider
        self._default_timeout = default_timeout
        self._max_timeout = max_timeout
        self._lifecycle = lifecycle or Lifecycle()
        self._clock = clock
        self._new_id = new_id
        self._locks: dict[str, asyncio.Lock] = {}
        # Sandboxes with a command or transfer in flight here: the idle reaper leaves them alone.
        self._busy: Counter[str] = Counter()

    @property
    def provider_name(self) -> str:
        return self._provider.name

    # Lifecycle

    async def create_sandbox(
        self, account_id: str, project_id: str, spec: SandboxSpec | None = None, *, lazy: bool = False
    ) -> SandboxRecord:
        """The project's sandbox, made on first use and started when it is not; concurrent first
        calls get the same one. `lazy` only reserves the record (the first use provisions it)."""
        _require("account_id", account_id)
        _require("project_id", project_id)
        spec = _checked(spec or SandboxSpec())
        record = await self._repository.find_by_project(account_id, project_id)
        if record is None:
            now = self._clock()
            record = SandboxRecord(
                sandbox_id=self._new_id(),
                account_id=account_id,
                project_id=project_id,
                provider=self._provider.name,
                provider_ref="",
                state=SandboxState.CREATING,
                created_at=now,
                last_used_at=now,
                spec=spec,
                state_changed_at=now,
            )
            try:
                await self._repository.add(record)
            except SandboxAlreadyExists:
                record = await self._repository.find_by_project(account_id, project_id)
                if record is None:  # pragma: no cover - the winner's row cannot vanish
                    raise
        if lazy:
            return record
        return await self._activate(record)

    async def get_sandbox(self, account_id: str, sandbox_id: str) -> SandboxRecord:
        _require("account_id", account_id)
        record = await self._repository.get(sandbox_id) if sandbox_id else None
        if record is None or record.account_id != account_id:
            raise SandboxNotFound(f"sandbox {sandbox_id!r} not found")
        return record

    async def list_sandboxes(self, account_id: str, project_id: str = "") -> list[SandboxRecord]:
        _require("account_id", account_id)
        return await self._repository.list(account_id, project_id)

    async def start_sandbox(self, account_id: str, sandbox_id: str) -> SandboxRecord:
        return await self._activate(await self.get_sandbox(account_id, sandbox_id))

    async def stop_sandbox(self, account_id: str, sandbox_id: str) -> SandboxRecord:
        record = await self.get_sandbox(account_id, sandbox_id)
        async with self._lock(sandbox_id):
            return await self._stop(await self._fresh(record))

    async def archive_sandbox(self, account_id: str, sandbox_id: str) -> SandboxRecord:
        record = await self.get_sandbox(account_id, sandbox_id)
        async with self._lock(sandbox_id):
            return await self._archive(await self._fresh(record))

    async def delete_sandbox(self, account_id: str, sandbox_id: str) -> None:
        record = await self.get_sandbox(account_id, sandbox_id)
        async with self._lock(sandbox_id):
            if record.provider_ref:
                await self._provider.destroy(record.provider_ref)
            await self._repository.delete(sandbox_id)
        self._locks.pop(sandbox_id, None)

    async def reap_idle(self) -> list[tuple[str, SandboxState]]:
        """Stops sandboxes idle past auto-stop and archives those stopped past auto-archive."""
        moved: list[tuple[str, SandboxState]] = []
        now = self._clock()
        for record in await self._repository.in_states([SandboxState.STARTED, SandboxState.STOPPED]):
            target = self._lifecycle.next_state(record, now)
            if target is None or self._busy[record.sandbox_id]:
                continue
            try:
                async with self._lock(record.sandbox_id):
                    current = await self._fresh(record)
                    if self._lifecycle.next_state(current, now) is not target:
                        continue
                    if target is SandboxState.STOPPED:
                        await self._stop(current)
                    else:
                        await self._archive(current)
            except SandboxError as exc:
                logger.warning("could not move idle sandbox %s to %s: %s", record.sandbox_id, target, exc)
                continue
            moved.append((record.sandbox_id, target))
        return moved

    async def preview_link(self, account_id: str, sandbox_id: str, port: int) -> PreviewLink:
        if not 1 <= port <= 65535:
            raise InvalidSandboxRequest("port must be between 1 and 65535")
        record = await self._use(account_id, sandbox_id)
        return await self._provider.preview_link(record.provider_ref, port)

    # Commands

    async def exec(
        self,
        account_id: str,
        sandbox_id: str,
        command: str,
        *,
        cwd: str = "",
        timeout: float = 0.0,
        env: Mapping[str, str] | None = None,
    ) -> AsyncGenerator[bytes | ExecOutcome, None]:
        """Output chunks, then the outcome. Closing the iterator early kills the command."""
        if timeout < 0:
            raise InvalidSandboxRequest("timeout_seconds must not be negative")
        started = time.perf_counter()
        outcome = "aborted"
        try:
            record = await self._use(account_id, sandbox_id)
            effective = min(timeout or self._default_timeout, self._max_timeout)
            with self._working(sandbox_id):
                stream = self._provider.exec(
                    record.provider_ref, command, cwd=cwd, timeout=effective, env={**record.spec.env, **(env or {})}
                )
                async with contextlib.aclosing(stream):
                    async for item in stream:
                        if isinstance(item, ExecOutcome):
                            outcome = "timeout" if item.timed_out else "ok" if item.exit_code == 0 else "failed"
                        yield item
        finally:
            metrics.exec_duration().labels(outcome).observe(time.perf_counter() - started)
        # No write after the command: once it has run, a database that went away meanwhile must
        # not fail the call (the caller would see its command fail after it ran). The use was
        # recorded before it started, and the reaper leaves sandboxes with commands in flight alone.

    # Files

    async def read_file(self, account_id: str, sandbox_id: str, path: str) -> bytes:
        record = await self._use(account_id, sandbox_id)
        return await self._provider.read_file(record.provider_ref, path)

    async def write_file(self, account_id: str, sandbox_id: str, path: str, content: bytes) -> int:
        record = await self._use(account_id, sandbox_id)
        return await self._provider.write_file(record.provider_ref, path, content)

    async def download(self, account_id: str, sandbox_id: str, path: str) -> AsyncGenerator[bytes, None]:
        """The file's chunks. The first one is fetched before this returns, so a missing file
        or a refused path fails here rather than mid-stream."""
        record = await self._use(account_id, sandbox_id)
        stream = self._provider.download(record.provider_ref, path)
        try:
            first = await anext(stream, b"")
        except BaseException:
            await stream.aclose()
            raise
        return self._chunks(sandbox_id, first, stream)

    async def upload(self, account_id: str, sandbox_id: str, path: str, chunks: AsyncIterator[bytes]) -> int:
        record = await self._use(account_id, sandbox_id)
        with self._working(sandbox_id):
            return await self._provider.upload(record.provider_ref, path, chunks)

    async def list_files(self, account_id: str, sandbox_id: str, path: str = "") -> list[FileInfo]:
        record = await self._use(account_id, sandbox_id)
        return await self._provider.list_files(record.provider_ref, path)

    async def delete_file(self, account_id: str, sandbox_id: str, path: str, *, recursive: bool = False) -> None:
        record = await self._use(account_id, sandbox_id)
        await self._provider.delete_file(record.provider_ref, path, recursive=recursive)

    async def make_dir(self, account_id: str, sandbox_id: str, path: str) -> FileInfo:
        record = await self._use(account_id, sandbox_id)
        return await self._provider.make_dir(record.provider_ref, path)

    async def move(self, account_id: str, sandbox_id: str, source: str, destination: str) -> FileInfo:
        record = await self._use(account_id, sandbox_id)
        return await self._provider.move(record.provider_ref, source, destination)

    # Background processes

    async def start_process(
        self,
        account_id: str,
        sandbox_id: str,
        command: str,
        *,
        cwd: str = "",
        env: Mapping[str, str] | None = None,
        run_id: str = "",
    ) -> ProcessInfo:
        record = await self._use(account_id, sandbox_id)
        return await self._provider.start_process(
            record.provider_ref, command, cwd=cwd, env={**record.spec.env, **(env or {})}, run_id=run_id
        )

    async def list_processes(self, account_id: str, sandbox_id: str) -> list[ProcessInfo]:
        record = await self.get_sandbox(account_id, sandbox_id)
        if record.state is not SandboxState.STARTED:
            return []
        return await self._provider.list_processes(record.provider_ref)

    async def read_process(self, account_id: str, sandbox_id: str, process_id: str, offset: int = 0) -> ProcessOutput:
        record = await self.get_sandbox(account_id, sandbox_id)
        return await self._provider.read_process(record.provider_ref, process_id, offset)

    async def send_input(
        self, account_id: str, sandbox_id: str, process_id: str, data: bytes, *, close: bool = False
    ) -> ProcessInfo:
        record = await self.get_sandbox(account_id, sandbox_id)
        return await self._provider.send_input(record.provider_ref, process_id, data, close=close)

    async def stop_process(self, account_id: str, sandbox_id: str, process_id: str) -> ProcessInfo:
        record = await self.get_sandbox(account_id, sandbox_id)
        return await self._provider.stop_process(record.provider_ref, process_id)

    async def kill_run_processes(self, account_id: str, sandbox_id: str, run_id: str) -> int:
        _require("run_id", run_id)
        record = await self.get_sandbox(account_id, sandbox_id)
        if not record.provisioned or record.state is not SandboxState.STARTED:
            return 0
        return await self._provider.kill_run_processes(record.provider_ref, run_id)

    # Internals

    async def _use(self, account_id: str, sandbox_id: str) -> SandboxRecord:
        """The caller's sandbox, started (transparently, when it was stopped or archived)."""
        record = await self.get_sandbox(account_id, sandbox_id)
        if record.state is not SandboxState.STARTED:
            record = await self._activate(record)
        now = self._clock()
        if (now - record.last_used_at).total_seconds() >= TOUCH_EVERY_SECONDS:
            await self._repository.touch(sandbox_id, now)
        return record

    async def _activate(self, record: SandboxRecord) -> SandboxRecord:
        async with self._lock(record.sandbox_id):
            record = await self._fresh(record)
            if record.state is SandboxState.STARTED:
                return record
            now = self._clock()
            try:
                if not record.provider_ref:
                    # Also finishes a creation that failed half way: provider.create is idempotent.
                    ref = await self._provider.create(record.sandbox_id, record.spec)
                    await self._repository.mark_ready(record.sandbox_id, ref, now)
                    return record.ready(ref).moved(SandboxState.STARTED, now)
                await self._provider.start(record.provider_ref)
            except SandboxProviderError as exc:
                await self._repository.set_state(record.sandbox_id, SandboxState.ERROR, now, str(exc))
                raise
            await self._repository.set_state(record.sandbox_id, SandboxState.STARTED, now)
            return record.moved(SandboxState.STARTED, now)

    async def _stop(self, record: SandboxRecord) -> SandboxRecord:
        if record.state in (SandboxState.STOPPED, SandboxState.ARCHIVED):
            return record
        now = self._clock()
        if record.provider_ref:
            await self._provider.stop(record.provider_ref)
        await self._repository.set_state(record.sandbox_id, SandboxState.STOPPED, now)
        return record.moved(SandboxState.STOPPED, now)

    async def _archive(self, record: SandboxRecord) -> SandboxRecord:
        if record.state is SandboxState.ARCHIVED:
            return record
        record = await self._stop(record)
        now = self._clock()
        if record.provider_ref:
            await self._provider.archive(record.provider_ref)
        await self._repository.set_state(record.sandbox_id, SandboxState.ARCHIVED, now)
        return record.moved(SandboxState.ARCHIVED, now)

    async def _fresh(self, record: SandboxRecord) -> SandboxRecord:
        current = await self._repository.get(record.sandbox_id)
        if current is None:
            raise SandboxNotFound(f"sandbox {record.sandbox_id!r} not found")
        return current

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    @contextlib.contextmanager
    def _working(self, sandbox_id: str):
        self._busy[sandbox_id] += 1
        try:
            yield
        finally:
            self._busy[sandbox_id] -= 1
            if not self._busy[sandbox_id]:
                del self._busy[sandbox_id]

    async def _chunks(
        self, sandbox_id: str, first: bytes, rest: AsyncGenerator[bytes, None]
    ) -> AsyncGenerator[bytes, None]:
        with self._working(sandbox_id):
            async with contextlib.aclosing(rest):
                if first:
                    yield first
                async for chunk in rest:
                    yield chunk


def _require(name: str, value: str) -> None:
    if not value:
        raise InvalidSandboxRequest(f"{name} is required")


def _checked(spec: SandboxSpec) -> SandboxSpec:
    for name, value in (("cpu", spec.cpu), ("memory_mb", spec.memory_mb), ("disk_mb", spec.disk_mb)):
        if value < 0:
            raise InvalidSandboxRequest(f"spec.{name} must not be negative")
    for name, value in spec.env.items():
        if not valid_env_name(name) or "\x00" in value:
            raise InvalidSandboxRequest(f"spec.env: invalid environment variable {name!r}")
    for name, value in spec.labels.items():
        if not valid_label(name) or len(value) > 256:
            raise InvalidSandboxRequest(f"spec.labels: invalid label {name!r}")
    if len(spec.image) > 512 or len(spec.snapshot) > 256:
        raise InvalidSandboxRequest("spec.image or spec.snapshot is too long")
    return spec
