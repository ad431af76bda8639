"""In-process run queue for `agentry dev` and tests, with RabbitMQ's ack and redelivery behaviour."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from agentry.runner.queue import (
    DELIVERY_LIMIT,
    REQUEUE_DELAY_SECONDS,
    Consumer,
    JobHandler,
    QueueUnavailable,
    RequeueJob,
    RunJob,
)

logger = logging.getLogger(__name__)


class _Broker:
    """The queue itself; every handle made by MemoryRunQueue.share() sees the same one."""

    def __init__(self) -> None:
        self._ready: deque[bytes] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.deliveries: dict[bytes, int] = {}  # body -> times delivered (RabbitMQ's delivery count)
        self.dead_letters: list[bytes] = []

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
    def __init__(
        self, broker: _Broker, handler: JobHandler, concurrency: int, requeue_delay: float = REQUEUE_DELAY_SECONDS
    ) -> None:
        self._broker = broker
        self._requeue_delay = requeue_delay
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
            deliveries = self._broker.deliveries.get(body, 0) + 1
            self._broker.deliveries[body] = deliveries
            try:
                await self._handler(job)
            except RequeueJob:
                self._unsettled.pop(task, None)
                self._broker.put(body, front=True)
                return
            except Exception:
                # Never dropped while its run may be unfinished: back to the head of the queue
                # after a pause (as RabbitMQ returns a rejected message), until the delivery
                # limit dead-letters it. Cancelled meanwhile, it stays unsettled and is requeued.
                logger.exception(
                    "run job handler failed for run %s (delivery %d); requeueing it", job.run_id, deliveries
                )
                await asyncio.sleep(self._requeue_delay)
                self._unsettled.pop(task, None)
                if deliveries >= DELIVERY_LIMIT:
                    self._broker.dead_letters.append(body)
                    return
                self._broker.put(body, front=True)
                return
            self._broker.deliveries.pop(body, None)
            self._unsettled.pop(task, None)
        finally:
            self._slots.release()


class MemoryRunQueue:
    def __init__(self, *, requeue_delay: float = REQUEUE_DELAY_SECONDS) -> None:
        self._broker = _Broker()
        self._consumers: list[_MemoryConsumer] = []
        self._closed = False
        self._requeue_delay = requeue_delay

    def share(self) -> MemoryRunQueue:
        """Another handle on the same queue, as a second replica's connection would be."""
        other = MemoryRunQueue(requeue_delay=self._requeue_delay)
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
        consumer = _MemoryConsumer(self._broker, handler, concurrency, self._requeue_delay)
        self._consumers.append(consumer)
        return consumer

    async def close(self) -> None:
        self._closed = True
        consumers, self._consumers = self._consumers, []
        for consumer in consumers:
            await consumer.abandon()
