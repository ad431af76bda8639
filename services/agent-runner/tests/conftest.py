"""Fixtures for the runner's tests: its migrated tables on either database, and a settable clock."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

import agentry.runner
from agentry.servicekit.db import open_database
from agentry.servicekit.testing import FakeClock

MIGRATIONS = Path(agentry.runner.__file__).parent / "migrations"


async def _migrated(url: str, stack: contextlib.AsyncExitStack) -> AsyncEngine:
    return await open_database(url, migrations_dir=MIGRATIONS, version_table="alembic_version_runner", stack=stack)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The runner's tables on SQLite and on PostgreSQL."""
    async with contextlib.AsyncExitStack() as stack:
        yield await _migrated(database_url, stack)


@pytest.fixture
async def sqlite_engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    async with contextlib.AsyncExitStack() as stack:
        yield await _migrated(sqlite_url, stack)


@pytest.fixture
async def postgres_engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    async with contextlib.AsyncExitStack() as stack:
        yield await _migrated(postgres_url, stack)
