"""The RabbitMQ run queue across a dropped broker connection (cut at a proxy in front of the
shared broker, which is never touched): running jobs carry on, consuming resumes, publishing
fails fast while the broker is away and works again once it is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agentry.runner.adapters.queue_rabbitmq import RabbitRunQueue
from agentry.runner.queue import QueueUnavailable, RunJob
from agentry.servicekit.faults import TcpProxy

pytestmark = pytest.mark.rabbitmq

WAIT = 15.0


def job(n: int | str) -> RunJob:
    return RunJob(run_id=f"run-{n}", thread_id=f"thread-{n}", account_id="acct-1")


@pytest.fixture
async def proxied(amqp_url: str, unique_name: str) -> AsyncIterator[tuple[TcpProxy, RabbitRunQueue]]:
    import aio_pika

    name = f"agentry.test.{unique_name}"
    with TcpProxy.for_url(amqp_url) as proxy:
        queue = RabbitRunQueue(proxy.url_for(amqp_url), queue_name=name, requeue_delay=0.05, reconnect_interval=0.2)
        try:
            yield proxy, queue
        finally:
            proxy.restore()
            await queue.close()
            connection = await aio_pika.connect(amqp_url)
            async with connection:
                channel = await connection.channel()
                await channel.queue_delete(name)
                await channel.queue_delete(f"{name}.dead")


async def test_a_running_job_survives_a_dropped_connection_and_consuming_resumes(proxied) -> None:
    proxy, queue = proxied
    seen: list[str] = []
    arrived = asyncio.Event()
    release = asyncio.Event()
    cancelled = asyncio.Event()
    finished: list[str] = []

    async def handler(j: RunJob) -> None:
        seen.append(j.run_id)
        arrived.set()
        if j.run_id == "run-1" and seen.count("run-1") == 1:
            try:
                await release.wait()  # a long run, in flight while the connection drops
            except asyncio.CancelledError:
                cancelled.set()
                raise
        finished.append(j.run_id)

    consumer = await queue.consume(handler, concurrency=4)
    await queue.publish(job(1))
    await asyncio.wait_for(arrived.wait(), WAIT)

    await asyncio.to_thread(proxy.cut)
    with pytest.raises(QueueUnavailable):  # fails fast: the run stays queued for the sweeper
        await asyncio.wait_for(queue.publish(job("while-cut")), 5)
    await asyncio.sleep(0.5)
    await asyncio.to_thread(proxy.restore)

    # The job that was unacked when the connection dropped comes back (the handler tolerates the
    # duplicate; the runner's worker does through the run's lease), and new jobs flow again.
    async def publish_when_back() -> None:
        while True:
            try:
                return await queue.publish(job(2))
            except QueueUnavailable:
                await asyncio.sleep(0.1)

    await asyncio.wait_for(publish_when_back(), WAIT)

    async def until(predicate) -> None:
        while not predicate():
            arrived.clear()
            await arrived.wait()

    await asyncio.wait_for(until(lambda: seen.count("run-1") == 2 and "run-2" in seen), WAIT)
    assert not cancelled.is_set(), "a dropped broker connection cancelled a running job"
    release.set()
    await asyncio.wait_for(until(lambda: finished.count("run-1") == 2), WAIT)
    await consumer.stop()
    assert not cancelled.is_set()


async def cut_and_noticed(proxy: TcpProxy, queue: RabbitRunQueue) -> None:
    """Cuts the broker connection and returns once the client has noticed (its check fails)."""
    await asyncio.to_thread(proxy.cut)
    async with asyncio.timeout(WAIT):
        while True:
            try:
                await queue.check()
            except QueueUnavailable:
                return
            await asyncio.sleep(0.05)


async def test_readiness_check_follows_the_broker_connection(proxied):
    """The worker's readiness check (servicekit/health.py) fails while the broker is cut off and
    passes again once the robust connection is back."""
    proxy, queue = proxied
    await queue.check()
    await cut_and_noticed(proxy, queue)
    await asyncio.to_thread(proxy.restore)
    async with asyncio.timeout(WAIT):
        while True:
            try:
                await queue.check()
                break
            except QueueUnavailable:
                await asyncio.sleep(0.1)  # the robust connection reconnects every 0.2 s


async def test_a_first_publish_while_the_broker_is_away_is_queue_unavailable(proxied) -> None:
    # No publish channel yet and the robust connection reconnecting: aio-pika raises RuntimeError
    # ("Connection was not opened") when asked for a channel; callers (the start, the sweeper)
    # must see QueueUnavailable, which they handle.
    proxy, queue = proxied
    await queue.check()  # connected
    await cut_and_noticed(proxy, queue)
    with pytest.raises(QueueUnavailable):
        await queue.publish(job(1))
    await asyncio.to_thread(proxy.restore)
    async with asyncio.timeout(WAIT):
        while True:
            try:
                await queue.publish(job(2))
                break
            except QueueUnavailable:
                await asyncio.sleep(0.1)


async def test_consuming_while_the_broker_is_away_starts_once_it_is_back(proxied) -> None:
    # A worker whose first consume fails (the broker away, or answering INTERNAL_ERROR to a
    # consume on a quorum queue just declared elsewhere) tries again instead of exiting.
    proxy, queue = proxied
    await queue.publish(job(1))  # connected, the queue declared
    proxy.cut()
    loop = asyncio.get_running_loop()
    loop.call_later(1.0, proxy.restore)
    seen: list[str] = []
    arrived = asyncio.Event()

    async def handler(j: RunJob) -> None:
        seen.append(j.run_id)
        arrived.set()

    consumer = await asyncio.wait_for(queue.consume(handler, concurrency=1), WAIT)
    try:
        await asyncio.wait_for(arrived.wait(), WAIT)
        assert seen == ["run-1"]
    finally:
        await consumer.stop()
