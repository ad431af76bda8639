"""The composition root wires RabbitMQ, Redis, the api and the worker together and shuts down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import orjson
import pytest

from agentpress import Agent, ContextConfig, ScriptedModel
from agentry.api.runner.v1 import runner_pb2 as pb
from agentry.api.runner.v1 import runner_pb2_grpc
from agentry.billing.config import BillingSettings
from agentry.billing.main import start as start_billing
from agentry.runner.config import RunnerSettings
from agentry.runner.domain import Run
from agentry.runner.main import build_event_stream, start
from agentry.servicekit import DEV_INTERNAL_TOKEN, open_channel

WAIT = 30.0  # the embedded worker first imports LiteLLM (seconds of CPU; more on a busy machine)


@pytest.mark.rabbitmq
@pytest.mark.redis
async def test_all_roles_on_rabbitmq_and_redis_run_a_job_and_shut_down(
    tmp_path: Path,
    sqlite_url: str,
    amqp_url: str,
    redis_url: str,
    unique_name: str,
) -> None:
    import aio_pika
    from redis import asyncio as aioredis

    queue_name, prefix = f"agentry.test.{unique_name}", f"{unique_name}:run:"

    def agent(run: Run) -> Agent:
        return Agent(
            model=ScriptedModel(["Hello from the worker."]),
            context=ContextConfig(
                context_window=32_000, token_counter=lambda model, messages: len(orjson.dumps(messages)) // 4
            ),
        )

    try:
        async with contextlib.AsyncExitStack() as billing_stack:
            billing = await start_billing(
                BillingSettings(port=0, database_url=f"sqlite+aiosqlite:///{tmp_path / 'billing.db'}", grace_seconds=1),
                billing_stack,
            )
            settings = RunnerSettings(
                port=0,
                database_url=sqlite_url,
                role="all",
                queue="rabbitmq",
                amqp_url=amqp_url,
                queue_name=queue_name,
                events="redis",
                redis_url=redis_url,
                redis_prefix=prefix,
                billing_target=billing.target,
                grace_seconds=2,
            )
            stack = contextlib.AsyncExitStack()
            try:
                server = await start(settings, stack, agents=agent)
                channel = open_channel(server.target, DEV_INTERNAL_TOKEN)
                stack.push_async_callback(channel.close)
                stub = runner_pb2_grpc.RunnerServiceStub(channel)
                thread = await stub.CreateThread(pb.CreateThreadRequest(account_id="acct-main"))
                run = await stub.StartRun(
                    pb.StartRunRequest(account_id="acct-main", thread_id=thread.thread_id, prompt="hi")
                )

                # The job travelled through RabbitMQ to the worker, whose events are in Redis.
                reader = build_event_stream(settings)
                stack.push_async_callback(reader.close)
                seen: list[dict] = []
                async with asyncio.timeout(WAIT):
                    while not seen or seen[-1]["type"] != "run_finished":
                        after = seen[-1]["seq"] if seen else 0
                        seen += [
                            orjson.loads(e.data) for e in await reader.read(run.agent_run_id, after, block_ms=1000)
                        ]
                assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1))
                assert seen[-1]["reason"] == "completed"
                ended = await stub.GetRun(pb.GetRunRequest(account_id="acct-main", agent_run_id=run.agent_run_id))
                assert ended.status == "completed"
            finally:
                await asyncio.wait_for(stack.aclose(), WAIT)
    finally:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(queue_name)
        admin = aioredis.Redis.from_url(redis_url)
        keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()
