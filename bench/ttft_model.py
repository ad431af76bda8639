"""ttft.py's fake model: the fake LLM in its own process, noting per run when the request arrived
and when the first token left (`python bench/ttft_model.py PORT TTFT_MS[,TTFT_MS...]` serves it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx
import orjson

ANSWER = "The benchmark answer arrives now, token by token."
now = time.monotonic


def model_for(ttft_ms: float) -> str:
    return f"bench-ttft{ttft_ms:g}"


class MarkingApp:
    """Wraps the fake LLM app: per run tag, when the completion request arrived and when the first
    body chunk (the first token) was handed to the server. GET /bench/marks returns and clears them."""

    def __init__(self, app) -> None:
        self.app = app
        self.marks: dict[str, tuple[float, float | None]] = {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] == "/bench/marks":
            body = orjson.dumps(self.marks)
            self.marks = {}
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": body})
            return None
        if not scope["path"].endswith("/chat/completions"):
            return await self.app(scope, receive, send)
        arrived = now()
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        tag = _tag_of(body)
        replayed = False
        first: float | None = None

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def marking_send(message) -> None:
            nonlocal first
            if first is None and message["type"] == "http.response.body" and message.get("body"):
                first = now()
            await send(message)

        await self.app(scope, replay, marking_send)
        if tag and tag not in self.marks:
            self.marks[tag] = (arrived, first)
        return None


def _tag_of(body: bytes) -> str | None:
    try:
        messages = orjson.loads(body).get("messages") or []
    except (orjson.JSONDecodeError, AttributeError):
        return None
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            if isinstance(content, str) and content.startswith("bench "):
                return content.split()[1]
            return None
    return None


def serve_fakellm(port: int, ttfts_ms: list[float]) -> None:
    import uvicorn

    from agentry.fakellm import Script, Turn, create_app

    scripts = {model_for(ms): Script(turns=(Turn(text=ANSWER),), ttft_seconds=ms / 1000) for ms in ttfts_ms}
    app = MarkingApp(create_app(scripts))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")


class FakeLLMProcess:
    def __init__(self, ttfts_ms: list[float], log_dir: Path) -> None:
        from agentry.cli.split import free_port

        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        log = open(log_dir / "fakellm.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(self.port), ",".join(f"{ms:g}" for ms in ttfts_ms)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = now() + 30
        while now() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fake LLM exited with {self.proc.returncode}; see {log_dir / 'fakellm.log'}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError("the fake LLM did not start")

    async def marks(self) -> dict[str, tuple[float, float | None]]:
        async with httpx.AsyncClient(timeout=10) as client:
            return (await client.get(f"http://127.0.0.1:{self.port}/bench/marks")).json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


if __name__ == "__main__":
    serve_fakellm(int(sys.argv[1]), [float(x) for x in sys.argv[2].split(",")])
