"""RabbitMQ run queue: a durable quorum queue so accepted runs survive broker restarts and worker crashes.

Delivery is at least once. A worker that dies, or whose connection drops, before acking has
its jobs redelivered to another worker.

A dropped connection does not stop the handlers running here: each runs in a task of the
consumer's own (aiormq would cancel the delivery's task with its channel), so a broker that blinks
costs a run nothing. The connection comes back by itself (aio-pika's robust connection, tried
every `reconnect_interval` seconds), consuming resumes on the restored channel, and the broker
redelivers the jobs that were unacked when it dropped: a handler must take a duplicate job in its
stride (the runner's worker does: a run is claimed under a lease, once). Settling a job on the
channel that died fails and is logged; its redelivered copy is settled instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, ChannelPreconditionFailed

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

# Everything a broken connection or a refusing broker can raise at us.
# How long `consume` tries again when the broker refuses at start.
CONSUME_RETRY_SECONDS = 15.0
_BROKER_ERRORS = (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, TimeoutError)


async def _declare(channel: AbstractChannel, name: str) -> AbstractQueue:
    """Declares the jobs queue (and its dead-letter queue `<name>.dead`): quorum, durable, with a
    delivery limit so a job whose handling keeps failing ends up dead-lettered, not in a loop.

    Publisher and consumers both declare: whichever starts first creates the queue, and a
    publish to a queue that does not exist yet would be returned as unroutable. A queue that
    already exists with other arguments (declared by an older version) is used as it is, with a
    warning: RabbitMQ refuses to change a queue's arguments.
    """
    dead = f"{name}.dead"
    await channel.declare_queue(dead, durable=True, arguments={"x-queue-type": "quorum"})
    arguments = {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead,
    }
    try:
        return await channel.declare_queue(name, durable=True, arguments=arguments)
    except ChannelPreconditionFailed:
        logger.warning(
            "queue %s exists with other arguments (no delivery limit or dead-letter queue); using it as it is", name
        )
        await channel.reopen()
        return await channel.declare_queue(name, passive=True)


class _RabbitConsumer:
    def __init__(
        self,
        channel: AbstractChannel,
        queue: AbstractQueue,
        handler: JobHandler,
        concurrency: int,
        requeue_delay: float = REQUEUE_DELAY_SECONDS,
    ) -> None:
        self._requeue_delay = requeue_delay
        self._channel = channel
        self._queue = queue
        self._handler = handler
        # Prefetch already bounds deliveries; the semaphore keeps the limit if prefetch is larger.
        self._slots = asyncio.Semaphore(concurrency)
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._tag: str | None = None

    async def start(self) -> None:
        self._tag = await self._queue.consume(self._on_message, no_ack=False)

    async def stop(self) -> None:
        self._stopping = True
        if self._tag is not None and not self._channel.is_closed:
            try:
                await self._queue.cancel(self._tag)
            except _BROKER_ERRORS as exc:
                logger.warning("could not cancel the run queue consumer cleanly: %s", exc)
        if self._inflight:
            await asyncio.wait(list(self._inflight))
        # Anything delivered but not settled goes back to the queue when the channel closes.
        if not self._channel.is_closed:
            await self._channel.close()

    async def abandon(self) -> None:
        """Cancel in-flight handlers; the broker redelivers their jobs once the connection closes."""
        self._stopping = True
        tasks = list(self._inflight)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # aiormq runs this callback in a task its channel owns and cancels when the connection
        # drops; the job runs in a task of ours instead, which only stop/abandon end.
        task = asyncio.create_task(self._handle(message), name=f"run-job:{message.message_id}")
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        async with self._slots:
            if self._stopping:
                await self._settle_raw(message, requeue=True)
                return
            await self._process(message)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        try:
            job = RunJob.decode(message.body)
            header = (message.headers or {}).get("traceparent")
            if isinstance(header, bytes):
                header = header.decode("latin-1")
            if isinstance(header, str) and header and header != job.traceparent:
                job = dataclasses.replace(job, traceparent=header)  # the header wins
        except ValueError as exc:
            logger.error(
                "rejecting an undecodable run job message %s (%d bytes): %s",
                message.message_id,
                len(message.body),
                exc,
            )
            await self._settle_raw(message, requeue=False)
            return
        try:
            await self._handler(job)
        except RequeueJob:
            await self._settle(message, job, ack=False)
            return
        except Exception:
            # Never dropped while its run may be unfinished: back to the queue after a pause (the
            # quorum queue's delivery limit dead-letters a job that fails for good).
            logger.exception("run job handler failed for run %s; requeueing it", job.run_id)
            await asyncio.sleep(self._requeue_delay)
            await self._settle(message, job, ack=False)
            return
        await self._settle(message, job, ack=True)

    async def _settle_raw(self, message: AbstractIncomingMessage, *, requeue: bool) -> None:
        try:
            await message.reject(requeue=requeue)
        except _BROKER_ERRORS as exc:
            logger.warning("could not reject message %s (connection lost?): %s", message.message_id, exc)

    async def _settle(self, message: AbstractIncomingMessage, job: RunJob, *, ack: bool) -> None:
        try:
            if ack:
                await message.ack()
            else:
                await message.reject(requeue=True)
        except _BROKER_ERRORS as exc:
            logger.warning(
                "could not settle run %s (connection lost?); it will be redelivered: %s",
                job.run_id,
                exc,
            )


class RabbitRunQueue:
    def __init__(
        self,
        amqp_url: str,
        *,
        queue_name: str = "agentry.runs",
        prefetch: int | None = None,
        publish_timeout: float = 10.0,
        requeue_delay: float = REQUEUE_DELAY_SECONDS,
        reconnect_interval: float = 1.0,
    ) -> None:
        self._requeue_delay = requeue_delay
        # aio-pika's default (5 s) would keep publishing and consuming off for up to 5 s after
        # the broker is back.
        self._reconnect_interval = reconnect_interval
        self._url = amqp_url
        self._queue_name = queue_name
        self._prefetch = prefetch
        self._publish_timeout = publish_timeout
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()
        self._consumers: list[_RabbitConsumer] = []
        self._closed = False

    async def publish(self, job: RunJob) -> None:
        channel = await self._publisher()
        message = aio_pika.Message(
            job.encode(),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
            message_id=job.run_id,
            headers={"traceparent": job.traceparent} if job.traceparent else None,
        )
        try:
            # On a confirm channel this returns only after the broker's ack, and raises on a nack
            # or (mandatory) an unroutable return.
            await channel.default_exchange.publish(
                message, routing_key=self._queue_name, mandatory=True, timeout=self._publish_timeout
            )
        except _BROKER_ERRORS as exc:
            raise QueueUnavailable(f"the broker did not accept run {job.run_id}: {exc!r}") from exc

    async def consume(self, handler: JobHandler, *, concurrency: int) -> Consumer:
        """Starts consuming. A broker that refuses at first is tried again, with backoff, for up
        to CONSUME_RETRY_SECONDS: RabbitMQ can answer INTERNAL_ERROR (and close the connection)
        to a `basic.consume` on a quorum queue another connection has just declared, before the
        queue's leader runs (seen when two workers start together); then QueueUnavailable."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + CONSUME_RETRY_SECONDS, 0.2
        while True:
            try:
                return await self._consume_once(handler, concurrency)
            except QueueUnavailable as exc:
                if self._closed or loop.time() + delay > deadline:
                    raise
                logger.warning("%s; trying again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _consume_once(self, handler: JobHandler, concurrency: int) -> Consumer:
        connection = await self._connect()
        if connection.is_closed or not connection.connected.is_set():  # reconnecting: try again later
            raise QueueUnavailable(f"cannot consume from {self._queue_name}: not connected to the broker")
        channel = None
        try:
            # One channel per consumer: prefetch is per channel, and a stopped consumer's channel
            # closing hands its unsettled deliveries back without touching the publisher.
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self._prefetch or concurrency)
            queue = await _declare(channel, self._queue_name)
            consumer = _RabbitConsumer(channel, queue, handler, concurrency, self._requeue_delay)
            await consumer.start()
        except _BROKER_ERRORS as exc:
            if channel is not None:
                with contextlib.suppress(Exception):
                    await channel.close()
            raise QueueUnavailable(f"cannot consume from {self._queue_name}: {exc!r}") from exc
        self._consumers.append(consumer)
        return consumer

    async def check(self) -> None:
        """Raises unless this process is connected to the broker (readiness)."""
        connection = await self._connect()
        if connection.is_closed or not connection.connected.is_set():
            raise QueueUnavailable("the broker connection is down (reconnecting)")

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            consumers, self._consumers = self._consumers, []
            for consumer in consumers:
                await consumer.abandon()
            if self._connection is not None:
                await self._connection.close()
                self._connection = None
                self._publish_channel = None

    async def _connect(self) -> AbstractRobustConnection:
        async with self._lock:
            if self._closed:
                raise QueueUnavailable("the run queue is closed")
            if self._connection is None:
                try:
                    self._connection = await aio_pika.connect_robust(
                        self._url, reconnect_interval=self._reconnect_interval
                    )
                except _BROKER_ERRORS as exc:
                    raise QueueUnavailable(f"cannot reach the broker: {exc!r}") from exc
            return self._connection

    async def _publisher(self) -> AbstractChannel:
        if self._publish_channel is not None:
            return self._publish_channel
        connection = await self._connect()
        async with self._lock:
            if self._publish_channel is None:
                try:
                    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                    await _declare(channel, self._queue_name)
                # RuntimeError: aio-pika's answer ("Connection was not opened") while it reconnects.
                except (*_BROKER_ERRORS, RuntimeError) as exc:
                    raise QueueUnavailable(f"cannot open a publish channel: {exc!r}") from exc
                self._publish_channel = channel
            return self._publish_channel
