"""The dev overlay, run from its rendered manifests: each container's command and environment
(ConfigMaps and Secrets resolved) becomes a local process, Service names become loopback ports,
the machine's PostgreSQL, Redis and RabbitMQ stand in for the in-cluster ones; the migration Jobs
run first, each Deployment is probed the way its readiness probe says, and the README's tour runs
through the gateway. A wrong env var name, port, command or probe in a manifest fails here."""

from __future__ import annotations

import asyncio
import random
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import orjson
import pytest

from agentry.cli.split import grpc_serving
from agentry.cli.supervisor import ProcessSpec, RestartPolicy, Supervisor

from .manifests import Container, by_kind, containers, dockerfile_targets, render

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.redis, pytest.mark.rabbitmq]

# The in-cluster servers of the dev overlay, by Service name; the machine's stand in for them.
INFRASTRUCTURE = {"postgres": "postgresql", "redis": "redis", "rabbitmq": "amqp"}


def spare_ports(count: int) -> list[int]:
    """Loopback ports below the kernel's ephemeral range (32768+), free now. A port from that
    range (the usual "bind port 0") can be handed to an outgoing connection - a database client's,
    say - between choosing it and the service binding it; these cannot."""
    ports: list[int] = []
    candidates = random.Random().sample(range(20000, 32000), 2000)
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError("no spare loopback ports")


@dataclass
class Cluster:
    """Where each Service of the rendered manifests is reachable on this machine."""

    ports: dict[tuple[str, int], int]  # (service, port) -> loopback port
    infra_urls: dict[str, str]  # scheme -> the machine's server URL
    root: Path

    def rewrite(self, value: str, mounts: dict[str, Path]) -> str:
        parsed = urlparse(value) if "://" in value else None
        if parsed is not None and parsed.hostname in INFRASTRUCTURE:
            scheme = INFRASTRUCTURE[parsed.hostname]
            if parsed.scheme.startswith(scheme):
                return self.infra_urls[scheme]
            return value  # e.g. RabbitMQ's management API: used by KEDA, not by a service
        for (service, port), local in self.ports.items():
            value = re.sub(
                rf"(?<![\w.-]){re.escape(service)}(\.agentry(\.svc(\.cluster\.local)?)?)?:{port}\b",
                f"127.0.0.1:{local}",
                value,
            )
        if value == "0.0.0.0":
            return "127.0.0.1"
        for path, local_dir in mounts.items():
            if value == path or value.startswith(path + "/"):
                return str(local_dir) + value[len(path) :]
        return value


def process_spec(c: Container, cluster: Cluster, *, name: str) -> ProcessSpec:
    target = dockerfile_targets()[c.target]
    command = [*c.spec.get("command", target.entrypoint), *c.spec.get("args", [])]
    assert command[0] == "python", f"{c.name}: the images run python, not {command[0]}"
    workdir = cluster.root / name
    mounts = {m["mountPath"]: workdir / m["name"] for m in c.spec.get("volumeMounts", [])}
    for local in [workdir, *mounts.values()]:
        local.mkdir(parents=True, exist_ok=True)
    bound = {
        str(p["containerPort"]): str(cluster.ports[(name, p["containerPort"])])
        for p in c.spec.get("ports", [])
        if (name, p["containerPort"]) in cluster.ports
    }
    env = {"PATH": "/usr/bin:/bin"}
    for key, value in {**target.env, **{k: v for k, v in c.env.items() if v is not None}}.items():
        if key == "PATH":
            continue
        # The port a container binds is the one it declares: the Service's, here a loopback one.
        value = bound.get(value, value) if key.endswith("_PORT") else value
        env[key] = cluster.rewrite(value, mounts)
    args = command[1:]
    args = [
        bound.get(a, a) if i and args[i - 1] == "--port" else cluster.rewrite(a, mounts) for i, a in enumerate(args)
    ]
    argv = [sys.executable, *args]
    return ProcessSpec(
        name=name,
        argv=argv,
        env=env,
        log_path=cluster.root / "logs" / f"{name}.log",
        healthy=readiness(c, cluster, name),
        cwd=mounts.get(target.workdir, workdir),
    )


def readiness(c: Container, cluster: Cluster, name: str):
    """The container's readiness probe, asked of its process as the kubelet would."""
    probe = c.spec.get("readinessProbe")
    if probe is None:  # a Job's container: nothing to wait for
        return lambda: True
    ports = {p.get("name"): p["containerPort"] for p in c.spec.get("ports", [])}
    if "grpc" in probe:
        local = cluster.ports[(name, probe["grpc"]["port"])]
        return lambda: grpc_serving(local)
    http = probe["httpGet"]
    local = cluster.ports[(name, ports.get(http["port"], http["port"]))]
    url = f"http://127.0.0.1:{local}{http['path']}"
    return lambda: 200 <= httpx.get(url, timeout=2).status_code < 400


def test_dev_overlay_runs_the_readme_tour(tmp_path, postgres_url, redis_url, amqp_url, unique_name):
    started = time.monotonic()
    docs = render("dev", work_dir=tmp_path / "render")
    # The shared queue and stream prefix of the machine's servers: this run's own, via the ConfigMap
    # every service reads them from.
    config = by_kind(docs, "ConfigMap")["agentry-config"]["data"]
    config["queue-name"], config["redis-prefix"] = f"agentry.run-jobs.{unique_name}", f"agentry:{unique_name}:"
    found = containers(docs)
    ours = {c.workload["metadata"]["name"]: c for c in found if c.target is not None}
    services = by_kind(docs, "Service")
    exposed = [
        (name, p["port"]) for name, svc in services.items() if name not in INFRASTRUCTURE for p in svc["spec"]["ports"]
    ]
    # Ports a container binds that no Service exposes (the metrics ports, 9090 in every pod) get a
    # loopback port of their own too: here the pods share one machine.
    exposed += [
        (name, p["containerPort"])
        for name, c in ours.items()
        if c.workload["kind"] == "Deployment"
        for p in c.spec.get("ports", [])
        if (name, p["containerPort"]) not in exposed
    ]
    cluster = Cluster(
        ports=dict(zip(exposed, spare_ports(len(exposed)), strict=True)),
        infra_urls={"postgresql": postgres_url, "redis": redis_url, "amqp": amqp_url},
        root=tmp_path,
    )
    assert {n for n, c in ours.items() if c.workload["kind"] == "Deployment"} == {
        "gateway",
        "auth",
        "billing",
        "sandbox",
        "runner-api",
        "runner-worker",
        "fake-llm",
    }

    # 1. The migration Jobs, to completion (docs/deploy.md applies them before the services).
    jobs = {n: c for n, c in ours.items() if c.workload["kind"] == "Job"}
    assert set(jobs) == {"migrate-auth", "migrate-billing", "migrate-sandbox", "migrate-runner"}
    migrations = Supervisor(
        [process_spec(c, cluster, name=n) for n, c in jobs.items()], log_path=tmp_path / "logs" / "jobs.log"
    )
    migrations.start()
    for name, proc in migrations.procs.items():
        assert proc.wait(120) == 0, f"{name} failed: {(tmp_path / 'logs' / f'{name}.log').read_text()[-3000:]}"
    migrated = time.monotonic() - started

    # 2. Every Deployment at once, as `kubectl apply` starts them; ready when its probe says so.
    deployments = {n: c for n, c in ours.items() if c.workload["kind"] == "Deployment"}
    supervisor = Supervisor(
        [process_spec(c, cluster, name=n) for n, c in deployments.items()],
        log_path=tmp_path / "logs" / "supervisor.log",
        policy=RestartPolicy(),
    )

    def exited(name: str, code: int) -> None:
        log = (tmp_path / "logs" / f"{name}.log").read_text()[-3000:]
        raise AssertionError(f"{name} exited with {code} while starting:\n{log}")

    supervisor.start()
    try:
        became_ready = wait_each_ready(supervisor, timeout=100, on_exit=exited)
        ready = max(became_ready.values())
        for name, c in deployments.items():
            startup = c.spec.get("startupProbe")
            if startup:  # the kubelet would have restarted a pod that took longer than this
                budget = startup["periodSeconds"] * startup["failureThreshold"]
                assert became_ready[name] < budget, (
                    f"{name} took {became_ready[name]:.0f}s, its startupProbe allows {budget}s"
                )
        gateway = f"http://127.0.0.1:{cluster.ports[('gateway', 8000)]}"
        asyncio.run(readme_tour(gateway))
    finally:
        supervisor.stop()
        asyncio.run(_delete_queue(amqp_url, config["queue-name"]))
    print(
        f"\nmanifest launch: migrations {migrated:.1f}s, all ready {ready:.1f}s "
        f"({', '.join(f'{n} {t:.1f}s' for n, t in sorted(became_ready.items(), key=lambda i: i[1]))}), "
        f"total {time.monotonic() - started:.1f}s"
    )


def wait_each_ready(supervisor: Supervisor, *, timeout: float, on_exit) -> dict[str, float]:
    """Seconds until each process first passed its readiness probe."""
    started, ready = time.monotonic(), {}
    while len(ready) < len(supervisor.children):
        for name in supervisor.children.keys() - ready.keys():
            try:  # one look at its probe (and whether it exited)
                supervisor.wait_healthy([name], timeout=0, on_exit=on_exit)
            except TimeoutError:
                continue
            ready[name] = time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not ready within {timeout:.0f}s: {sorted(supervisor.children.keys() - ready.keys())}")
        time.sleep(0.2)
    return ready


async def readme_tour(api_base: str) -> None:
    """README.md's 30-second tour, step by step, through the gateway."""
    async with httpx.AsyncClient(base_url=f"{api_base}/api", timeout=60) as api:
        assert (await api.get("/health")).status_code == 200, "every upstream answers the gateway"
        account = {"email": "me@example.com", "password": "a long password"}
        assert (await api.post("/auth/signup", json=account)).status_code == 201
        token = (await api.post("/auth/token", json=account)).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        thread = (await api.post("/threads", json={}, headers=auth)).json()["thread_id"]
        start = await api.post(
            f"/threads/{thread}/agent/start", json={"prompt": "say hello from the sandbox"}, headers=auth
        )
        assert start.status_code == 202, start.text
        run = start.json()["agent_run_id"]

        events = await sse(api, f"/agent-run/{run}/stream", auth)
        types = [e["type"] for _, e in events]
        assert types[0] == "run_started" and types[-1] == "run_finished", types
        assert events[-1][1]["reason"] == "completed", events[-1][1]
        assert [i for i, _ in events] == [str(n) for n in range(1, len(events) + 1)]
        outputs = [e for _, e in events if e["type"] == "tool_call_finished"]
        assert any("Hello from the Agentry sandbox" in orjson.dumps(e).decode() for e in outputs), (
            "the demo's command ran in the sandbox service"
        )

        resumed = await sse(api, f"/agent-run/{run}/stream", {**auth, "Last-Event-ID": "5"})
        assert [i for i, _ in resumed] == [str(n) for n in range(6, len(events) + 1)]

        whole_thread = await sse(api, f"/threads/{thread}/stream", auth, until="run_finished")
        assert [e["type"] for _, e in whole_thread] == types and whole_thread[0][0] == "1.1"

        messages = await api.get(f"/threads/{thread}/messages", headers=auth)
        assert messages.status_code == 200
        assert "say hello from the sandbox" in messages.text and "notes/hello.txt" in messages.text


async def sse(api: httpx.AsyncClient, path: str, headers: dict, *, until: str | None = None) -> list[tuple[str, dict]]:
    """(id, event) of each event of an SSE stream, to its end or to the first event of type `until`."""
    events, event_id = [], None
    async with api.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                events.append((event_id, orjson.loads(line[5:])))
                if until and events[-1][1]["type"] == until:
                    break
    return events


async def _delete_queue(amqp_url: str, name: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name)
        await channel.queue_delete(f"{name}.dead")
