"""Scripts: what the fake model answers, turn by turn, and how a request picks its turn."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

TOOL_OUTPUT_LIMIT = 200


class ScriptError(ValueError):
    """A script file or script JSON does not have the expected shape."""


@dataclass(frozen=True, slots=True)
class ScriptedToolCall:
    """`id`: the call id to send (a fresh one when None; repeat one to script a duplicate).
    `raw_arguments`: the arguments text sent as is instead of `arguments` (to script a model
    that writes cut-off JSON, `[]` or `null`)."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None
    raw_arguments: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> ScriptedToolCall:
        if not isinstance(data, Mapping) or not isinstance(data.get("name"), str):
            raise ScriptError(f"a tool call needs a string 'name': {data!r}")
        arguments = data.get("arguments", {})
        if not isinstance(arguments, Mapping):
            raise ScriptError(f"tool call {data['name']!r}: 'arguments' must be an object")
        call_id, raw = data.get("id"), data.get("raw_arguments")
        if call_id is not None and not isinstance(call_id, str):
            raise ScriptError(f"tool call {data['name']!r}: 'id' must be a string")
        if raw is not None and not isinstance(raw, str):
            raise ScriptError(f"tool call {data['name']!r}: 'raw_arguments' must be a string")
        return cls(name=data["name"], arguments=dict(arguments), id=call_id, raw_arguments=raw)


@dataclass(frozen=True, slots=True)
class ScriptedError:
    """An error answer instead of a completion: HTTP `status` with `headers` (e.g. Retry-After)
    and `body` (an OpenAI error body when None)."""

    status: int = 429
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Any) -> ScriptedError:
        if not isinstance(data, Mapping) or not isinstance(data.get("status", 429), int):
            raise ScriptError(f"an error needs an integer 'status': {data!r}")
        headers = data.get("headers") or {}
        body = data.get("body")
        if not isinstance(headers, Mapping) or (body is not None and not isinstance(body, Mapping)):
            raise ScriptError("an error's 'headers' and 'body' must be objects")
        return cls(status=data.get("status", 429), headers={str(k): str(v) for k, v in headers.items()}, body=body)


@dataclass(frozen=True, slots=True)
class Turn:
    """What the model answers; `error` set: the request fails with it instead."""

    text: str | None = None
    tool_calls: tuple[ScriptedToolCall, ...] = ()
    error: ScriptedError | None = None

    @classmethod
    def from_json(cls, data: Any) -> Turn:
        if not isinstance(data, Mapping):
            raise ScriptError(f"a turn must be an object: {data!r}")
        text = data.get("text")
        if text is not None and not isinstance(text, str):
            raise ScriptError(f"a turn's 'text' must be a string: {text!r}")
        calls = data.get("tool_calls") or []
        if not isinstance(calls, Sequence) or isinstance(calls, str):
            raise ScriptError("a turn's 'tool_calls' must be a list")
        error = ScriptedError.from_json(data["error"]) if data.get("error") is not None else None
        return cls(text=text, tool_calls=tuple(ScriptedToolCall.from_json(c) for c in calls), error=error)


@dataclass(frozen=True, slots=True)
class Script:
    """The turns of one scripted model; pacing fields override the server's when set."""

    turns: tuple[Turn, ...]
    ttft_seconds: float | None = None
    tokens_per_second: float | None = None

    def __post_init__(self) -> None:
        if not self.turns:
            raise ScriptError("a script needs at least one turn")

    @classmethod
    def from_json(cls, data: Any) -> Script:
        """Accept a bare list of turns or {"turns": [...], "ttft_seconds", "tokens_per_second"}."""
        if isinstance(data, Mapping):
            turns = data.get("turns")
            ttft = data.get("ttft_seconds")
            tps = data.get("tokens_per_second")
        else:
            turns, ttft, tps = data, None, None
        if not isinstance(turns, Sequence) or isinstance(turns, str):
            raise ScriptError("a script must be a list of turns")
        return cls(
            turns=tuple(Turn.from_json(t) for t in turns),
            ttft_seconds=None if ttft is None else float(ttft),
            tokens_per_second=None if tps is None else float(tps),
        )

    def turn_for(self, messages: Sequence[Mapping[str, Any]]) -> Turn:
        """Pick the turn statelessly: assistant messages since the last user message.

        Models without native tool calling get tool results back as user messages made of
        `<tool_result>` blocks; those continue the turn rather than start a new conversation.
        """
        index = 0
        for message in reversed(messages):
            role = message.get("role")
            if role == "user" and not is_xml_tool_result(message):
                break
            if role == "assistant":
                index += 1
        return self.turns[min(index, len(self.turns) - 1)]


def is_xml_tool_result(message: Mapping[str, Any]) -> bool:
    return message_text(message.get("content")).lstrip().startswith("<tool_result")


def load_scripts(path: str | Path) -> dict[str, Script]:
    """Read a JSON file of the form {"model-name": [turns...] or {"turns": [...], ...}}."""
    try:
        data = orjson.loads(Path(path).read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ScriptError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ScriptError(f"{path}: expected an object mapping model names to scripts")
    return {str(name): Script.from_json(script) for name, script in data.items()}


def message_text(content: Any) -> str:
    """The text of a message's content, which may be a string or a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, Mapping) and part.get("type") == "text"
        )
    return str(content)


@dataclass(frozen=True, slots=True)
class TemplateContext:
    last_user: str = ""
    last_tool_output: str = ""

    @classmethod
    def from_messages(cls, messages: Sequence[Mapping[str, Any]]) -> TemplateContext:
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        last_tool = next((m for m in reversed(messages) if m.get("role") == "tool"), None)
        return cls(
            last_user=message_text(last_user.get("content")) if last_user else "",
            last_tool_output=message_text(last_tool.get("content"))[:TOOL_OUTPUT_LIMIT] if last_tool else "",
        )

    def render(self, value: Any) -> Any:
        """Fill the placeholders in a string, or in every string inside a JSON value."""
        if isinstance(value, str):
            return _PLACEHOLDER.sub(lambda m: getattr(self, m.group(1)), value)
        if isinstance(value, Mapping):
            return {k: self.render(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.render(v) for v in value]
        return value


# Plain substitution, not str.format: scripted text may hold other braces (code, JSON).
_PLACEHOLDER = re.compile(r"\{(last_user|last_tool_output)\}")
