"""OpenAI chat-completion shapes: parse a request, render a turn, emit the answer or its chunks."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .script import TemplateContext, Turn, message_text

# One streamed argument fragment; real models send a few characters per token.
ARGUMENT_PIECE_CHARS = 8


class BadRequest(ValueError):
    """The request body is not a chat-completion request we can answer."""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: list[Mapping[str, Any]]
    stream: bool = False
    include_usage: bool = False

    @classmethod
    def parse(cls, body: bytes) -> ChatRequest:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise BadRequest("the body must be a JSON object")
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("'model' is required and must be a string")
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' is required and must be a non-empty list")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise BadRequest(f"messages[{i}] must be an object with a string 'role'")
        stream = data.get("stream", False)
        if not isinstance(stream, bool):
            raise BadRequest("'stream' must be a boolean")
        options = data.get("stream_options") or {}
        if not isinstance(options, dict):
            raise BadRequest("'stream_options' must be an object")
        return cls(
            model=model.removeprefix("openai/"),
            messages=messages,
            stream=stream,
            include_usage=bool(options.get("include_usage", False)),
        )


@dataclass(frozen=True, slots=True)
class RenderedToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it


@dataclass(frozen=True, slots=True)
class Completion:
    """One rendered answer; the same content serves the plain and the streamed form."""

    id: str
    created: int
    model: str
    text: str | None
    tool_calls: tuple[RenderedToolCall, ...]
    prompt_tokens: int

    @classmethod
    def render(cls, turn: Turn, request: ChatRequest) -> Completion:
        context = TemplateContext.from_messages(request.messages)
        return cls(
            id=f"chatcmpl-{uuid.uuid4().hex[:24]}",
            created=int(time.time()),
            model=request.model,
            text=context.render(turn.text) if turn.text is not None else None,
            tool_calls=tuple(
                RenderedToolCall(
                    id=call.id or f"call_{uuid.uuid4().hex[:24]}",
                    name=call.name,
                    arguments=call.raw_arguments
                    if call.raw_arguments is not None
                    else orjson.dumps(context.render(call.arguments)).decode(),
                )
                for call in turn.tool_calls
            ),
            prompt_tokens=sum(count_words(message_text(m.get("content"))) for m in request.messages),
        )

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"

    @property
    def completion_tokens(self) -> int:
        """Each streamed delta is one token, so the plain and streamed answers agree."""
        return len(self._deltas())

    def usage(self) -> dict[str, int]:
        completion = self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def as_response(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason, "logprobs": None}],
            "usage": self.usage(),
        }

    def token_chunks(self, *, include_usage: bool = False) -> Iterator[dict[str, Any]]:
        """The chunks that carry content, one token each; the first also carries the role."""
        for i, delta in enumerate(self._deltas()):
            if i == 0:
                delta = {"role": "assistant", **delta}
            yield self._chunk(delta, None, include_usage)

    def closing_chunks(self, *, include_usage: bool = False) -> Iterator[dict[str, Any]]:
        """The finish_reason chunk and, when asked for, the usage chunk (no choices)."""
        if not self._deltas():
            yield self._chunk({"role": "assistant", "content": ""}, None, include_usage)
        yield self._chunk({}, self.finish_reason, include_usage)
        if include_usage:
            chunk = self._chunk({}, None, False)
            chunk["choices"] = []
            chunk["usage"] = self.usage()
            yield chunk

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None, include_usage: bool) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
        }
        if include_usage:
            chunk["usage"] = None
        return chunk

    def _deltas(self) -> list[dict[str, Any]]:
        deltas: list[dict[str, Any]] = [{"content": token} for token in split_words(self.text or "")]
        for index, call in enumerate(self.tool_calls):
            deltas.append(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": ""},
                        }
                    ]
                }
            )
            for piece in split_arguments(call.arguments):
                deltas.append({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        return deltas


_WORD = re.compile(r"\S+\s*|\s+")
_ARGUMENT_PIECE = re.compile(rf".{{1,{ARGUMENT_PIECE_CHARS}}}", re.DOTALL)


def split_words(text: str) -> list[str]:
    """Word tokens whose concatenation is exactly the text."""
    return _WORD.findall(text)


def split_arguments(arguments: str) -> list[str]:
    return _ARGUMENT_PIECE.findall(arguments)


def count_words(text: str) -> int:
    return len(text.split())


def error_body(message: str, *, type_: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}
