"""The agent loop: prompt, model call, tools, persistence, until a reason to stop."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agentpress.context import BuiltPrompt, ContextConfig, ContextManager
from agentpress.errors import AgentpressError, ModelCallError, UserError
from agentpress.events import (
    Event,
    FinishReason,
    MessageCompleted,
    PhaseChanged,
    RequiresAction,
    RunFinished,
    RunStarted,
    UsageReported,
)
from agentpress.execution import ToolExecution, ToolExecutor
from agentpress.history import call_ids, family_for, finalize, repair
from agentpress.messages import AssistantMessage, Message, StatusMessage, ToolCall, ToolResultMessage
from agentpress.models import LiteLLMModel, Model, ModelRequest, ModelSettings, RetryPolicy, open_stream
from agentpress.observe import observed
from agentpress.ports import RunContext, Usage
from agentpress.processor import PendingCall, StreamProcessor
from agentpress.prompt import is_anthropic, with_cache_markers
from agentpress.retries import ErrorKind, OpenedStream, RetryBudget
from agentpress.tools import Tool, ToolRegistry

logger = logging.getLogger(__name__)

SUMMARY_PROMPT = (
    "You compress agent conversations. Write a concise summary of the conversation below that keeps "
    "everything needed to continue the task: the user's goals, decisions, facts learned, files "
    "touched, commands run and their outcomes, and open problems. Plain text, no preamble."
)


@dataclass(frozen=True)
class RunResult:
    reason: FinishReason
    error: str | None = None
    steps: int = 0
    pending: dict[str, Any] | None = None  # with REQUIRES_ACTION: what the run waits for


@dataclass
class _Step:
    """What one step has done so far, read by the cancellation path to persist completed work."""

    processor: StreamProcessor | None = None
    executor: ToolExecutor | None = None
    assistant_persisted: bool = False
    results_persisted: set[str] = field(default_factory=set)


class Agent:
    def __init__(
        self,
        model: str | Model,
        *,
        system_prompt: str = "",
        tools: Sequence[Tool] | ToolRegistry = (),
        max_steps: int = 25,
        tool_calling: Literal["native", "xml"] = "native",
        tool_execution: ToolExecution = ToolExecution(),
        settings: ModelSettings = ModelSettings(),
        fallback_models: Sequence[str | Model] = (),
        context_fallback_models: Sequence[str | Model] = (),
        retry: RetryPolicy = RetryPolicy(),
        context: ContextConfig = ContextConfig(),
        summary_model: str | Model | None = None,
        max_auto_continues: int = 3,
        api_base: str | None = None,
        api_key: str | None = None,
        approval_tools: Sequence[str] = (),
        pause_on_ask: bool = False,
    ) -> None:
        """`approval_tools`: names of tools whose every call waits for the user's approval (on
        top of tools declared `requires_approval`). `pause_on_ask`: the ask tool pauses the run
        until the user answers (human in the loop) instead of ending it `asked_user`. A paused
        run returns REQUIRES_ACTION after a requires_action event; `resolve_pending` applies the
        user's answer or decision, then `run(ctx, resumed=True)` continues it.
        `fallback_models` take over when the model keeps failing transiently (rate limit,
        overload, 5xx, timeout, connection); `context_fallback_models` (larger windows) when the
        prompt does not fit even after compressing it harder. `retry`: see agentpress.retries."""
        if max_steps < 1:
            raise UserError("max_steps must be at least 1")
        if tool_calling not in ("native", "xml"):
            raise UserError(f"tool_calling must be 'native' or 'xml', not {tool_calling!r}")
        self.model = self._resolve(model, api_base, api_key)
        self.fallback_models = [self._resolve(m, api_base, api_key) for m in fallback_models]
        self.context_fallback_models = [self._resolve(m, api_base, api_key) for m in context_fallback_models]
        self.summary_model = self._resolve(summary_model, api_base, api_key) if summary_model else self.model
        self.system_prompt = system_prompt
        self.tools = tools if isinstance(tools, ToolRegistry) else ToolRegistry(tools)
        self.max_steps = max_steps
        self.tool_calling: Literal["native", "xml"] = tool_calling
        self.tool_execution = tool_execution
        self.settings = settings
        self.retry = retry
        self.max_auto_continues = max_auto_continues
        self._context_config = context
        self.approval_tools = frozenset(approval_tools)
        self.pause_on_ask = pause_on_ask

    def needs_input(self, call: ToolCall) -> dict[str, Any] | None:
        """What the user must provide before `call` runs, or None when it runs now."""
        t = self.tools.get(call.name)
        if t is None:
            return None
        asks = self.pause_on_ask and t.terminates == "asked_user"
        if not (asks or t.requires_approval or t.name in self.approval_tools):
            return None
        try:
            from agentpress.tools import _decode_arguments

            arguments = _decode_arguments(t, call.arguments, call.format)
        except Exception:  # noqa: BLE001 - a malformed call fails when run, as any other
            return None
        if asks:
            return {"kind": "question", "question": str(arguments.get("question", "")), "call_id": call.call_id}
        return {"kind": "approval", "tool": t.name, "arguments": arguments, "call_id": call.call_id}

    async def resolve_pending(
        self, ctx: RunContext, pending: dict[str, Any], resolution: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Applies the user's input to a paused run's last turn and stores the results: the
        answer becomes the ask call's result; an approved call runs; a rejected one gets a result
        saying so (error "rejected"); calls of the turn after it run now (or pause again: the new
        pending is returned). `resolution`: {"content": answer} for a question, {"decision":
        "approve"|"reject", "content"?} for an approval. Calls already answered are skipped, so
        resolving twice (a worker lost midway) stores nothing twice."""
        history = list(await ctx.messages.load())
        answered = {m.call_id for m in history if isinstance(m, ToolResultMessage)}
        last = next((m for m in reversed(history) if isinstance(m, AssistantMessage)), None)
        dangling = [c for c in (last.tool_calls if last else ()) if c.call_id not in answered]

        async def store(result: ToolResultMessage) -> None:
            await ctx.messages.append(result)
            await ctx.events.emit(MessageCompleted(message=result))

        async def run_call(call: ToolCall, *, ask_first: bool) -> dict[str, Any] | None:
            executor = ToolExecutor(
                self.tools,
                ctx,
                ctx.events.emit,
                ToolExecution(when="after_turn"),
                self.needs_input if ask_first else None,
            )
            executor.submit(PendingCall(call=call))
            for _, outcome in await executor.finish():
                await store(
                    ToolResultMessage(call_id=call.call_id, name=call.name, output=outcome.output, error=outcome.error)
                )
            return executor.paused

        for call in dangling:
            if call.call_id == pending.get("call_id"):
                content = str(resolution.get("content") or "")
                if pending.get("kind") == "question":
                    await store(ToolResultMessage(call_id=call.call_id, name=call.name, output=content))
                elif resolution.get("decision") == "approve":
                    await run_call(call, ask_first=False)
                else:
                    note = f": {content}" if content else ""
                    await store(
                        ToolResultMessage(
                            call_id=call.call_id,
                            name=call.name,
                            output=f"the user rejected this call{note}",
                            error="rejected",
                        )
                    )
                continue
            again = await run_call(call, ask_first=True)
            if again is not None:
                await ctx.events.emit(RequiresAction(pending=again))
                return again
        return None

    @staticmethod
    def _resolve(model: str | Model, api_base: str | None, api_key: str | None) -> Model:
        if isinstance(model, str):
            return LiteLLMModel(model, api_base=api_base, api_key=api_key)
        if not isinstance(model, Model):
            raise UserError(f"model must be a LiteLLM model string or a Model object, not {model!r}")
        return model

    def _system_prompt(self) -> str:
        if self.tool_calling == "xml" and len(self.tools):
            return f"{self.system_prompt}\n\n{self.tools.xml_instructions()}".strip()
        return self.system_prompt

    async def run(self, ctx: RunContext, *, resumed: bool = False) -> RunResult:
        """Run until done. Emits run_started first and exactly one run_finished last; never raises
        for model or tool failures. Cancellation: set ctx.cancel, or cancel the calling task
        (then run_finished is emitted and CancelledError re-raised).

        `resumed`: the run continues from the thread's persisted messages after its host lost
        the previous attempt; run_started was already announced, so it is not emitted again."""
        run = _Run(self, ctx)
        if not resumed:
            await run.emit(RunStarted(run_id=ctx.run_id, thread_id=ctx.thread_id, model=self.model.name))
        try:
            result = await run.execute()
            if result.reason is FinishReason.REQUIRES_ACTION:
                await run.emit(RequiresAction(pending=result.pending or {}))
                return result
        except asyncio.CancelledError:
            await asyncio.shield(run.finish_cancelled())
            await run.emit(RunFinished(reason=FinishReason.CANCELLED))
            raise
        except Exception as exc:  # the run must end with run_finished whatever broke
            logger.exception("run %s failed", ctx.run_id)
            if run.step.executor is not None:
                await run.step.executor.cancel()
            result = RunResult(FinishReason.ERROR, _public_error(exc), run.steps)
        await run.emit(RunFinished(reason=result.reason, error=result.error))
        return result


def _public_error(exc: Exception) -> str:
    """The run's error as its user reads it. agentpress's own errors were written for them; any
    other exception is a fault of the host (a database pool that timed out, a service that is
    away) whose text may hold internal addresses or SQL, so only its kind is told; the whole
    exception is in the log."""
    if isinstance(exc, AgentpressError):
        return str(exc)
    return f"the run failed on an internal error ({type(exc).__name__}); it is in the worker's log"


class _Run:
    def __init__(self, agent: Agent, ctx: RunContext) -> None:
        self.agent = agent
        self.ctx = ctx
        self.steps = 0
        self.history: list[Message] = []
        self.step = _Step()
        self.context = ContextManager(agent._context_config, self._summarize)
        self.retry_budget = RetryBudget(agent.retry.run_budget)
        self._prompt: BuiltPrompt | None = None  # the last prompt sent

    async def emit(self, event: Event) -> None:
        await self.ctx.events.emit(event)

    async def persist(self, message: Message) -> None:
        await self.ctx.messages.append(message)
        self.history.append(message)
        await self.emit(MessageCompleted(message=message))

    async def execute(self) -> RunResult:
        if self.ctx.cancel.is_set():
            return RunResult(FinishReason.CANCELLED)
        self.history = list(await self.ctx.messages.load())
        continues = 0
        empty = 0
        while self.steps < self.agent.max_steps:
            self.steps += 1
            self.step = _Step()
            step_task = asyncio.create_task(self._run_step())
            cancel_wait = asyncio.create_task(self.ctx.cancel.wait())
            try:
                await asyncio.wait({step_task, cancel_wait}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                cancel_wait.cancel()
                # A cancel can be swallowed (Python 3.11's wait_for returns the result when the
                # inner call finished as the cancel landed, as redis-py's reads do): ask again.
                while not step_task.done():
                    step_task.cancel()
                    await asyncio.wait({step_task}, timeout=0.05)
            if step_task.cancelled() or self.ctx.cancel.is_set():
                await self.finish_cancelled()
                return RunResult(FinishReason.CANCELLED, None, self.steps)
            outcome = step_task.result()  # a step failure surfaces in Agent.run as reason error
            if isinstance(outcome, RunResult):
                return outcome
            if outcome == "empty":
                # Often transient: asked once more; a second one ends the run, never stored as an answer.
                empty += 1
                if empty < 2:
                    continue
                error = "the model returned an empty reply (no text, no tool call) twice in a row"
                await self.persist(
                    StatusMessage(
                        status=FinishReason.EMPTY_RESPONSE.value, text=error, data={"model": self.agent.model.name}
                    )
                )
                return RunResult(FinishReason.EMPTY_RESPONSE, error, self.steps)
            empty = 0
            if outcome == "length" and continues < self.agent.max_auto_continues:
                continues += 1
                continue
            if outcome != "tools":
                return RunResult(FinishReason.COMPLETED, None, self.steps)
            continues = 0
        return RunResult(FinishReason.STEP_LIMIT, None, self.steps)

    async def _run_step(self) -> RunResult | str:
        agent, ctx, step = self.agent, self.ctx, self.step
        tools = agent.tools.schemas() if agent.tool_calling == "native" and len(agent.tools) else []
        await self.emit(PhaseChanged(phase="calling_model"))
        try:
            opened = await self._open(tools)
        except ModelCallError as exc:
            return RunResult(FinishReason.ERROR, str(exc), self.steps)
        step.executor = ToolExecutor(agent.tools, ctx, self.emit, agent.tool_execution, agent.needs_input)
        step.processor = StreamProcessor(
            self.emit, step.executor.submit, agent.tool_calling, opened.model.name, taken_ids=call_ids(self.history)
        )
        try:
            await step.processor.consume(opened.first, opened.rest)
        except Exception as exc:  # noqa: BLE001 - a stream that dies midway: keep what arrived, stop the tools
            await self.finish_cancelled()
            message = str(exc) if isinstance(exc, ModelCallError) else f"{type(exc).__name__}: {exc}"
            return RunResult(FinishReason.ERROR, message, self.steps)
        prompt = self._prompt
        within_budget = await self._record_usage(opened.model, step.processor, lambda: prompt.tokens if prompt else 0)
        if not step.processor.calls and not step.processor.text.strip():
            return "empty" if within_budget else RunResult(FinishReason.BUDGET_EXCEEDED, None, self.steps)
        await self.persist(step.processor.message())
        step.assistant_persisted = True
        terminal: FinishReason | None = None
        for pending, outcome in await step.executor.finish():
            call = pending.call
            await self.persist(
                ToolResultMessage(call_id=call.call_id, name=call.name, output=outcome.output, error=outcome.error)
            )
            step.results_persisted.add(call.call_id)
            t = agent.tools.get(call.name)
            if t is not None and t.terminates and outcome.error is None and terminal is None:
                terminal = FinishReason(t.terminates)
        if step.executor.paused is not None:
            return RunResult(FinishReason.REQUIRES_ACTION, None, self.steps, pending=step.executor.paused)
        if terminal is not None:
            return RunResult(terminal, None, self.steps)
        if not within_budget:
            return RunResult(FinishReason.BUDGET_EXCEEDED, None, self.steps)
        if step.processor.calls:
            return "tools"
        return "length" if step.processor.finish_reason == "length" else "stop"

    async def _open(self, tools: list[dict[str, Any]]) -> OpenedStream:
        """The prompt, repaired to what strict providers accept (the stored history stays as it
        was), sent with retries and fallbacks. A prompt the provider finds too long is compressed
        harder and sent again, then sent to the larger-context fallbacks, if any."""
        agent = self.agent
        models = observed([agent.model, *agent.fallback_models], self.ctx.observer)
        family = family_for(m.name for m in [*models, *agent.context_fallback_models])

        async def request(scale: float) -> ModelRequest:
            prompt = await self.context.build(
                repair(self.history),
                agent._system_prompt(),
                tools,
                agent.model.name,
                agent.model.context_window,
                self.persist,
                budget_scale=scale,
            )
            self._prompt = prompt
            messages = finalize(prompt.messages, family)
            messages = with_cache_markers(messages) if is_anthropic(agent.model.name) else messages
            return ModelRequest(messages, tools, agent.settings)

        try:
            return await open_stream(models, await request(1.0), agent.retry, self.retry_budget)
        except ModelCallError as exc:
            if exc.kind != ErrorKind.CONTEXT_WINDOW:
                raise
            logger.info("the prompt did not fit the context window: compressing it harder")
        smaller = await request(0.5)
        try:
            return await open_stream(models, smaller, agent.retry, self.retry_budget)
        except ModelCallError as exc:
            if exc.kind != ErrorKind.CONTEXT_WINDOW or not agent.context_fallback_models:
                raise
        return await open_stream(
            observed(agent.context_fallback_models, self.ctx.observer), smaller, agent.retry, self.retry_budget
        )

    async def _record_usage(
        self, model: Model, processor: StreamProcessor, estimated_prompt: Callable[[], int]
    ) -> bool:
        # The provider's count when it reported one; counting the prompt ourselves (a tokenizer
        # pass over the whole prompt) only when it did not.
        if processor.prompt_tokens is None:
            await self.context.prepare_to_count()
        prompt_tokens = processor.prompt_tokens if processor.prompt_tokens is not None else estimated_prompt()
        completion = processor.completion_tokens
        if completion is None:
            completion = max(1, len(processor.text) // 4) if processor.text else 0
        cost = model.cost(prompt_tokens, completion)
        # NaN: the model has no known price. The event shows 0; the usage sink gets NaN and decides.
        await self.emit(
            UsageReported(
                model=model.name,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion,
                cost_usd=0.0 if math.isnan(cost) else cost,
            )
        )
        usage = Usage(
            model=model.name, prompt_tokens=prompt_tokens, completion_tokens=completion, cost_usd=cost, step=self.steps
        )
        return await self.ctx.usage.record(usage)

    async def finish_cancelled(self) -> None:
        """Persist what the interrupted step completed: partial text, finished calls, and a
        result for every persisted call (finished, or "cancelled") so no call is left dangling."""
        step = self.step
        if step.executor is not None:
            await step.executor.cancel()
        if step.processor is None:
            return
        if not step.assistant_persisted:
            message = step.processor.message(partial=True)
            if not (message.text or message.reasoning or message.tool_calls):
                return
            await self.persist(message)
            step.assistant_persisted = True
        results = step.executor.results if step.executor else {}
        for pending in step.processor.calls:
            call = pending.call
            if call.call_id in step.results_persisted:
                continue
            outcome = results.get(call.call_id)
            result = (
                ToolResultMessage(call_id=call.call_id, name=call.name, output=outcome.output, error=outcome.error)
                if outcome
                else ToolResultMessage(
                    call_id=call.call_id, name=call.name, output="cancelled before it finished", error="cancelled"
                )
            )
            await self.persist(result)
            step.results_persisted.add(call.call_id)

    async def _summarize(self, transcript: str) -> str:
        model = self.agent.summary_model
        messages = [{"role": "system", "content": SUMMARY_PROMPT}, {"role": "user", "content": transcript}]
        request = ModelRequest(
            finalize(messages, family_for([model.name])),
            [],  # the transcript quotes any text
            ModelSettings(max_tokens=self.agent._context_config.reserve_tokens),
        )
        opened = await open_stream(observed([model], self.ctx.observer), request, self.agent.retry, self.retry_budget)
        processor = StreamProcessor(_discard, lambda _: None, "native", model.name)
        await processor.consume(opened.first, opened.rest)
        await self._record_usage(model, processor, lambda: max(1, len(transcript) // 4))
        return processor.text.strip()


async def _discard(event: Event) -> None:
    """Summary calls stream into nothing: their text is not part of the conversation."""
