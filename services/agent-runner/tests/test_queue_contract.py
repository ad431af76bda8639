"""Contract for the RunQueue port: the in-process queue must behave like the RabbitMQ one."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from agentry.runner.adapters.queue_memory import MemoryRunQueue
from agentry.runner.adapters.queue_rabbitmq import RabbitRunQueue
from agentry.runner.queue import Consumer, QueueUnavailable, RequeueJob, RunJob, RunQueue

WAIT = 10.0  # upper bound for things that should happen promptly; tests never wait it out
REQUEUE_DELAY = 0.05


def job(n: int | str, attempt: int = 1) -> RunJob:
    return RunJob(run_id=f"run-{n}", thread_id=f"thread-{n}", account_id="acct-1", attempt=attempt)


@dataclass
class Harness:
    """Opens handles on one logical queue; each handle is a separate connection (a replica)."""

    open_handle: Callable[[], RunQueue]
    publish_raw: Callable[[bytes], Awaitable[None]]
    handles: list[RunQueue] = field(default_factory=list)

    def connect(self) -> RunQueue:
        handle = self.open_handle()
        self.handles.append(handle)
        return handle


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        root = MemoryRunQueue(requeue_delay=REQUEUE_DELAY)
        h = Harness(open_handle=root.share, publish_raw=root.publish_raw)
        yield h
        for handle in h.handles:
            await handle.close()
        await root.close()
        return

    import aio_pika

    url: str = request.getfixturevalue("amqp_url")
    name = f"agentry.test.{request.getfixturevalue('unique_name')}"
    admin = await aio_pika.connect(url)
    admin_channel = await admin.channel()

    async def publish_raw(body: bytes) -> None:
        await admin_channel.declare_queue(name, passive=True)  # declared by the handle under test
        await admin_channel.default_exchange.publish(aio_pika.Message(body), routing_key=name)

    h = Harness(
        open_handle=lambda: RabbitRunQueue(url, queue_name=name, requeue_delay=REQUEUE_DELAY), publish_raw=publish_raw
    )
    try:
        yield h
    finally:
        for handle in h.handles:
            await handle.close()
        await admin_channel.queue_delete(name)
        await admin_channel.queue_delete(f"{name}.dead")
        await admin.close()


class Recorder:
    """A handler that records every job it sees and lets a test wait for a given one."""

    def __init__(self) -> None:
        self.seen: list[RunJob] = []
        self._changed = asyncio.Event()

    async def __call__(self, job: RunJob) -> None:
        self.seen.append(job)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[list[RunJob]], bool]) -> None:
        async def until() -> None:
            while not predicate(self.seen):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), WAIT)

    async def wait_for_run(self, run_id: str) -> None:
        await self.wait_for(lambda seen: any(j.run_id == run_id for j in seen))


def test_run_job_round_trips_through_bytes() -> None:
    original = job(7, attempt=3)
    assert RunJob.decode(original.encode()) == original


def test_run_job_ignores_unknown_keys() -> None:
    data = b'{"run_id":"r","thread_id":"t","account_id":"a","attempt":2,"new":1}'
    assert RunJob.decode(data) == RunJob("r", "t", "a", 2)


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"run_id": "r"}',
        b'{"run_id":"r","thread_id":"t","account_id":"a","attempt":0}',
        b'{"run_id":1,"thread_id":"t","account_id":"a"}',
    ],
)
def test_run_job_decode_rejects_garbage_with_value_error(garbage: bytes) -> None:
    with pytest.raises(ValueError):
        RunJob.decode(garbage)


async def test_a_jobs_trace_context_reaches_the_handler(harness: Harness) -> None:
    """The W3C traceparent of the request that queued the run (RabbitMQ: a message header too)."""
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    queue = harness.connect()
    recorder = Recorder()
    consumer = await queue.consume(recorder, concurrency=1)
    await queue.publish(RunJob("run-tp", "thread-tp", "acct-1", traceparent=traceparent))
    await recorder.wait_for_run("run-tp")
    assert recorder.seen[-1].traceparent == traceparent
    await consumer.stop()


async def test_published_job_reaches_the_handler(harness: Harness) -> None:
    queue = harness.connect()
    recorder = Recorder()
    consumer = await queue.consume(recorder, concurrency=1)

    await queue.publish(job(1, attempt=2))
    await recorder.wait_for_run("run-1")

    assert recorder.seen == [job(1, attempt=2)]
    await consumer.stop()


async def test_jobs_published_before_anyone_consumes_are_kept(harness: Harness) -> None:
    producer = harness.connect()
    await producer.publish(job(1))

    recorder = Recorder()
    consumer = await harness.connect().consume(recorder, concurrency=1)
    await recorder.wait_for_run("run-1")
    await consumer.stop()


async def test_concurrency_limits_running_handlers(harness: Harness) -> None:
    queue = harness.connect()
    limit, total = 3, 9
    running = 0
    peak = 0
    finished = 0
    limit_reached = asyncio.Event()
    one_more_started = asyncio.Event()
    release = asyncio.Event()
    all_done = asyncio.Event()

    async def handler(_: RunJob) -> None:
        nonlocal running, peak, finished
        running += 1
        peak = max(peak, running)
        if running == limit:
            limit_reached.set()
        if running > limit:
            one_more_started.set()
        await release.wait()
        running -= 1
        finished += 1
        if finished == total:
            all_done.set()

    consumer = await queue.consume(handler, concurrency=limit)
    for n in range(total):
        await queue.publish(job(n))

    await asyncio.wait_for(limit_reached.wait(), WAIT)
    # Proving that nothing more starts needs a bounded wait; 0.3 s is the price of that proof.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(one_more_started.wait(), 0.3)
    release.set()
    await asyncio.wait_for(all_done.wait(), WAIT)

    assert peak == limit
    await consumer.stop()


async def test_failing_handler_is_logged_and_its_job_redelivered_not_dropped(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    queue = harness.connect()
    recorder = Recorder()

    async def handler(j: RunJob) -> None:
        await recorder(j)
        if j.run_id == "run-bad" and [s.run_id for s in recorder.seen].count("run-bad") == 1:
            raise RuntimeError("database pool timed out")  # an infrastructure failure, once

    consumer = await queue.consume(handler, concurrency=1)
    with caplog.at_level(logging.ERROR):
        for n in ("bad", 1, 2, "sentinel"):
            await queue.publish(job(n))
        await recorder.wait_for(lambda seen: len(seen) == 5)
        await consumer.stop()

    # Back to the head of the queue after the pause: the failed job is handled again first.
    assert [j.run_id for j in recorder.seen] == ["run-bad", "run-bad", "run-1", "run-2", "run-sentinel"]
    assert any("run-bad" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_a_requeued_job_is_delivered_again_at_once(harness: Harness) -> None:
    queue = harness.connect()
    recorder = Recorder()

    async def handler(j: RunJob) -> None:
        await recorder(j)
        if len(recorder.seen) == 1:
            raise RequeueJob("shutting down")

    consumer = await queue.consume(handler, concurrency=1)
    await queue.publish(job(1))
    await recorder.wait_for(lambda seen: len(seen) == 2)
    await consumer.stop()
    assert [j.run_id for j in recorder.seen] == ["run-1", "run-1"]


async def test_failing_handler_does_not_block_other_jobs(harness: Harness) -> None:
    queue = harness.connect()
    recorder = Recorder()

    async def handler(j: RunJob) -> None:
        await recorder(j)
        if j.run_id.startswith("run-bad") and [s.run_id for s in recorder.seen].count(j.run_id) == 1:
            raise RuntimeError("boom")

    consumer = await queue.consume(handler, concurrency=2)
    for n in ("bad-a", 1, "bad-b", 2, 3):
        await queue.publish(job(n))

    await recorder.wait_for(lambda seen: len(seen) == 7)
    await consumer.stop()
    assert Counter(j.run_id for j in recorder.seen) == Counter(
        ["run-bad-a", "run-bad-a", "run-1", "run-bad-b", "run-bad-b", "run-2", "run-3"]
    )


async def test_undecodable_message_is_rejected_and_logged(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    queue = harness.connect()
    recorder = Recorder()
    consumer = await queue.consume(recorder, concurrency=1)

    with caplog.at_level(logging.ERROR):
        await harness.publish_raw(b"\x00 definitely not a job")
        await queue.publish(job(1))
        await queue.publish(job("sentinel"))
        await recorder.wait_for_run("run-sentinel")
        await consumer.stop()

    assert [j.run_id for j in recorder.seen] == ["run-1", "run-sentinel"]
    assert any("undecodable" in r.getMessage() for r in caplog.records)


async def test_unacked_job_of_a_dead_consumer_goes_to_another(harness: Harness) -> None:
    replica_a, replica_b = harness.connect(), harness.connect()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def stuck(_: RunJob) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await replica_a.consume(stuck, concurrency=1)
    await replica_a.publish(job(1))
    await asyncio.wait_for(started.wait(), WAIT)

    await replica_a.close()  # the replica dies with the job unacked

    recorder = Recorder()
    consumer_b = await replica_b.consume(recorder, concurrency=1)
    await recorder.wait_for_run("run-1")
    assert cancelled.is_set()
    await consumer_b.stop()


async def test_stop_waits_for_in_flight_handlers_and_acks_them(harness: Harness) -> None:
    queue = harness.connect()
    started = asyncio.Event()
    release = asyncio.Event()
    finished: list[str] = []

    async def slow(j: RunJob) -> None:
        started.set()
        await release.wait()
        finished.append(j.run_id)

    consumer: Consumer = await queue.consume(slow, concurrency=1)
    await queue.publish(job(1))
    await asyncio.wait_for(started.wait(), WAIT)

    stopping = asyncio.create_task(consumer.stop())
    done, _ = await asyncio.wait({stopping}, timeout=0.3)
    assert not done, "stop returned while a handler was still running"
    release.set()
    await asyncio.wait_for(stopping, WAIT)
    assert finished == ["run-1"]

    # The stopped consumer takes nothing new, and the finished job was acked, not requeued.
    await queue.publish(job("after-stop"))
    recorder = Recorder()
    successor = await harness.connect().consume(recorder, concurrency=1)
    await recorder.wait_for_run("run-after-stop")
    assert [j.run_id for j in recorder.seen] == ["run-after-stop"]
    assert finished == ["run-1"]
    await successor.stop()


async def test_single_consumer_with_one_slot_sees_publish_order(harness: Harness) -> None:
    queue = harness.connect()
    for n in range(20):
        await queue.publish(job(n))

    recorder = Recorder()
    consumer = await queue.consume(recorder, concurrency=1)
    await recorder.wait_for(lambda seen: len(seen) == 20)
    await consumer.stop()

    assert [j.run_id for j in recorder.seen] == [f"run-{n}" for n in range(20)]


async def test_many_jobs_across_two_replicas_are_each_processed_once(harness: Harness) -> None:
    total = 200
    replica_a, replica_b = harness.connect(), harness.connect()
    recorder = Recorder()
    consumers = [
        await replica_a.consume(recorder, concurrency=8),
        await replica_b.consume(recorder, concurrency=8),
    ]

    await asyncio.gather(*(replica_a.publish(job(n)) for n in range(total)))
    await recorder.wait_for(lambda seen: len(seen) >= total)
    for consumer in consumers:
        await consumer.stop()

    assert Counter(j.run_id for j in recorder.seen) == Counter(f"run-{n}" for n in range(total))


async def test_publish_after_close_is_queue_unavailable(harness: Harness) -> None:
    queue = harness.connect()
    await queue.publish(job(1))
    await queue.close()

    with pytest.raises(QueueUnavailable):
        await queue.publish(job(2))


@pytest.mark.rabbitmq
async def test_unreachable_broker_is_queue_unavailable() -> None:
    queue = RabbitRunQueue("amqp://guest:guest@127.0.0.1:1/", queue_name="agentry.nowhere")
    with pytest.raises(QueueUnavailable):
        await queue.publish(job(1))
    await queue.close()
