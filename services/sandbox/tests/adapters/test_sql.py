"""The sandboxes table, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from agentry.sandbox.adapters.sql import SqlSandboxRepository
from agentry.sandbox.domain import SandboxRecord, SandboxSpec, SandboxState
from agentry.sandbox.errors import SandboxAlreadyExists
from agentry.sandbox.migrations import MIGRATIONS_DIR, VERSION_TABLE
from agentry.servicekit.db import migrate, open_database

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def _record(sandbox_id: str = "sbx_1", account: str = "acct_a", project: str = "proj_1") -> SandboxRecord:
    return SandboxRecord(
        sandbox_id=sandbox_id,
        account_id=account,
        project_id=project,
        provider="local",
        provider_ref="",
        state=SandboxState.CREATING,
        created_at=T0,
        last_used_at=T0,
        spec=SandboxSpec(cpu=2, memory_mb=512, env={"A": "1"}, labels={"team": "x"}, network=True),
        state_changed_at=T0,
    )


@pytest.fixture
async def repository(database_url: str) -> AsyncIterator[SqlSandboxRepository]:
    async with contextlib.AsyncExitStack() as stack:
        engine = await open_database(
            database_url, migrations_dir=MIGRATIONS_DIR, version_table=VERSION_TABLE, stack=stack
        )
        # Migrating again is a no-op.
        await migrate(engine, migrations_dir=MIGRATIONS_DIR, version_table=VERSION_TABLE)
        yield SqlSandboxRepository(engine)


async def test_add_then_get_and_find_by_project(repository: SqlSandboxRepository) -> None:
    record = _record()
    await repository.add(record)
    assert await repository.get("sbx_1") == record
    assert await repository.find_by_project("acct_a", "proj_1") == record
    assert await repository.get("sbx_missing") is None
    assert await repository.find_by_project("acct_b", "proj_1") is None


async def test_one_sandbox_per_account_and_project(repository: SqlSandboxRepository) -> None:
    await repository.add(_record())
    with pytest.raises(SandboxAlreadyExists):
        await repository.add(_record(sandbox_id="sbx_2"))
    # The same project id under another account is another project.
    await repository.add(_record(sandbox_id="sbx_3", account="acct_b"))
    assert (await repository.find_by_project("acct_b", "proj_1")).sandbox_id == "sbx_3"


async def test_mark_ready_state_changes_touch_list_and_delete(repository: SqlSandboxRepository) -> None:
    await repository.add(_record())
    await repository.mark_ready("sbx_1", "sbx_1", T0 + timedelta(minutes=1))
    later = T0 + timedelta(minutes=5)
    await repository.touch("sbx_1", later)
    record = await repository.get("sbx_1")
    assert record.state is SandboxState.STARTED
    assert record.provider_ref == "sbx_1"
    assert record.last_used_at == later
    assert record.created_at == T0
    assert record.state_changed_at == T0 + timedelta(minutes=1)
    await repository.set_state("sbx_1", SandboxState.ERROR, later, "provider down")
    record = await repository.get("sbx_1")
    assert (record.state, record.error, record.state_changed_at) == (SandboxState.ERROR, "provider down", later)

    await repository.add(_record(sandbox_id="sbx_2", project="proj_2"))
    await repository.add(_record(sandbox_id="sbx_3", account="acct_b"))
    assert [r.sandbox_id for r in await repository.list("acct_a")] == ["sbx_1", "sbx_2"]
    assert [r.sandbox_id for r in await repository.list("acct_a", "proj_2")] == ["sbx_2"]
    assert [r.sandbox_id for r in await repository.in_states([SandboxState.CREATING])] == ["sbx_2", "sbx_3"]
    await repository.delete("sbx_2")
    assert await repository.get("sbx_2") is None
    assert await repository.find_by_project("acct_a", "proj_2") is None
