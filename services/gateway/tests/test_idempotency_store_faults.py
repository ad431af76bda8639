"""The Redis idempotency store across a Redis restart, on a private redis-server."""

from __future__ import annotations

import asyncio

import pytest

from agentry.gateway.idempotency import Completed, IdempotencyUnavailable, RedisIdempotencyStore, Reserved, StoredAnswer
from agentry.servicekit.faults import PrivateRedis
from agentry.servicekit.testing import needs

pytestmark = needs(PrivateRedis.available(), "redis-server")

ANSWER = StoredAnswer(202, b'{"agent_run_id":"r-1"}')


async def test_keys_work_again_at_once_after_a_restart() -> None:
    # Every pooled connection dies with the server; the first request on each after the restart
    # used to fail (a 503 long after Redis was back). Several concurrent requests open several.
    async with PrivateRedis(extra_args=("--appendonly", "yes")) as server:
        store = RedisIdempotencyStore(server.url)
        try:
            held = await asyncio.gather(*(store.reserve(f"k{i}", "f") for i in range(8)))
            assert all(isinstance(h, Reserved) for h in held)
            await server.arestart(0.2)
            answers = await asyncio.gather(
                *(
                    store.complete(f"k{i}", h.token, "f", ANSWER)  # type: ignore[union-attr]
                    for i, h in enumerate(held)
                )
            )
            assert answers == [True] * 8
            assert isinstance(await store.reserve("k0", "f"), Completed)
            await server.astop()
            with pytest.raises(IdempotencyUnavailable):  # still a 503 while Redis is away
                await store.reserve("k-down", "f")
        finally:
            await store.close()
