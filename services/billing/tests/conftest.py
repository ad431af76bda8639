"""Fixtures for billing's tests: a migrated database on either adapter, and the ledger over it."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

import agentry.billing
from agentry.billing import SqlCreditLedger
from agentry.servicekit.db import open_database

MIGRATIONS = Path(agentry.billing.__file__).parent / "migrations"


async def _migrated(url: str, stack: contextlib.AsyncExitStack) -> AsyncEngine:
    return await open_database(url, migrations_dir=MIGRATIONS, version_table="alembic_version_billing", stack=stack)


@pytest.fixture
def migrations_dir() -> Path:
    return MIGRATIONS


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with contextlib.AsyncExitStack() as stack:
        yield await _migrated(database_url, stack)


@pytest.fixture
async def sqlite_engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    async with contextlib.AsyncExitStack() as stack:
        yield await _migrated(sqlite_url, stack)


@pytest.fixture
def ledger(engine: AsyncEngine) -> SqlCreditLedger:
    # A ticking clock keeps entry order deterministic however fast the test runs.
    ticks = itertools.count(1_700_000_000)
    return SqlCreditLedger(engine, clock=lambda: float(next(ticks)))
