"""Fixtures for the auth tests: a controllable clock, cheap argon2, keys, a migrated database."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import argon2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.ext.asyncio import AsyncEngine

import agentry.auth
from agentry.auth.passwords import Argon2Hasher
from agentry.auth.tokens import TokenService
from agentry.servicekit.db import open_database
from agentry.servicekit.testing import FakeClock

MIGRATIONS = Path(agentry.auth.__file__).parent / "migrations"


def cheap_argon2(**overrides) -> argon2.PasswordHasher:
    """Argon2 at the lowest sane cost: the tests check behaviour, not brute-force resistance."""
    params = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1, **overrides}
    return argon2.PasswordHasher(**params)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_hasher():
    """Builds cheap Argon2Hashers; pass overrides (time_cost=2) to model a parameter upgrade."""
    return lambda **overrides: Argon2Hasher(cheap_argon2(**overrides))


@pytest.fixture
def hasher(make_hasher) -> Argon2Hasher:
    return make_hasher()


@pytest.fixture
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def tokens(signing_key, clock) -> TokenService:
    return TokenService(signing_key, issuer="agentry-local", audience="authenticated", ttl_seconds=3600, clock=clock)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with contextlib.AsyncExitStack() as stack:
        yield await open_database(
            database_url, migrations_dir=MIGRATIONS, version_table="alembic_version_auth", stack=stack
        )


@pytest.fixture
async def sqlite_engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    async with contextlib.AsyncExitStack() as stack:
        yield await open_database(
            sqlite_url, migrations_dir=MIGRATIONS, version_table="alembic_version_auth", stack=stack
        )
