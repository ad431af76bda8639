from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest


def _sse_events(body: bytes) -> list[dict | str]:
    events: list[dict | str] = []
    for line in body.split(b"\n"):
        if line.startswith(b"data: "):
            payload = line[len(b"data: ") :]
            events.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    return events


@pytest.fixture
def sse_events() -> Callable[[bytes], list[dict | str]]:
    """Split an SSE body into its payloads: decoded chunks and the literal "[DONE]"."""
    return _sse_events
