"""Continuing a run whose host went away mid-step: close every tool call left without a result."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from agentpress.messages import AssistantMessage, Message, ToolCall, ToolResultMessage
from agentpress.tools import ToolRegistry

INTERRUPTED = "interrupted"
INTERRUPTED_OUTPUT = (
    "interrupted: the worker running this call was lost while it ran, so it may or may not have "
    "taken effect. It was not run again; check its effect before repeating it."
)
NOT_RUN_OUTPUT = (
    "not run: the worker was lost before this call ran (or it is read-only and may simply be called again)."
)


def close_interrupted_calls(
    history: Sequence[Message], started: Iterable[ToolCall], registry: ToolRegistry | None = None
) -> list[Message]:
    """The messages that make `history` whole again after a lost worker, to be appended in order.

    `started`: calls the lost host announced as running (`phase` events with a `call`), in
    order. A started call of a non-idempotent tool may have had its effect: it gets a result
    saying it was interrupted, and is never run again. A call that is in the history without a
    result and was not started (or whose tool is idempotent) gets a result saying it did not
    run, so the model may make it again. A started call the history does not hold at all (the
    assistant reply was still streaming) is first added as an assistant message, so its result
    answers a call the model can see. Returns [] when nothing is dangling.
    """
    answered = {m.call_id for m in history if isinstance(m, ToolResultMessage)}
    in_history: dict[str, ToolCall] = {}
    for message in history:
        if isinstance(message, AssistantMessage):
            for call in message.tool_calls:
                in_history[call.call_id] = call
    started_calls = {c.call_id: c for c in started if c.call_id not in answered}

    def _idempotent(call: ToolCall) -> bool:
        tool = registry.get(call.name) if registry is not None else None
        return bool(tool is not None and tool.idempotent)

    out: list[Message] = []
    orphans = [c for cid, c in started_calls.items() if cid not in in_history and not _idempotent(c)]
    if orphans:
        out.append(AssistantMessage(tool_calls=tuple(orphans), finish_reason=INTERRUPTED))
    for call in [*(c for cid, c in in_history.items() if cid not in answered), *orphans]:
        ran = call.call_id in started_calls and not _idempotent(call)
        out.append(
            ToolResultMessage(
                call_id=call.call_id,
                name=call.name,
                output=INTERRUPTED_OUTPUT if ran else NOT_RUN_OUTPUT,
                error=INTERRUPTED,
            )
        )
    return out
