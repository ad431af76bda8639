"""Readiness that follows a service's dependencies, liveness that does not.

The standard gRPC health service answers three ways. The overall status ("") and each served
service's name are *readiness*: SERVING while every dependency check passes (the database, Redis,
RabbitMQ, the services it calls), NOT_SERVING while one fails and from the moment the server
starts draining. "liveness" is SERVING for as long as the process serves at all, dependencies or
not, draining included: Kubernetes restarts a container only when the process itself is stuck.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio  # pyright: ignore[reportAttributeAccessIssue] - typeshed's stub omits it

logger = logging.getLogger(__name__)

LIVENESS = "liveness"
Check = Callable[[], Awaitable[object]]  # raises (or times out) when the dependency is away
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def _status_gauge():
    from .metrics import family

    return family(
        "gauge",
        "agentry_dependency_up",
        "1 while this process's last check of a dependency passed, 0 while it fails.",
        ("dependency",),
        multiprocess_mode="max",
    )


class Readiness:
    """Checks every dependency every `interval` seconds (each within `timeout`) and sets the
    readiness statuses to match; `drain()` turns them NOT_SERVING for good."""

    def __init__(
        self,
        health: health_aio.HealthServicer,
        service_names: Sequence[str],
        checks: Mapping[str, Check],
        *,
        interval: float = 5.0,
        timeout: float = 2.0,
    ) -> None:
        self._health = health
        self._names = ("", *service_names)
        self._checks = dict(checks)
        self._interval = interval
        self._timeout = timeout
        self._task: asyncio.Task[None] | None = None
        self.draining = False
        self.failing: dict[str, str] = {}  # dependency -> why, as of the last pass

    async def check_once(self) -> bool:
        """One pass: True when every dependency answered. Sets the statuses (unless draining)."""
        results = await asyncio.gather(*(self._check(name, check) for name, check in self._checks.items()))
        failing = {name: why for name, why in results if why is not None}
        for name in set(failing) - set(self.failing):
            logger.warning("not ready: %s is unavailable (%s)", name, failing[name])
        for name in set(self.failing) - set(failing):
            logger.info("%s is available again", name)
        self.failing = failing
        gauge = _status_gauge()
        for name, _ in results:
            gauge.labels(name).set(0 if name in failing else 1)
        await self._set(NOT_SERVING if failing else SERVING)
        return not failing

    async def _check(self, name: str, check: Check) -> tuple[str, str | None]:
        started = time.monotonic()
        try:
            await asyncio.wait_for(check(), self._timeout)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported by name
            if isinstance(exc, TimeoutError):
                return name, f"no answer within {time.monotonic() - started:.1f}s"
            return name, type(exc).__name__
        return name, None

    async def _set(self, status) -> None:
        if self.draining:
            return
        for name in self._names:
            await self._health.set(name, status)

    def start(self) -> None:
        if self._task is None and self._checks:
            self._task = asyncio.create_task(self._loop(), name="readiness")

    async def _loop(self) -> None:
        while not self.draining:
            ready = await self.check_once()
            # While something is down, look again soon: ready again within a second of its return.
            await asyncio.sleep(self._interval if ready else min(self._interval, 1.0))

    async def drain(self) -> None:
        """NOT_SERVING from now on (graceful shutdown); liveness stays SERVING."""
        self.draining = True
        for name in self._names:
            await self._health.set(name, NOT_SERVING)
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


def database_check(engine) -> Check:
    """`SELECT 1` on one of the pool's connections."""
    import sqlalchemy as sa

    async def check() -> None:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    return check


def redis_check(url: str) -> Check:
    """PING on a client of its own (one connection), made on first use."""
    client = None

    async def check() -> None:
        nonlocal client
        if client is None:
            from redis import asyncio as aioredis

            client = aioredis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        await client.ping()

    return check


def grpc_check(channel, service: str = "") -> Check:
    """The called service's own readiness, through the channel this process calls it on."""
    from grpc_health.v1 import health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel)

    async def check() -> None:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2.0)  # pyright: ignore[reportAttributeAccessIssue] - typeshed's stub omits it
        if reply.status != SERVING:
            raise RuntimeError(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    return check
