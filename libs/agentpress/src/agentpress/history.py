"""What is sent is valid: the history repaired, before every model call, to the rules strict providers enforce.

Stored messages stay as they were (for audit); these functions return new objects wherever
something had to change, so a thread can never be poisoned by what a model once produced. The
rules (checked independently by `agentpress.provider_rules`, the strict fakes' judge):

- every tool call has exactly one result and every result a call: results pair with calls by
  id, in order; a result without a call (or a second one for the same call) is left out; a call
  without a result gets a placeholder result (see `prompt.render`);
- tool-call ids are unique in the thread and match `^[a-zA-Z0-9_-]{1,64}$` (Anthropic's rule);
  a repeated or unusable id is replaced by one derived from the message and position; a tool
  name outside that pattern has its other characters replaced by "_";
- arguments are a JSON object: invalid ones are replaced by {"_invalid_arguments": <raw text>},
  next to the error result the model saw when the call was refused;
- no empty message: an empty assistant reply becomes "[empty reply]", an empty user message
  "[empty message]", an empty tool output "[no output]";
- text holds no unpaired surrogate or NUL (replaced by U+FFFD, see `safe_text`);
- for Anthropic-family models (or when one is among the fallbacks): the first turn is the
  user's, consecutive user messages are merged, and an assistant message following another one
  without calls (an auto-continued reply) is merged into it.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import orjson

from agentpress import safe_text
from agentpress.messages import AssistantMessage, Message, ToolResultMessage, UserMessage
from agentpress.provider_rules import Family, family_of

VALID_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # Anthropic's rule for tool ids and names
_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
INVALID_ARGUMENTS_KEY = "_invalid_arguments"
INVALID_ARGUMENTS_LIMIT = 2_000
EMPTY_REPLY = "[empty reply]"
EMPTY_MESSAGE = "[empty message]"
NO_OUTPUT = "[no output]"
CONTINUES = "[the conversation continues]"
UNNAMED_TOOL = "unnamed_tool"


def new_call_id(seed: str) -> str:
    return "call_" + hashlib.sha256(seed.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def unique_call_id(provider_id: str | None, taken: set[str], seed: str) -> str:
    """The provider's id when it is usable and not `taken`, else a fresh one; added to `taken`."""
    call_id = provider_id if provider_id and VALID_ID.match(provider_id) and provider_id not in taken else None
    n = 0
    while call_id is None or call_id in taken:
        call_id = new_call_id(f"{seed}:{n}")
        n += 1
    taken.add(call_id)
    return call_id


def _tool_name(name: str) -> str:
    """A name providers accept in a replayed call (Anthropic: ^[a-zA-Z0-9_-]{1,64}$): other
    characters become "_"; an empty name becomes "unnamed_tool"."""
    return _NAME_CHARS.sub("_", name)[:64] or UNNAMED_TOOL


@functools.lru_cache(maxsize=4096)  # every step sends the same calls again: parse each once
def arguments_object(arguments: str) -> str:
    """`arguments` when they are a JSON object; "{}" when empty; else the marked placeholder."""
    if not arguments.strip():
        return "{}"
    try:
        if isinstance(orjson.loads(arguments), dict):
            return arguments
    except orjson.JSONDecodeError:
        pass
    raw = safe_text.clean(arguments)[:INVALID_ARGUMENTS_LIMIT]
    return orjson.dumps({INVALID_ARGUMENTS_KEY: raw}).decode()


def call_ids(history: Iterable[Message]) -> set[str]:
    return {c.call_id for m in history if isinstance(m, AssistantMessage) for c in m.tool_calls}


def repair(history: Sequence[Message]) -> list[Message]:
    """The history as it may be sent: unique, valid call ids with their results paired in order,
    calls with JSON-object arguments, no orphan or duplicate result, safe text."""
    taken: set[str] = set()
    waiting: dict[str, deque[str]] = {}  # stored id -> ids given to its calls still without a result
    out: list[Message] = []
    for m in history:
        if isinstance(m, AssistantMessage):
            calls = []
            changed = False
            for index, call in enumerate(m.tool_calls):
                call_id = unique_call_id(call.call_id, taken, f"{m.message_id}:{index}:{call.call_id}")
                waiting.setdefault(call.call_id, deque()).append(call_id)
                name = call.name if VALID_ID.match(call.name) else _tool_name(call.name)
                arguments = arguments_object(call.arguments) if call.format == "native" else call.arguments
                if call_id != call.call_id or name != call.name or arguments is not call.arguments:
                    call = replace(call, call_id=call_id, name=name, arguments=arguments)
                    changed = True
                calls.append(call)
            text = safe_text.clean(m.text)
            if changed or text is not m.text:
                m = replace(m, text=text, tool_calls=tuple(calls))
            out.append(m)
        elif isinstance(m, ToolResultMessage):
            queue = waiting.get(m.call_id)
            if not queue:
                continue  # no call of its own: an orphan, or a second result for one call
            call_id = queue.popleft()
            output = safe_text.clean(m.output)
            out.append(m if call_id == m.call_id and output is m.output else replace(m, call_id=call_id, output=output))
        elif isinstance(m, UserMessage):
            text = safe_text.clean(m.text)
            out.append(m if text is m.text else replace(m, text=text))
        else:
            out.append(m)
    return out


def finalize(messages: list[dict[str, Any]], family: Family = "openai") -> list[dict[str, Any]]:
    """The rendered prompt made acceptable to `family`: no empty message, safe text, and for
    Anthropic the user's turn first and no two user (or plain assistant) messages in a row."""
    out: list[dict[str, Any]] = []
    for message in messages:
        m = dict(message)
        role = m.get("role")
        content = m.get("content")
        if isinstance(content, str) and not safe_text.is_safe(content):
            m["content"] = content = safe_text.clean(content)
        if role == "assistant":
            if m.get("tool_calls"):
                if isinstance(content, str) and not content.strip():
                    m["content"] = None
            elif content is None or (isinstance(content, str) and not content.strip()):
                m["content"] = EMPTY_REPLY
        elif role == "user" and (content is None or (isinstance(content, str) and not content.strip())):
            m["content"] = EMPTY_MESSAGE
        elif role == "tool" and (content is None or (isinstance(content, str) and not content.strip())):
            m["content"] = NO_OUTPUT
        if family == "anthropic" and _merge(out, m):
            continue
        out.append(m)
    if family == "anthropic":
        first = next((i for i, m in enumerate(out) if m.get("role") not in ("system", "developer")), None)
        if first is not None and out[first].get("role") != "user":
            out.insert(first, {"role": "user", "content": CONTINUES})
    return out


def _merge(out: list[dict[str, Any]], m: dict[str, Any]) -> bool:
    """Merge `m` into the previous message when Anthropic would see two turns of one role."""
    if not out:
        return False
    prev = out[-1]
    role = m.get("role")
    if role != prev.get("role") or role not in ("user", "assistant"):
        return False
    if role == "assistant" and prev.get("tool_calls"):
        return False
    merged = dict(prev)
    merged["content"] = _join(prev.get("content"), m.get("content"))
    if m.get("tool_calls"):
        merged["tool_calls"] = m["tool_calls"]
    out[-1] = merged
    return True


def _join(a: Any, b: Any) -> Any:
    if a is None or a == "":
        return b
    if b is None or b == "":
        return a
    if isinstance(a, str) and isinstance(b, str):
        return f"{a}\n\n{b}"
    parts = lambda c: c if isinstance(c, list) else [{"type": "text", "text": c}]  # noqa: E731
    return [*parts(a), *parts(b)]


def family_for(model_names: Iterable[str]) -> Family:
    """The strictest family among the models a call may go to (the primary and its fallbacks)."""
    return "anthropic" if any(family_of(n) == "anthropic" for n in model_names) else "openai"
