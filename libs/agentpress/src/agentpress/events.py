"""Typed run events; the SSE stream carries `event.to_dict()` unchanged."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal

import orjson

from agentpress import safe_text
from agentpress.messages import Message, ToolCall, message_from_dict


class FinishReason(StrEnum):
    COMPLETED = "completed"
    ASKED_USER = "asked_user"
    STEP_LIMIT = "step_limit"
    CANCELLED = "cancelled"
    BUDGET_EXCEEDED = "budget_exceeded"
    ERROR = "error"
    # The model replied with nothing (no text, no tool call) twice in a row: the run failed.
    EMPTY_RESPONSE = "empty_response"
    # Set by hosts, not by the loop: the run exceeded its duration or idle limit, or it waited
    # for the user longer than allowed.
    TIMEOUT = "timeout"
    EXPIRED = "expired"
    # Not an end: the run waits for the user (a question, or a call to approve). Agent.run
    # returns it after emitting requires_action, without run_finished.
    REQUIRES_ACTION = "requires_action"


@dataclass(frozen=True, kw_only=True)
class _EventBase:
    def to_dict(self) -> dict[str, Any]:
        return orjson.loads(self.to_json())  # type: ignore[no-any-return]

    def to_json(self) -> bytes:
        # orjson encodes the dataclass itself (fields in order, enums by value), ~10x cheaper
        # than asdict(); unsafe text (an unpaired surrogate) makes it refuse, and then the text is
        # replaced, marked U+FFFD, never a failed run.
        try:
            return orjson.dumps(self)
        except orjson.JSONEncodeError:
            return safe_text.dumps(asdict(self))


@dataclass(frozen=True, kw_only=True)
class RunStarted(_EventBase):
    run_id: str
    thread_id: str
    model: str
    type: Literal["run_started"] = "run_started"


@dataclass(frozen=True, kw_only=True)
class TextDelta(_EventBase):
    text: str
    type: Literal["text_delta"] = "text_delta"


@dataclass(frozen=True, kw_only=True)
class ReasoningDelta(_EventBase):
    text: str
    type: Literal["reasoning_delta"] = "reasoning_delta"


@dataclass(frozen=True, kw_only=True)
class ToolCallStarted(_EventBase):
    call_id: str
    name: str
    type: Literal["tool_call_started"] = "tool_call_started"


@dataclass(frozen=True, kw_only=True)
class ToolCallDelta(_EventBase):
    call_id: str
    arguments_delta: str
    type: Literal["tool_call_delta"] = "tool_call_delta"


@dataclass(frozen=True, kw_only=True)
class ToolCallFinished(_EventBase):
    call_id: str
    name: str
    arguments: dict[str, Any]
    output: str
    error: str | None
    duration_ms: float
    type: Literal["tool_call_finished"] = "tool_call_finished"


@dataclass(frozen=True, kw_only=True)
class MessageCompleted(_EventBase):
    message: Message
    type: Literal["message_completed"] = "message_completed"


@dataclass(frozen=True, kw_only=True)
class UsageReported(_EventBase):
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    type: Literal["usage"] = "usage"


@dataclass(frozen=True, kw_only=True)
class PhaseChanged(_EventBase):
    """What the run is doing now. `phase`: calling_model, running_tool (with `tool` and the
    `call` being run), or a phase the host adds (waiting_for_worker, starting, starting_sandbox,
    resumed, waiting_for_user). `at`: epoch seconds."""

    phase: str
    tool: str | None = None
    call: ToolCall | None = None
    at: float = field(default_factory=time.time)
    type: Literal["phase"] = "phase"


@dataclass(frozen=True, kw_only=True)
class RunResumed(_EventBase):
    """The run continues on another worker (`attempt` 2, 3, ...) from its persisted messages.
    `reason`: worker_lost (its lease lapsed) or handed_back (its worker shut down). Deltas of a
    message that was still streaming when the worker went away are superseded by what follows."""

    attempt: int
    reason: str
    type: Literal["run_resumed"] = "run_resumed"


@dataclass(frozen=True, kw_only=True)
class RequiresAction(_EventBase):
    """The run waits for the user. `pending`: {"kind": "question", "question", "call_id"} (the
    ask tool) or {"kind": "approval", "tool", "arguments", "call_id"} (a tool that requires
    approval). The run continues after the host resolves it (Agent.resolve_pending)."""

    pending: dict[str, Any]
    type: Literal["requires_action"] = "requires_action"


@dataclass(frozen=True, kw_only=True)
class RunFinished(_EventBase):
    reason: FinishReason
    error: str | None = None
    type: Literal["run_finished"] = "run_finished"


Event = (
    RunStarted
    | TextDelta
    | ReasoningDelta
    | ToolCallStarted
    | ToolCallDelta
    | ToolCallFinished
    | MessageCompleted
    | UsageReported
    | PhaseChanged
    | RunResumed
    | RequiresAction
    | RunFinished
)

_TYPES: dict[str, type[_EventBase]] = {
    cls.__dataclass_fields__["type"].default: cls  # type: ignore[misc]
    for cls in (
        RunStarted,
        TextDelta,
        ReasoningDelta,
        ToolCallStarted,
        ToolCallDelta,
        ToolCallFinished,
        MessageCompleted,
        UsageReported,
        PhaseChanged,
        RunResumed,
        RequiresAction,
        RunFinished,
    )
}


def event_from_dict(data: dict[str, Any]) -> Event:
    """Inverse of `Event.to_dict()`; ignores the `seq` the runner adds to the stream."""
    fields = {k: v for k, v in data.items() if k != "seq"}
    cls = _TYPES.get(fields.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown event type: {fields.get('type')!r}")
    if cls is MessageCompleted:
        fields["message"] = message_from_dict(fields["message"])
    if cls is PhaseChanged and fields.get("call") is not None:
        fields["call"] = ToolCall(**fields["call"])
    if cls is RunFinished:
        fields["reason"] = FinishReason(fields["reason"])
    return cls(**fields)  # type: ignore[return-value]
