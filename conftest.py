"""Fixtures shared by every test suite: the real PostgreSQL, Redis and RabbitMQ servers.

Tests that need a server take its fixture. Locally a missing server skips the test with the
reason; under CI (CI=true) a missing server is a failure, so CI can never go green by skipping.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

PG_HOST = os.environ.get("AGENTRY_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("AGENTRY_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("AGENTRY_TEST_PG_USER", "postgres")
REDIS_URL = os.environ.get("AGENTRY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("AGENTRY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_server(name: str, host: str, port: int) -> None:
    """Skip (locally) or fail (CI) when a server the test needs is not listening."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{message} (CI=true: a missing server fails the run)", pytrace=False)
    pytest.skip(message)


def run_in_thread(fn):
    """Runs `fn` on a fresh thread: async fixtures may need asyncio.run while a loop runs."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards (asyncpg URL)."""
    require_server("PostgreSQL", PG_HOST, PG_PORT)
    import asyncio

    import asyncpg

    name = f"agentry_test_{uuid.uuid4().hex[:12]}"
    admin = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres"

    async def _admin(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    run_in_thread(lambda: asyncio.run(_admin(f'CREATE DATABASE "{name}"')))
    try:
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        run_in_thread(lambda: asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')))


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'agentry.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request) -> str:
    """Parametrizes a test over both database adapters."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def redis_url() -> str:
    from urllib.parse import urlparse

    parsed = urlparse(REDIS_URL)
    require_server("Redis", parsed.hostname or "127.0.0.1", parsed.port or 6379)
    return REDIS_URL


@pytest.fixture
def amqp_url() -> str:
    from urllib.parse import urlparse

    parsed = urlparse(AMQP_URL)
    require_server("RabbitMQ", parsed.hostname or "127.0.0.1", parsed.port or 5672)
    return AMQP_URL


@pytest.fixture
def unique_name() -> str:
    """A name no other test (or earlier run) uses: queue names, stream key prefixes."""
    return f"t{uuid.uuid4().hex[:10]}"
