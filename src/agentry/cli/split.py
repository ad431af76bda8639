"""Split mode: every service in its own OS process, on PostgreSQL, Redis and RabbitMQ.

`agentry up` (and `make up`) runs this until Ctrl-C; the split-mode integration tests start the
same processes with fresh databases and free ports. A process that dies is restarted with
backoff while the others keep running (supervisor.py); `--workers N` runs N worker processes.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console

from agentry.servicekit.faults import free_port

from .devstack import DEMO_MODEL, resolve_model
from .supervisor import ProcessSpec, RestartPolicy, Supervisor

MODULES = {
    "auth": "agentry.auth",
    "billing": "agentry.billing",
    "sandbox": "agentry.sandbox",
    "runner": "agentry.runner",
    "worker": "agentry.runner",
    "gateway": "agentry.gateway",
}
# The services that own tables: `start()` migrates them first, as deploy/k8s's migration Jobs do.
MIGRATED = ("auth", "billing", "sandbox", "runner")


@dataclass
class SplitConfig:
    database_url: str
    redis_url: str
    amqp_url: str
    data_dir: Path
    gateway_port: int = 8000
    grpc_ports: dict[str, int] = field(
        default_factory=lambda: {"auth": 50051, "billing": 50052, "sandbox": 50053, "runner": 50054, "worker": 50055}
    )
    # When set, runs go to this OpenAI-compatible server (tests, or a local model server).
    llm_api_base: str | None = None
    default_model: str | None = None
    queue_name: str = field(default_factory=lambda: os.environ.get("AGENTRY_RUNNER_QUEUE_NAME", "agentry.run-jobs"))
    redis_prefix: str = field(default_factory=lambda: os.environ.get("AGENTRY_RUNNER_REDIS_PREFIX", "agentry:run:"))
    extra_env: dict[str, str] = field(default_factory=dict)
    # Worker processes: "worker" on grpc_ports["worker"], then "worker-2", ... (a free port each
    # unless grpc_ports names one).
    workers: int = 1
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    # Prometheus /metrics port of each process, by name ("auth", "runner", "worker", "worker-2", ...);
    # a process not named here serves none (the gateway serves /metrics on its own HTTP port).
    metrics_ports: dict[str, int] = field(default_factory=dict)


class SplitProcesses:
    """The running processes, supervised: one that dies is restarted while the others run on.

    `stop()` stops supervising, sends SIGTERM to each and waits. Tests use `kill(name)` to crash
    one and `wait_healthy(names)` to wait for it to serve again.
    """

    def __init__(self, config: SplitConfig, *, on_event: Callable[[str], None] | None = None) -> None:
        if config.workers < 1:
            raise ValueError("at least one worker is needed")
        self.config = config
        self.gateway_url = f"http://127.0.0.1:{config.gateway_port}"
        self.log_dir = config.data_dir / "logs"
        self.internal_token = secrets.token_urlsafe(32)
        self.worker_names = ["worker"] + [f"worker-{i}" for i in range(2, config.workers + 1)]
        self.ports = {**config.grpc_ports}
        for name in self.worker_names[1:]:
            self.ports.setdefault(name, free_port())
        self.supervisor = Supervisor(
            self._specs(), log_path=self.log_dir / "supervisor.log", policy=config.restart_policy, on_event=on_event
        )

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        """The current process of each service, by name."""
        return self.supervisor.procs

    def _specs(self) -> list[ProcessSpec]:
        specs = []
        for name, env in self._env().items():
            if name in self.config.metrics_ports and name != "gateway":
                service = "RUNNER" if name.startswith("worker") else name.upper()
                env = {**env, f"AGENTRY_{service}_METRICS_PORT": str(self.config.metrics_ports[name])}
            module = MODULES["worker" if name.startswith("worker") else name]
            port = self.config.gateway_port if name == "gateway" else self.ports[name]
            healthy = (
                (lambda: _http_ok(f"{self.gateway_url}/api/health"))
                if name == "gateway"
                else (lambda port=port: grpc_serving(port))
            )
            specs.append(
                ProcessSpec(
                    name=name,
                    argv=[sys.executable, "-m", module],
                    env={**os.environ, **env},
                    log_path=self.log_dir / f"{name}.log",
                    healthy=healthy,
                )
            )
        return specs

    def _env(self) -> dict[str, dict[str, str]]:
        c, p = self.config, self.ports
        target = {name: f"127.0.0.1:{port}" for name, port in p.items()}
        common = {
            "AGENTRY_INTERNAL_TOKEN": self.internal_token,
            "AGENTRY_DEV_MODE": "true",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "PYTHONUNBUFFERED": "1",
            **c.extra_env,
        }
        runner_common = {
            "AGENTRY_RUNNER_DATABASE_URL": c.database_url,
            "AGENTRY_RUNNER_QUEUE": "rabbitmq",
            "AGENTRY_RUNNER_AMQP_URL": c.amqp_url,
            "AGENTRY_RUNNER_QUEUE_NAME": c.queue_name,
            "AGENTRY_RUNNER_EVENTS": "redis",
            "AGENTRY_RUNNER_REDIS_URL": c.redis_url,
            "AGENTRY_RUNNER_REDIS_PREFIX": c.redis_prefix,
            "AGENTRY_RUNNER_SANDBOX_TARGET": target["sandbox"],
            "AGENTRY_RUNNER_BILLING_TARGET": target["billing"],
        }
        if c.default_model:
            runner_common["AGENTRY_RUNNER_DEFAULT_MODEL"] = c.default_model
        if c.llm_api_base:
            runner_common["AGENTRY_RUNNER_LLM_API_BASE"] = c.llm_api_base
        return {
            "auth": {
                **common,
                "AGENTRY_AUTH_PORT": str(p["auth"]),
                "AGENTRY_AUTH_DATABASE_URL": c.database_url,
                "AGENTRY_AUTH_KEY_PATH": str(c.data_dir / "auth-signing-key.pem"),
            },
            "billing": {
                **common,
                "AGENTRY_BILLING_PORT": str(p["billing"]),
                "AGENTRY_BILLING_DATABASE_URL": c.database_url,
            },
            "sandbox": {
                **common,
                "AGENTRY_SANDBOX_PORT": str(p["sandbox"]),
                "AGENTRY_SANDBOX_DATABASE_URL": c.database_url,
                "AGENTRY_SANDBOX_ROOT_DIR": str(c.data_dir / "sandboxes"),
                # Like `agentry dev`: without bubblewrap, commands run unisolated (the
                # sandbox logs a loud warning) unless this is set to false.
                "AGENTRY_SANDBOX_ALLOW_UNISOLATED": c.extra_env.get(
                    "AGENTRY_SANDBOX_ALLOW_UNISOLATED", os.environ.get("AGENTRY_SANDBOX_ALLOW_UNISOLATED", "true")
                ),
            },
            "runner": {
                **common,
                **runner_common,
                "AGENTRY_RUNNER_ROLE": "api",
                "AGENTRY_RUNNER_PORT": str(p["runner"]),
            },
            **{
                name: {**common, **runner_common, "AGENTRY_RUNNER_ROLE": "worker", "AGENTRY_RUNNER_PORT": str(p[name])}
                for name in self.worker_names
            },
            "gateway": {
                **common,
                "AGENTRY_GATEWAY_PORT": str(c.gateway_port),
                "AGENTRY_GATEWAY_AUTH_TARGET": target["auth"],
                "AGENTRY_GATEWAY_BILLING_TARGET": target["billing"],
                "AGENTRY_GATEWAY_SANDBOX_TARGET": target["sandbox"],
                "AGENTRY_GATEWAY_RUNNER_TARGET": target["runner"],
                "AGENTRY_GATEWAY_EVENTS": "redis",
                "AGENTRY_GATEWAY_REDIS_URL": c.redis_url,
                "AGENTRY_GATEWAY_REDIS_PREFIX": c.redis_prefix,
                "AGENTRY_GATEWAY_RATE_LIMIT_PREFIX": f"{c.redis_prefix}rl:",
            },
        }

    def start(self, timeout: float = 90.0) -> None:
        """Starts every process and returns once all serve; then supervises them."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ensure_database(self.config.database_url)
        self.migrate(timeout)
        self.supervisor.start()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self.supervisor.supervise()

    def migrate(self, timeout: float = 90.0) -> None:
        """Brings every service's tables to the newest migration, each in a short-lived
        `python -m agentry.<service> migrate` process (all at once), before any service starts.

        Like the deployment's migration Jobs (deploy/k8s/base/migrations.yaml): a service that
        starts at head never imports Alembic, which would keep ~10 MB of RSS in each of its
        processes for the rest of its life. Raises RuntimeError naming the service and its log
        (`<log_dir>/<service>-migrate.log`) when one fails, TimeoutError after `timeout` seconds.
        """
        envs = self._env()
        deadline = time.monotonic() + timeout
        running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        try:
            for name in MIGRATED:
                log_path = self.log_dir / f"{name}-migrate.log"
                with log_path.open("ab") as log:
                    running[name] = (
                        subprocess.Popen(
                            [sys.executable, "-m", MODULES[name], "migrate"],
                            env={**os.environ, **envs[name]},
                            stdin=subprocess.DEVNULL,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                        ),
                        log_path,
                    )
            for name, (proc, log_path) in running.items():
                try:
                    returncode = proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise TimeoutError(
                        f"{name}'s migrations did not finish in {timeout:.0f}s; see {log_path}"
                    ) from None
                if returncode != 0:
                    raise RuntimeError(f"{name}'s migrations failed (exit {returncode}); see {log_path}")
        finally:
            for proc, _ in running.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    def _wait_ready(self, timeout: float) -> None:
        # A process that exits while starting is a configuration problem to show, not to retry.
        try:
            self.supervisor.wait_healthy(timeout=timeout, on_exit=self._exited_while_starting)
        except TimeoutError as exc:
            raise TimeoutError(
                f"split mode did not become healthy in {timeout:.0f}s ({exc}); see {self.log_dir}/"
            ) from None

    def _exited_while_starting(self, name: str, returncode: int) -> None:
        # A process that exits by itself is misconfigured: show it. One killed by a signal (a rare
        # native crash at start-up, e.g. gRPC's poller aborting) is restarted by the supervisor,
        # like any crash, unless it keeps crashing.
        if returncode < 0 and self.supervisor.restarts(name) < 2:
            return
        raise RuntimeError(f"{name} exited with {returncode}; see {self.log_dir / (name + '.log')}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Crashes one service (SIGKILL by default) and returns the pid it had; it is restarted."""
        return self.supervisor.kill(name, sig)

    def wait_healthy(self, names: Iterable[str] | str | None = None, *, timeout: float = 90.0) -> float:
        """Seconds until the named services (all by default) run and answer their health checks."""
        if isinstance(names, str):
            names = [names]
        return self.supervisor.wait_healthy(names, timeout=timeout)

    def stop(self, timeout: float = 15.0) -> None:
        self.supervisor.stop(timeout)


def grpc_serving(port: int, timeout: float = 1.0) -> bool:
    """True when the gRPC server on 127.0.0.1:`port` answers its standard health check SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)  # pyright: ignore[reportAttributeAccessIssue] - typeshed's stub omits it
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def ensure_database(url: str) -> None:
    """Creates the PostgreSQL database named in `url` when it does not exist yet."""
    if not url.startswith("postgresql"):
        return
    import asyncpg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)

    async def _create() -> None:
        conn = await asyncpg.connect(
            user=parsed.username,
            password=parsed.password,
            host=parsed.host,
            port=parsed.port or 5432,
            database="postgres",
        )
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
    choice = resolve_model()
    if config.llm_api_base is None and choice.base_url:
        # OPENAI_API_BASE / OPENAI_BASE_URL alone selects that server (Ollama, vLLM, LM Studio).
        config.llm_api_base = choice.base_url
        if choice.api_key:
            config.extra_env["AGENTRY_RUNNER_LLM_API_KEY"] = choice.api_key
    if not choice.demo and config.llm_api_base in (None, choice.base_url):
        config.default_model = config.default_model or choice.model
    if config.llm_api_base is None and choice.demo:
        from agentry.fakellm import ThreadedFakeLLMServer

        demo_llm = ThreadedFakeLLMServer(ttft_seconds=0.3, tokens_per_second=40)
        demo_llm.start()
        config.llm_api_base = demo_llm.base_url
        config.extra_env["AGENTRY_RUNNER_FORCE_MODEL"] = DEMO_MODEL
    procs = SplitProcesses(config, on_event=lambda message: console.print(f"[yellow]{message}[/]"))
    with console.status("starting services (PostgreSQL, Redis, RabbitMQ)..."):
        procs.start()
    workers = f"{config.workers} worker processes" if config.workers > 1 else "1 worker process"
    console.print(
        f"[bold green]Agentry split mode is running[/] — gateway {procs.gateway_url}, {workers}; "
        f"logs in {procs.log_dir}/ (Ctrl-C stops; a service that dies is restarted)"
    )
    if demo_llm:
        console.print("[yellow]No LLM provider is configured: runs use the scripted demo model.[/]")
    else:
        console.print(
            f"Model: {config.default_model or choice.model} at {config.llm_api_base or 'the provider API'}",
            highlight=False,
            markup=False,
        )
    import threading

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    finally:
        console.print("stopping...")
        procs.stop()
        if demo_llm:
            demo_llm.stop()
