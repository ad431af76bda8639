"""The model-call layer: a small Model protocol, the LiteLLM adapter, retries and fallbacks."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from agentpress import catalog
from agentpress.errors import ModelCallError
from agentpress.litellm_import import import_litellm, import_litellm_off_loop, imported
from agentpress.openai_stream import direct_lane, direct_lane_enabled
from agentpress.retries import OpenedStream, RetryPolicy, classify, open_stream

__all__ = [
    "LiteLLMModel",
    "Model",
    "ModelDelta",
    "ModelRequest",
    "ModelSettings",
    "OpenedStream",
    "RetryPolicy",
    "ToolCallChunk",
    "count_tokens",
    "import_litellm",
    "model_context_window",
    "needs_litellm",
    "open_stream",
    "warm_up",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolCallChunk:
    """A piece of one native tool call; pieces of the same call share `index`."""

    index: int
    call_id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class ModelDelta:
    text: str = ""
    reasoning: str = ""
    tool_calls: tuple[ToolCallChunk, ...] = ()
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class ModelSettings:
    temperature: float | None = None
    max_tokens: int | None = None
    reasoning_effort: str | None = None
    thinking: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_kwargs(self) -> dict[str, Any]:
        kwargs = {
            k: v
            for k, v in (
                ("temperature", self.temperature),
                ("max_tokens", self.max_tokens),
                ("reasoning_effort", self.reasoning_effort),
                ("thinking", self.thinking),
            )
            if v is not None
        }
        return {**kwargs, **self.extra}


@dataclass(frozen=True)
class ModelRequest:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    settings: ModelSettings = field(default_factory=ModelSettings)


@runtime_checkable
class Model(Protocol):
    """Anything that can stream a reply. `context_window` None means "ask LiteLLM"."""

    name: str
    context_window: int | None

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta]: ...

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for one call; NaN when the model has no known price (never a silent 0)."""
        ...


def needs_litellm(models: list[str] | None) -> bool:
    """Whether calling these models may need LiteLLM at all: False when every one takes the
    direct lane (`openai/...` while the lane is on) and agentpress.catalog knows its price and
    window (or that it has none); None (not known) says True."""
    if models is None:
        return True
    return not (direct_lane_enabled() and all(catalog.answers(m) for m in models))


def warm_up(*, call: bool = False, models: list[str] | None = None) -> bool:
    """Imports LiteLLM now (seconds of CPU: a host does it once, off its event loop, before it
    takes work) and, with `call`, makes one mocked streaming call (no network) so the lazy imports
    of a first completion are paid too (a prefork parent, before it forks). Must not be called
    from a running event loop when `call` is set. With `models`, does nothing when none of them
    needs LiteLLM (`needs_litellm`): it is then imported only if a run asks for another model.
    Returns whether LiteLLM was imported."""
    if not needs_litellm(models):
        return False
    litellm = import_litellm()
    if not call:
        return True

    async def one() -> None:
        stream = await litellm.acompletion(
            model="openai/warm-up",
            messages=[{"role": "user", "content": "hi"}],
            mock_response="ok",
            stream=True,
            api_key="warm-up",
        )
        async for _ in stream:
            pass

    asyncio.run(one())
    return True


def count_tokens(model: str, messages: list[dict[str, Any]]) -> int:
    """Tokens `messages` take for `model` (LiteLLM's tokenizer for it, tiktoken's otherwise)."""
    return int(import_litellm().token_counter(model=model, messages=messages))


def _not_mapped(litellm: ModuleType) -> tuple[type[BaseException], ...]:
    """LiteLLM's own "unknown model" errors: the only ones a price or window lookup may swallow."""
    found = [
        getattr(litellm, "exceptions", None) and getattr(litellm.exceptions, "ModelNotMappedError", None),
        getattr(litellm, "NotFoundError", None),
    ]
    return tuple(t for t in found if isinstance(t, type)) or (ValueError,)


@functools.lru_cache(maxsize=256)  # LiteLLM's lookup costs ~0.05 ms, more for unknown models
def model_context_window(model: str) -> int | None:
    """The model's input window in tokens from LiteLLM's table; None for a model it does not know."""
    if imported() is None:
        found = catalog.lookup(model)  # no LiteLLM import for a direct-lane model
        if found is not None:
            return found.entry.window if found.known and found.entry else None
    litellm = import_litellm()
    try:
        info = litellm.get_model_info(model)
    except _not_mapped(litellm):
        return None
    return info.get("max_input_tokens") or info.get("max_tokens")


_unpriced: set[str] = set()


class LiteLLMModel:
    """Adapter from LiteLLM's streaming chunks to ModelDelta; LiteLLM objects never leave it."""

    def __init__(
        self,
        name: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        timeout: float = 600.0,
        context_window: int | None = None,
    ) -> None:
        self.name = name
        self.api_base = api_base
        self.api_key = api_key
        self.timeout = timeout
        self.context_window = context_window

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta]:
        kwargs: dict[str, Any] = dict(request.settings.as_kwargs())
        if request.tools:
            kwargs["tools"] = request.tools
        litellm = imported()
        if litellm is None and not catalog.answers(self.name):
            # Only LiteLLM knows this model's provider or price: imported now, off the event loop.
            litellm = await import_litellm_off_loop()
        lane = direct_lane(litellm, self.name, api_base=self.api_base, api_key=self.api_key, timeout=self.timeout)
        if lane is not None and lane.accepts(kwargs):
            # OpenAI's own protocol: sent and read here, without LiteLLM's per-call and per-chunk
            # costs (agentpress.openai_stream) and without importing LiteLLM; its errors are
            # already classified as LiteLLM's would be (a failed call does not import it either).
            try:
                async for data in lane.stream(request.messages, kwargs):
                    yield _translate_dict(data)
            except Exception as exc:
                raise _translate_error(imported(), exc) from exc
            return
        litellm = await import_litellm_off_loop()
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self.api_key:
            kwargs["api_key"] = self.api_key
        try:
            response = await litellm.acompletion(
                model=self.name,
                messages=request.messages,
                stream=True,
                stream_options={"include_usage": True},
                timeout=self.timeout,
                # One retry layer only, ours (agentpress.retries): neither the OpenAI SDK's
                # max_retries nor LiteLLM's num_retries may multiply the attempts.
                max_retries=0,
                num_retries=0,
                **kwargs,
            )
            async for chunk in response:
                yield _translate(chunk)
        except Exception as exc:
            raise _translate_error(litellm, exc) from exc

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """US dollars for the tokens, from LiteLLM's price table; NaN for a model it has no price
        for (said once per model in the log: billing then prices its calls by its own rules). Any
        other error is a bug and raised."""
        if imported() is None:
            found = catalog.lookup(self.name)  # no LiteLLM import for a direct-lane model
            if found is not None and not found.known:
                return self._no_price()
            if found is not None and found.entry is not None and found.entry.plain_price:
                entry = found.entry
                return float(prompt_tokens * (entry.input_cost or 0.0) + completion_tokens * (entry.output_cost or 0.0))
        litellm = import_litellm()
        try:
            # cost_per_token reads the price table; completion_cost would first build a response.
            prompt_cost, completion_cost = litellm.cost_per_token(
                model=self.name, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
            )
        except _not_mapped(litellm):
            return self._no_price()
        return float(prompt_cost + completion_cost)

    def _no_price(self) -> float:
        # No price known: NaN says so, and billing decides (refuse, or a default price; never free).
        if self.name not in _unpriced:
            _unpriced.add(self.name)
            logger.warning("no price known for model %s: billing prices its calls by its own rules", self.name)
        return math.nan


def _translate_dict(data: dict[str, Any]) -> ModelDelta:
    """One decoded OpenAI stream chunk -> ModelDelta (the shape `_translate` reads from LiteLLM's
    objects; `reasoning` is the name some OpenAI-compatible servers give `reasoning_content`)."""
    usage = data.get("usage")
    choices = data.get("choices")
    choice = choices[0] if choices else None
    delta = (choice.get("delta") or {}) if choice else {}
    calls = tuple(
        ToolCallChunk(
            index=tc.get("index") or 0,
            call_id=tc.get("id") or None,
            name=(tc.get("function") or {}).get("name") or None,
            arguments=(tc.get("function") or {}).get("arguments") or "",
        )
        for tc in delta.get("tool_calls") or ()
    )
    return ModelDelta(
        text=delta.get("content") or "",
        reasoning=delta.get("reasoning_content") or delta.get("reasoning") or "",
        tool_calls=calls,
        finish_reason=choice.get("finish_reason") if choice else None,
        prompt_tokens=usage.get("prompt_tokens") if usage else None,
        completion_tokens=usage.get("completion_tokens") if usage else None,
    )


def _translate(chunk: Any) -> ModelDelta:
    usage = getattr(chunk, "usage", None)
    choices = getattr(chunk, "choices", None) or []
    delta = choices[0].delta if choices else None
    finish = choices[0].finish_reason if choices else None
    calls: list[ToolCallChunk] = []
    for tc in (getattr(delta, "tool_calls", None) or []) if delta is not None else []:
        fn = getattr(tc, "function", None)
        calls.append(
            ToolCallChunk(
                index=tc.index or 0,
                call_id=tc.id or None,
                name=getattr(fn, "name", None) or None,
                arguments=getattr(fn, "arguments", None) or "",
            )
        )
    return ModelDelta(
        text=(getattr(delta, "content", None) or "") if delta is not None else "",
        reasoning=(getattr(delta, "reasoning_content", None) or "") if delta is not None else "",
        tool_calls=tuple(calls),
        finish_reason=finish,
        prompt_tokens=getattr(usage, "prompt_tokens", None) if usage else None,
        completion_tokens=getattr(usage, "completion_tokens", None) if usage else None,
    )


def _translate_error(litellm: ModuleType | None, exc: Exception) -> ModelCallError:
    return classify(exc, litellm)
