"""Split mode: every service in its own OS process, on PostgreSQL, Redis and RabbitMQ.

`agentry up` (and `make up`) runs this until Ctrl-C; the split-mode integration test starts the
same processes with fresh databases and free ports.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console

from .devstack import DEMO_MODEL, provider_default_model


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SplitConfig:
    database_url: str
    redis_url: str
    amqp_url: str
    data_dir: Path
    gateway_port: int = 8000
    grpc_ports: dict[str, int] = field(default_factory=lambda: {
        "auth": 50051, "billing": 50052, "sandbox": 50053, "runner": 50054, "worker": 50055})
    # When set, runs go to this OpenAI-compatible server (tests, or a local model server).
    llm_api_base: str | None = None
    default_model: str | None = None
    queue_name: str = "agentry.runs"
    redis_prefix: str = "agentry:run:"
    extra_env: dict[str, str] = field(default_factory=dict)


class SplitProcesses:
    """The running processes; `stop()` sends SIGTERM to each and waits."""

    def __init__(self, config: SplitConfig) -> None:
        self.config = config
        self.procs: dict[str, subprocess.Popen] = {}
        self.gateway_url = f"http://127.0.0.1:{config.gateway_port}"
        self.log_dir = config.data_dir / "logs"
        self.internal_token = secrets.token_urlsafe(32)

    def _env(self) -> dict[str, dict[str, str]]:
        c, p = self.config, self.config.grpc_ports
        target = {name: f"127.0.0.1:{port}" for name, port in p.items()}
        common = {
            "AGENTRY_INTERNAL_TOKEN": self.internal_token, "AGENTRY_DEV_MODE": "true",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1", **c.extra_env,
        }
        runner_common = {
            "AGENTRY_RUNNER_DATABASE_URL": c.database_url, "AGENTRY_RUNNER_QUEUE": "rabbitmq",
            "AGENTRY_RUNNER_AMQP_URL": c.amqp_url, "AGENTRY_RUNNER_QUEUE_NAME": c.queue_name,
            "AGENTRY_RUNNER_EVENTS": "redis", "AGENTRY_RUNNER_REDIS_URL": c.redis_url,
            "AGENTRY_RUNNER_REDIS_PREFIX": c.redis_prefix,
            "AGENTRY_RUNNER_SANDBOX_TARGET": target["sandbox"], "AGENTRY_RUNNER_BILLING_TARGET": target["billing"],
        }
        if c.default_model:
            runner_common["AGENTRY_RUNNER_DEFAULT_MODEL"] = c.default_model
        if c.llm_api_base:
            runner_common["AGENTRY_RUNNER_LLM_API_BASE"] = c.llm_api_base
        return {
            "auth": {**common, "AGENTRY_AUTH_PORT": str(p["auth"]), "AGENTRY_AUTH_DATABASE_URL": c.database_url,
                     "AGENTRY_AUTH_KEY_PATH": str(c.data_dir / "auth-signing-key.pem")},
            "billing": {**common, "AGENTRY_BILLING_PORT": str(p["billing"]),
                        "AGENTRY_BILLING_DATABASE_URL": c.database_url},
            "sandbox": {**common, "AGENTRY_SANDBOX_PORT": str(p["sandbox"]),
                        "AGENTRY_SANDBOX_DATABASE_URL": c.database_url,
                        "AGENTRY_SANDBOX_ROOT_DIR": str(c.data_dir / "sandboxes")},
            "runner": {**common, **runner_common, "AGENTRY_RUNNER_ROLE": "api", "AGENTRY_RUNNER_PORT": str(p["runner"])},
            "worker": {**common, **runner_common, "AGENTRY_RUNNER_ROLE": "worker",
                       "AGENTRY_RUNNER_PORT": str(p["worker"])},
            "gateway": {**common, "AGENTRY_GATEWAY_PORT": str(c.gateway_port),
                        "AGENTRY_GATEWAY_AUTH_TARGET": target["auth"], "AGENTRY_GATEWAY_BILLING_TARGET": target["billing"],
                        "AGENTRY_GATEWAY_SANDBOX_TARGET": target["sandbox"],
                        "AGENTRY_GATEWAY_RUNNER_TARGET": target["runner"], "AGENTRY_GATEWAY_EVENTS": "redis",
                        "AGENTRY_GATEWAY_REDIS_URL": c.redis_url, "AGENTRY_GATEWAY_REDIS_PREFIX": c.redis_prefix},
        }

    def start(self, timeout: float = 90.0) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ensure_database(self.config.database_url)
        modules = {"auth": "agentry.auth", "billing": "agentry.billing", "sandbox": "agentry.sandbox",
                   "runner": "agentry.runner", "worker": "agentry.runner", "gateway": "agentry.gateway"}
        # Services that own tables start first, one at a time, so their migrations never race.
        for name, env in self._env().items():
            log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", modules[name]], env={**os.environ, **env},
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.log_dir / (name + '.log')}")
            try:
                response = httpx.get(f"{self.gateway_url}/api/health", timeout=2.0)
                if response.status_code == 200 and self._worker_ready():
                    return
                last = response.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.25)  # start-up only: nothing to wake on until the processes listen
        self.stop()
        raise TimeoutError(f"split mode did not become healthy in {timeout:.0f}s: {last}")

    def _worker_ready(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.config.grpc_ports["worker"])) == 0

    def stop(self, timeout: float = 15.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _die_with_parent() -> None:
    """In the child, before exec: if the launcher dies (even by SIGKILL), Linux sends SIGTERM."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def ensure_database(url: str) -> None:
    """Creates the PostgreSQL database named in `url` when it does not exist yet."""
    if not url.startswith("postgresql"):
        return
    import asyncpg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)

    async def _create() -> None:
        conn = await asyncpg.connect(user=parsed.username, password=parsed.password, host=parsed.host,
                                     port=parsed.port or 5432, database="postgres")
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", parsed.database)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{parsed.database}"')
        finally:
            await conn.close()

    # A thread of its own: callers may already be inside an event loop.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _create()).result()


def run_split_forever(config: SplitConfig, console: Console) -> None:
    demo_llm = None
    if config.llm_api_base is None and provider_default_model() is None:
        from agentry.fakellm import ThreadedFakeLLMServer

        demo_llm = ThreadedFakeLLMServer(ttft_seconds=0.3, tokens_per_second=40)
        demo_llm.start()
        config.llm_api_base = demo_llm.base_url
        config.extra_env["AGENTRY_RUNNER_FORCE_MODEL"] = DEMO_MODEL
    procs = SplitProcesses(config)
    with console.status("starting services (PostgreSQL, Redis, RabbitMQ)..."):
        procs.start()
    console.print(f"[bold green]Agentry split mode is running[/] — gateway {procs.gateway_url}; "
                  f"logs in {procs.log_dir}/ (Ctrl-C stops)")
    if demo_llm:
        console.print("[yellow]No LLM provider key is set: runs use the scripted demo model.[/]")
    import threading

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            for name, proc in procs.procs.items():
                if proc.poll() is not None:
                    console.print(f"[red]{name} exited with {proc.returncode}; see {procs.log_dir / (name + '.log')}[/]")
                    stop.set()
    finally:
        console.print("stopping...")
        procs.stop()
        if demo_llm:
            demo_llm.stop()
