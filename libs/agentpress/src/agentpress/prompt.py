"""Renders stored messages into the provider (OpenAI-style) message list LiteLLM expects."""

from __future__ import annotations

from typing import Any

from agentpress.messages import AssistantMessage, Message, StatusMessage, ToolResultMessage, UserMessage

_MISSING = "(no result: the call was interrupted before it finished)"


def render_result(result: ToolResultMessage | None) -> str:
    if result is None:
        return _MISSING
    if result.error is None:
        return result.output
    return f"Error ({result.error}): {result.output}"


def render(system_prompt: str, summary: StatusMessage | None, history: list[Message]) -> list[dict[str, Any]]:
    """System prompt, summary, then history. Each assistant message is followed by the results of
    its calls, in call order, whatever order the store holds them in; a call without a stored
    result gets a placeholder, so a provider never sees a call separated from its result."""
    out: list[dict[str, Any]] = []
    if system_prompt:
        out.append({"role": "system", "content": system_prompt})
    if summary is not None:
        out.append({"role": "user", "content": f"Summary of the earlier conversation:\n{summary.text}"})
    results = {m.call_id: m for m in history if isinstance(m, ToolResultMessage)}
    for message in history:
        if isinstance(message, UserMessage):
            out.append({"role": "user", "content": message.text})
        elif isinstance(message, AssistantMessage):
            out.extend(_render_assistant(message, results))
    return out


def _render_assistant(message: AssistantMessage, results: dict[str, ToolResultMessage]) -> list[dict[str, Any]]:
    native = [c for c in message.tool_calls if c.format == "native"]
    xml = [c for c in message.tool_calls if c.format == "xml"]
    entry: dict[str, Any] = {"role": "assistant", "content": message.text or None}
    if native:
        entry["tool_calls"] = [
            {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments or "{}"}}
            for c in native
        ]
    elif not message.text:
        entry["content"] = ""
    out = [entry]
    out.extend(
        {"role": "tool", "tool_call_id": c.call_id, "content": render_result(results.get(c.call_id))} for c in native
    )
    if xml:
        # XML results go back as one user message: these models have no tool role.
        body = "\n".join(
            f'<tool_result name="{c.name}">\n{render_result(results.get(c.call_id))}\n</tool_result>' for c in xml
        )
        out.append({"role": "user", "content": body})
    return out


def with_cache_markers(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic prompt caching: mark the system prompt (stable prefix) and the newest message
    (so the next call reuses everything up to it). Two of the four breakpoints Anthropic allows."""
    marked = [dict(m) for m in messages]
    targets = [0] if marked and marked[0]["role"] == "system" else []
    if len(marked) > 1:
        targets.append(len(marked) - 1)
    for i in targets:
        content = marked[i].get("content")
        if isinstance(content, str) and content:
            marked[i]["content"] = [{"type": "text", "text": content, "cache_control": {"type": "ephemeral"}}]
    return marked


def is_anthropic(model_name: str) -> bool:
    name = model_name.lower()
    return name.startswith(("anthropic/", "bedrock/anthropic", "vertex_ai/claude")) or "claude" in name
