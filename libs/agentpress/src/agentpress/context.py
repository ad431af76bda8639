"""Keeps the prompt inside the model's context window by summarising older turns."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from agentpress import catalog
from agentpress.litellm_import import import_litellm_off_loop, imported
from agentpress.messages import AssistantMessage, Message, StatusMessage, ToolResultMessage, UserMessage
from agentpress.models import count_tokens, model_context_window
from agentpress.prompt import render

logger = logging.getLogger(__name__)

TokenCounter = Callable[[str, list[dict[str, Any]]], int]
Summarize = Callable[[str], Awaitable[str]]


# LiteLLM stays inside the model adapter (agentpress.models); these are its lookups.
litellm_token_counter = count_tokens
litellm_context_window = model_context_window


# Covers the few tokens a count adds per call (reply priming) beyond what the JSON bytes cover.
_COUNT_SLACK = 64


@dataclass(frozen=True)
class ContextConfig:
    """`context_window` overrides what LiteLLM knows (needed for unknown models); `reserve_tokens`
    stays free for the reply; after a compression the kept recent turns use at most `keep_ratio`
    of the budget, so the summary is reused for many turns before the next one is needed."""

    context_window: int | None = None
    default_context_window: int = 32_000
    reserve_tokens: int = 4_096
    keep_ratio: float = 0.5
    summary_input_chars: int = 60_000
    summary_tool_output_chars: int = 2_000
    token_counter: TokenCounter = litellm_token_counter


@dataclass
class BuiltPrompt:
    messages: list[dict[str, Any]]
    window: int
    summary: StatusMessage | None
    count: Callable[[], int]  # computes `tokens`

    @functools.cached_property
    def tokens(self) -> int:
        """The prompt's size in tokens (an estimate that errs high), counted when first asked
        for: only usage reporting needs it, after the call, when the provider reports no usage."""
        return self.count()


def _units(history: list[Message]) -> list[list[Message]]:
    """Group turns so that an assistant message and its tool results are never split."""
    units: list[list[Message]] = []
    for m in history:
        if isinstance(m, (UserMessage, AssistantMessage)) or not units:
            units.append([m])
        else:
            units[-1].append(m)
    return units


class ContextManager:
    def __init__(self, config: ContextConfig, summarize: Summarize) -> None:
        self._config = config
        self._summarize = summarize
        self._unit_tokens: dict[tuple[str, ...], int] = {}
        self._tools_tokens: dict[tuple[str, str], int] = {}

    async def prepare_to_count(self) -> None:
        """Imports LiteLLM off the event loop when the next count needs its tokenizer and it is not
        imported yet (a host whose models all take the direct lane imports it only then)."""
        if self._config.token_counter is litellm_token_counter and imported() is None:
            await import_litellm_off_loop()

    def window(self, model_name: str, model_window: int | None) -> int:
        return (
            self._config.context_window
            or model_window
            or litellm_context_window(model_name)
            or self._config.default_context_window
        )

    async def build(
        self,
        history: list[Message],
        system_prompt: str,
        tools: list[dict[str, Any]],
        model_name: str,
        model_window: int | None,
        persist: Callable[[Message], Awaitable[None]],
        *,
        budget_scale: float = 1.0,
    ) -> BuiltPrompt:
        """Prompt for the next call; may summarise old turns and persist (and append) the summary.
        `budget_scale` < 1 compresses harder: the provider said the prompt did not fit after all."""
        if (
            imported() is None
            and not (self._config.context_window or model_window)
            and catalog.lookup(model_name) is None
        ):
            await import_litellm_off_loop()  # only LiteLLM knows this model's window: not on the loop
        window = self.window(model_name, model_window)
        budget = int((window - self._config.reserve_tokens) * budget_scale)
        count = self._config.token_counter
        summary, active = _split_at_summary(history)
        tools_json = orjson.dumps(tools).decode() if tools else ""

        heads: dict[str | None, int] = {}

        def head(s: StatusMessage | None) -> int:
            key = s.message_id if s else None
            if key not in heads:
                heads[key] = count(model_name, render(system_prompt, s, [])) if system_prompt or s else 0
            return heads[key]

        def estimate(s: StatusMessage | None, units: list[list[Message]]) -> int:
            # Per-unit counts overestimate a little (priming tokens per call), which errs on the safe side.
            return head(s) + self._tools_size(model_name, tools_json) + sum(self._size(model_name, u) for u in units)

        if count is litellm_token_counter:
            # Counting tokens costs far more than the call's other preparation. LiteLLM's counts
            # (byte-level tokenizers, a few tokens per message) never exceed the prompt's size as
            # JSON in bytes, so a prompt whose JSON fits the budget needs no count to fit.
            messages = render(system_prompt, summary, active)
            if len(orjson.dumps(messages)) + len(tools_json.encode()) + _COUNT_SLACK <= budget:
                return BuiltPrompt(messages, window, summary, lambda: estimate(summary, _units(active)))
        await self.prepare_to_count()
        units = _units(active)
        if estimate(summary, units) > budget and len(units) > 1:
            fixed = head(summary) + self._tools_size(model_name, tools_json)
            sizes = [self._size(model_name, u) for u in units]
            keep, used = 0, 0
            target = max(0, int(budget * self._config.keep_ratio) - fixed)
            while keep < len(units) - 1 and used + sizes[-1 - keep] <= target:
                used += sizes[-1 - keep]
                keep += 1
            keep = max(keep, 1)
            old = [m for u in units[: len(units) - keep] for m in u]
            summary = await self._make_summary(summary, old)
            await persist(summary)
            units = units[len(units) - keep :]
            active = [m for u in units for m in u]
        messages = render(system_prompt, summary, active)
        tokens = estimate(summary, units)
        while tokens > budget and (shrunk := _shrink_largest(active)) is not None:
            active = shrunk
            messages = render(system_prompt, summary, active)
            tokens = count(model_name, messages) + self._tools_size(model_name, tools_json)
        return BuiltPrompt(messages, window, summary, lambda: tokens)

    def _tools_size(self, model_name: str, tools_json: str) -> int:
        if not tools_json:
            return 0
        key = (model_name, tools_json)
        if key not in self._tools_tokens:  # the same tools on every step of the run
            self._tools_tokens[key] = self._config.token_counter(
                model_name, [{"role": "system", "content": tools_json}]
            )
        return self._tools_tokens[key]

    def _size(self, model_name: str, unit: list[Message]) -> int:
        key = tuple(m.message_id for m in unit)
        if key not in self._unit_tokens:
            self._unit_tokens[key] = self._config.token_counter(model_name, render("", None, unit))
        return self._unit_tokens[key]

    async def _make_summary(self, previous: StatusMessage | None, old: list[Message]) -> StatusMessage:
        transcript = _transcript(old, self._config.summary_tool_output_chars)
        limit = self._config.summary_input_chars
        if len(transcript) > limit:
            transcript = "[... earliest part omitted ...]\n" + transcript[-limit:]
        parts = [f"Summary so far:\n{previous.text}\n"] if previous else []
        parts.append(f"Conversation to add to the summary:\n{transcript}")
        text = await self._summarize("\n".join(parts))
        logger.info("summarised %d messages into %d chars", len(old), len(text))
        return StatusMessage(
            status="summary", text=text, data={"covers_through": old[-1].message_id, "messages": len(old)}
        )


def _split_at_summary(history: list[Message]) -> tuple[StatusMessage | None, list[Message]]:
    summary = next((m for m in reversed(history) if isinstance(m, StatusMessage) and m.status == "summary"), None)
    dialogue: list[Message] = [m for m in history if not isinstance(m, StatusMessage)]
    if summary is None:
        return None, dialogue
    covered = summary.data.get("covers_through")
    ids = [m.message_id for m in dialogue]
    if covered not in ids:
        return summary, dialogue
    return summary, dialogue[ids.index(covered) + 1 :]


def _transcript(messages: list[Message], tool_chars: int) -> str:
    lines = []
    for m in messages:
        if isinstance(m, UserMessage):
            lines.append(f"USER: {m.text}")
        elif isinstance(m, AssistantMessage):
            calls = "".join(f"\n  [called {c.name}({c.arguments[:300]})]" for c in m.tool_calls if c.format == "native")
            lines.append(f"ASSISTANT: {m.text}{calls}")
        elif isinstance(m, ToolResultMessage):
            out = m.output if len(m.output) <= tool_chars else m.output[:tool_chars] + " [...truncated]"
            lines.append(f"TOOL {m.name}{' (error)' if m.error else ''}: {out}")
    return "\n".join(lines)


def _shrink_largest(active: list[Message]) -> list[Message] | None:
    """Halve the longest text in the prompt (middle cut); None when nothing is worth cutting."""

    def size(m: Message) -> int:
        return len(m.output) if isinstance(m, ToolResultMessage) else len(getattr(m, "text", ""))

    if not active:
        return None
    i = max(range(len(active)), key=lambda j: size(active[j]))
    m = active[i]
    n = size(m)
    if n < 200:
        return None
    half = n // 4
    note = f"\n[... {n - 2 * half} characters cut to fit the context window ...]\n"
    if isinstance(m, ToolResultMessage):
        cut: Message = replace(m, output=m.output[:half] + note + m.output[-half:])
    else:
        cut = replace(m, text=m.text[:half] + note + m.text[-half:])  # type: ignore[union-attr]
    return [*active[:i], cut, *active[i + 1 :]]
