"""The probe route (Kubernetes' liveness and readiness) answers while every upstream is down."""

from __future__ import annotations

import contextlib

import httpx

from agentry.cli.split import free_port
from agentry.gateway.config import GatewaySettings
from agentry.gateway.main import start


async def test_live_needs_no_upstream():
    nowhere = f"127.0.0.1:{free_port()}"
    settings = GatewaySettings(
        port=0, auth_target=nowhere, billing_target=nowhere, sandbox_target=nowhere, runner_target=nowhere
    )
    async with contextlib.AsyncExitStack() as stack:
        gateway = await start(settings, stack)
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as client:
            live = await client.get("/api/health/live")
            assert (live.status_code, live.json()) == (200, {"status": "ok"})


async def test_a_websocket_upgrade_is_not_accepted():
    """The gateway has no WebSocket routes, and its server speaks no WebSocket at all: an upgrade
    request is an ordinary request (no 101), answered by the app."""
    nowhere = f"127.0.0.1:{free_port()}"
    settings = GatewaySettings(
        port=0, auth_target=nowhere, billing_target=nowhere, sandbox_target=nowhere, runner_target=nowhere
    )
    async with contextlib.AsyncExitStack() as stack:
        gateway = await start(settings, stack)
        upgrade = {
            "connection": "Upgrade",
            "upgrade": "websocket",
            "sec-websocket-version": "13",
            "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        }
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as client:
            answer = await client.get("/api/health/live", headers=upgrade)
            assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
