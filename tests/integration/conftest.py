"""The whole system, twice: embedded (one process, SQLite, in-process queue and stream) and
split (every service in its own process on PostgreSQL, Redis and RabbitMQ)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentry.fakellm import Script, ScriptedToolCall, ThreadedFakeLLMServer, Turn
from agentry.servicekit import DEV_INTERNAL_TOKEN

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

TOOL_MARKER = "tool-output-7f3a"
FILE_PATH = "out/result.txt"
FILE_CONTENT = "written by the agent through the sandbox service\n"

# The script the integration tests drive: a shell command, a file write, a final answer.
IT_SCRIPT = Script(
    turns=(
        Turn(
            text="Let me check the sandbox.",
            tool_calls=(ScriptedToolCall(name="run_command", arguments={"command": f"echo {TOOL_MARKER} && pwd"}),),
        ),
        Turn(
            text="Writing the result.",
            tool_calls=(ScriptedToolCall(name="create_file", arguments={"path": FILE_PATH, "content": FILE_CONTENT}),),
        ),
        Turn(text="All done: the command ran and the file is written."),
    )
)
# A slow variant, so a client can disconnect while the run is still live.
SLOW_SCRIPT = Script(turns=(Turn(text=" ".join(f"word{i}" for i in range(40))),), tokens_per_second=80)
# A long reply at once (no pacing): the worker merges its deltas into a few events.
BURST_WORDS = [f"w{i}" for i in range(400)]
BURST_SCRIPT = Script(turns=(Turn(text=" ".join(BURST_WORDS)),), tokens_per_second=None)
# Long enough (about 10 s) that a stop request always lands while the model is still talking.
LONG_SCRIPT = Script(turns=(Turn(text=" ".join(f"token{i}" for i in range(300))),), tokens_per_second=30)


@dataclass
class System:
    mode: str
    gateway_url: str
    sandbox_target: str
    data_dir: Path
    internal_token: str


@pytest.fixture(scope="session")
def fake_llm():
    # Strict: a history OpenAI would refuse fails the test, as it would fail a real run.
    with ThreadedFakeLLMServer(
        {"it-script": IT_SCRIPT, "it-slow": SLOW_SCRIPT, "it-long": LONG_SCRIPT, "it-burst": BURST_SCRIPT},
        strict=True,
    ) as server:
        yield server


@pytest.fixture(params=["embedded", "split"])
async def system(request, fake_llm, tmp_path) -> AsyncIterator[System]:
    if request.param == "embedded":
        from agentry.cli.devstack import start_dev_stack

        async with contextlib.AsyncExitStack() as stack:
            dev = await start_dev_stack(
                stack,
                data_dir=tmp_path,
                llm_api_base=fake_llm.base_url,
                ports={"auth": 0, "billing": 0, "sandbox": 0, "runner": 0, "gateway": 0},
            )
            yield System("embedded", dev.gateway_url, f"127.0.0.1:{dev.ports['sandbox']}", tmp_path, DEV_INTERNAL_TOKEN)
        return

    from agentry.cli.split import SplitConfig, SplitProcesses, free_port

    database_url = request.getfixturevalue("postgres_url")
    redis_url = request.getfixturevalue("redis_url")
    amqp_url = request.getfixturevalue("amqp_url")
    unique = request.getfixturevalue("unique_name")
    ports = {name: free_port() for name in ("auth", "billing", "sandbox", "runner", "worker")}
    procs = SplitProcesses(
        SplitConfig(
            database_url=database_url,
            redis_url=redis_url,
            amqp_url=amqp_url,
            data_dir=tmp_path,
            gateway_port=free_port(),
            grpc_ports=ports,
            llm_api_base=fake_llm.base_url,
            queue_name=f"agentry.runs.{unique}",
            redis_prefix=f"agentry:{unique}:",
        )
    )
    # Generous: two xdist workers may start stacks at once, each importing LiteLLM (seconds of CPU).
    procs.start(timeout=240)
    try:
        yield System("split", procs.gateway_url, f"127.0.0.1:{ports['sandbox']}", tmp_path, procs.internal_token)
    finally:
        procs.stop()
        await _delete_queue(amqp_url, f"agentry.runs.{unique}")


async def _delete_queue(amqp_url: str, name: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name)
