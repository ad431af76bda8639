"""Typed conversation messages, the unit the message store persists and the prompt is built from."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson

from agentpress import safe_text


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, kw_only=True)
class ToolCall:
    """One call the model asked for. `arguments` is the JSON text exactly as the model produced it.

    `call_id` is unique within the thread; when the provider's own id was not (a repeat, or
    unusable), agentpress gave the call a new one and keeps the provider's in `provider_id`."""

    call_id: str
    name: str
    arguments: str
    format: Literal["native", "xml"] = "native"
    provider_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class _MessageBase:
    message_id: str = field(default_factory=_new_id)
    created_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        # Through orjson so nested tuples become lists: the dict is exactly what JSON gives back.
        return orjson.loads(self.to_json())  # type: ignore[no-any-return]

    def to_json(self) -> bytes:
        # Unsafe text (an unpaired surrogate, NUL) is replaced, marked U+FFFD, never a failed run.
        return safe_text.dumps(asdict(self))


@dataclass(frozen=True, kw_only=True)
class UserMessage(_MessageBase):
    text: str
    kind: Literal["user"] = "user"


@dataclass(frozen=True, kw_only=True)
class AssistantMessage(_MessageBase):
    """What the model said in one call. XML tool calls stay inside `text` so replays are faithful."""

    text: str = ""
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    model: str = ""
    finish_reason: str | None = None
    kind: Literal["assistant"] = "assistant"


@dataclass(frozen=True, kw_only=True)
class ToolResultMessage(_MessageBase):
    """The answer to one tool call. `error` is None on success, else the failure kind.

    Failure kinds: "retry" (the tool raised ModelRetry), "invalid_call" (the model broke its
    contract: unknown tool, bad arguments, malformed XML), "tool_failed" (the tool raised),
    "cancelled" (the run was cancelled before the tool finished).
    """

    call_id: str
    name: str
    output: str
    error: str | None = None
    kind: Literal["tool"] = "tool"


@dataclass(frozen=True, kw_only=True)
class StatusMessage(_MessageBase):
    """Bookkeeping that is not part of the dialogue, except `status == "summary"`.

    A summary replaces every message up to and including `data["covers_through"]` (a message_id)
    when the prompt is built; it is stored so the next turn reuses it instead of re-summarising.
    """

    status: str
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    kind: Literal["status"] = "status"


Message = UserMessage | AssistantMessage | ToolResultMessage | StatusMessage

_KINDS: dict[str, type[_MessageBase]] = {
    "user": UserMessage,
    "assistant": AssistantMessage,
    "tool": ToolResultMessage,
    "status": StatusMessage,
}


def message_from_dict(data: dict[str, Any]) -> Message:
    """Inverse of `Message.to_dict()`; raises ValueError on an unknown `kind`."""
    kind = data.get("kind")
    cls = _KINDS.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown message kind: {kind!r}")
    fields = dict(data)
    if cls is AssistantMessage:
        fields["tool_calls"] = tuple(ToolCall(**c) for c in fields.get("tool_calls", ()))
    return cls(**fields)  # type: ignore[return-value]


def message_from_json(raw: bytes | str) -> Message:
    return message_from_dict(orjson.loads(raw))
