"""The Starlette app that answers OpenAI's chat-completions API from scripts."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .builtin import BUILTIN_SCRIPTS
from .completion import BadRequest, ChatRequest, Completion, error_body
from .script import Script


class _Pacing:
    """When each token is due: the first after the TTFT, then one every 1/tps seconds."""

    def __init__(self, ttft_seconds: float, tokens_per_second: float | None) -> None:
        self.ttft = max(0.0, ttft_seconds)
        self.interval = 1.0 / tokens_per_second if tokens_per_second and tokens_per_second > 0 else 0.0

    def duration(self, tokens: int) -> float:
        return self.ttft + max(0, tokens - 1) * self.interval

    async def paced(self, items: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, item in enumerate(items):
            delay = start + self.ttft + i * self.interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            yield item


def _json(body: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


def _sse(chunk: Any) -> bytes:
    try:
        return b"data: " + orjson.dumps(chunk) + b"\n\n"
    except orjson.JSONEncodeError:  # scripted text with an unpaired surrogate: sent as a \\uXXXX escape
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"


REQUEST_LOG_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One chat-completion request as the server saw it: when (time.monotonic()), for which
    model, with which messages, and the HTTP status it got."""

    at: float
    model: str
    messages: list[Any]
    status: int


class _Handlers:
    def __init__(
        self, scripts: Mapping[str, Script], ttft_seconds: float, tokens_per_second: float | None, strict: bool
    ) -> None:
        self.scripts = dict(scripts)
        self.ttft_seconds = ttft_seconds
        self.tokens_per_second = tokens_per_second
        self.strict = strict
        # The latest requests only: a load test sends many thousands.
        self.requests: deque[LoggedRequest] = deque(maxlen=REQUEST_LOG_SIZE)

    async def health(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def models(self, request: Request) -> Response:
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "agentry-fakellm"} for name in self.scripts]
        return _json({"object": "list", "data": data})

    async def chat_completions(self, request: Request) -> Response:
        try:
            chat = ChatRequest.parse(await request.body())
        except BadRequest as exc:
            self.requests.append(LoggedRequest(time.monotonic(), "", [], 400))
            return _json(error_body(str(exc), type_="invalid_request_error", code="invalid_request"), 400)
        log = LoggedRequest(time.monotonic(), chat.model, list(chat.messages), 200)
        script = self.scripts.get(chat.model)
        if script is None:
            self.requests.append(_with_status(log, 404))
            message = f"The model `{chat.model}` does not exist. Known models: {', '.join(sorted(self.scripts))}"
            return _json(error_body(message, type_="invalid_request_error", code="model_not_found"), 404)
        if self.strict:
            # Judged as the provider the model is named after would: Anthropic for "claude" names.
            from agentpress.provider_rules import check, family_of

            rejection = check(chat.messages, family_of(chat.model))
            if rejection is not None:
                self.requests.append(_with_status(log, rejection.status))
                return _json(rejection.body, rejection.status)
        turn = script.turn_for(chat.messages)
        if turn.error is not None:
            self.requests.append(_with_status(log, turn.error.status))
            body = turn.error.body or error_body(
                f"scripted error {turn.error.status}",
                type_="requests",
                code="rate_limit_exceeded" if turn.error.status == 429 else "error",
            )
            return Response(
                orjson.dumps(body),
                status_code=turn.error.status,
                media_type="application/json",
                headers=dict(turn.error.headers),
            )
        self.requests.append(log)
        completion = Completion.render(turn, chat)
        pacing = _Pacing(
            self.ttft_seconds if script.ttft_seconds is None else script.ttft_seconds,
            self.tokens_per_second if script.tokens_per_second is None else script.tokens_per_second,
        )
        if not chat.stream:
            await asyncio.sleep(pacing.duration(completion.completion_tokens))
            return _json(completion.as_response())
        return StreamingResponse(
            self._stream(completion, pacing, chat.include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    async def _stream(self, completion: Completion, pacing: _Pacing, include_usage: bool) -> AsyncIterator[bytes]:
        tokens = list(completion.token_chunks(include_usage=include_usage))
        if not tokens:
            await asyncio.sleep(pacing.ttft)
        async for chunk in pacing.paced(tokens):
            yield _sse(chunk)
        for chunk in completion.closing_chunks(include_usage=include_usage):
            yield _sse(chunk)
        yield b"data: [DONE]\n\n"


def create_app(
    scripts: Mapping[str, Script] | None = None,
    *,
    ttft_seconds: float = 0.0,
    tokens_per_second: float | None = None,
    strict: bool = False,
) -> Starlette:
    """Build the server app; the built-in scripts are always there, given ones may add or replace.

    `strict`: every request's history is judged as the provider would (agentpress.provider_rules:
    OpenAI's rules, Anthropic's for a model named like "claude") and refused with that provider's
    400 body. `app.state.requests` logs every chat-completion request (LoggedRequest)."""
    handlers = _Handlers({**BUILTIN_SCRIPTS, **(scripts or {})}, ttft_seconds, tokens_per_second, strict)
    routes = [Route("/health", handlers.health, methods=["GET"])]
    for prefix in ("/v1", ""):
        routes += [
            Route(f"{prefix}/models", handlers.models, methods=["GET"]),
            Route(f"{prefix}/chat/completions", handlers.chat_completions, methods=["POST"]),
        ]
    app = Starlette(routes=routes)
    app.state.requests = handlers.requests
    return app


def _with_status(log: LoggedRequest, status: int) -> LoggedRequest:
    return LoggedRequest(log.at, log.model, log.messages, status)
