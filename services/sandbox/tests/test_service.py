"""Use cases over the real repository (SQLite) and the local provider."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentry.sandbox.adapters.local import LocalSandboxProvider
from agentry.sandbox.adapters.sql import SqlSandboxRepository
from agentry.sandbox.domain import ExecOutcome, SandboxState
from agentry.sandbox.errors import InvalidSandboxRequest, SandboxNotFound
from agentry.sandbox.migrations import MIGRATIONS_DIR, VERSION_TABLE
from agentry.sandbox.service import SandboxService
from agentry.servicekit.db import open_database

T0 = datetime(2025, 1, 2, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def parts(sqlite_url: str, tmp_path: Path) -> AsyncIterator[tuple[SandboxService, SqlSandboxRepository, Clock]]:
    async with contextlib.AsyncExitStack() as stack:
        engine = await open_database(sqlite_url, migrations_dir=MIGRATIONS_DIR, version_table=VERSION_TABLE, stack=stack)
        repository = SqlSandboxRepository(engine)
        provider = LocalSandboxProvider(tmp_path / "sandboxes")
        stack.push_async_callback(provider.close)
        counter = itertools.count(1)
        clock = Clock()
        service = SandboxService(
            repository, provider, default_timeout=5, max_timeout=10, clock=clock, new_id=lambda: f"sbx_{next(counter)}"
        )
        yield service, repository, clock


async def test_create_is_get_or_create_per_project(parts) -> None:
    service, repository, _ = parts
    first = await service.create_sandbox("acct_a", "proj_1")
    assert (first.sandbox_id, first.state, first.provider) == ("sbx_1", SandboxState.READY, "local")
    assert first.provider_ref.endswith("sbx_1")
    assert await service.create_sandbox("acct_a", "proj_1") == first
    assert (await service.create_sandbox("acct_a", "proj_2")).sandbox_id == "sbx_2"
    assert (await service.create_sandbox("acct_b", "proj_1")).sandbox_id == "sbx_3"
    assert (await repository.get("sbx_1")).state is SandboxState.READY


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
    ]
    for call in calls:
        with pytest.raises(SandboxNotFound) as err:
            await call
        assert err.value.message == f"sandbox {record.sandbox_id!r} not found"
    with pytest.raises(SandboxNotFound):
        async for _ in service.exec("acct_b", record.sandbox_id, "echo hi"):
            pass
    assert await service.read_file("acct_a", record.sandbox_id, "a.txt") == b"mine"


async def test_exec_uses_default_and_capped_timeouts_and_records_use(parts) -> None:
    service, repository, clock = parts
    record = await service.create_sandbox("acct_a", "proj_1")
    clock.now = T0 + timedelta(hours=1)
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
