"""The fault-injection fixtures themselves: private servers start, answer, restart and clean up."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from agentry.servicekit.faults import PrivatePostgres, PrivateRedis, TcpProxy
from agentry.servicekit.testing import needs

REDIS = needs(PrivateRedis.available(), "redis-server")
POSTGRES = needs(PrivatePostgres.available(), "PostgreSQL (initdb, pg_ctl)")


@REDIS
async def test_private_redis_restarts_on_the_same_port_and_cleans_up() -> None:
    from redis import asyncio as aioredis

    async with PrivateRedis() as server:
        assert server.port != 6379
        client = aioredis.Redis.from_url(server.url)
        try:
            assert await client.set("k", "v")
            started = time.monotonic()
            await server.arestart(downtime_seconds=0.2)
            assert time.monotonic() - started < 5
            assert server.running
            # Nothing is kept on disk: a restart is an empty server, reached on the same URL.
            fresh = aioredis.Redis.from_url(server.url)
            assert await fresh.get("k") is None
            await fresh.aclose()
        finally:
            await client.aclose()
        directory = server.dir
    assert not server.running
    assert not directory.exists()


@REDIS
def test_private_redis_stop_then_start_sync_and_kill() -> None:
    with PrivateRedis() as server:
        server.stop(kill=True)
        assert not server.running
        server.start()
        assert server.running


@POSTGRES
async def test_private_postgres_restarts_and_accepts_new_connections() -> None:
    import asyncpg

    async with PrivatePostgres() as server:
        assert server.port != 5432
        assert server.url.startswith("postgresql+asyncpg://postgres@127.0.0.1:")
        conn = await asyncpg.connect(server.dsn)
        await conn.execute("CREATE TABLE kept (n int)")
        await conn.execute("INSERT INTO kept VALUES (1)")

        await server.arestart()  # fast: the session is ended
        assert conn.is_closed() or await _fails(conn.fetchval("SELECT 1"))
        conn = await asyncpg.connect(server.dsn)
        assert await conn.fetchval("SELECT count(*) FROM kept") == 1  # a restart keeps the data
        await conn.close()

        await server.astop(mode="immediate")  # a crash: recovery runs on the next start
        assert not server.running
        await server.astart()
        conn = await asyncpg.connect(server.dsn)
        assert await conn.fetchval("SELECT count(*) FROM kept") == 1
        await conn.close()
        directory = server.dir
    assert not directory.exists()


async def _fails(awaitable) -> bool:
    try:
        await awaitable
    except Exception:  # noqa: BLE001 - any failure of the dead connection will do
        return True
    return False


@POSTGRES
def test_private_postgres_rejects_an_unknown_stop_mode() -> None:
    server = PrivatePostgres()
    try:
        with pytest.raises(ValueError):
            server.stop(mode="gentle")
    finally:
        server.close()


@REDIS
async def test_tcp_proxy_forwards_cuts_and_restores() -> None:
    from redis import asyncio as aioredis
    from redis.exceptions import ConnectionError as RedisConnectionError

    async with PrivateRedis() as server, TcpProxy.for_url(server.url) as proxy:
        url = proxy.url_for(server.url)
        assert url == f"redis://127.0.0.1:{proxy.port}/0"
        client = aioredis.Redis.from_url(url)
        try:
            assert await client.set("k", "v")
            proxy.cut()
            assert proxy.cut_off
            with pytest.raises(RedisConnectionError):
                await client.get("k")
            # Refused, not hanging: nothing listens on the proxy's port while it is cut.
            with pytest.raises(OSError):
                await asyncio.wait_for(asyncio.open_connection("127.0.0.1", proxy.port), 2)
            proxy.restore()
            assert await client.get("k") == b"v"  # the server never went away
            assert proxy.connections_total >= 2
        finally:
            await client.aclose()


@REDIS
async def test_tcp_proxy_blackholes_open_connections_and_forwards_new_ones() -> None:
    from redis import asyncio as aioredis

    async with PrivateRedis() as server, TcpProxy.for_url(server.url) as proxy:
        url = proxy.url_for(server.url)
        silenced = aioredis.Redis.from_url(url, socket_timeout=0.5)
        fresh = aioredis.Redis.from_url(url)
        try:
            assert await silenced.set("k", "v")
            proxy.blackhole()
            with pytest.raises(RedisTimeoutError):  # sent, never answered, never closed
                await silenced.get("k")
            assert await fresh.get("k") == b"v"
        finally:
            await silenced.aclose()
            await fresh.aclose()


def test_tcp_proxy_url_for_keeps_user_path_and_query() -> None:
    proxy = TcpProxy("127.0.0.1", 5672, port=1234)
    assert proxy.url_for("amqp://guest:guest@127.0.0.1:5672/vhost?heartbeat=5") == (
        "amqp://guest:guest@127.0.0.1:1234/vhost?heartbeat=5"
    )
    assert proxy.url_for("postgresql+asyncpg://postgres@localhost/db") == (
        "postgresql+asyncpg://postgres@127.0.0.1:1234/db"
    )
    assert TcpProxy.for_url("amqp://guest:guest@127.0.0.1/").target == ("127.0.0.1", 5672)


@pytest.mark.rabbitmq
async def test_tcp_proxy_in_front_of_the_shared_rabbitmq(amqp_url: str) -> None:
    import aio_pika

    with TcpProxy.for_url(amqp_url) as proxy:
        connection = await aio_pika.connect(proxy.url_for(amqp_url))
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(exclusive=True)
            assert queue.name
            proxy.cut()
            with pytest.raises(Exception):  # noqa: B017 - whatever aio-pika makes of a dead socket
                await asyncio.wait_for(connection.channel(), 5)
            proxy.restore()
            again = await aio_pika.connect(proxy.url_for(amqp_url))
            await again.close()
        finally:
            await connection.close()
