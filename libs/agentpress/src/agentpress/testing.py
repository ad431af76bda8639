"""Deterministic models for tests and dev mode: they plug in wherever a model string goes."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from agentpress.errors import ModelCallError
from agentpress.models import ModelDelta, ModelRequest, ToolCallChunk
from agentpress.provider_rules import Family, ProviderRejection, check, family_of


class ProviderRejected(ModelCallError):
    """A strict fake model refused the request as the provider would: HTTP 400 with its body."""

    def __init__(self, rejection: ProviderRejection) -> None:
        super().__init__(
            f"the provider rejected the request: {rejection.message}", kind="bad_request", status=rejection.status
        )
        self.rejection = rejection
        self.body = rejection.body


@dataclass(frozen=True)
class ScriptedCall:
    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    call_id: str | None = None

    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else orjson.dumps(self.arguments).decode()


@dataclass(frozen=True)
class ScriptedReply:
    """One model reply. `finish_reason` defaults to "tool_calls" with calls, else "stop"."""

    text: str = ""
    tool_calls: Sequence[ScriptedCall] = ()
    reasoning: str = ""
    finish_reason: str | None = None


Reply = ScriptedReply | str | BaseException


def xml_call(name: str, **parameters: Any) -> str:
    """The XML a model without native tool calling would write for one call."""
    params = "".join(
        f'<parameter name="{k}">{v if isinstance(v, str) else orjson.dumps(v).decode()}</parameter>\n'
        for k, v in parameters.items()
    )
    return f'<function_calls>\n<invoke name="{name}">\n{params}</invoke>\n</function_calls>'


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] if text else []


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


class _StreamingModel:
    """Streams a reply the way a provider does: small deltas, call arguments split by index.

    Strict by default: a request whose history OpenAI (or, for a model named like Claude,
    Anthropic) would refuse raises ProviderRejected with that provider's 400 body, and is kept in
    `rejections`. `strict`: True (the family from the name), "openai", "anthropic", or False."""

    def __init__(
        self,
        name: str,
        chunk_size: int,
        delay: float,
        tool_calling: Literal["native", "xml"],
        context_window: int | None,
        cost_per_token: float,
        strict: bool | Family = True,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.strict: Family | None = (family_of(name) if strict is True else strict) or None
        self.rejections: list[ProviderRejection] = []
        self.name = name
        self.context_window = context_window
        self.requests: list[ModelRequest] = []
        self._chunk = chunk_size
        self._delay = delay
        self._format = tool_calling
        self._cost_per_token = cost_per_token

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens + completion_tokens) * self._cost_per_token

    async def _reply(self, request: ModelRequest) -> Reply:
        raise NotImplementedError

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta]:
        self.requests.append(request)
        if self.strict is not None and (rejection := check(request.messages, self.strict)) is not None:
            self.rejections.append(rejection)
            raise ProviderRejected(rejection)
        reply = await self._reply(request)
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, str):
            reply = ScriptedReply(text=reply)
        text = reply.text
        if self._format == "xml" and reply.tool_calls:
            text += "".join(
                xml_call(c.name, **(c.arguments if isinstance(c.arguments, dict) else {})) for c in reply.tool_calls
            )
        for piece in _pieces(reply.reasoning, self._chunk):
            yield await self._paced(ModelDelta(reasoning=piece))
        for piece in _pieces(text, self._chunk):
            yield await self._paced(ModelDelta(text=piece))
        native = reply.tool_calls if self._format == "native" else ()
        for index, call in enumerate(native):
            args = _pieces(call.arguments_json(), self._chunk) or [""]
            call_id = call.call_id or f"call_{len(self.requests)}_{index}"
            yield await self._paced(ModelDelta(tool_calls=(ToolCallChunk(index, call_id, call.name, args[0]),)))
            for piece in args[1:]:
                yield await self._paced(ModelDelta(tool_calls=(ToolCallChunk(index, arguments=piece),)))
        finish = reply.finish_reason or ("tool_calls" if native else "stop")
        prompt = _estimate_tokens(orjson.dumps(request.messages).decode())
        completion = _estimate_tokens(text + reply.reasoning + "".join(c.arguments_json() for c in native))
        yield ModelDelta(finish_reason=finish, prompt_tokens=prompt, completion_tokens=completion)

    async def _paced(self, delta: ModelDelta) -> ModelDelta:
        # Always yield to the loop, so a stream without delay can still be cancelled between chunks.
        await asyncio.sleep(self._delay)
        return delta


class ScriptedModel(_StreamingModel):
    """Replies from a list, in order; an exception in the list is raised by that call."""

    def __init__(
        self,
        replies: Sequence[Reply],
        *,
        name: str = "scripted",
        chunk_size: int = 8,
        delay: float = 0.0,
        tool_calling: Literal["native", "xml"] = "native",
        context_window: int | None = None,
        cost_per_token: float = 0.0,
        strict: bool | Family = True,
    ) -> None:
        super().__init__(name, chunk_size, delay, tool_calling, context_window, cost_per_token, strict)
        self._replies = list(replies)
        self._next = 0

    @property
    def remaining(self) -> int:
        return len(self._replies) - self._next

    async def _reply(self, request: ModelRequest) -> Reply:
        if self._next >= len(self._replies):
            raise ModelCallError(f"{self.name}: no scripted reply left for call {self._next + 1}")
        reply = self._replies[self._next]
        self._next += 1
        return reply


class FunctionModel(_StreamingModel):
    """A Python function (sync or async) decides each reply from the request it is sent."""

    def __init__(
        self,
        function: Callable[[ModelRequest], Reply | Awaitable[Reply]],
        *,
        name: str = "function",
        chunk_size: int = 8,
        delay: float = 0.0,
        tool_calling: Literal["native", "xml"] = "native",
        context_window: int | None = None,
        cost_per_token: float = 0.0,
        strict: bool | Family = True,
    ) -> None:
        super().__init__(name, chunk_size, delay, tool_calling, context_window, cost_per_token, strict)
        self._function = function

    async def _reply(self, request: ModelRequest) -> Reply:
        reply = self._function(request)
        if inspect.isawaitable(reply):
            reply = await reply
        return reply
