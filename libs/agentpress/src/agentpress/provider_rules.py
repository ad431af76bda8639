"""What strict providers reject in a chat history, with their own 400 bodies: the strict fakes' judge.

Written from the providers' side (OpenAI's chat completions, and Anthropic's messages API as
LiteLLM translates an OpenAI-style history into it), independently of `agentpress.history`,
which repairs what agentpress sends: a bug in the repair then fails a test instead of hiding.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

Family = Literal["openai", "anthropic"]

# Anthropic's pattern for tool_use ids (LiteLLM passes OpenAI ids through unchanged).
ANTHROPIC_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
ANTHROPIC_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(frozen=True)
class ProviderRejection:
    """A 400 the provider would answer: `body` is the JSON it sends."""

    family: Family
    message: str
    param: str | None = None
    status: int = 400

    @property
    def body(self) -> dict[str, Any]:
        if self.family == "anthropic":
            return {"type": "error", "error": {"type": "invalid_request_error", "message": self.message}}
        return {"error": {"message": self.message, "type": "invalid_request_error", "param": self.param, "code": None}}


def family_of(model_name: str) -> Family:
    name = model_name.lower()
    return "anthropic" if "claude" in name or name.startswith(("anthropic/", "bedrock/anthropic")) else "openai"


def _text(content: Any) -> str | None:
    """The text of a content value (string or list of parts); None when there is no content."""
    if content is None:
        return None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return str(content)


def _bad_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return "\x00" in text


def _arguments_object(arguments: Any) -> bool:
    if not isinstance(arguments, str):
        return False
    try:
        return isinstance(orjson.loads(arguments), dict)
    except orjson.JSONDecodeError:
        return False


def check(messages: Sequence[Mapping[str, Any]], family: Family = "openai") -> ProviderRejection | None:
    """The first rule `messages` breaks for `family`, or None when the provider accepts them."""
    return _check_openai(messages) if family == "openai" else _check_anthropic(messages)


def _check_openai(messages: Sequence[Mapping[str, Any]]) -> ProviderRejection | None:
    def reject(message: str, param: str | None = None) -> ProviderRejection:
        return ProviderRejection("openai", message, param)

    seen_ids: set[str] = set()
    open_calls: list[str] = []  # calls of the last assistant message still waiting for a result
    open_at = -1
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            return reject(
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
                f"'tool', and 'developer'.",
                f"messages.[{i}].role",
            )
        text = _text(m.get("content"))
        if text is not None and _bad_unicode(text):
            return reject(
                f"Invalid 'messages[{i}].content': string contains invalid characters (unpaired surrogate or NUL).",
                f"messages.[{i}].content",
            )
        if role == "tool":
            call_id = m.get("tool_call_id")
            if call_id not in open_calls:
                return reject(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                    "message with 'tool_calls'.",
                    f"messages.[{i}].role",
                )
            open_calls.remove(call_id)
            if not isinstance(m.get("content"), (str, list)):
                return reject(
                    f"Invalid type for 'messages[{i}].content': expected one of a string or array "
                    f"of objects, but got {type(m.get('content')).__name__} instead.",
                    f"messages.[{i}].content",
                )
            continue
        if open_calls:
            return reject(
                "An assistant message with 'tool_calls' must be followed by tool messages responding "
                "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                + ", ".join(open_calls),
                f"messages.[{open_at}].role",
            )
        if role != "assistant":
            if role == "user" and text is None:
                return reject("Invalid value for 'content': expected a string, got null.", f"messages.[{i}].content")
            continue
        calls = m.get("tool_calls") or []
        if not calls and not (text or "").strip():
            return reject(
                f"Invalid 'messages[{i}]': an assistant message must have non-empty 'content' or 'tool_calls'.",
                f"messages.[{i}].content",
            )
        for j, call in enumerate(calls):
            fn = call.get("function") or {}
            call_id = call.get("id")
            if not isinstance(call_id, str) or not call_id:
                return reject(
                    f"Missing required parameter: 'messages[{i}].tool_calls[{j}].id'.",
                    f"messages.[{i}].tool_calls.[{j}].id",
                )
            if call_id in seen_ids:
                return reject(
                    f"Invalid 'messages[{i}].tool_calls[{j}].id': duplicate value '{call_id}': "
                    f"tool call ids must be unique.",
                    f"messages.[{i}].tool_calls.[{j}].id",
                )
            seen_ids.add(call_id)
            if not fn.get("name"):
                return reject(
                    f"Missing required parameter: 'messages[{i}].tool_calls[{j}].function.name'.",
                    f"messages.[{i}].tool_calls.[{j}].function.name",
                )
            if not _arguments_object(fn.get("arguments")):
                return reject(
                    f"Invalid 'messages[{i}].tool_calls[{j}].function.arguments': expected a JSON "
                    f"object serialized as a string.",
                    f"messages.[{i}].tool_calls.[{j}].function.arguments",
                )
            if _bad_unicode(fn.get("arguments", "")) or _bad_unicode(fn.get("name", "")):
                return reject(
                    f"Invalid 'messages[{i}].tool_calls[{j}]': string contains invalid characters.",
                    f"messages.[{i}].tool_calls.[{j}]",
                )
        open_calls, open_at = [c.get("id") for c in calls], i
    if open_calls:
        return reject(
            "An assistant message with 'tool_calls' must be followed by tool messages responding to "
            "each 'tool_call_id'. The following tool_call_ids did not have response messages: " + ", ".join(open_calls),
            f"messages.[{open_at}].role",
        )
    return None


def _check_anthropic(messages: Sequence[Mapping[str, Any]]) -> ProviderRejection | None:
    """Anthropic's rules on the turns LiteLLM builds: system messages go to `system`; tool results
    (and a user message right after them) form one user turn; every other message is its own turn."""

    def reject(message: str) -> ProviderRejection:
        return ProviderRejection("anthropic", message)

    turns: list[str] = []  # the role of each turn, as Anthropic sees them
    seen_ids: set[str] = set()
    open_calls: list[str] = []
    for m in messages:
        role = m.get("role")
        n = len(turns)
        if role in ("system", "developer"):
            if turns:
                return reject(f"messages.{n}: system messages must come first; use the top-level `system` parameter")
            continue
        text = _text(m.get("content"))
        if text is not None and _bad_unicode(text):
            return reject(f"messages.{n}.content: invalid unicode (unpaired surrogate or NUL)")
        if role == "tool":
            call_id = m.get("tool_call_id")
            if call_id not in open_calls:
                return reject(
                    f"messages.{n}.content.0: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{call_id}. Each `tool_result` block must have a corresponding `tool_use` block "
                    f"in the previous message."
                )
            open_calls.remove(call_id)
            if not (turns and turns[-1] == "tool_result"):
                turns.append("tool_result")
            continue
        if open_calls:
            return reject(
                f"messages.{n - 1}: `tool_use` ids were found without `tool_result` blocks immediately "
                f"after: {', '.join(open_calls)}. Each `tool_use` block must have a corresponding "
                f"`tool_result` block in the next message."
            )
        if role == "user":
            if text is None or not text.strip():
                return reject(f"messages.{n}: text content blocks must contain non-whitespace text")
            if turns and turns[-1] == "tool_result":
                turns[-1] = "user"  # LiteLLM adds the text to the tool results' user turn
                continue
            if turns and turns[-1] == "user":
                return reject(
                    'messages: roles must alternate between "user" and "assistant", but found '
                    'multiple "user" roles in a row'
                )
            turns.append("user")
            continue
        if role != "assistant":
            return reject(f"messages.{n}.role: Input should be 'user' or 'assistant'")
        if not turns:
            return reject('messages.0: first message must use the "user" role')
        if turns[-1] == "assistant":
            return reject(
                'messages: roles must alternate between "user" and "assistant", but found multiple '
                '"assistant" roles in a row'
            )
        calls = m.get("tool_calls") or []
        if text is not None and text != "" and not text.strip():
            return reject(f"messages.{n}: text content blocks must contain non-whitespace text")
        if not calls and not (text or "").strip():
            return reject(
                f"messages.{n}: all messages must have non-empty content except for the optional "
                f"final assistant message"
            )
        for j, call in enumerate(calls):
            fn = call.get("function") or {}
            call_id = call.get("id")
            k = j + (1 if text else 0)
            if not isinstance(call_id, str) or not ANTHROPIC_TOOL_ID.match(call_id):
                return reject(f"messages.{n}.content.{k}.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
            if call_id in seen_ids:
                return reject(f"messages.{n}.content.{k}: `tool_use` ids must be unique")
            seen_ids.add(call_id)
            if not _arguments_object(fn.get("arguments")):
                return reject(f"messages.{n}.content.{k}.tool_use.input: Input should be a valid dictionary")
            if not isinstance(fn.get("name"), str) or not ANTHROPIC_TOOL_NAME.match(fn["name"]):
                return reject(
                    f"messages.{n}.content.{k}.tool_use.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
                )
            if _bad_unicode(fn.get("arguments", "")):
                return reject(f"messages.{n}.content.{k}.tool_use.input: invalid unicode")
        open_calls = [c.get("id") for c in calls]
        turns.append("assistant")
    if open_calls:
        return reject(
            f"messages.{len(turns) - 1}: `tool_use` ids were found without `tool_result` blocks "
            f"immediately after: {', '.join(open_calls)}. Each `tool_use` block must have a "
            f"corresponding `tool_result` block in the next message."
        )
    if not turns:
        return reject("messages: at least one message is required")
    return None
