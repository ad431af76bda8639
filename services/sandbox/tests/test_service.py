"""Use cases over the real repository (SQLite) and the local provider."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentry.sandbox.adapters.isolation import choose_isolation
from agentry.sandbox.adapters.local import LocalSandboxProvider
from agentry.sandbox.adapters.sql import SqlSandboxRepository
from agentry.sandbox.domain import ExecOutcome, Lifecycle, SandboxSpec, SandboxState
from agentry.sandbox.errors import InvalidSandboxRequest, SandboxNotFound
from agentry.sandbox.migrations import MIGRATIONS_DIR, VERSION_TABLE
from agentry.sandbox.service import SandboxService
from agentry.servicekit.db import open_database

from .conftest import traversable  # noqa: TID252 - the shared helper

T0 = datetime(2025, 1, 2, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def parts(sqlite_url: str, tmp_path: Path) -> AsyncIterator[tuple[SandboxService, SqlSandboxRepository, Clock]]:
    async with contextlib.AsyncExitStack() as stack:
        engine = await open_database(
            sqlite_url, migrations_dir=MIGRATIONS_DIR, version_table=VERSION_TABLE, stack=stack
        )
        repository = SqlSandboxRepository(engine)
        provider = LocalSandboxProvider(
            traversable(tmp_path) / "sandboxes", isolation=choose_isolation("auto")[0], allow_unisolated=True
        )
        stack.push_async_callback(provider.close)
        counter = itertools.count(1)
        clock = Clock()
        service = SandboxService(
            repository,
            provider,
            default_timeout=5,
            max_timeout=10,
            clock=clock,
            new_id=lambda: f"sbx_{next(counter)}",
            lifecycle=Lifecycle(auto_stop_seconds=600, auto_archive_seconds=3600),
        )
        yield service, repository, clock


async def test_create_is_get_or_create_per_project(parts) -> None:
    service, repository, _ = parts
    first = await service.create_sandbox("acct_a", "proj_1")
    assert (first.sandbox_id, first.state, first.provider) == ("sbx_1", SandboxState.STARTED, "local")
    assert first.provider_ref == "sbx_1"
    assert await service.create_sandbox("acct_a", "proj_1") == first
    assert (await service.create_sandbox("acct_a", "proj_2")).sandbox_id == "sbx_2"
    assert (await service.create_sandbox("acct_b", "proj_1")).sandbox_id == "sbx_3"
    assert (await repository.get("sbx_1")).state is SandboxState.STARTED


async def test_concurrent_first_calls_get_one_sandbox(parts) -> None:
    service, _, _ = parts
    records = await asyncio.gather(*(service.create_sandbox("acct_a", "proj_x") for _ in range(5)))
    assert len({r.sandbox_id for r in records}) == 1


async def test_another_accounts_sandbox_is_not_found(parts) -> None:
    service, _, _ = parts
    record = await service.create_sandbox("acct_a", "proj_1")
    await service.write_file("acct_a", record.sandbox_id, "a.txt", b"mine")
    calls = [
        service.get_sandbox("acct_b", record.sandbox_id),
        service.read_file("acct_b", record.sandbox_id, "a.txt"),
        service.write_file("acct_b", record.sandbox_id, "a.txt", b"theirs"),
        service.list_files("acct_b", record.sandbox_id),
        service.delete_file("acct_b", record.sandbox_id, "a.txt"),
        service.start_process("acct_b", record.sandbox_id, "true"),
        service.read_process("acct_b", record.sandbox_id, "p"),
        service.stop_process("acct_b", record.sandbox_id, "p"),
        service.list_processes("acct_b", record.sandbox_id),
        service.send_input("acct_b", record.sandbox_id, "p", b"x"),
        service.kill_run_processes("acct_b", record.sandbox_id, "run_1"),
        service.make_dir("acct_b", record.sandbox_id, "d"),
        service.move("acct_b", record.sandbox_id, "a.txt", "b.txt"),
        service.download("acct_b", record.sandbox_id, "a.txt"),
        service.upload("acct_b", record.sandbox_id, "a.txt", _chunks(b"theirs")),
        service.start_sandbox("acct_b", record.sandbox_id),
        service.stop_sandbox("acct_b", record.sandbox_id),
        service.archive_sandbox("acct_b", record.sandbox_id),
        service.delete_sandbox("acct_b", record.sandbox_id),
        service.preview_link("acct_b", record.sandbox_id, 8080),
    ]
    for call in calls:
        with pytest.raises(SandboxNotFound) as err:
            await call
        assert err.value.message == f"sandbox {record.sandbox_id!r} not found"
    with pytest.raises(SandboxNotFound):
        async for _ in service.exec("acct_b", record.sandbox_id, "echo hi"):
            pass
    assert await service.read_file("acct_a", record.sandbox_id, "a.txt") == b"mine"
    assert await service.list_sandboxes("acct_b") == []
    assert [r.sandbox_id for r in await service.list_sandboxes("acct_a")] == [record.sandbox_id]


async def test_exec_uses_default_and_capped_timeouts_and_records_use(parts) -> None:
    service, repository, clock = parts
    record = await service.create_sandbox("acct_a", "proj_1")
    clock.now = T0 + timedelta(minutes=5)
    items = [item async for item in service.exec("acct_a", record.sandbox_id, "echo hi", timeout=0)]
    assert items[0] == b"hi\n"
    assert isinstance(items[-1], ExecOutcome) and items[-1].exit_code == 0
    assert (await repository.get(record.sandbox_id)).last_used_at == clock.now
    with pytest.raises(InvalidSandboxRequest):
        async for _ in service.exec("acct_a", record.sandbox_id, "true", timeout=-1):
            pass


@pytest.mark.parametrize("account,project", [("", "p"), ("a", "")])
async def test_create_requires_account_and_project(parts, account: str, project: str) -> None:
    service, _, _ = parts
    with pytest.raises(InvalidSandboxRequest):
        await service.create_sandbox(account, project)


async def _chunks(*parts: bytes):
    for part in parts:
        yield part


async def test_lazy_create_reserves_the_id_and_the_first_use_provisions(parts) -> None:
    service, repository, _ = parts
    spec = SandboxSpec(env={"GREETING": "hello"}, labels={"purpose": "test"})
    reserved = await service.create_sandbox("acct_a", "proj_1", spec, lazy=True)
    assert (reserved.state, reserved.provider_ref) == (SandboxState.CREATING, "")
    assert (await service.get_sandbox("acct_a", reserved.sandbox_id)).state is SandboxState.CREATING
    items = [i async for i in service.exec("acct_a", reserved.sandbox_id, 'echo "$GREETING"')]
    assert items[0] == b"hello\n"
    record = await repository.get(reserved.sandbox_id)
    assert (record.state, record.spec) == (SandboxState.STARTED, spec)


async def test_stop_archive_start_and_transparent_restart(parts) -> None:
    service, repository, clock = parts
    record = await service.create_sandbox("acct_a", "proj_1")
    await service.write_file("acct_a", record.sandbox_id, "keep.txt", b"kept")
    process = await service.start_process("acct_a", record.sandbox_id, "sleep 60")
    assert (await service.stop_sandbox("acct_a", record.sandbox_id)).state is SandboxState.STOPPED
    assert (await service.read_process("acct_a", record.sandbox_id, process.process_id)).process.running is False
    assert await service.list_processes("acct_a", record.sandbox_id) == []
    assert (await service.archive_sandbox("acct_a", record.sandbox_id)).state is SandboxState.ARCHIVED
    # A file call on an archived sandbox starts it again; the workspace survived.
    assert await service.read_file("acct_a", record.sandbox_id, "keep.txt") == b"kept"
    assert (await repository.get(record.sandbox_id)).state is SandboxState.STARTED
    await service.stop_sandbox("acct_a", record.sandbox_id)
    assert (await service.start_sandbox("acct_a", record.sandbox_id)).state is SandboxState.STARTED
    await service.stop_sandbox("acct_a", record.sandbox_id)
    # So does a command, and the project's sandbox asked for again.
    items = [i async for i in service.exec("acct_a", record.sandbox_id, "cat keep.txt")]
    assert items[0] == b"kept"
    await service.stop_sandbox("acct_a", record.sandbox_id)
    again = await service.create_sandbox("acct_a", "proj_1")
    assert (again.sandbox_id, again.state) == (record.sandbox_id, SandboxState.STARTED)


async def test_idle_sandboxes_are_stopped_then_archived(parts) -> None:
    service, repository, clock = parts
    idle = await service.create_sandbox("acct_a", "proj_idle")
    busy = await service.create_sandbox("acct_a", "proj_busy")
    clock.now = T0 + timedelta(minutes=9)
    await service.list_files("acct_a", busy.sandbox_id)  # a use
    clock.now = T0 + timedelta(minutes=11)
    assert await service.reap_idle() == [(idle.sandbox_id, SandboxState.STOPPED)]
    clock.now = T0 + timedelta(minutes=11 + 59)
    assert await service.reap_idle() == [(busy.sandbox_id, SandboxState.STOPPED)]
    clock.now = T0 + timedelta(minutes=11 + 61)
    assert await service.reap_idle() == [(idle.sandbox_id, SandboxState.ARCHIVED)]
    assert (await repository.get(idle.sandbox_id)).state is SandboxState.ARCHIVED
    assert (await repository.get(busy.sandbox_id)).state is SandboxState.STOPPED


async def test_delete_removes_the_sandbox_and_the_project_gets_a_new_one(parts) -> None:
    service, repository, _ = parts
    record = await service.create_sandbox("acct_a", "proj_1")
    await service.write_file("acct_a", record.sandbox_id, "a.txt", b"x")
    await service.delete_sandbox("acct_a", record.sandbox_id)
    assert await repository.get(record.sandbox_id) is None
    with pytest.raises(SandboxNotFound):
        await service.read_file("acct_a", record.sandbox_id, "a.txt")
    fresh = await service.create_sandbox("acct_a", "proj_1")
    assert fresh.sandbox_id != record.sandbox_id
    assert await service.list_files("acct_a", fresh.sandbox_id) == []


async def test_kill_run_processes_kills_only_that_runs(parts) -> None:
    service, _, _ = parts
    record = await service.create_sandbox("acct_a", "proj_1")
    mine = await service.start_process("acct_a", record.sandbox_id, "sleep 60", run_id="run_1")
    other = await service.start_process("acct_a", record.sandbox_id, "sleep 60", run_id="run_2")
    assert await service.kill_run_processes("acct_a", record.sandbox_id, "run_1") == 1
    assert (await service.read_process("acct_a", record.sandbox_id, mine.process_id)).process.running is False
    assert (await service.read_process("acct_a", record.sandbox_id, other.process_id)).process.running is True
    await service.stop_process("acct_a", record.sandbox_id, other.process_id)


async def test_bad_specs_are_refused_naming_the_field(parts) -> None:
    service, _, _ = parts
    for spec, field in (
        (SandboxSpec(memory_mb=-1), "spec.memory_mb"),
        (SandboxSpec(env={"A=B": "x"}), "spec.env"),
        (SandboxSpec(labels={"bad label": "x"}), "spec.labels"),
    ):
        with pytest.raises(InvalidSandboxRequest, match=field):
            await service.create_sandbox("acct_a", "proj_1", spec)
