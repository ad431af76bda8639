"""Sandboxes: create and first-exec latency, exec round trip through gateway -> sandbox service,
and a large file up and down through the gateway with each process's peak memory.

Every service runs in its own process (auth for tokens, sandbox, gateway; SQLite, local
provider with bubblewrap when it works), so each one's peak RSS (VmHWM) is its own.

    uv run python bench/sandbox.py --creates 20 --execs 200 --transfer-mib 1024 --exec-output-mib 100

- create / first exec: CreateSandbox for a new project (directory, metadata), then the first
  `true` in it (bubblewrap namespaces, prlimit, setpriv), over gRPC from this process.
- exec round trip: `echo hi` over gRPC Exec to the sandbox service, the path the agent's shell
  tool takes (runner -> sandbox); then the same over HTTP, POST /api/sandboxes/{id}/exec (client
  -> gateway -> sandbox service, the answer read whole).
- transfer: POST /api/sandboxes/{id}/files (multipart, streamed from a generator) then
  GET .../files/content (streamed, hashed, discarded); peak RSS of gateway, sandbox and client.
- exec output: a command writing --exec-output-mib MiB to stdout, read over gRPC Exec.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from agentry.api.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc
from agentry.servicekit import DEV_INTERNAL_TOKEN, open_channel

CHUNK = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class Services:
    def __init__(self, data: Path, upload_limit: int, output_limit: int) -> None:
        self.data = data
        self.ports = {name: free_port() for name in ("auth", "sandbox", "gateway")}
        base = {
            "PATH": os.environ["PATH"],
            "AGENTRY_DEV_MODE": "true",
            "AGENTRY_LOG_LEVEL": "WARNING",
            "UV_PYTHON_DOWNLOADS": "never",
            "HOME": os.environ.get("HOME", "/tmp"),
        }
        self.env = {
            "auth": {
                **base,
                "AGENTRY_AUTH_PORT": str(self.ports["auth"]),
                "AGENTRY_AUTH_DATABASE_URL": f"sqlite+aiosqlite:///{data}/auth.db",
                "AGENTRY_AUTH_KEY_PATH": str(data / "key.pem"),
            },
            "sandbox": {
                **base,
                "AGENTRY_SANDBOX_PORT": str(self.ports["sandbox"]),
                "AGENTRY_SANDBOX_DATABASE_URL": f"sqlite+aiosqlite:///{data}/sandbox.db",
                "AGENTRY_SANDBOX_ROOT_DIR": str(data / "sandboxes"),
                "AGENTRY_SANDBOX_ALLOW_UNISOLATED": "true",
                "AGENTRY_SANDBOX_MAX_UPLOAD_BYTES": str(upload_limit),
                "AGENTRY_SANDBOX_MAX_OUTPUT_BYTES": str(output_limit),
                "AGENTRY_SANDBOX_DISK_MB": str(upload_limit // CHUNK * 2 + 64),
                "AGENTRY_SANDBOX_MAX_DISK_MB": str(upload_limit // CHUNK * 2 + 64),
            },
            "gateway": {
                **base,
                "AGENTRY_GATEWAY_PORT": str(self.ports["gateway"]),
                "AGENTRY_GATEWAY_AUTH_TARGET": f"127.0.0.1:{self.ports['auth']}",
                "AGENTRY_GATEWAY_SANDBOX_TARGET": f"127.0.0.1:{self.ports['sandbox']}",
                "AGENTRY_GATEWAY_MAX_UPLOAD_BYTES": str(upload_limit),
            },
        }
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        for name in ("auth", "sandbox", "gateway"):
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", f"agentry.{name}"], env=self.env[name], cwd=self.data
            )
        for name, port in self.ports.items():
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
                if self.procs[name].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start")
                time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)


async def exec_once(stub, account: str, sandbox_id: str, command: str) -> int:
    size = 0
    async for chunk in stub.Exec(
        sandbox_pb2.ExecRequest(account_id=account, sandbox_id=sandbox_id, command=command, timeout_seconds=600)
    ):
        size += len(chunk.output)
    return size


async def main(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="agentry-bench-sandbox-"))
    os.chmod(data, 0o755)
    upload = args.transfer_mib * CHUNK
    services = Services(data, upload_limit=max(upload, CHUNK), output_limit=(args.exec_output_mib + 1) * CHUNK)
    services.start()
    report: list[str] = []
    try:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{services.ports['gateway']}", timeout=600) as http,
            open_channel(f"127.0.0.1:{services.ports['sandbox']}", DEV_INTERNAL_TOKEN) as channel,
        ):
            stub = sandbox_pb2_grpc.SandboxServiceStub(channel)
            signup = (
                await http.post("/api/auth/signup", json={"email": "bench@example.com", "password": "bench password 1"})
            ).json()
            token = (
                await http.post("/api/auth/token", json={"email": "bench@example.com", "password": "bench password 1"})
            ).json()
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            account = signup["account_id"]

            creates, firsts = [], []
            for i in range(args.creates):
                t0 = time.perf_counter()
                box = await stub.CreateSandbox(
                    sandbox_pb2.CreateSandboxRequest(account_id=account, project_id=f"bench-{i}")
                )
                t1 = time.perf_counter()
                await exec_once(stub, account, box.sandbox_id, "true")
                t2 = time.perf_counter()
                creates.append((t1 - t0) * 1000)
                firsts.append((t2 - t1) * 1000)
            report.append(f"create: p50 {pct(creates, 50):.1f} ms, p99 {pct(creates, 99):.1f} ms (n={len(creates)})")
            report.append(f"first exec: p50 {pct(firsts, 50):.1f} ms, p99 {pct(firsts, 99):.1f} ms")

            box = await stub.CreateSandbox(sandbox_pb2.CreateSandboxRequest(account_id=account, project_id="bench"))
            rtts = []
            for _ in range(args.execs):
                t0 = time.perf_counter()
                await exec_once(stub, account, box.sandbox_id, "echo hi")
                rtts.append((time.perf_counter() - t0) * 1000)
            report.append(
                f"exec round trip (echo hi): p50 {pct(rtts, 50):.1f} ms, p99 {pct(rtts, 99):.1f} ms, "
                f"mean {statistics.mean(rtts):.1f} ms (n={len(rtts)})"
            )
            # The sandbox belongs to the bench's account (CreateSandbox above), so the gateway lets it exec.
            http_rtts = []
            for _ in range(args.execs):
                t0 = time.perf_counter()
                ran = await http.post(
                    f"/api/sandboxes/{box.sandbox_id}/exec", headers=headers, json={"command": "echo hi"}
                )
                http_rtts.append((time.perf_counter() - t0) * 1000)
                assert ran.status_code == 200 and '"exit_code":0' in ran.text, ran.text
            report.append(
                f"exec round trip over HTTP (POST /api/sandboxes/{{id}}/exec, gateway -> sandbox): "
                f"p50 {pct(http_rtts, 50):.1f} ms, p99 {pct(http_rtts, 99):.1f} ms, "
                f"mean {statistics.mean(http_rtts):.1f} ms (n={len(http_rtts)})"
            )

            if args.transfer_mib:
                digest = hashlib.sha256()

                boundary = "agentrybenchboundary"

                async def body():  # multipart built as it is sent: the file is never whole here
                    yield (
                        f'--{boundary}\r\nContent-Disposition: form-data; name="path"\r\n\r\nbig.bin\r\n'
                        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
                        "Content-Type: application/octet-stream\r\n\r\n"
                    ).encode()
                    block = os.urandom(CHUNK)
                    for _ in range(args.transfer_mib):
                        digest.update(block)
                        yield block
                    yield f"\r\n--{boundary}--\r\n".encode()

                t0 = time.perf_counter()
                up = await http.post(
                    f"/api/sandboxes/{box.sandbox_id}/files",
                    content=body(),
                    headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
                )
                t1 = time.perf_counter()
                assert up.status_code == 201, up.text
                down = hashlib.sha256()
                size = 0
                async with http.stream(
                    "GET", f"/api/sandboxes/{box.sandbox_id}/files/content", params={"path": "big.bin"}, headers=headers
                ) as response:
                    async for chunk in response.aiter_raw():
                        down.update(chunk)
                        size += len(chunk)
                t2 = time.perf_counter()
                assert size == upload and down.hexdigest() == digest.hexdigest()
                report.append(
                    f"upload {args.transfer_mib} MiB: {t1 - t0:.1f} s ({args.transfer_mib / (t1 - t0):.0f} MiB/s); "
                    f"download: {t2 - t1:.1f} s ({args.transfer_mib / (t2 - t1):.0f} MiB/s); sha256 equal"
                )

            if args.exec_output_mib:
                t0 = time.perf_counter()
                size = await exec_once(
                    stub, account, box.sandbox_id, f"head -c {args.exec_output_mib * CHUNK} /dev/zero"
                )
                t1 = time.perf_counter()
                assert size == args.exec_output_mib * CHUNK, size
                report.append(f"exec output {args.exec_output_mib} MiB over gRPC: {t1 - t0:.1f} s")

            peaks = {name: peak_rss_mib(proc.pid) for name, proc in services.procs.items()}
            nows = {name: rss_mib(proc.pid) for name, proc in services.procs.items()}
            client_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            report.append(
                "peak RSS (VmHWM): "
                + ", ".join(f"{n} {v:.0f} MiB" for n, v in peaks.items())
                + f", client {client_peak:.0f} MiB"
            )
            report.append("RSS at the end: " + ", ".join(f"{n} {v:.0f} MiB" for n, v in nows.items()))
    finally:
        services.stop()
        subprocess.run(["rm", "-rf", str(data)], check=False)
    print("\n".join(report))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=20)
    parser.add_argument("--execs", type=int, default=200)
    parser.add_argument("--transfer-mib", type=int, default=1024)
    parser.add_argument("--exec-output-mib", type=int, default=100)
    asyncio.run(main(parser.parse_args()))
