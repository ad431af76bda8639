"""Turns a model stream into events and complete tool calls as the chunks arrive."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import orjson

from agentpress.events import Event, ReasoningDelta, TextDelta, ToolCallDelta, ToolCallStarted
from agentpress.history import unique_call_id
from agentpress.messages import AssistantMessage, ToolCall
from agentpress.models import ModelDelta
from agentpress.xml_parser import XmlCall, XmlCallParser, XmlError, XmlText

Emit = Callable[[Event], Awaitable[None]]


@dataclass(frozen=True)
class PendingCall:
    """A complete call; `parse_error` set means the model wrote it wrong and it will not run."""

    call: ToolCall
    parse_error: str | None = None


@dataclass
class _NativeCall:
    index: int
    call_id: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)
    started: bool = False
    provider_id: str | None = None


class StreamProcessor:
    """Consumes ModelDeltas; `on_call` fires once per complete call, in call order.

    A native call is complete when a later call index shows up or the stream ends (providers send
    calls one after another). An XML call is complete at its </invoke>.
    """

    def __init__(
        self,
        emit: Emit,
        on_call: Callable[[PendingCall], None],
        tool_calling: Literal["native", "xml"] = "native",
        model: str = "",
        taken_ids: set[str] | None = None,
    ) -> None:
        """`taken_ids`: call ids the thread already holds; a call whose provider id repeats one
        (or another call of this reply) gets an id of its own (history.unique_call_id)."""
        self._emit = emit
        self._taken = set(taken_ids or ())
        self._on_call = on_call
        self._xml = XmlCallParser() if tool_calling == "xml" else None
        self._native: dict[int, _NativeCall] = {}
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self.calls: list[PendingCall] = []
        self.finish_reason: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.model = model
        self.message_id = str(uuid.uuid4())

    @property
    def text(self) -> str:
        return "".join(self._text)

    async def consume(self, first: ModelDelta | None, rest: AsyncIterator[ModelDelta]) -> None:
        if first is not None:
            await self.feed(first)
        async for delta in rest:
            await self.feed(delta)
        await self.close()

    async def feed(self, delta: ModelDelta) -> None:
        if delta.reasoning:
            self._reasoning.append(delta.reasoning)
            await self._emit(ReasoningDelta(text=delta.reasoning))
        if delta.text:
            self._text.append(delta.text)
            if self._xml is None:
                await self._emit(TextDelta(text=delta.text))
            else:
                await self._handle_xml(self._xml.feed(delta.text))
        for chunk in delta.tool_calls:
            await self._native_chunk(chunk.index, chunk.call_id, chunk.name, chunk.arguments)
        if delta.finish_reason:
            self.finish_reason = delta.finish_reason
        if delta.prompt_tokens is not None:
            self.prompt_tokens = delta.prompt_tokens
        if delta.completion_tokens is not None:
            self.completion_tokens = delta.completion_tokens

    async def close(self) -> None:
        """End of stream: flush held-back XML text and complete every open call."""
        if self._xml is not None:
            await self._handle_xml(self._xml.finish())
        for index in sorted(self._native):
            await self._complete_native(index)

    def message(self, *, partial: bool = False) -> AssistantMessage:
        """The assistant message so far; calls still being written are left out when partial."""
        return AssistantMessage(
            message_id=self.message_id,
            text=self.text,
            reasoning="".join(self._reasoning),
            tool_calls=tuple(p.call for p in self.calls),
            model=self.model,
            finish_reason="interrupted" if partial else self.finish_reason,
        )

    async def _native_chunk(self, index: int, call_id: str | None, name: str | None, arguments: str) -> None:
        for earlier in [i for i in self._native if i < index]:
            await self._complete_native(earlier)
        state = self._native.setdefault(index, _NativeCall(index))
        state.call_id = state.call_id or call_id
        state.name = state.name or name
        if arguments:
            state.arguments.append(arguments)
        if not state.started and state.name:
            state.call_id = self._claim(state)
            state.started = True
            await self._emit(ToolCallStarted(call_id=state.call_id, name=state.name))
            if state.arguments:
                await self._emit(ToolCallDelta(call_id=state.call_id, arguments_delta="".join(state.arguments)))
        elif state.started and arguments:
            await self._emit(ToolCallDelta(call_id=state.call_id or "", arguments_delta=arguments))

    async def _complete_native(self, index: int) -> None:
        state = self._native.pop(index)
        call_id = (state.call_id or "") if state.started else self._claim(state)
        if not state.started:
            await self._emit(ToolCallStarted(call_id=call_id, name=state.name or ""))
        error = None if state.name else "the tool call has no tool name"
        self._add(
            PendingCall(
                ToolCall(
                    call_id=call_id,
                    name=state.name or "",
                    arguments="".join(state.arguments),
                    provider_id=state.provider_id,
                ),
                error,
            )
        )

    def _claim(self, state: _NativeCall) -> str:
        """Once per call: the provider's id if the thread does not hold it yet, else a new one."""
        call_id = unique_call_id(state.call_id, self._taken, f"{self.message_id}:{state.index}")
        if state.call_id and call_id != state.call_id:
            state.provider_id = state.call_id
        return call_id

    async def _handle_xml(self, items: list[XmlText | XmlCall | XmlError]) -> None:
        for item in items:
            if isinstance(item, XmlText):
                await self._emit(TextDelta(text=item.text))
                continue
            call_id = f"xml_{len(self.calls)}_{uuid.uuid4().hex[:8]}"
            if isinstance(item, XmlCall):
                call = ToolCall(
                    call_id=call_id, name=item.name, arguments=orjson.dumps(item.parameters).decode(), format="xml"
                )
                pending = PendingCall(call)
            else:
                call = ToolCall(call_id=call_id, name=item.name or "invalid_xml", arguments="{}", format="xml")
                pending = PendingCall(call, f"your XML tool call could not be parsed: {item.message}")
            await self._emit(ToolCallStarted(call_id=call_id, name=call.name))
            self._add(pending)

    def _add(self, pending: PendingCall) -> None:
        self.calls.append(pending)
        self._on_call(pending)
