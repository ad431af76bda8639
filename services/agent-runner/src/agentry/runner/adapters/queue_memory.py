"""In-process run queue for `agentry dev` and tests, with RabbitMQ's ack and redelivery behaviour."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from agentry.runner.queue import Consumer, JobHandler, QueueUnavailable, RunJob

logger = logging.getLogger(__name__)


class _Broker:
    """The queue itself; every handle made by MemoryRunQueue.share() sees the same one."""

    def __init__(self) -> None:
        self._ready: deque[bytes] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()

    def put(self, body: bytes, *, front: bool = False) -> None:
        if front:
            self._ready.appendleft(body)
        else:
            self._ready.append(body)
        self._wake_one()

    async def take(self) -> bytes:
        while not self._ready:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # Woken and cancelled at once: pass the wake-up on so the job is not stranded.
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()
                raise
        return self._ready.popleft()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class _MemoryConsumer:
    def __init__(self, broker: _Broker, handler: JobHandler, concurrency: int) -> None:
        self._broker = broker
        self._handler = handler
        self._slots = asyncio.Semaphore(concurrency)
        # Delivered but not yet acked or rejected; what a dying consumer hands back.
        self._unsettled: dict[asyncio.Task[None], bytes] = {}
        self._dispatcher = asyncio.create_task(self._dispatch())

    async def stop(self) -> None:
        await self._stop_taking()
        if self._unsettled:
            await asyncio.wait(list(self._unsettled))
        self._requeue_unsettled()

    async def abandon(self) -> None:
        """Die like a consumer whose connection broke: cancel handlers, redeliver their jobs."""
        await self._stop_taking()
        tasks = list(self._unsettled)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._requeue_unsettled()

    async def _stop_taking(self) -> None:
        self._dispatcher.cancel()
        await asyncio.wait([self._dispatcher])

    def _requeue_unsettled(self) -> None:
        # Back to the head in delivery order, as RabbitMQ returns unacked messages.
        for body in reversed(list(self._unsettled.values())):
            self._broker.put(body, front=True)
        self._unsettled.clear()

    async def _dispatch(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                body = await self._broker.take()
            except asyncio.CancelledError:
                self._slots.release()
                raise
            task = asyncio.create_task(self._handle(body))
            self._unsettled[task] = body

    async def _handle(self, body: bytes) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            try:
                job = RunJob.decode(body)
            except ValueError as exc:
                logger.error("rejecting an undecodable run job (%d bytes): %s", len(body), exc)
                self._unsettled.pop(task, None)
                return
            try:
                await self._handler(job)
            except Exception:
                # The consumer boundary: the handler has recorded the failure; one bad job must
                # not stop the worker, and requeueing it would only fail again.
                logger.exception("run job handler failed; rejecting run %s", job.run_id)
            self._unsettled.pop(task, None)
        finally:
            self._slots.release()


class MemoryRunQueue:
    def __init__(self) -> None:
        self._broker = _Broker()
        self._consumers: list[_MemoryConsumer] = []
        self._closed = False

    def share(self) -> MemoryRunQueue:
        """Another handle on the same queue, as a second replica's connection would be."""
        other = MemoryRunQueue()
        other._broker = self._broker
        return other

    async def publish(self, job: RunJob) -> None:
        await self.publish_raw(job.encode())

    async def publish_raw(self, body: bytes) -> None:
        """Enqueue bytes as they would arrive from any producer, including ones that are not jobs."""
        if self._closed:
            raise QueueUnavailable("the run queue is closed")
        self._broker.put(body)

    async def consume(self, handler: JobHandler, *, concurrency: int) -> Consumer:
        if self._closed:
            raise QueueUnavailable("the run queue is closed")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        consumer = _MemoryConsumer(self._broker, handler, concurrency)
        self._consumers.append(consumer)
        return consumer

    async def close(self) -> None:
        self._closed = True
        consumers, self._consumers = self._consumers, []
        for consumer in consumers:
            await consumer.abandon()
