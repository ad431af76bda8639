"""The slow-client policy through the gateway, in split mode (Redis event stream, multiplexed reader):
a client that stops reading its SSE stream while the run streams on receives every event, in
order, when it reads again, and the gateway holds no growing buffer for it meanwhile (it reads
the run's events from its own cursor as the client's socket drains: TCP backpressure, then
catch-up by cursor)."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from pathlib import Path

import httpx
import pytest

from agentry.fakellm import Script, ThreadedFakeLLMServer, Turn

TOKENS = 10_000
BURST = Script(turns=(Turn(text=" ".join(f"t{i}" for i in range(TOKENS))),), tokens_per_second=None)


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * 4096 / 2**20


@pytest.fixture
def burst_llm():
    with ThreadedFakeLLMServer({"burst": BURST}) as server:
        yield server


@pytest.fixture
def split(burst_llm, tmp_path, postgres_url, redis_url, amqp_url, unique_name):
    from agentry.cli.split import SplitConfig, SplitProcesses, free_port

    procs = SplitProcesses(
        SplitConfig(
            database_url=postgres_url,
            redis_url=redis_url,
            amqp_url=amqp_url,
            data_dir=tmp_path,
            gateway_port=free_port(),
            grpc_ports={n: free_port() for n in ("auth", "billing", "sandbox", "runner", "worker")},
            llm_api_base=burst_llm.base_url,
            queue_name=f"agentry.runs.{unique_name}",
            redis_prefix=f"agentry:{unique_name}:",
            # One event per token, as before deltas were coalesced: the client must fall far
            # behind a long stream of events (a burst's deltas would merge into a few).
            extra_env={"AGENTRY_RUNNER_DELTA_COALESCE_MS": "0"},
        )
    )
    procs.start()
    try:
        yield procs
    finally:
        procs.stop()


class RawSSE:
    """An SSE client on a socket with a tiny receive buffer, so that not reading really pushes
    back on the gateway (httpx would buffer for us). Decodes chunked transfer encoding."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buffer = b""

    @classmethod
    async def open(cls, url: str, path: str, token: str) -> RawSSE:
        host, port = httpx.URL(url).host, httpx.URL(url).port
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**16)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"chunked" in head.lower()
        return cls(reader, writer)

    async def events(self):
        """Yields (id, data) of each event, as the client reads them."""
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                return
            self.buffer += await self.reader.readexactly(size)
            await self.reader.readexactly(2)
            while b"\n\n" in self.buffer:
                frame, self.buffer = self.buffer.split(b"\n\n", 1)
                fields = dict(line.split(b": ", 1) for line in frame.split(b"\n") if b": " in line)
                if b"id" in fields:
                    yield int(fields[b"id"]), fields[b"data"]

    def close(self) -> None:
        self.writer.close()


async def test_a_client_that_stops_reading_gets_every_event_in_order_and_the_gateway_stays_small(split):
    async with httpx.AsyncClient(base_url=split.gateway_url, timeout=30) as client:
        email = f"slow-{uuid.uuid4().hex[:8]}@example.com"
        await client.post("/api/auth/signup", json={"email": email, "password": "slow client password"})
        token = (
            await client.post("/api/auth/token", json={"email": email, "password": "slow client password"})
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        thread = (await client.post("/api/threads", json={"name": "slow"}, headers=auth)).json()["thread_id"]
        start = await client.post(
            f"/api/threads/{thread}/agent/start", headers=auth, json={"model_name": "openai/burst", "prompt": "go"}
        )
        assert start.status_code == 202, start.text
        run_id = start.json()["agent_run_id"]

        sse = await RawSSE.open(split.gateway_url, f"/api/agent-run/{run_id}/stream", token)
        events = sse.events()
        seen = [await anext(events) for _ in range(5)]

        # Stop reading until the whole run is written; watch the gateway's memory meanwhile.
        gateway = split.procs["gateway"].pid
        rss_before, rss_peak = rss_mb(gateway), 0.0
        deadline = time.monotonic() + 120
        while (await client.get(f"/api/agent-run/{run_id}", headers=auth)).json()["status"] != "completed":
            assert time.monotonic() < deadline, "the run did not finish"
            rss_peak = max(rss_peak, rss_mb(gateway))
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        rss_peak = max(rss_peak, rss_mb(gateway))

        async for event in events:
            seen.append(event)
        sse.close()

    ids = [i for i, _ in seen]
    assert ids == list(range(1, len(ids) + 1)), "every event, in order, none twice"
    assert b'"run_finished"' in seen[-1][1]
    deltas = sum(1 for _, data in seen if b'"text_delta"' in data)
    assert deltas >= TOKENS * 0.9, deltas  # the fake model's words, a delta each (or a few merged)
    assert rss_peak - rss_before < 40, f"the gateway grew {rss_peak - rss_before:.0f} MB for one slow client"
